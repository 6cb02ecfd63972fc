"""The k-nearest-neighbour estimator of I(labels; codes) of Ross (2014), for
`disentanglement.mutual_information`: a blocked brute-force search in JAX
(`knn_mutual_informations`, several labelings of the same codes in one pass)
and scikit-learn's float64 KD-tree as its reference
(`knn_mutual_information_reference`). Inputs are validated by the caller.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from sklearn.neighbors import KDTree


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


# The JAX estimator: blocked brute force on float32 codes (float64 codes keep a
# float32 remainder, used wherever coordinates are subtracted).
#
# Radii (phase 1, per labeling): points sorted by label; each block of
# _RADIUS_BLOCK rows is compared with the window of sorted points that holds
# its labels. Euclidean distances come from a matmul on codes centred at each
# point's label mean (exact algebra for same-label pairs; accurate, since the
# centred norms are of the label's spread, not of the codes' offset), the
# k + _EXTRA_CANDIDATES nearest are recomputed from coordinate differences,
# and a block where a point left out could still beat the k_i-th of those
# (by the matmul's error bound) is redone by differences.
#
# Counts (phase 2): m_i over the distinct codes, each weighted by the number
# of kept points sharing it, all labelings of the codes in one pass. The k-th
# neighbour lies on the radius, so it is excluded by index (with its exact
# duplicates) rather than by comparing a recomputed distance. Each
# (labeling, point) takes one of three routes, chosen from its radius before
# any count: 1) a matmul on globally centred codes; 2) a matmul on codes
# centred at the nearest of the point's label means (under any labeling), in
# blocks of points sharing that centre: for points in clusters tight against
# their global norm, the usual case for I(f_c, z_c); 3) coordinate
# differences, for the rest (zero radii, tiny radii within spread-out labels)
# and for Chebyshev. A matmul distance |a|^2 + |b|^2 - 2 a.b is used for a
# point when its error bound near the radius,
# _matmul_error_factor(D) * (3 |a|^2 + 2 r^2), is below _MATMUL_TOLERANCE * r^2
# (a worst-case bound: typical errors are ~sqrt(D) times smaller), so counts
# can differ from the float64 reference only for points within that margin of
# the radius, as float32 itself allows.
_MATMUL_TOLERANCE = 1e-3
_EXTRA_CANDIDATES = 4
_RADIUS_BLOCK = 128
_RADIUS_GROUP = 8
_QUERY_BLOCK = 256
_CANDIDATE_CHUNK = 512
_CENTRED_GROUP = 8
_MATMUL_GROUP = 16
_CENTRED_BLOCK_SIZES = (16, 32, 48, 64, 96, 128, 160, 192, 256)
_EXACT_BLOCK = 16
_EXACT_GROUP = 4
_HIGHEST = jax.lax.Precision.HIGHEST


def _matmul_error_factor(dims: int) -> float:
  """Bound / (|a|^2 + |b|^2) on the float32 error of |a|^2 + |b|^2 - 2 a.b.

  Each length-D float32 dot product errs by at most ~D u times the sum of
  |products| (u = 2^-24), the three-term sum by a few u more, and rounding the
  centred coordinates to float32 by ~u; a factor 2 of margin on top.
  """
  return 2.0 * (dims + 8) * 2.0**-24


def _round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def _pad_rows(values: np.ndarray, rows: int, fill: float | int = 0) -> np.ndarray:
  padding = [(0, rows - values.shape[0])] + [(0, 0)] * (values.ndim - 1)
  return np.pad(values, padding, constant_values=fill)


def _difference(q_hi, q_lo, c_hi, c_lo, metric: str) -> jax.Array:
  """Exact-as-float32 distances [B, C] (squared for euclidean) of q [B, D], c [C, D].

  Coordinates are hi + lo float32 pairs (lo None when the codes are float32), so
  close points keep their difference to float32 relative precision.
  """
  diff = q_hi[:, None, :] - c_hi[None, :, :]
  if q_lo is not None:
    diff = diff + (q_lo[:, None, :] - c_lo[None, :, :])
  if metric == "euclidean":
    return jnp.sum(diff * diff, axis=-1)
  return jnp.max(jnp.abs(diff), axis=-1)


def _optional(values: np.ndarray | None) -> jax.Array | None:
  return None if values is None else jnp.asarray(values)


@functools.partial(jax.jit, static_argnames=("window", "num_candidates"))
def _radii_by_matmul(
  centred,
  hi,
  lo,
  labels,
  k_index,
  bound_margin,
  window_starts,
  *,
  window,
  num_candidates,
):
  """Phase 1, matmul form: (squared radius, neighbour, verified) per sorted row.

  The neighbour is the label-sorted position of the k_i-th nearest point.

  centred [P, D]: label-sorted codes minus their label's mean; hi, lo [P, D]
  the codes themselves; labels [P] (-1 padding); k_index, bound_margin [nb, B]
  (k_i - 1 and the matmul error bound); window_starts [nb].
  """
  num_blocks, block = k_index.shape
  query_offsets = jnp.arange(block)
  window_offsets = jnp.arange(window)

  def one_block(args):
    index, start, k_rows, margin = args
    first = index * block
    queries = jax.lax.dynamic_slice_in_dim(centred, first, block)
    candidates = jax.lax.dynamic_slice_in_dim(centred, start, window)
    query_labels = jax.lax.dynamic_slice_in_dim(labels, first, block)
    candidate_labels = jax.lax.dynamic_slice_in_dim(labels, start, window)
    approx = (
      jnp.sum(queries * queries, axis=1)[:, None]
      + jnp.sum(candidates * candidates, axis=1)[None, :]
      - 2.0 * jnp.dot(queries, candidates.T, precision=_HIGHEST)
    )
    same = (query_labels[:, None] == candidate_labels[None, :]) & (
      (first + query_offsets)[:, None] != (start + window_offsets)[None, :]
    )
    negated, nearest = jax.lax.top_k(jnp.where(same, -approx, -jnp.inf), num_candidates)
    chosen = start + nearest
    q_hi = jax.lax.dynamic_slice_in_dim(hi, first, block)
    diff = q_hi[:, None, :] - hi[chosen]
    if lo is not None:
      q_lo = jax.lax.dynamic_slice_in_dim(lo, first, block)
      diff = diff + (q_lo[:, None, :] - lo[chosen])
    exact = jnp.where(negated > -jnp.inf, jnp.sum(diff * diff, axis=-1), jnp.inf)
    kth = jnp.take_along_axis(jnp.argsort(exact, axis=1), k_rows[:, None], axis=1)
    radius = jnp.take_along_axis(exact, kth, axis=1)[:, 0]
    neighbour = jnp.take_along_axis(chosen, kth, axis=1)[:, 0]
    # Every point left out has approx >= the last chosen one's, hence an exact
    # distance >= that minus the error bound.
    # (The min, not the last column: slicing top_k's values made XLA CPU sort
    # 15x slower.)
    verified = -jnp.min(negated, axis=1) - margin >= radius
    return radius, neighbour, verified

  return jax.lax.map(
    one_block, (jnp.arange(num_blocks), window_starts, k_index, bound_margin)
  )


@functools.partial(jax.jit, static_argnames=("window", "k", "metric"))
def _radii_exact(
  hi, lo, labels, block_ids, window_starts, k_index, *, window, k, metric
):
  """Phase 1, exact form, for the blocks `block_ids` [G]: radius, neighbour [G, B]."""
  block = k_index.shape[1]
  query_offsets = jnp.arange(block)
  window_offsets = jnp.arange(window)

  def one_block(args):
    index, start, k_rows = args
    first = index * block
    q_hi = jax.lax.dynamic_slice_in_dim(hi, first, block)
    c_hi = jax.lax.dynamic_slice_in_dim(hi, start, window)
    q_lo = c_lo = None
    if lo is not None:
      q_lo = jax.lax.dynamic_slice_in_dim(lo, first, block)
      c_lo = jax.lax.dynamic_slice_in_dim(lo, start, window)
    distances = _difference(q_hi, q_lo, c_hi, c_lo, metric)
    query_labels = jax.lax.dynamic_slice_in_dim(labels, first, block)
    candidate_labels = jax.lax.dynamic_slice_in_dim(labels, start, window)
    same = (query_labels[:, None] == candidate_labels[None, :]) & (
      (first + query_offsets)[:, None] != (start + window_offsets)[None, :]
    )
    negated, nearest = jax.lax.top_k(
      jnp.where(same, -distances, -jnp.inf), min(k, window)
    )
    radius = -jnp.take_along_axis(negated, k_rows[:, None], axis=1)[:, 0]
    neighbour = start + jnp.take_along_axis(nearest, k_rows[:, None], axis=1)[:, 0]
    return radius, neighbour

  return jax.lax.map(
    one_block, (block_ids, window_starts[block_ids], k_index[block_ids])
  )


def _count(inside: jax.Array, weights: jax.Array) -> jax.Array:
  """sum_c weights[l, c] over inside [L, B, C]: int32 [L, B].

  A float32 select-and-sum (exact below 2^24): XLA CPU vectorises it 3x better
  than an integer sum of the booleans.
  """
  return jnp.sum(jnp.where(inside, weights[:, None, :], 0.0), axis=2).astype(jnp.int32)


def _own_neighbour(values, inside, weights, neighbours, first):
  """Weight of each row's k-th neighbour where it is counted in this chunk.

  values [B, C]: the chunk's distances (in whatever form `inside` compares),
  candidates from index `first` on; inside(values [L, B]) -> counted [L, B];
  weights [L, C]; neighbours [L, B] candidate indices. The neighbour's value
  is read from the same array the counts compare, so it is excluded exactly
  when it was counted.
  """
  chunk = values.shape[-1]
  local = neighbours - first
  present = (local >= 0) & (local < chunk)
  column = jnp.clip(local, 0, chunk - 1)
  value = jnp.take_along_axis(values, column.T, axis=1).T
  weight = jnp.take_along_axis(weights, column, axis=-1)
  return jnp.where(present & inside(value), weight, 0.0).astype(jnp.int32)


def _matmul_chunk_counts(values, limits, weights, neighbours, first):
  """Counts [L, B] of one chunk of matmul distances `values` [B, C] below
  `limits` [L, B], each row's k-th neighbour left out (routes 1 and 2)."""
  inside = values[None] < limits[:, :, None]
  excluded = _own_neighbour(
    values, lambda value: value < limits, weights, neighbours, first
  )
  return _count(inside, weights) - excluded


