"""The exact float64 k-NN search of knn_mi.py: the distinct codes split into
k-means cells (`Cells`: each cell's centre, radius and rows, and bounds on
the distance from a query to any member of a cell), and the jitted kernels
that compare queries with candidate rows.

A member b of a cell with centre mu and radius R (its farthest member) lies
within d(a, mu) +- R of any point a, so whole cells can be counted or
skipped. Distances are |a|^2 + |b|^2 - 2 a.b in float64 on codes centred
near the queries, where its error bound 8 (D + 2) eps (|a|^2 + |b|^2) is
below TOLERANCE of the squared radius at stake, else coordinate differences
("euclidean"); chebyshev always takes differences. A row is at distance 0
from itself (exact duplicates are one row).
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.cluster import KMeans

# Rows per k-means cell on average, and at most (bigger cells are split).
ROWS_PER_CELL = 128
CELL = 128
# Candidates per group of the radius search's first pass; candidate counts
# are padded to multiples of it.
GROUP = 32
# The matmul form is used where its error bound is below this share of the
# squared radius (else differences); float64's unit roundoff.
TOLERANCE = 1e-3
EPSILON = 2.0**-52


def distances(queries: jax.Array, candidates: jax.Array, form: str) -> jax.Array:
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


def row_distances(rows, centre, query_rows, candidate_rows, form):
  """distances of rows[query_rows] and rows[candidate_rows] centred at
  `centre`, 0 between a row and itself."""
  values = distances(rows[query_rows] - centre, rows[candidate_rows] - centre, form)
  return jnp.where(query_rows[:, None] == candidate_rows[None, :], 0.0, values)


@functools.partial(jax.jit, static_argnames="metric")
def to_centres(rows, query_rows, centres, *, metric):
  """Distances [Q, K] of rows[query_rows] to the cell centres (not squared)."""
  if metric == "euclidean":
    return jnp.sqrt(distances(rows[query_rows], centres, "matmul"))
  return distances(rows[query_rows], centres, metric)


@functools.partial(jax.jit, static_argnames=("k", "form"))
def kth_same_label(rows, centre, queries, kth, candidates, *, k, form):
  """Distance (squared for euclidean) to, and row of, each query's kth-index
  nearest other point of its label among the candidates. queries and
  candidates [3, n]: rows, point ids and labels (padding: label -2 and -1)."""
  values = row_distances(rows, centre, queries[0], candidates[0], form)
  same = (queries[2][:, None] == candidates[2][None, :]) & (
    queries[1][:, None] != candidates[1][None, :]
  )
  values = jnp.where(same, values, jnp.inf)
  # The k groups of GROUP candidates with the least minima hold the k
  # nearest; the (kth + 1)-th smallest value among them, ties counted, by k
  # passes of a min over the values above the last (XLA CPU's top_k is far
  # slower here).
  # (A last group of infinities is taken once every finite one is.)
  values = jnp.pad(values, ((0, 0), (0, GROUP)), constant_values=jnp.inf)
  groups = values.reshape(values.shape[0], -1, GROUP)
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
  group = jnp.take_along_axis(chosen, (position // GROUP)[:, None], axis=1)[:, 0]
  return radius, candidates[0][group * GROUP + position % GROUP]


@functools.partial(jax.jit, static_argnames="form")
def tile_counts(
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
  values = jax.vmap(functools.partial(distances, form=form))(queries, candidates)
  values = jnp.where(query_rows[:, :, None] == members[:, None, :], 0.0, values)
  query_limits = jnp.where(points >= 0, limits[:, safe], -jnp.inf)
  inside = (values[None] < query_limits[..., None]) & (
    members[None, :, None, :] != neighbours[:, safe][..., None]
  )
  member_weights = jnp.where(members >= 0, weights[:, members], 0.0)
  return jnp.sum(jnp.where(inside, member_weights[:, :, None, :], 0.0), axis=3)


@functools.partial(jax.jit, static_argnames=("form", "chunk"))
def dense_counts(
  rows, weights, centre, query_rows, limits, neighbour_rows, *, form, chunk
):
  """Weight [L, B] of every row strictly nearer to each query than its limit
  (limits [L, B], squared for euclidean; -inf: none), its k-th neighbour's
  row (neighbour_rows [L, B]) left out; rows [U', D] and weights [L, U']
  zero-padded to a multiple of `chunk`, compared chunk by chunk."""
  queries = rows[query_rows] - centre

  def one_chunk(index, counts):
    first = index * chunk
    ids = first + jnp.arange(chunk)
    values = distances(
      queries, jax.lax.dynamic_slice_in_dim(rows, first, chunk) - centre, form
    )
    values = jnp.where(query_rows[:, None] == ids[None, :], 0.0, values)
    inside = (values[None] < limits[..., None]) & (
      ids[None, None, :] != neighbour_rows[..., None]
    )
    chunk_weights = jax.lax.dynamic_slice_in_dim(weights, first, chunk, axis=1)
    return counts + jnp.sum(jnp.where(inside, chunk_weights[:, None, :], 0.0), axis=2)

  start = jnp.zeros(limits.shape, rows.dtype)
  return jax.lax.fori_loop(0, rows.shape[0] // chunk, one_chunk, start)


@functools.partial(jax.jit, static_argnames="metric")
def cell_bounds(
  rows, centres, cell_radii, margin, query_rows, reach, cell_weights, *, metric
):
  """For a block of queries: which cells [B, K] some reach [L, B] (the
  radius, not squared; -inf: none) may cut, and the weight [L, B] of the
  cells wholly inside it that none cuts."""
  centre_distances = to_centres(rows, query_rows, centres, metric=metric)
  lower = centre_distances - cell_radii - margin
  upper = centre_distances + cell_radii + margin
  distance = reach[:, :, None]
  scanned = jnp.any((lower < distance) & (upper >= distance), axis=0)
  inside = (upper < distance) & ~scanned
  return scanned, jnp.einsum(
    "lbk,lk->lb", inside.astype(cell_weights.dtype), cell_weights
  )


def pad(values: np.ndarray, size: int, fill: int) -> np.ndarray:
  return np.pad(values, (0, size - values.size), constant_values=fill)


def round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def bucket(size: int, least: int) -> int:
  return max(least, 1 << max(0, size - 1).bit_length())


def ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  """Concatenation of arange(start, start + size) over the pairs."""
  sizes = sizes.astype(np.int64)
  offsets = np.repeat(starts - np.cumsum(sizes) + sizes, sizes)
  return offsets + np.arange(sizes.sum())


def kmeans(values: np.ndarray, num_clusters: int) -> KMeans:
  """A few Lloyd iterations from a seeded random start (any partition would
  be exact; a tight one prunes more)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # fewer distinct float32 rows than clusters
    return KMeans(
      num_clusters, init="random", n_init=1, max_iter=8, random_state=0
    ).fit(values)


