"""Static frames with known factors for MIG (eq. 8, Table I), and the codes
whose MIG is known, to calibrate the protocol.

Three protocols (docs/evaluation.md, "MIG"):

"per_object" (the default) gives each object of the scene (each sprite of
Moving dSprites, each digit of Moving MNIST) its own support: L_c content
rows of its own block (sprite s's shape, scale[, orientation]) and L_p pose
rows (sprite s's x, y[, orientation]), drawn independently per object. The
joint content rows are the product of the objects' content supports (times
every depth order of dSprites), the joint pose rows the product of their pose
supports, sized so that each group has about 2 sqrt(N) joint labels
(per_object_supports). An encoder that holds one object of two then captures
about half of H(f_c) and of H(f_p), so a one-object oracle scores about 0.5
where a whole-scene oracle scores 1.

"joint" draws a support of L = ceil(2 sqrt(N)) distinct joint content rows
and L distinct joint pose rows. With so few joint rows one object's block
nearly identifies the joint label, so it cannot tell a one-object encoder
from a whole-scene one; kept for comparison. With a single object (Moving
MPI3D) both protocols are this one.

Both then take N distinct (content, pose) pairs of the L_c x L_p grid
without replacement; a pair whose frame repeats an earlier one (dSprites'
depth order is invisible where the sprites do not overlap) is replaced by an
unused pair of the grid. Every joint label then repeats about sqrt(N) / 2
times (the k-NN estimator needs repeats), no two frames are the same, and
content and pose are independent up to the without-replacement draw.

When a group has fewer distinct rows than its support asks (Moving MPI3D's
216 test contents at 20,000 frames per set, rotating dSprites' 6 test rows
per sprite), its support is all of them and the other group's grows so that
the grid still holds N pairs; a num_frames above the number of distinct
frames is an error.

"reference", the authors' protocol, draws every factor i.i.d. over its full
range. With two sprites nearly every joint label is then unique, so its k-NN
terms measure duplicates rather than codes; on MPI3D labels repeat but frames
repeat too. It is kept only for comparison.

Every source draws a frame's whole content (its content factors are never
partial), names its own content columns and its objects' column blocks.
mig_frame_sets reads a dataset's file (MNIST's idx, MPI3D's .npz) once for
all its seeds.
"""

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np

from mipae_jax import config_validation
from mipae_jax.datasets import (
  prepared,
)
from mipae_jax.evaluation import mig_sources

# The protocols of the module docstring; the first is the default.
PROTOCOLS = config_validation.STATIC_MIG_PROTOCOLS


def _distinct_rows(
  count: int, draw: Callable[[int], np.ndarray], attempts: int = 10
) -> np.ndarray:
  """`count` distinct rows of `draw(n)` (n i.i.d. rows), in order of drawing."""
  rows = draw(4 * count)
  for _ in range(attempts):
    _, first = np.unique(rows, axis=0, return_index=True)
    distinct = rows[np.sort(first)]
    if len(distinct) >= count:
      return distinct[:count]
    rows = np.concatenate([distinct, draw(4 * count)])
  raise ValueError(f"The factor space has fewer than {count} distinct rows.")


def joint_supports(
  num_frames: int, num_contents: float = math.inf, num_poses: float = math.inf
) -> tuple[int, int]:
  """(L_c, L_p): ceil(2 sqrt(N)) each, capped at the group's distinct rows
  (num_contents, num_poses); a capped group's partner grows to hold N pairs.

  Raises:
    ValueError: num_frames exceeds num_contents * num_poses distinct frames.
  """
  if num_frames > num_contents * num_poses:
    raise ValueError(
      f"num_frames={num_frames} exceeds the {num_contents} x {num_poses} = "
      f"{num_contents * num_poses} distinct (content, pose) frames of the split."
    )
  support = math.ceil(2 * math.sqrt(num_frames))
  num_c, num_p = min(support, num_contents), min(support, num_poses)
  num_c = min(num_contents, max(num_c, math.ceil(num_frames / num_p)))
  num_p = min(num_poses, max(num_p, math.ceil(num_frames / num_c)))
  return int(num_c), int(num_p)


