"""The k-nearest-neighbour estimator of I(labels; codes) of Ross (2014), for
`disentanglement.mutual_information`: an exact search pruned by k-means
cells, in float64 JAX (`knn_mutual_informations`, several labelings of the
same codes in one pass; its cells and kernels are knn_search.py), and
scikit-learn's KD-tree as its reference (`knn_mutual_information_reference`).
Inputs are validated by the caller.

The radius r_i (distance to the k_i-th nearest same-label point) is searched
only in the cells of the point's label that can hold a point nearer than an
upper bound; the count m_i adds whole cells that lie inside r_i and compares
distances only in the cells r_i may cut, in tiles of one cell's rows and
queries. The k-th neighbour (with its duplicates) is left out of m_i by
index, since it lies on the radius.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from sklearn.neighbors import KDTree

from mipae_jax.evaluation import knn_search
from mipae_jax.evaluation.knn_search import Cells, bucket, pad, ranges

# Queries per block, and the fewest candidates a radius search pads to
# (candidate counts are padded to powers of two, so that few shapes compile).
_BLOCK = 256
_MIN_CANDIDATES = 512
# Queries per tile of the counting pass, and tiles per kernel call.
_TILE = 64
_TILES_PER_CALL = 64
# A label with at most this many points is searched whole for its radii.
_SMALL_LABEL = 2048
# A tile pair costs about this many times a pair of the dense pass, which
# compares a block with every row in chunks of _DENSE_CHUNK.
_TILE_COST = 5
_DENSE_CHUNK = 2048


def _ross_estimate(
  point_k: np.ndarray, point_label_sizes: np.ndarray, counts: np.ndarray
) -> float:
  """psi(N) + <psi(k_i)> - <psi(N_{x_i})> - <psi(m_i)> over the kept points."""
  estimate = (
    scipy.special.digamma(point_k.size)
    + np.mean(scipy.special.digamma(point_k))
    - np.mean(scipy.special.digamma(point_label_sizes))
    - np.mean(scipy.special.digamma(counts))
  )
  return max(0.0, float(estimate))


def knn_mutual_information_reference(
  labels: np.ndarray, codes: np.ndarray, k: int, metric: str = "euclidean"
) -> float:
  """Ross (2014) estimator with scikit-learn KD-trees, in float64.

  The reference the JAX estimator is tested against; slow on many
  high-dimensional points (the radius counts degenerate to brute force).
  """
  num_points = labels.shape[0]
  label_sizes = np.bincount(labels)
  point_label_sizes = label_sizes[labels]
  points_by_label = np.split(
    np.argsort(labels, kind="stable"), np.cumsum(label_sizes)[:-1]
  )
  radius = np.zeros(num_points)
  point_k = np.zeros(num_points)
  for members in points_by_label:
    if members.size < 2:
      continue
    label_k = min(k, members.size - 1)
    label_codes = codes[members]
    # Each point is its own nearest neighbour (distance 0), so column label_k
    # holds the distance to its label_k-th nearest other same-label point.
    distances, _ = KDTree(label_codes, metric=metric).query(label_codes, k=label_k + 1)
    # Strictly inside that neighbour, as scikit-learn does.
    radius[members] = np.nextafter(distances[:, label_k], 0.0)
    point_k[members] = label_k

  kept = point_label_sizes > 1
  if not np.any(kept):
    raise ValueError("Every label occurs once: the k-NN MI estimate is undefined.")
  kept_codes = codes[kept]
  tree = KDTree(kept_codes, metric=metric)
  # m_i counts the point itself and every point (any label) within the radius.
  within_radius = tree.query_radius(kept_codes, radius[kept], count_only=True)
  return _ross_estimate(point_k[kept], point_label_sizes[kept], within_radius)


def _search(
  cells: Cells,
  labels: np.ndarray,
  block: np.ndarray,
  candidate_points: np.ndarray,
  point_k: np.ndarray,
  k: int,
) -> tuple[np.ndarray, np.ndarray]:
  """knn_search.kth_same_label of the block's points among the candidate points, by
  the matmul form where it resolves the radius, else by differences."""
  size = bucket(candidate_points.size, _MIN_CANDIDATES)
  block_size = bucket(block.size, 8)
  queries = np.stack(
    [
      pad(cells.row_of[block], block_size, 0),
      pad(block, block_size, -1),
      pad(labels[block], block_size, -2),
    ]
  )
  candidates = np.stack(
    [
      pad(cells.row_of[candidate_points], size, 0),
      pad(candidate_points, size, -1),
      pad(labels[candidate_points], size, -1),
    ]
  )
  centre, resolved = cells.centre(cells.row_of[block])
  search = functools.partial(
    knn_search.kth_same_label,
    cells.rows,
    jnp.asarray(centre),
    jnp.asarray(queries),
    jnp.asarray(pad(point_k[block] - 1, block_size, 0)),
    jnp.asarray(candidates),
    k=min(k, size),
  )
  form = "matmul" if cells.metric == "euclidean" else cells.metric
  value, row = (np.asarray(result)[: block.size] for result in search(form=form))
  redo = ~resolved(value)
  if form == "matmul" and np.any(redo):
    exact = (np.asarray(result)[: block.size] for result in search(form="euclidean"))
    value, row = (
      np.where(redo, e, v) for e, v in zip(exact, (value, row), strict=True)
    )
  return value, row


def _radii(
  cells: Cells, labels: np.ndarray, kept: np.ndarray, point_k: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
  """Distance (squared for euclidean) from each kept point to its k_i-th
  nearest other point of its label, and that point's row.

  A label of at most _SMALL_LABEL points is searched whole. For a bigger one,
  a first search in the block's own cells bounds each radius, and the
  second searches every cell of the label that bound reaches (or, where the
  own cells lack k_i points of the label, that the cells holding the k_i
  nearest at worst reach).
  """
  num_cells = cells.sizes.size
  points = np.flatnonzero(kept)
  cell_of_point = cells.cell_of_row[cells.row_of[points]]
  order = np.lexsort((cell_of_point, labels[points]))
  points, cell_of_point = points[order], cell_of_point[order]
  keys = labels[points] * num_cells + cell_of_point
  label_sizes = np.bincount(labels[points])
  label_starts = np.cumsum(label_sizes) - label_sizes
  big = np.flatnonzero(label_sizes > _SMALL_LABEL)
  big_index = np.full(label_sizes.size, -1)
  big_index[big] = np.arange(big.size)
  # Kept points of each big label per cell (the query itself included).
  per_cell = np.zeros((big.size, num_cells), np.int64)
  in_big = big_index[labels[points]] >= 0
  np.add.at(per_cell, (big_index[labels[points][in_big]], cell_of_point[in_big]), 1)

  def cells_of(wanted: np.ndarray) -> np.ndarray:
    """Positions in `points` of the (label * num_cells + cell) keys."""
    starts = np.searchsorted(keys, wanted)
    return ranges(starts, np.searchsorted(keys, wanted, "right") - starts)

  radius = np.zeros(labels.size)
  neighbour = np.zeros(labels.size, np.int64)
  for first in range(0, points.size, _BLOCK):
    block = points[first : first + _BLOCK]
    block_keys = keys[first : first + _BLOCK]
    small = np.unique(labels[block][big_index[labels[block]] < 0])
    whole = ranges(label_starts[small], label_sizes[small])
    large = big_index[labels[block]] >= 0
    own = cells_of(np.unique(block_keys[large]))
    candidates = points[np.union1d(whole, own)]
    value, row = _search(cells, labels, block, candidates, point_k, k)
    if np.any(large):
      queries = block[large]
      counts = per_cell[big_index[labels[queries]]]
      lower, upper = cells.bounds(cells.row_of[queries])
      # The k_i + 1 cells of least upper bound that hold the label hold the
      # point and at least k_i others within the largest of those bounds.
      upper_held = np.where(counts > 0, upper, np.inf)
      nearest = np.argpartition(upper_held, min(k, num_cells - 1), axis=1)[:, : k + 1]
      nearest = np.take_along_axis(
        nearest, np.argsort(np.take_along_axis(upper_held, nearest, 1), 1), 1
      )
      held = np.cumsum(np.take_along_axis(counts, nearest, axis=1), axis=1)
      enough = np.argmax(held >= point_k[queries][:, None] + 1, axis=1)
      bound = np.take_along_axis(upper_held, nearest, axis=1)[
        np.arange(queries.size), enough
      ]
      found = value[large] if cells.metric != "euclidean" else np.sqrt(value[large])
      bound = np.minimum(bound, found + cells.margin)
      query_index, cell_index = np.nonzero((counts > 0) & (lower <= bound[:, None]))
      reached = cells_of(
        np.unique(labels[queries][query_index] * num_cells + cell_index)
      )
      if not np.all(np.isin(reached, own)):
        candidates = points[np.union1d(whole, reached)]
        value, row = _search(cells, labels, block, candidates, point_k, k)
    radius[block], neighbour[block] = value, row
  return radius, neighbour


def _tile_counts_of(
  device: tuple[jax.Array, ...], pairs: np.ndarray, form: str
) -> tuple[np.ndarray, np.ndarray]:
  """Counts of the (query point, cell) pairs [2, P], in tiles of _TILE
  queries of one cell: (query points [M], counts [L, M]) to add up."""
  point, cell = pairs[:, np.argsort(pairs[1], kind="stable")]
  rank = np.arange(cell.size) - np.searchsorted(cell, cell)
  starts = rank % _TILE == 0
  num_tiles = knn_search.round_up(max(1, int(starts.sum())), _TILES_PER_CALL)
  tile_points = np.full((num_tiles, _TILE), -1)
  tile_points[np.cumsum(starts) - 1, rank % _TILE] = point
  tile_cells = pad(cell[starts], num_tiles, 0)
  results = [
    knn_search.tile_counts(
      *device,
      (
        jnp.asarray(tile_cells[first : first + _TILES_PER_CALL]),
        jnp.asarray(tile_points[first : first + _TILES_PER_CALL]),
      ),
      form=form,
    )
    for first in range(0, num_tiles if cell.size else 0, _TILES_PER_CALL)
  ]
  valid = tile_points >= 0
  if not results:
    return np.zeros(0, np.int64), np.zeros((device[1].shape[0], 0))
  return tile_points[valid], np.concatenate([np.asarray(r) for r in results], 1)[
    :, valid
  ]


def _dense_counts(
  cells: Cells,
  dense: tuple[jax.Array, jax.Array],
  block: np.ndarray,
  limits: np.ndarray,
  neighbour_rows: np.ndarray,
) -> np.ndarray:
  """Counts [L, B] of a block of queries over every row (rows and weights
  padded to chunks in `dense`), by the matmul form where it resolves the
  squared radius, else by differences."""
  block_size = bucket(block.size, 8)
  centre, resolved = cells.centre(cells.row_of[block])
  pad_block = ((0, 0), (0, block_size - block.size))
  counts = np.zeros(limits.shape)
  for form, chosen in cells.forms(resolved(limits)):
    if not np.any(chosen & (limits > -np.inf)):
      continue
    within = knn_search.dense_counts(
      *dense,
      jnp.asarray(centre),
      jnp.asarray(pad(cells.row_of[block], block_size, 0)),
      jnp.asarray(
        np.pad(np.where(chosen, limits, -np.inf), pad_block, constant_values=-np.inf)
      ),
      jnp.asarray(np.pad(neighbour_rows, pad_block)),
      form=form,
      chunk=_DENSE_CHUNK,
    )
    counts += np.where(chosen, np.asarray(within)[:, : block.size], 0.0)
  return counts


def knn_mutual_informations(
  labelings: list[np.ndarray],
  codes: np.ndarray,
  k: int,
  metric: str,
  *,
  num_cells: int | None = None,
) -> list[float]:
  """Ross (2014) estimates of I(labels; codes) for each labeling, in JAX.

  codes: float64 [N, D]. `num_cells` sets the number of k-means cells (one
  cell: brute force); by default one per 128 distinct codes.
  """
  labelings = [np.asarray(labels) for labels in labelings]
  with jax.enable_x64(True):
    return _estimates(labelings, codes, k, metric, num_cells)


def _estimates(
  labelings: list[np.ndarray],
  codes: np.ndarray,
  k: int,
  metric: str,
  num_cells: int | None,
) -> list[float]:
  """knn_mutual_informations, with float64 enabled."""
  point_sizes = np.stack([np.bincount(labels)[labels] for labels in labelings])
  kept = point_sizes > 1
  if not np.all(np.any(kept, axis=1)):
    raise ValueError("Every label occurs once: the k-NN MI estimate is undefined.")
  point_k = np.minimum(k, point_sizes - 1)
  cells = Cells(codes, metric, num_cells)
  radii, neighbours = (
    np.stack(values)
    for values in zip(
      *(
        _radii(cells, labels, keep, kk, k)
        for labels, keep, kk in zip(labelings, kept, point_k, strict=True)
      ),
      strict=True,
    )
  )
  reach = np.sqrt(radii) if metric == "euclidean" else radii
  num_rows = cells.codes.shape[0]
  row_weights = np.stack(
    [np.bincount(cells.row_of, weights=keep, minlength=num_rows) for keep in kept]
  )
  cell_weights = np.add.reduceat(row_weights, cells.starts, axis=1)
  counts = np.zeros(radii.shape)
  # A zero radius (the k-th neighbour duplicates the point) counts the
  # point's duplicates, as the reference's nextafter(0, 0) radius does.
  counted = kept & (radii > 0.0)
  zero_labeling, zero_point = np.nonzero(kept & ~counted)
  counts[zero_labeling, zero_point] = row_weights[
    zero_labeling, cells.row_of[zero_point]
  ]
  queries = np.flatnonzero(np.any(counted, axis=0))
  queries = queries[np.argsort(cells.row_of[queries], kind="stable")]
  pairs = [np.zeros((2, 0), np.int64)]
  bounds = functools.partial(
    knn_search.cell_bounds,
    cells.rows,
    cells.centres,
    jnp.asarray(cells.radii),
    cells.margin,
    cell_weights=jnp.asarray(cell_weights),
    metric=metric,
  )
  dense = None
  for first in range(0, queries.size, _BLOCK):
    block = queries[first : first + _BLOCK]
    block_size = bucket(block.size, 8)
    reach_block = np.where(counted[:, block], reach[:, block], -np.inf)
    scanned, inside = bounds(
      jnp.asarray(pad(cells.row_of[block], block_size, 0)),
      jnp.asarray(
        np.pad(
          reach_block, ((0, 0), (0, block_size - block.size)), constant_values=-np.inf
        )
      ),
    )
    scanned = np.asarray(scanned)[: block.size]
    dense_block = (
      np.count_nonzero(scanned) * knn_search.CELL * _TILE_COST > block.size * num_rows
    )
    if dense_block:
      # Pruning failed (codes without structure): every row, in contiguous
      # chunks, is cheaper than the tiles. The padded rows go to the device
      # once, at the first such block.
      if dense is None:
        chunk_rows = knn_search.round_up(num_rows, _DENSE_CHUNK)
        dense = (
          jnp.asarray(np.pad(cells.codes, ((0, chunk_rows - num_rows), (0, 0)))),
          jnp.asarray(np.pad(row_weights, ((0, 0), (0, chunk_rows - num_rows)))),
        )
      here = _dense_counts(
        cells,
        dense,
        block,
        np.where(counted[:, block], radii[:, block], -np.inf),
        neighbours[:, block],
      )
    else:
      here = np.asarray(inside)[:, : block.size]
    # (Zero radii keep the duplicate counts set above.)
    counts[:, block] = np.where(counted[:, block], here, counts[:, block])
    if dense_block:
      continue
    query_index, cell_index = np.nonzero(scanned)
    pairs.append(np.stack([block[query_index], cell_index]))
  pairs = np.concatenate(pairs, axis=1)
  device = (
    cells.rows,
    jnp.asarray(row_weights),
    cells.centres,
    jnp.asarray(cells.table),
    jnp.asarray(cells.row_of),
    jnp.asarray(np.where(counted, radii, -np.inf)),
    jnp.asarray(neighbours),
  )
  if metric == "euclidean":
    # Centred at the cell's centre, a query is within r + R of it and a member
    # within R: the matmul form's error bound 8 (D + 2) eps ((r + R)^2 + R^2)
    # must be below 1e-3 r^2, else the pair takes differences.
    spread = cells.radii[pairs[1]] + cells.margin
    squared = radii[:, pairs[0]]
    bound = 8.0 * (codes.shape[1] + 2) * knn_search.EPSILON
    bound *= (np.sqrt(squared) + spread) ** 2 + spread**2
    resolves = ~np.any(
      counted[:, pairs[0]] & (bound >= knn_search.TOLERANCE * squared), axis=0
    )
  else:
    resolves = np.zeros(pairs.shape[1], bool)
  for form, chosen in cells.forms(resolves):
    points, within = _tile_counts_of(device, pairs[:, chosen], form)
    for index in range(counts.shape[0]):
      counts[index] += np.bincount(
        points, weights=within[index], minlength=counts.shape[1]
      )

  return [
    _ross_estimate(kk[keep], size[keep], count[keep])
    for kk, size, count, keep in zip(point_k, point_sizes, counts, kept, strict=True)
  ]
