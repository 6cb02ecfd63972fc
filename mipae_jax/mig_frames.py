"""Static frames with known factors for MIG (eq. 8, Table I), and the codes
whose MIG is known, to calibrate the protocol.

The calibrated protocol draws a support of L = ceil(2 sqrt(N)) distinct
content rows and L distinct pose rows, then N distinct (content, pose) pairs
of the L x L grid without replacement. Every joint label then repeats about
N / L = sqrt(N) / 2 times (the k-NN estimator needs repeats), no two frames
are the same, and content and pose are independent up to the
without-replacement draw. H(f_c) = H(f_p) = log L.

The authors' protocol draws every factor i.i.d. over its full range. With
two sprites nearly every joint label is then unique, so its k-NN terms
measure duplicates rather than codes; it is kept only for comparison.
"""

import math
from collections.abc import Callable

import numpy as np

from mipae_jax import input_pipeline
from mipae_jax.datasets import moving_dsprites

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


def calibrated_factors(
  rng: np.random.Generator,
  num_frames: int,
  draw_content: Callable[[int], np.ndarray],
  draw_pose: Callable[[int], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
  """(content [N, Fc], pose [N, Fp]) of the calibrated protocol."""
  support = math.ceil(2 * math.sqrt(num_frames))
  contents = _distinct_rows(support, draw_content)
  poses = _distinct_rows(support, draw_pose)
  pairs = rng.choice(support * support, size=num_frames, replace=False)
  return contents[pairs // support], poses[pairs % support]


def _dsprites_draws(config, rng: np.random.Generator, split: str):
  """i.i.d. content rows (each sprite's block from `split`'s contents, any
  depth order) and pose rows (every column uniform) of a dSprites config."""
  allowed = moving_dsprites.split_contents(config)[split]
  content_sizes, pose_sizes = moving_dsprites.factor_sizes(config)

  def draw_content(n: int) -> np.ndarray:
    blocks = [
      allowed[rng.integers(0, len(allowed), n)] for _ in range(config.num_sprites)
    ]
    if config.num_sprites >= 2:
      blocks.append(rng.integers(0, content_sizes[-1], (n, 1)))
    return np.concatenate(blocks, axis=1)

  def draw_pose(n: int) -> np.ndarray:
    return np.stack([rng.integers(0, s, n) for s in pose_sizes], axis=1)

  return draw_content, draw_pose


def mig_frames(
  dataset_config,
  num_frames: int,
  seed: int = 0,
  protocol: str = "calibrated",
  split: str = "test",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Single frames for MIG with their factors, rendered as the videos are.

  Contents are those of `split` (the test split: never seen in training);
  poses cover every position. `protocol`: "calibrated" (module docstring) or
  "reference" (every factor i.i.d., the authors' StaticDSprites).

  Returns:
    frames uint8 [N, H, W, C], content_factors int [N, Fc] and
    pose_factors int [N, Fp], in the columns of the dataset's factor names.
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol={protocol!r}; expected one of {PROTOCOLS}.")
  if dataset_config.name != "moving_dsprites":
    raise ValueError(
      f"mig_frames renders static frames of moving_dsprites only, not "
      f"{dataset_config.name!r}."
    )
  config = input_pipeline.get_builder(dataset_config).builder_config
  rng = np.random.default_rng([seed, 8])
  draw_content, draw_pose = _dsprites_draws(config, rng, split)
  if protocol == "calibrated":
    content, pose = calibrated_factors(rng, num_frames, draw_content, draw_pose)
  else:
    content, pose = draw_content(num_frames), draw_pose(num_frames)
  frames = moving_dsprites.render_frames(
    config, content, pose, manual_dir=dataset_config.manual_dir
  )
  return frames, content, pose


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
