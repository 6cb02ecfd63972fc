"""The k-nearest-neighbour estimator of I(labels; codes) of Ross (2014), for
`disentanglement.mutual_information`: an exact search pruned by k-means cells,
in float64 JAX (`knn_mutual_informations`, several labelings of the same codes
in one pass), and scikit-learn's KD-tree as its reference
(`knn_mutual_information_reference`). Inputs are validated by the caller.

The search. The distinct codes are split into cells by k-means; a member b of
a cell with centre mu and radius R (its farthest member) lies at a distance
within d(a, mu) +- R of any point a. So the radius r_i (distance to the
k_i-th nearest same-label point) is searched only in the cells of the point's
label that can hold a point nearer than an upper bound (the cells holding
its k_i nearest same-label points at worst), and the count m_i adds whole
cells that lie inside r_i and compares distances only in the cells r_i may
cut. Distances are float64, |a|^2 + |b|^2 - 2 a.b on centred codes (an error
near 1e-16 D |a|^2, far below what separates distinct codes in practice);
exact duplicates lie at distance 0, and the k-th neighbour (with its
duplicates) is left out of m_i by index, since it lies on the radius.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from sklearn.cluster import KMeans
from sklearn.neighbors import KDTree

# Rows per k-means cell (on average; at most _CELL), queries per block of the
# counting pass and of the radius search, and the fewest candidates a radius
# search pads to (candidate counts are padded
# to powers of two, so that few shapes compile).
_ROWS_PER_CELL = 128
_CELL = 128
_BLOCK = 256
_SEARCH_BLOCK = 256
# Candidates per group of the radius search's first pass (divides _MIN_CANDIDATES).
_GROUP = 32
_MIN_CANDIDATES = 512
# Queries per tile of the counting pass, and tiles per kernel call.
_TILE = 64
_TILES_PER_CALL = 64
# A label with at most this many points is searched whole for its radii.
_SMALL_LABEL = 2048
# The matmul form is used where its error bound is below this share of the
# squared radius (else differences); float64's unit roundoff.
_TOLERANCE = 1e-3
_EPSILON = 2.0**-52


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


def _distances(queries: jax.Array, candidates: jax.Array, form: str) -> jax.Array:
  """Distances [Q, C] of rows [Q, D] and [C, D]: "matmul" (squared Euclidean,
  |a|^2 + |b|^2 - 2 a.b), "euclidean" (squared, from differences) or
  "chebyshev"."""
  if form == "matmul":
    squared = (
      jnp.sum(queries * queries, axis=1)[:, None]
      + jnp.sum(candidates * candidates, axis=1)[None, :]
      - 2.0 * queries @ candidates.T
    )
    return jnp.maximum(squared, 0.0)

  def one_dimension(index, value):
    gap = queries[:, index][:, None] - candidates[:, index][None, :]
    if form == "euclidean":
      return value + gap * gap
    return jnp.maximum(value, jnp.abs(gap))

  start = jnp.zeros((queries.shape[0], candidates.shape[0]), queries.dtype)
  return jax.lax.fori_loop(0, queries.shape[1], one_dimension, start)


def _row_distances(rows, centre, query_rows, candidate_rows, form):
  """_distances of rows[query_rows] and rows[candidate_rows] centred at
  `centre`, 0 between a row and itself."""
  values = _distances(rows[query_rows] - centre, rows[candidate_rows] - centre, form)
  return jnp.where(query_rows[:, None] == candidate_rows[None, :], 0.0, values)


@functools.partial(jax.jit, static_argnames="metric")
def _to_centres(rows, query_rows, centres, *, metric):
  """Distances [Q, K] of rows[query_rows] to the cell centres (not squared)."""
  if metric == "euclidean":
    return jnp.sqrt(_distances(rows[query_rows], centres, "matmul"))
  return _distances(rows[query_rows], centres, metric)


@functools.partial(jax.jit, static_argnames=("k", "form"))
def _kth_same_label(rows, centre, queries, kth, candidates, *, k, form):
  """Distance (squared for euclidean) to, and row of, each query's kth-index
  nearest other point of its label among the candidates. queries and
  candidates [3, n]: rows, point ids and labels (padding: label -2 and -1)."""
  values = _row_distances(rows, centre, queries[0], candidates[0], form)
  same = (queries[2][:, None] == candidates[2][None, :]) & (
    queries[1][:, None] != candidates[1][None, :]
  )
  values = jnp.where(same, values, jnp.inf)
  # The k groups of _GROUP candidates with the least minima hold the k
  # nearest; the (kth + 1)-th smallest value among them, ties counted, by k
  # passes of a min over the values above the last (XLA CPU's top_k is far
  # slower here).
  # (A last group of infinities is taken once every finite one is.)
  values = jnp.pad(values, ((0, 0), (0, _GROUP)), constant_values=jnp.inf)
  groups = values.reshape(values.shape[0], -1, _GROUP)
  minima, chosen = jnp.min(groups, axis=2), []
  for _ in range(k):
    least = jnp.argmin(minima, axis=1)
    finite = jnp.take_along_axis(minima, least[:, None], axis=1)[:, 0] < jnp.inf
    chosen.append(jnp.where(finite, least, groups.shape[1] - 1))
    minima = minima.at[jnp.arange(values.shape[0]), chosen[-1]].set(jnp.inf)
  chosen = jnp.stack(chosen, axis=1)
  near = jnp.take_along_axis(groups, chosen[:, :, None], axis=1).reshape(
    chosen.shape[0], -1
  )
  last = jnp.full(near.shape[:1], -jnp.inf, near.dtype)
  taken = jnp.zeros(near.shape[:1], jnp.int32)
  radius = jnp.full(near.shape[:1], jnp.inf, near.dtype)
  for _ in range(k):
    last = jnp.min(jnp.where(near > last[:, None], near, jnp.inf), axis=1)
    ties = jnp.sum(near == last[:, None], axis=1)
    radius = jnp.where((taken <= kth) & (kth < taken + ties), last, radius)
    taken += ties
  position = jnp.argmax(near == radius[:, None], axis=1)
  group = jnp.take_along_axis(chosen, (position // _GROUP)[:, None], axis=1)[:, 0]
  return radius, candidates[0][group * _GROUP + position % _GROUP]


@functools.partial(jax.jit, static_argnames="form")
def _tile_counts(
  rows, weights, centres, cell_rows, row_of, limits, neighbours, tiles, *, form
):
  """Counts [L, T, Q] per tile (its cell [T], query points [T, Q], -1 pad):
  the weight of the cell's rows strictly nearer to each query than its limit
  (limits [L, N], squared for euclidean; -inf: none), its k-th neighbour's
  row (neighbours [L, N]) left out. cell_rows [K, S] (-1 pad); weights [L, U]
  per row; row_of [N] each point's row."""
  cell, points = tiles
  safe = jnp.maximum(points, 0)
  query_rows = row_of[safe]
  members = cell_rows[cell]
  centre = centres[cell][:, None, :]
  queries = rows[query_rows] - centre
  candidates = rows[jnp.maximum(members, 0)] - centre
  values = jax.vmap(functools.partial(_distances, form=form))(queries, candidates)
  values = jnp.where(query_rows[:, :, None] == members[:, None, :], 0.0, values)
  query_limits = jnp.where(points >= 0, limits[:, safe], -jnp.inf)
  inside = (values[None] < query_limits[..., None]) & (
    members[None, :, None, :] != neighbours[:, safe][..., None]
  )
  member_weights = jnp.where(members >= 0, weights[:, members], 0.0)
  return jnp.sum(jnp.where(inside, member_weights[:, :, None, :], 0.0), axis=3)