@jax.jit
def _counts_by_matmul(codes, norms, weights, rows, thresholds, neighbours):
  """Route 1: counts [G, L, B] for query rows [G, B] on globally centred codes.

  Candidates: codes [nc, C, D], norms |b_j|^2 [nc, C] and weights [nc, L, C]
  (how many kept points share the candidate's code; 0 for padding). Counts
  the weight of candidates with -2 a_i.b_j + |b_j|^2 < thresholds_li, where
  thresholds [G, L, B] = r_i^2 - |a_i|^2 (-inf: no count). The k-th neighbour
  (neighbours [G, L, B], candidate indices) is not counted, whatever the
  rounding of its distance (it lies on the radius).
  """
  num_chunks, chunk, dims = codes.shape
  flat = codes.reshape(-1, dims)

  def one_block(args):
    block_rows, limits, own = args
    scaled = -2.0 * flat[block_rows]

    def one_chunk(index, counts):
      products = jnp.dot(scaled, codes[index].T, precision=_HIGHEST)
      values = jax.lax.optimization_barrier(products + norms[index][None, :])
      return counts + _matmul_chunk_counts(
        values, limits, weights[index], own, index * chunk
      )

    return jax.lax.fori_loop(
      0, num_chunks, one_chunk, jnp.zeros(limits.shape, jnp.int32)
    )

  return jax.lax.map(one_block, (rows, thresholds, neighbours))