class Cells:
  """The distinct codes, centred, ordered by k-means cell, with each cell's
  centre, radius and row range."""

  def __init__(self, codes: np.ndarray, metric: str, num_cells: int | None):
    unique, row_of = np.unique(codes + 0.0, axis=0, return_inverse=True)
    unique = unique - np.mean(unique, axis=0)
    num_rows = unique.shape[0]
    num_cells = min(num_rows, num_cells or -(-num_rows // ROWS_PER_CELL))
    cell = np.zeros(num_rows, np.int64)
    if num_cells > 1:
      cells = kmeans(unique.astype(np.float32), num_cells)
      # Cells numbered so that neighbours are near in number (blocks of
      # consecutive points then span few regions): by k-means of the centres.
      group = kmeans(cells.cluster_centers_, round(np.sqrt(num_cells))).labels_
      cell = np.argsort(np.argsort(group, kind="stable"))[cells.labels_]
    order = np.argsort(cell, kind="stable")
    self.row_of = np.argsort(order)[row_of.reshape(-1)]
    cell, unique = cell[order], unique[order]
    # Cells of more than CELL rows are split; none is empty.
    rank = np.arange(num_rows) - np.searchsorted(cell, cell)
    _, self.cell_of_row = np.unique(cell * num_rows + rank // CELL, return_inverse=True)
    self.sizes = np.bincount(self.cell_of_row)
    self.starts = np.cumsum(self.sizes) - self.sizes
    centres = np.add.reduceat(unique, self.starts) / self.sizes[:, None]
    offsets = unique - centres[self.cell_of_row]
    if metric == "euclidean":
      spread = np.sqrt(np.sum(offsets * offsets, axis=1))
    else:
      spread = np.max(np.abs(offsets), axis=1)
    self.radii = np.maximum.reduceat(spread, self.starts)
    self.table = np.full((self.sizes.size, CELL), -1)
    self.table[
      self.cell_of_row, np.arange(num_rows) - self.starts[self.cell_of_row]
    ] = np.arange(num_rows)
    # The distances to the centres (|a|^2 + |b|^2 - 2 a.b for euclidean) err
    # by far less than this.
    largest = max(np.max(np.sum(unique**2, 1)), np.max(np.sum(centres**2, 1)))
    self.margin = np.sqrt(64.0 * (codes.shape[1] + 2) * EPSILON * largest)
    self.codes, self.metric = unique, metric
    self.rows, self.centres = jnp.asarray(unique), jnp.asarray(centres)

  def bounds(self, query_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds [Q, K] on the distance from each query to any
    member of each cell."""
    centre_distances = np.asarray(
      to_centres(self.rows, jnp.asarray(query_rows), self.centres, metric=self.metric)
    )
    return (
      centre_distances - self.radii - self.margin,
      centre_distances + self.radii + self.margin,
    )

  def forms(self, matmul_resolves: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The kernel forms and the entries each takes: the matmul form where
    `matmul_resolves` (its error bound is below TOLERANCE of the squared
    radius), coordinate differences elsewhere; chebyshev: its own form."""
    if self.metric != "euclidean":
      return [(self.metric, np.ones(matmul_resolves.shape, bool))]
    return [("matmul", matmul_resolves), ("euclidean", ~matmul_resolves)]

  def centre(self, query_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A block's centre, and which squared radii [...] the matmul form
    resolves for it: its error bound 8 (D + 2) eps (3 rho^2 + 2 r^2) (rho: the
    queries' farthest distance from the centre) below 1e-3 r^2."""
    queries = self.codes[query_rows]
    centre = np.mean(queries, axis=0)
    spread = np.max(np.sum((queries - centre) ** 2, axis=1))
    factor = 8.0 * (queries.shape[1] + 2) * EPSILON

    def resolved(squared: np.ndarray) -> np.ndarray:
      if self.metric != "euclidean":
        return np.zeros(squared.shape, bool)
      return factor * (3.0 * spread + 2.0 * squared) < TOLERANCE * squared

    return centre, resolved