@functools.partial(jax.jit, static_argnames="metric")
def _cell_bounds(
  rows, centres, cell_radii, margin, query_rows, reach, cell_weights, *, metric
):
  """For a block of queries: which cells [B, K] some reach [L, B] (the
  radius, not squared; -inf: none) may cut, and the weight [L, B] of the
  cells wholly inside it that none cuts."""
  to_centres = _to_centres(rows, query_rows, centres, metric=metric)
  lower = to_centres - cell_radii - margin
  upper = to_centres + cell_radii + margin
  distance = reach[:, :, None]
  scanned = jnp.any((lower < distance) & (upper >= distance), axis=0)
  inside = (upper < distance) & ~scanned
  return scanned, jnp.einsum(
    "lbk,lk->lb", inside.astype(cell_weights.dtype), cell_weights
  )


def _pad(values: np.ndarray, size: int, fill: int) -> np.ndarray:
  return np.pad(values, (0, size - values.size), constant_values=fill)


def _round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def _bucket(size: int, least: int) -> int:
  return max(least, 1 << max(0, size - 1).bit_length())


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  """Concatenation of arange(start, start + size) over the pairs."""
  sizes = sizes.astype(np.int64)
  offsets = np.repeat(starts - np.cumsum(sizes) + sizes, sizes)
  return offsets + np.arange(sizes.sum())