@jax.jit
def _counts_by_centred_matmul(hi, lo, weights, rows, centres, radii, neighbours):
  """Route 2: counts [G, L, B] for query rows [G, B] centred at centres [G, D].

  hi, lo [nc, C, D] candidate codes, weights [nc, L, C]; radii [G, L, B]
  squared (-inf: no count); neighbours [G, L, B] not counted.
  """
  num_chunks, chunk, dims = hi.shape
  flat_hi = hi.reshape(-1, dims)
  flat_lo = None if lo is None else lo.reshape(-1, dims)
  ones = jnp.ones(dims, hi.dtype)

  def centre(values_hi, values_lo, point):
    centred = values_hi - point
    return centred if values_lo is None else centred + values_lo

  def one_block(args):
    block_rows, point, limits, own = args
    queries = centre(
      flat_hi[block_rows], None if lo is None else flat_lo[block_rows], point
    )
    limits = limits - jnp.sum(queries * queries, axis=1)[None, :]
    scaled = -2.0 * queries

    def one_chunk(index, counts):
      candidates = centre(hi[index], None if lo is None else lo[index], point)
      # (A product with ones: XLA CPU's row sums are 1.5x slower here.)
      norms = jnp.dot(candidates * candidates, ones, precision=_HIGHEST)
      products = jnp.dot(scaled, candidates.T, precision=_HIGHEST)
      values = jax.lax.optimization_barrier(products + norms[None, :])
      return counts + _matmul_chunk_counts(
        values, limits, weights[index], own, index * chunk
      )

    return jax.lax.fori_loop(
      0, num_chunks, one_chunk, jnp.zeros(limits.shape, jnp.int32)
    )

  return jax.lax.map(one_block, (rows, centres, radii, neighbours))


