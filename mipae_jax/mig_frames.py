"""Static frames with known factors for MIG (eq. 8, Table I), and the codes
whose MIG is known, to calibrate the protocol.

The calibrated protocol draws a support of L = ceil(2 sqrt(N)) distinct
content rows and L distinct pose rows, then N distinct (content, pose) pairs
of the L_c x L_p grid without replacement; a pair whose frame repeats an
earlier one (dSprites' depth order is invisible where the sprites do not
overlap) is replaced by an unused pair of the grid. Every joint label then
repeats about N / L = sqrt(N) / 2 times (the k-NN estimator needs repeats),
no two frames are the same, and content and pose are independent up to the
without-replacement draw. H(f_c) = log L_c, H(f_p) = log L_p.

When a group has fewer than L distinct rows (Moving MPI3D's 216 test
contents at 20,000 frames per set, rotating dSprites' 72 test content rows),
its support is all of them and the other group's grows to ceil(N / L_c) if
needed, so that the grid still holds N pairs (calibrated_supports); a
num_frames above the number of distinct frames is an error.

The authors' protocol draws every factor i.i.d. over its full range. With
two sprites nearly every joint label is then unique, so its k-NN terms
measure duplicates rather than codes; on MPI3D labels repeat but frames
repeat too. It is kept only for comparison.

Every source draws a frame's whole content (its content factors are never
partial) and names its own content columns. mig_frame_sets reads a dataset's
file (MNIST's idx, MPI3D's .npz) once for all its seeds.
"""

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np

from mipae_jax import input_pipeline
from mipae_jax.datasets import moving_dsprites, moving_mnist, moving_mpi3d

# The authors' protocol ("reference") or the calibrated one (module docstring).
PROTOCOLS = ("calibrated", "reference")


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


def calibrated_supports(
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


Draw = Callable[[np.random.Generator, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class _Source:
  """i.i.d. factor rows of one split (draw(rng, n)), how many distinct rows
  each group has, the names of the content columns and the renderer of the
  dataset's videos."""

  draw_content: Draw
  draw_pose: Draw
  num_contents: int
  num_poses: int
  content_names: tuple[str, ...]
  render: Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class FrameSets:
  """Independent frame sets of one protocol, each (frames uint8 [N, H, W, C],
  content int [N, Fc], pose int [N, Fp]), and what their columns are."""

  sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
  content_factor_names: tuple[str, ...]
  content_is_partial: bool


def _first_of_each_frame(frames: np.ndarray) -> np.ndarray:
  """bool [N]: frame i is the first with its pixels."""
  rows = np.ascontiguousarray(frames.reshape(len(frames), -1))
  _, first = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))), return_index=True)
  keep = np.zeros(len(frames), bool)
  keep[first] = True
  return keep