def _kmeans(values: np.ndarray, num_clusters: int) -> KMeans:
  """A few Lloyd iterations from a seeded random start (any partition would
  be exact; a tight one prunes more)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # fewer distinct float32 rows than clusters
    return KMeans(
      num_clusters, init="random", n_init=1, max_iter=8, random_state=0
    ).fit(values)


class _Cells:
  """The distinct codes, centred, ordered by k-means cell, with each cell's
  centre, radius and row range."""

  def __init__(self, codes: np.ndarray, metric: str, num_cells: int | None):
    unique, row_of = np.unique(codes + 0.0, axis=0, return_inverse=True)
    unique = unique - np.mean(unique, axis=0)
    num_rows = unique.shape[0]
    num_cells = min(num_rows, num_cells or -(-num_rows // _ROWS_PER_CELL))
    cell = np.zeros(num_rows, np.int64)
    if num_cells > 1:
      cells = _kmeans(unique.astype(np.float32), num_cells)
      # Cells numbered so that neighbours are near in number (blocks of
      # consecutive points then span few regions): by k-means of the centres.
      group = _kmeans(cells.cluster_centers_, round(np.sqrt(num_cells))).labels_
      cell = np.argsort(np.argsort(group, kind="stable"))[cells.labels_]
    order = np.argsort(cell, kind="stable")
    self.row_of = np.argsort(order)[row_of.reshape(-1)]
    cell, unique = cell[order], unique[order]
    # Cells of more than _CELL rows are split; none is empty.
    rank = np.arange(num_rows) - np.searchsorted(cell, cell)
    _, self.cell_of_row = np.unique(
      cell * num_rows + rank // _CELL, return_inverse=True
    )
    self.sizes = np.bincount(self.cell_of_row)
    self.starts = np.cumsum(self.sizes) - self.sizes
    centres = np.add.reduceat(unique, self.starts) / self.sizes[:, None]
    offsets = unique - centres[self.cell_of_row]
    if metric == "euclidean":
      spread = np.sqrt(np.sum(offsets * offsets, axis=1))
    else:
      spread = np.max(np.abs(offsets), axis=1)
    self.radii = np.maximum.reduceat(spread, self.starts)
    self.table = np.full((self.sizes.size, _CELL), -1)
    self.table[
      self.cell_of_row, np.arange(num_rows) - self.starts[self.cell_of_row]
    ] = np.arange(num_rows)
    # The distances to the centres (|a|^2 + |b|^2 - 2 a.b for euclidean) err
    # by far less than this.
    largest = max(np.max(np.sum(unique**2, 1)), np.max(np.sum(centres**2, 1)))
    self.margin = np.sqrt(64.0 * (codes.shape[1] + 2) * _EPSILON * largest)
    self.codes, self.metric = unique, metric
    self.rows, self.centres = jnp.asarray(unique), jnp.asarray(centres)

  def bounds(self, query_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds [Q, K] on the distance from each query to any
    member of each cell."""
    to_centres = np.asarray(
      _to_centres(self.rows, jnp.asarray(query_rows), self.centres, metric=self.metric)
    )
    return (
      to_centres - self.radii - self.margin,
      to_centres + self.radii + self.margin,
    )

  def centre(self, query_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A block's centre, and which squared radii [...] the matmul form
    resolves for it: its error bound 8 (D + 2) eps (3 rho^2 + 2 r^2) (rho: the
    queries' farthest distance from the centre) below 1e-3 r^2."""
    queries = self.codes[query_rows]
    centre = np.mean(queries, axis=0)
    spread = np.max(np.sum((queries - centre) ** 2, axis=1))
    factor = 8.0 * (queries.shape[1] + 2) * _EPSILON

    def resolved(squared: np.ndarray) -> np.ndarray:
      if self.metric != "euclidean":
        return np.zeros(squared.shape, bool)
      return factor * (3.0 * spread + 2.0 * squared) < _TOLERANCE * squared

    return centre, resolved


def _search(
  cells: _Cells,
  labels: np.ndarray,
  block: np.ndarray,
  candidate_points: np.ndarray,
  point_k: np.ndarray,
  k: int,
) -> tuple[np.ndarray, np.ndarray]:
  """_kth_same_label of the block's points among the candidate points, by
  the matmul form where it resolves the radius, else by differences."""
  size = _bucket(candidate_points.size, _MIN_CANDIDATES)
  block_size = _bucket(block.size, 8)
  queries = np.stack(
    [
      _pad(cells.row_of[block], block_size, 0),
      _pad(block, block_size, -1),
      _pad(labels[block], block_size, -2),
    ]
  )
  candidates = np.stack(
    [
      _pad(cells.row_of[candidate_points], size, 0),
      _pad(candidate_points, size, -1),
      _pad(labels[candidate_points], size, -1),
    ]
  )
  centre, resolved = cells.centre(cells.row_of[block])
  search = functools.partial(
    _kth_same_label,
    cells.rows,
    jnp.asarray(centre),
    jnp.asarray(queries),
    jnp.asarray(_pad(point_k[block] - 1, block_size, 0)),
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
  cells: _Cells, labels: np.ndarray, kept: np.ndarray, point_k: np.ndarray, k: int
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
    return _ranges(starts, np.searchsorted(keys, wanted, "right") - starts)

  radius = np.zeros(labels.size)
  neighbour = np.zeros(labels.size, np.int64)
  for first in range(0, points.size, _SEARCH_BLOCK):
    block = points[first : first + _SEARCH_BLOCK]
    block_keys = keys[first : first + _SEARCH_BLOCK]
    small = np.unique(labels[block][big_index[labels[block]] < 0])
    whole = _ranges(label_starts[small], label_sizes[small])
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
  num_tiles = _round_up(max(1, int(starts.sum())), _TILES_PER_CALL)
  tile_points = np.full((num_tiles, _TILE), -1)
  tile_points[np.cumsum(starts) - 1, rank % _TILE] = point
  tile_cells = _pad(cell[starts], num_tiles, 0)
  results = [
    _tile_counts(
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
  cells = _Cells(codes, metric, num_cells)
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
    _cell_bounds,
    cells.rows,
    cells.centres,
    jnp.asarray(cells.radii),
    cells.margin,
    cell_weights=jnp.asarray(cell_weights),
    metric=metric,
  )
  for first in range(0, queries.size, _BLOCK):
    block = queries[first : first + _BLOCK]
    block_size = _bucket(block.size, 8)
    reach_block = np.where(counted[:, block], reach[:, block], -np.inf)
    scanned, inside = bounds(
      jnp.asarray(_pad(cells.row_of[block], block_size, 0)),
      jnp.asarray(
        np.pad(
          reach_block, ((0, 0), (0, block_size - block.size)), constant_values=-np.inf
        )
      ),
    )
    counts[:, block] = np.asarray(inside)[:, : block.size]
    query_index, cell_index = np.nonzero(np.asarray(scanned)[: block.size])
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
    bound = 8.0 * (codes.shape[1] + 2) * _EPSILON
    bound *= (np.sqrt(squared) + spread) ** 2 + spread**2
    exact = np.any(counted[:, pairs[0]] & (bound >= _TOLERANCE * squared), axis=0)
    groups = [("matmul", ~exact), ("euclidean", exact)]
  else:
    groups = [(metric, np.ones(pairs.shape[1], bool))]
  for form, chosen in groups:
    points, within = _tile_counts_of(device, pairs[:, chosen], form)
    for index in range(counts.shape[0]):
      counts[index] += np.bincount(
        points, weights=within[index], minlength=counts.shape[1]
      )

  return [
    _ross_estimate(kk[keep], size[keep], count[keep])
    for kk, size, count, keep in zip(point_k, point_sizes, counts, kept, strict=True)
  ]