def per_object_supports(
  num_frames: int,
  num_objects: int,
  num_scene: int = 1,
  num_contents: float = math.inf,
  num_poses: float = math.inf,
) -> tuple[int, int]:
  """(L_c, L_p) per object: about 2 sqrt(N) joint labels in each group, the
  joint content rows being L_c^S * num_scene and the joint pose rows L_p^S
  (S = num_objects), each support capped at the object's distinct rows
  (num_contents, num_poses); then grown, pose first, until the grid holds 2N
  pairs (room to replace frames that repeat).

  Raises:
    ValueError: num_frames exceeds the distinct (content, pose) frames.
  """
  most = num_contents**num_objects * num_scene * num_poses**num_objects
  if num_frames > most:
    raise ValueError(
      f"num_frames={num_frames} exceeds the {most} distinct (content, pose) "
      "frames of the split."
    )
  target = 2 * math.sqrt(num_frames)
  num_c = int(
    min(num_contents, max(2, round((target / num_scene) ** (1 / num_objects))))
  )
  num_p = int(min(num_poses, max(2, round(target ** (1 / num_objects)))))

  def grid() -> float:
    return (num_c**num_objects * num_scene) * num_p**num_objects

  while grid() < min(2 * num_frames, most):
    if num_p < num_poses and (num_p <= num_c or num_c >= num_contents):
      num_p += 1
    else:
      num_c += 1
  return num_c, num_p


@dataclasses.dataclass(frozen=True)
class FrameSets:
  """Independent frame sets of one protocol, each (frames uint8 [N, H, W, C],
  content int [N, Fc], pose int [N, Fp]), what their columns are, and the
  objects' column blocks (None: one object)."""

  sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
  content_factor_names: tuple[str, ...]
  content_is_partial: bool
  objects: mig_sources.Objects | None = None


def _first_of_each_frame(frames: np.ndarray) -> np.ndarray:
  """bool [N]: frame i is the first with its pixels."""
  rows = np.ascontiguousarray(frames.reshape(len(frames), -1))
  _, first = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))), return_index=True)
  keep = np.zeros(len(frames), bool)
  keep[first] = True
  return keep