def _calibrated_frames(
  rng: np.random.Generator, num_frames: int, source: _Source
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(frames, content, pose) of the calibrated protocol (module docstring).

  Distinct factor pairs can still look the same (dSprites' depth order when
  the sprites do not overlap): each repeated frame is replaced by an unused
  pair of the grid until all N differ.

  Raises:
    ValueError: the grid has fewer than N distinct frames.
  """
  num_c, num_p = calibrated_supports(num_frames, source.num_contents, source.num_poses)
  contents = _distinct_rows(num_c, functools.partial(source.draw_content, rng))
  poses = _distinct_rows(num_p, functools.partial(source.draw_pose, rng))
  pairs = rng.choice(num_c * num_p, size=num_frames, replace=False)
  frames = source.render(contents[pairs // num_p], poses[pairs % num_p])
  spare = rng.permutation(np.setdiff1d(np.arange(num_c * num_p), pairs))
  while not (keep := _first_of_each_frame(frames)).all():
    repeated = np.flatnonzero(~keep)
    if len(repeated) > len(spare):
      raise ValueError(
        f"The {num_c} x {num_p} calibrated grid has fewer than {num_frames} "
        "distinct frames; lower num_frames."
      )
    pairs[repeated], spare = spare[: len(repeated)], spare[len(repeated) :]
    new = pairs[repeated]
    frames[repeated] = source.render(contents[new // num_p], poses[new % num_p])
  return frames, contents[pairs // num_p], poses[pairs % num_p]


def _uniform_columns(sizes) -> Draw:
  return lambda rng, n: np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


def _dsprites_source(dataset_config, config, split: str) -> _Source:
  """Content rows: each sprite's block from `split`'s contents, any depth
  order; pose rows: every column uniform."""
  allowed = moving_dsprites.split_contents(config)[split]
  content_sizes, pose_sizes = moving_dsprites.factor_sizes(config)
  num_orders = content_sizes[-1] if config.num_sprites >= 2 else 1

  def draw_content(rng: np.random.Generator, n: int) -> np.ndarray:
    blocks = [
      allowed[rng.integers(0, len(allowed), n)] for _ in range(config.num_sprites)
    ]
    if config.num_sprites >= 2:
      blocks.append(rng.integers(0, num_orders, (n, 1)))
    return np.concatenate(blocks, axis=1)

  return _Source(
    draw_content,
    _uniform_columns(pose_sizes),
    num_contents=len(allowed) ** config.num_sprites * num_orders,
    num_poses=math.prod(pose_sizes),
    content_names=tuple(config.content_factor_names),
    render=lambda content, pose: moving_dsprites.render_frames(
      config, content, pose, manual_dir=dataset_config.manual_dir
    ),
  )


def _mpi3d_source(dataset_config, config, split: str) -> _Source:
  """Content rows: `split`'s content combinations (as the builder splits
  the file's factor sizes); pose rows: both degrees of freedom uniform."""
  images = moving_mpi3d.images_in(dataset_config.manual_dir)
  content_sizes, pose_sizes = moving_mpi3d.factor_sizes(config, images)
  allowed = moving_mpi3d.split_contents(config, content_sizes)[split]
  return _Source(
    lambda rng, n: allowed[rng.integers(0, len(allowed), n)],
    _uniform_columns(pose_sizes),
    num_contents=len(allowed),
    num_poses=math.prod(pose_sizes),
    content_names=tuple(moving_mpi3d.CONTENT_FACTOR_NAMES),
    render=lambda content, pose: moving_mpi3d.render_frames(
      config, content, pose, images
    ),
  )


def _mnist_source(dataset_config, config, split: str) -> _Source:
  """Content rows: the MNIST image index of each digit in `split`'s images
  (`digitD_image`: the whole content, where the videos' `digitD_label` is a
  function of it); pose rows: every corner coordinate uniform. Reads the idx
  files from the manual dir, as the builder does."""
  images, _ = moving_mnist.load_mnist_in(dataset_config.manual_dir, split)
  pose_sizes = [moving_mnist.MAX_POSITION + 1] * (2 * config.num_digits)

  def render(content: np.ndarray, pose: np.ndarray) -> np.ndarray:
    used, rows = np.unique(content, return_inverse=True)
    digits = moving_mnist.resize_digits(images[used])[rows.reshape(content.shape)]
    corners = pose.reshape(len(pose), config.num_digits, 2)
    return np.concatenate(
      [
        moving_mnist.render_video(
          digits[i], corners[i : i + 1, :, 0], corners[i : i + 1, :, 1], config.colour
        )
        for i in range(len(content))
      ]
    )

  return _Source(
    _uniform_columns([len(images)] * config.num_digits),
    _uniform_columns(pose_sizes),
    num_contents=len(images) ** config.num_digits,
    num_poses=math.prod(pose_sizes),
    content_names=tuple(f"digit{d}_image" for d in range(config.num_digits)),
    render=render,
  )


_SOURCES = {
  "moving_dsprites": _dsprites_source,
  "moving_mnist": _mnist_source,
  "moving_mpi3d": _mpi3d_source,
}
# The datasets mig_frames renders static frames of.
DATASETS = tuple(_SOURCES)


def mig_frame_sets(
  dataset_config,
  num_frames: int,
  seeds: list[int],
  protocol: str = "calibrated",
  split: str = "test",
) -> FrameSets:
  """One set of `num_frames` single frames with their factors per seed,
  rendered as the videos are.

  Contents are those of `split` (the test split: never seen in training;
  Moving MNIST's are the indices of its digits among MNIST's `split` images);
  poses cover every position (dSprites, MNIST) or arm angle (MPI3D).
  `protocol`: "calibrated" (module docstring) or "reference" (every factor
  i.i.d., the authors' StaticDSprites and static_mpi3d_toy.Mpi3dReal).
  Moving MNIST and MPI3D read their files from dataset_config.manual_dir, as
  their builders do, once for all seeds.
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol={protocol!r}; expected one of {PROTOCOLS}.")
  if dataset_config.name not in _SOURCES:
    raise ValueError(
      f"mig_frames renders static frames of {DATASETS} only, not "
      f"{dataset_config.name!r}."
    )
  config = input_pipeline.get_builder(dataset_config).builder_config
  source = _SOURCES[dataset_config.name](dataset_config, config, split)
  sets = []
  for seed in seeds:
    rng = np.random.default_rng([seed, 8])
    if protocol == "calibrated":
      sets.append(_calibrated_frames(rng, num_frames, source))
    else:
      content = source.draw_content(rng, num_frames)
      pose = source.draw_pose(rng, num_frames)
      sets.append((source.render(content, pose), content, pose))
  return FrameSets(sets, source.content_names, content_is_partial=False)


def mig_frames(
  dataset_config,
  num_frames: int,
  seed: int = 0,
  protocol: str = "calibrated",
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