@functools.partial(jax.jit, static_argnames=("metric",))
def _counts_exact(hi, lo, weights, rows, radii, neighbours, *, metric):
  """Route 3: counts [G, L, B] by exact differences for query rows [G, B].

  hi, lo [nc, C, D] candidate codes, weights [nc, L, C]; radii [G, L, B]
  (squared for euclidean; -inf: no count); neighbours [G, L, B]. Counts
  distance < radius except the k-th neighbour, or, for a zero radius,
  distance 0 (as the reference's `nextafter(0, 0)` radius does).
  """
  num_chunks, chunk, dims = hi.shape
  flat_hi = hi.reshape(-1, dims)
  flat_lo = None if lo is None else lo.reshape(-1, dims)

  def one_block(args):
    block_rows, limits, own = args
    q_hi = flat_hi[block_rows]
    q_lo = None if lo is None else flat_lo[block_rows]

    def one_chunk(index, counts):
      c_lo = None if lo is None else lo[index]
      distances = _difference(q_hi, q_lo, hi[index], c_lo, metric)
      distances = jax.lax.optimization_barrier(distances)
      inside = (distances[None] < limits[:, :, None]) | (distances == 0.0)[None]
      excluded = _own_neighbour(
        distances,
        lambda value: (value < limits) | (value == 0.0),
        weights[index],
        own,
        index * chunk,
      )
      excluded = jnp.where(limits > 0.0, excluded, 0)
      return counts + _count(inside, weights[index]) - excluded

    return jax.lax.fori_loop(
      0, num_chunks, one_chunk, jnp.zeros(limits.shape, jnp.int32)
    )

  return jax.lax.map(one_block, (rows, radii, neighbours))