def _grid_frames(
  rng: np.random.Generator,
  num_frames: int,
  contents: np.ndarray,
  poses: np.ndarray,
  render: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """N distinct frames of (content, pose) pairs of the contents x poses grid.

  Distinct factor pairs can still look the same (dSprites' depth order when
  the sprites do not overlap): each repeated frame is replaced by an unused
  pair of the grid until all N differ.

  Raises:
    ValueError: the grid has fewer than N distinct frames.
  """
  num_c, num_p = len(contents), len(poses)
  pairs = rng.choice(num_c * num_p, size=num_frames, replace=False)
  frames = render(contents[pairs // num_p], poses[pairs % num_p])
  spare = rng.permutation(np.setdiff1d(np.arange(num_c * num_p), pairs))
  while not (keep := _first_of_each_frame(frames)).all():
    repeated = np.flatnonzero(~keep)
    if len(repeated) > len(spare):
      raise ValueError(
        f"The {num_c} x {num_p} grid of MIG frames has fewer than {num_frames} "
        "distinct frames; lower num_frames."
      )
    pairs[repeated], spare = spare[: len(repeated)], spare[len(repeated) :]
    new = pairs[repeated]
    frames[repeated] = render(contents[new // num_p], poses[new % num_p])
  return frames, contents[pairs // num_p], poses[pairs % num_p]


def _joint_frames(
  rng: np.random.Generator, num_frames: int, source: mig_sources.Source
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(frames, content, pose) of the joint protocol (module docstring)."""
  num_c, num_p = joint_supports(num_frames, source.num_contents, source.num_poses)
  contents = _distinct_rows(num_c, functools.partial(source.draw_content, rng))
  poses = _distinct_rows(num_p, functools.partial(source.draw_pose, rng))
  return _grid_frames(rng, num_frames, contents, poses, source.render)


def _product(blocks: list[np.ndarray]) -> np.ndarray:
  """Every combination of one row of each block, int [prod L_i, sum F_i]."""
  grids = np.meshgrid(*[np.arange(len(b)) for b in blocks], indexing="ij")
  return np.concatenate(
    [b[g.reshape(-1)] for b, g in zip(blocks, grids, strict=True)], axis=1
  )


def _scatter(blocks: np.ndarray, columns: tuple[tuple[int, ...], ...], width: int):
  """Places the concatenated blocks' columns at their positions in a row."""
  out = np.zeros((len(blocks), width), blocks.dtype)
  out[:, [c for block in columns for c in block]] = blocks
  return out


def _per_object_frames(
  rng: np.random.Generator, num_frames: int, source: mig_sources.Source
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(frames, content, pose) of the per-object protocol (module docstring)."""
  objects = source.objects
  num_objects = len(objects.names)
  num_c, num_p = per_object_supports(
    num_frames,
    num_objects,
    objects.num_scene,
    source.num_object_contents,
    source.num_object_poses,
  )
  content_blocks = [
    _distinct_rows(num_c, functools.partial(source.draw_object_content, rng))
    for _ in range(num_objects)
  ]
  if objects.scene_columns:
    content_blocks.append(np.arange(objects.num_scene)[:, None])
  pose_blocks = [
    _distinct_rows(num_p, functools.partial(source.draw_object_pose, rng))
    for _ in range(num_objects)
  ]
  content_columns = (*objects.content_columns, objects.scene_columns)
  contents = _scatter(
    _product(content_blocks),
    content_columns if objects.scene_columns else objects.content_columns,
    sum(map(len, content_columns)),
  )
  poses = _scatter(
    _product(pose_blocks),
    objects.pose_columns,
    sum(map(len, objects.pose_columns)),
  )
  return _grid_frames(rng, num_frames, contents, poses, source.render)


def mig_frame_sets(
  dataset_config,
  num_frames: int,
  seeds: list[int],
  protocol: str = PROTOCOLS[0],
  split: str = "test",
) -> FrameSets:
  """One set of `num_frames` single frames with their factors per seed,
  rendered as the videos are.

  Contents are those of `split` (the test split: never seen in training;
  Moving MNIST's are the indices of its digits among MNIST's `split` images);
  poses cover every position (dSprites, MNIST) or arm angle (MPI3D).
  `protocol`: "per_object" or "joint" (module docstring), or "reference"
  (every factor i.i.d., the authors' StaticDSprites and
  static_mpi3d_toy.Mpi3dReal).
  Moving MNIST and MPI3D read their files from dataset_config.manual_dir, as
  their builders do, once for all seeds.
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol={protocol!r}; expected one of {PROTOCOLS}.")
  if dataset_config.name not in mig_sources.SOURCES:
    raise ValueError(
      f"mig_frames renders static frames of {mig_sources.DATASETS} only, not "
      f"{dataset_config.name!r}."
    )
  config = prepared.get_builder(dataset_config).builder_config
  source = mig_sources.SOURCES[dataset_config.name](dataset_config, config, split)
  objects = source.objects
  if objects is not None and len(objects.names) < 2:
    objects = None
  sets = []
  for seed in seeds:
    rng = np.random.default_rng([seed, 8])
    if protocol == "per_object" and objects is not None:
      sets.append(_per_object_frames(rng, num_frames, source))
    elif protocol in ("per_object", "joint"):
      sets.append(_joint_frames(rng, num_frames, source))
    else:
      content = source.draw_content(rng, num_frames)
      pose = source.draw_pose(rng, num_frames)
      sets.append((source.render(content, pose), content, pose))
  return FrameSets(sets, source.content_names, False, objects)


def mig_frames(
  dataset_config,
  num_frames: int,
  seed: int = 0,
  protocol: str = PROTOCOLS[0],
  split: str = "test",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One set of mig_frame_sets: frames uint8 [N, H, W, C], content_factors
  int [N, Fc] and pose_factors int [N, Fp]."""
  return mig_frame_sets(dataset_config, num_frames, [seed], protocol, split).sets[0]


def oracle_codes(
  content: np.ndarray,
  pose: np.ndarray,
  content_dim: int,
  pose_dim: int,
  seed: int = 0,
  noise: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
  """A perfect encoder's (z_c, z_p): each code an injective (random
  Gaussian) embedding of its own factor group's joint label, plus small
  noise. MIG(z_c, z_p) is the ceiling; MIG(z_p, z_c) swapped is the floor."""
  rng = np.random.default_rng([seed, 9])

  def embed(factors: np.ndarray, dim: int) -> np.ndarray:
    _, labels = np.unique(factors, axis=0, return_inverse=True)
    table = rng.normal(size=(labels.max() + 1, dim))
    codes = table[labels.reshape(-1)]
    return codes + noise * rng.normal(size=codes.shape)

  return embed(content, content_dim), embed(pose, pose_dim)