def _split_float32(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
  """float64 codes as float32 hi + lo (lo None when the codes are float32)."""
  hi = codes.astype(np.float32)
  lo = (codes - hi).astype(np.float32)
  return hi, (lo if np.any(lo) else None)


def _label_means(
  labels: np.ndarray, codes: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
  sums = np.zeros((sizes.size, codes.shape[1]))
  np.add.at(sums, labels, codes)
  return sums / np.maximum(sizes, 1)[:, None]


def _radii(
  labels: np.ndarray,
  codes: np.ndarray,
  point_k: np.ndarray,
  kept: np.ndarray,
  metric: str,
  means: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
  """Phase 1: distance (squared for euclidean) to the k_i-th same-label point,
  and that point's index."""
  num_points, dims = codes.shape
  sizes = np.bincount(labels)
  order = np.argsort(labels, kind="stable")
  sorted_labels = labels[order]
  block = _RADIUS_BLOCK
  num_blocks = -(-num_points // block)
  padded = num_blocks * block
  label_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  firsts = np.arange(num_blocks) * block
  lasts = np.minimum(firsts + block, num_points) - 1
  starts = label_starts[sorted_labels[firsts]]
  ends = label_starts[sorted_labels[lasts]] + sizes[sorted_labels[lasts]]
  window = min(_round_up(int(np.max(ends - starts)), 128), padded)
  starts = np.minimum(starts, padded - window).astype(np.int32)

  sorted_codes = codes[order]
  hi, lo = _split_float32(sorted_codes)
  hi, lo = _pad_rows(hi, padded), None if lo is None else _pad_rows(lo, padded)
  device_labels = jnp.asarray(_pad_rows(sorted_labels.astype(np.int32), padded, -1))
  k_index = _pad_rows(np.maximum(point_k[order] - 1, 0), padded).astype(np.int32)
  k_index = k_index.reshape(num_blocks, block)
  device_hi, device_lo = jnp.asarray(hi), _optional(lo)
  sorted_kept = _pad_rows(kept[order], padded, False).reshape(num_blocks, block)

  if metric == "euclidean":
    centred = (sorted_codes - means[sorted_labels]).astype(np.float32)
    norms = np.sum(np.square(centred, dtype=np.float64), axis=1)
    widest = np.zeros(sizes.size)
    np.maximum.at(widest, sorted_labels, norms)
    margin = _matmul_error_factor(dims) * (norms + widest[sorted_labels])
    radius, neighbour, verified = _radii_by_matmul(
      jnp.asarray(_pad_rows(centred, padded)),
      device_hi,
      device_lo,
      device_labels,
      jnp.asarray(k_index),
      jnp.asarray(_pad_rows(margin, padded).astype(np.float32).reshape(k_index.shape)),
      jnp.asarray(starts),
      window=window,
      num_candidates=min(int(point_k.max()) + _EXTRA_CANDIDATES, window),
    )
    radius, neighbour = np.array(radius), np.array(neighbour)
    verified = np.asarray(verified)
    redo = np.flatnonzero(np.any(sorted_kept & ~verified, axis=1))
  else:
    radius = np.zeros(k_index.shape, np.float32)
    neighbour = np.zeros(k_index.shape, np.int32)
    redo = np.arange(num_blocks)
  for group_start in range(0, redo.size, _RADIUS_GROUP):
    group = redo[group_start : group_start + _RADIUS_GROUP]
    ids = _pad_rows(group, _RADIUS_GROUP, group[-1]).astype(np.int32)
    exact = _radii_exact(
      device_hi,
      device_lo,
      device_labels,
      jnp.asarray(ids),
      jnp.asarray(starts),
      jnp.asarray(k_index),
      window=window,
      k=int(point_k.max()),
      metric=metric,
    )
    radius[group] = np.asarray(exact[0])[: group.size]
    neighbour[group] = np.asarray(exact[1])[: group.size]
  radii = np.empty(num_points)
  radii[order] = radius.reshape(-1)[:num_points]
  neighbours = np.empty(num_points, np.int64)
  # Label-sorted positions back to point indices (padding never is a neighbour
  # of a kept point).
  neighbours[order] = order[
    np.minimum(neighbour.reshape(-1)[:num_points], num_points - 1)
  ]
  return radii, neighbours


def _centred_blocks(
  rows: np.ndarray, keys: np.ndarray, centres: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Route-2 query blocks [nb, B] (-1 padding) and their centres [nb, D].

  Each block holds rows of one centre (`keys` [N] indexes `centres`); its size
  is the one of _CENTRED_BLOCK_SIZES that wastes least on padding.
  """
  rows = rows[np.argsort(keys[rows], kind="stable")]
  block_keys, run_starts, run_sizes = np.unique(
    keys[rows], return_index=True, return_counts=True
  )
  block = min(
    _CENTRED_BLOCK_SIZES,
    key=lambda size: np.sum(-(-run_sizes // size)) * (size + 32),
  )
  blocks_per_run = -(-run_sizes // block)
  first_block = np.concatenate([[0], np.cumsum(blocks_per_run)[:-1]])
  run = np.repeat(np.arange(run_sizes.size), run_sizes)
  rank = np.arange(rows.size) - run_starts[run]
  table = np.full((int(blocks_per_run.sum()), block), -1, np.int64)
  table[first_block[run] + rank // block, rank % block] = rows
  return table, np.repeat(centres[block_keys], blocks_per_run, axis=0)


def _distinct_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(one point index per distinct row of values [N, D], each point's row
  among those)."""
  rows = np.ascontiguousarray(values + 0.0)  # -0.0 and 0.0 alike
  view = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1])))[:, 0]
  _, first, inverse = np.unique(view, return_index=True, return_inverse=True)
  return first, inverse.reshape(-1)


def _blocks_in_order(rows: np.ndarray, block: int) -> np.ndarray:
  """rows as a table [nb, block], -1 padding."""
  return _pad_rows(rows, _round_up(rows.size, block), -1).reshape(-1, block)


def _counts_by_blocks(
  kernel: Callable[..., jax.Array],
  table: np.ndarray,
  limits: np.ndarray,
  neighbours: np.ndarray,
  per_block: tuple[np.ndarray, ...],
  max_group: int,
) -> np.ndarray:
  """Runs kernel(rows, limits, neighbours, *per_block) over groups of blocks.

  table [nb, B] (-1 padding), limits and neighbours [nb, L, B], per_block
  arrays [nb, ...]. Groups have a power-of-two number of blocks (at most
  max_group) so that few shapes compile. Returns counts [nb, L, B].
  """
  num_blocks = table.shape[0]
  group = min(max_group, 1 << max(0, (num_blocks - 1).bit_length()))
  padded = _round_up(num_blocks, group)
  arrays = [
    _pad_rows(np.maximum(table, 0).astype(np.int32), padded),
    _pad_rows(limits.astype(np.float32), padded, -np.inf),
    _pad_rows(neighbours.astype(np.int32), padded, -1),
  ] + [_pad_rows(values, padded) for values in per_block]
  results = [
    kernel(*(jnp.asarray(values[start : start + group]) for values in arrays))
    for start in range(0, padded, group)
  ]
  return np.concatenate([np.asarray(result) for result in results])[:num_blocks]


def _choose_routes(
  trusted_global: np.ndarray, trusted_centred: np.ndarray, kept: np.ndarray
) -> np.ndarray:
  """Route [L, N] of each (labeling, point) count: 1, 2, 3, or 0 (left out).

  A point that needs route 2 for one labeling takes it for all labelings
  where it may (one pass over the candidates serves them all).
  """
  routes = np.where(trusted_global, 1, np.where(trusted_centred, 2, 3))
  needs_centred = np.any(kept & (routes == 2), axis=0)
  centred_for_all = np.all(~kept | trusted_centred, axis=0)
  routes[:, needs_centred & centred_for_all] = 2
  return np.where(kept, routes, 0)


def knn_mutual_informations(
  labelings: list[np.ndarray],
  codes: np.ndarray,
  k: int,
  metric: str,
  *,
  tolerance: float = _MATMUL_TOLERANCE,
  route: int | None = None,
) -> list[float]:
  """Ross (2014) estimates of I(labels; codes) for each labeling, in JAX.

  `route` forces every count with a positive radius through route 1, 2 or 3
  (a testing aid: routes 1 and 2 are accurate only where their error bound
  allows).
  """
  num_points, dims = codes.shape
  gamma = _matmul_error_factor(dims)
  labelings = [np.asarray(labels) for labels in labelings]
  num_labelings = len(labelings)
  sizes = [np.bincount(labels) for labels in labelings]
  point_sizes = [size[labels] for size, labels in zip(sizes, labelings, strict=True)]
  kept = np.stack([point_size > 1 for point_size in point_sizes])
  if not np.all(np.any(kept, axis=1)):
    raise ValueError("Every label occurs once: the k-NN MI estimate is undefined.")
  point_k = [np.minimum(k, point_size - 1) for point_size in point_sizes]
  means = [
    _label_means(labels, codes, size)
    for labels, size in zip(labelings, sizes, strict=True)
  ]
  radii, neighbours = (
    np.stack(values)
    for values in zip(
      *(
        _radii(labels, codes, kk, keep, metric, mean)
        for labels, kk, keep, mean in zip(labelings, point_k, kept, means, strict=True)
      ),
      strict=True,
    )
  )

  # Candidates: the distinct codes, each weighted by the number of kept points
  # that share it, so that exact duplicates lie at one distance (as in the
  # float64 reference) and are excluded together with the k-th neighbour.
  candidate_points, candidate_of = _distinct_rows(codes)
  chunk = min(_CANDIDATE_CHUNK, _round_up(candidate_points.size, 128))
  padded = _round_up(candidate_points.size, chunk)
  num_chunks = padded // chunk

  def chunked(values: np.ndarray) -> jax.Array:
    """Candidate values [U, ...] -> [nc, C, ...], zero padding."""
    values = _pad_rows(values, padded)
    return jnp.asarray(values.reshape(num_chunks, chunk, *values.shape[1:]))

  weights = np.stack(
    [np.bincount(candidate_of, weights=keep, minlength=padded) for keep in kept]
  )
  weights = jnp.asarray(
    weights.reshape(num_labelings, num_chunks, chunk).transpose(1, 0, 2)
  ).astype(jnp.float32)
  hi, lo = _split_float32(codes[candidate_points])
  chunked_hi, chunked_lo = chunked(hi), None if lo is None else chunked(lo)
  candidate_neighbours = candidate_of[neighbours]

  global_codes = (codes - np.mean(codes, axis=0)).astype(np.float32)
  global_norms = np.sum(np.square(global_codes, dtype=np.float64), axis=1)
  # Route-2 centres: each point's label mean under any of the labelings (a
  # point in a tight cluster of one labeling is near that cluster's mean, also
  # when counting for another labeling); the nearest one is used.
  centres = np.concatenate(means).astype(np.float32)
  first_key = np.cumsum([0] + [mean.shape[0] for mean in means])[:-1]
  keys = first_key[:, None] + np.stack(labelings)
  centre_norms = np.stack(
    [np.sum(np.square(codes - centres[key]), axis=1) for key in keys]
  )
  nearest = np.argmin(centre_norms, axis=0)
  points = np.arange(num_points)
  centre_keys, centre_norms = keys[nearest, points], centre_norms[nearest, points]

  if metric == "chebyshev":
    routes = np.where(kept, 3, 0)
  elif route is not None:
    routes = np.where(kept, np.where(radii > 0.0, route, 3), 0)
  else:

    def trusted(norms: np.ndarray) -> np.ndarray:
      return gamma * (3.0 * norms + 2.0 * radii) < tolerance * radii

    routes = _choose_routes(trusted(global_norms), trusted(centre_norms), kept)

  counts = np.zeros((num_labelings, num_points), np.int64)

  def count_route(level, table, kernel, limit_shift, per_block, max_group):
    rows = np.maximum(table, 0)
    wanted = (table >= 0)[:, None, :] & (routes[:, rows] == level).transpose(1, 0, 2)
    limits = radii[:, rows].transpose(1, 0, 2) - limit_shift[rows][:, None, :]
    result = _counts_by_blocks(
      kernel,
      candidate_of[rows],
      np.where(wanted, limits, -np.inf),
      candidate_neighbours[:, rows].transpose(1, 0, 2),
      per_block,
      max_group,
    )
    for index in range(num_labelings):
      chosen = wanted[:, index]
      counts[index, table[chosen]] = result[:, index][chosen]

  level_rows = [np.flatnonzero(np.any(routes == level, axis=0)) for level in (1, 2, 3)]
  no_shift = np.zeros(num_points)
  if level_rows[0].size:
    candidate_codes = chunked(global_codes[candidate_points])
    candidate_norms = chunked(global_norms[candidate_points].astype(np.float32))
    count_route(
      1,
      _blocks_in_order(level_rows[0], _QUERY_BLOCK),
      lambda *args: _counts_by_matmul(candidate_codes, candidate_norms, weights, *args),
      global_norms,
      (),
      _MATMUL_GROUP,
    )
  if level_rows[1].size:
    table, block_centres = _centred_blocks(level_rows[1], centre_keys, centres)
    count_route(
      2,
      table,
      lambda rows, limits, own, block_centres: _counts_by_centred_matmul(
        chunked_hi, chunked_lo, weights, rows, block_centres, limits, own
      ),
      no_shift,
      (block_centres,),
      _CENTRED_GROUP,
    )
  if level_rows[2].size:
    count_route(
      3,
      _blocks_in_order(level_rows[2], _EXACT_BLOCK),
      lambda rows, limits, own: _counts_exact(
        chunked_hi, chunked_lo, weights, rows, limits, own, metric=metric
      ),
      no_shift,
      (),
      _EXACT_GROUP,
    )

  return [
    _ross_estimate(kk[keep], point_size[keep], count[keep])
    for kk, point_size, count, keep in zip(
      point_k, point_sizes, counts, kept, strict=True
    )
  ]
