"""Moving dSprites: 1-3 dSprites shapes bouncing in 64x64x3 frames.

Sprite n is drawn in colour channel n. Per video each sprite has a fixed
shape and scale; its position moves on the 32x32 dSprites grid with an
integer velocity in [-2, 2] per axis, reflected at the walls by the authors'
rule (motion.reflect_before_drawing). Its orientation turns by a per-video
step in [-2, 2] each frame, wrapping mod 40 ("rotating" configs, the default:
orientation is pose), or is fixed per video ("fixed" configs: orientation is
content).

Sprites occlude each other, as in the authors' loader: per video a depth
order (a permutation of the sprites, front to back) is drawn uniformly, and
each sprite's channel is zeroed wherever a sprite in front of it is lit. The
order is the last content factor, "depth_order" (num_sprites >= 2 only): the
index of the permutation in depth_orders(num_sprites), lexicographic, so with
two sprites it is the front sprite itself (the authors' `front`).

Content combinations are split as in the authors' split files, so the test
split holds only combinations never seen in training: each sprite's (shape,
scale, orientation) when fixed (500 train / 220 test of 720), (shape, scale)
when rotating (12 / 6 of 18). The tables are embedded in
dsprites_splits.py and stored in the metadata ("train_contents",
"test_contents"); the depth order is drawn from all orders in both splits.

render_frames draws single frames from given factors with the code that draws
the videos (MIG's factor-sampled frames); factor_sizes gives each factor
column's number of values.

Frames come from the embedded renderer (dsprites_shapes, the default) or from
the official dSprites .npz ("*_npz" configs, manual dir), indexed as the
authors' loader does.
"""

import dataclasses
import itertools
import math
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mipae_jax.datasets import common, dsprites_official, dsprites_splits, motion
from mipae_jax.datasets import dsprites_shapes as shapes

VELOCITY_RANGE = (-2, 2)
ROTATION_STEP_RANGE = (-2, 2)
MAX_POSITION = shapes.NUM_POSITIONS - 1
DEPTH_ORDER_FACTOR = "depth_order"


@dataclasses.dataclass(eq=False)
class MovingDspritesConfig(common.MovingVideoConfig):
  """Moving dSprites options.

  Attributes:
    num_sprites: sprites per video, one per colour channel (1 to 3).
    rotating: orientation turns every frame (pose) instead of staying fixed
      (content).
    source: "renderer" (embedded, no download) or "npz" (official dSprites
      .npz from the manual dir).
  """

  num_sprites: int = 2
  rotating: bool = False
  source: str = "renderer"

  def __post_init__(self):
    super().__post_init__()
    if not 1 <= self.num_sprites <= 3:
      raise ValueError(
        f"Config {self.name!r}: num_sprites={self.num_sprites} must be in "
        "[1, 3], one sprite per colour channel."
      )
    if self.source not in ("renderer", "npz"):
      raise ValueError(
        f"Config {self.name!r}: source={self.source!r} must be 'renderer' or 'npz'."
      )

  @property
  def sprite_content_factor_names(self) -> tuple[str, ...]:
    """Content factors of one sprite (the combinations dsprites_splits splits)."""
    return ("shape", "scale") if self.rotating else ("shape", "scale", "orientation")

  @property
  def sprite_pose_factor_names(self) -> tuple[str, ...]:
    """Pose factors of one sprite."""
    return ("x", "y", "orientation") if self.rotating else ("x", "y")

  @property
  def content_factor_names(self) -> tuple[str, ...]:
    """The content_factors columns: sprite0_shape, ..., then depth_order (S >= 2)."""
    names = [
      f"sprite{s}_{n}"
      for s in range(self.num_sprites)
      for n in self.sprite_content_factor_names
    ]
    if self.num_sprites >= 2:
      names.append(DEPTH_ORDER_FACTOR)
    return tuple(names)

  @property
  def pose_factor_names(self) -> tuple[str, ...]:
    """The pose_factors columns: sprite0_x, sprite0_y[, sprite0_orientation], ..."""
    return tuple(
      f"sprite{s}_{n}"
      for s in range(self.num_sprites)
      for n in self.sprite_pose_factor_names
    )


_FACTOR_SIZES = {
  "shape": shapes.NUM_SHAPES,
  "scale": shapes.NUM_SCALES,
  "orientation": shapes.NUM_ORIENTATIONS,
  "x": shapes.NUM_POSITIONS,
  "y": shapes.NUM_POSITIONS,
}


def factor_sizes(
  config: MovingDspritesConfig,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Returns the number of values of each content and each pose column.

  Columns are those of config.content_factor_names and pose_factor_names; a
  column with n values takes the values 0 .. n - 1. Not every content row is
  in every split: each sprite's block must be in the split's contents
  (dsprites_splits.split_contents).
  """
  content = [_FACTOR_SIZES[n] for n in config.sprite_content_factor_names]
  content *= config.num_sprites
  if config.num_sprites >= 2:
    content.append(math.factorial(config.num_sprites))
  pose = [_FACTOR_SIZES[n] for n in config.sprite_pose_factor_names]
  return tuple(content), tuple(pose * config.num_sprites)


def depth_orders(num_sprites: int) -> np.ndarray:
  """Returns every depth order, int32 [S!, S], each row the sprites front to back.

  Rows are the permutations of range(S) in lexicographic order; the
  depth_order factor indexes them, so depth_orders(S)[k, 0] is in front.
  """
  return np.array(list(itertools.permutations(range(num_sprites))), np.int32)


def occlude(frames: np.ndarray, order: np.ndarray) -> np.ndarray:
  """Zeroes each sprite's channel where a sprite in front of it is lit.

  Args:
    frames: uint8 [T, 64, 64, 3], sprite s alone in channel s.
    order: int [T, S], each frame's sprites front to back (depth_orders rows).

  Returns:
    New uint8 [T, 64, 64, 3] frames.
  """
  order = np.asarray(order)
  lit = frames > 0
  occluded = frames.copy()
  for front_to_back in np.unique(order, axis=0):
    rows = (order == front_to_back).all(axis=1)
    covered = np.zeros((rows.sum(), *frames.shape[1:3]), bool)
    for sprite in front_to_back:
      occluded[rows, :, :, sprite] = np.where(covered, 0, frames[rows, :, :, sprite])
      covered |= lit[rows, :, :, sprite]
  return occluded


def sample_video(
  config: MovingDspritesConfig, split: str, index: int, contents: np.ndarray
) -> dict[str, np.ndarray]:
  """Samples the factors of one video.

  Args:
    config: the dataset config.
    split: "train" or "test".
    index: the video's index within the split.
    contents: the split's allowed content combinations (dsprites_splits.split_contents).

  Returns:
    "content" int32 [S, 2 or 3] (shape, scale[, orientation]) per sprite;
    "orientations", "xs", "ys" int32 [T, S]; "velocities" int32 [T, S, 2];
    "rotation_steps" int32 [S] (0 when fixed); "depth_order" int32 [], the
    row of depth_orders(S) (0 with one sprite).
  """
  rng = common.video_rng(config.seed, split, index)
  num_sprites = config.num_sprites
  content = contents[rng.integers(0, len(contents), size=num_sprites)]
  start = rng.integers(0, MAX_POSITION + 1, size=(num_sprites, 2))
  velocity = motion.sample_velocities(rng, (num_sprites, 2), *VELOCITY_RANGE)
  positions, velocities = motion.reflect_before_drawing(
    start, velocity, config.seq_len, MAX_POSITION
  )
  if config.rotating:
    start_orientation = rng.integers(0, shapes.NUM_ORIENTATIONS, size=num_sprites)
    steps = motion.sample_velocities(rng, (num_sprites,), *ROTATION_STEP_RANGE)
    orientations = motion.rotate(
      start_orientation, steps, config.seq_len, shapes.NUM_ORIENTATIONS
    )
  else:
    steps = np.zeros(num_sprites, np.int32)
    orientations = np.broadcast_to(content[:, 2], (config.seq_len, num_sprites))
  depth_order = rng.integers(0, math.factorial(num_sprites)) if num_sprites > 1 else 0
  return {
    "content": content.astype(np.int32),
    "orientations": np.asarray(orientations, np.int32),
    "xs": positions[..., 0],
    "ys": positions[..., 1],
    "velocities": velocities,
    "rotation_steps": steps,
    "depth_order": np.int32(depth_order),
  }


def pose_and_content(
  config: MovingDspritesConfig, sample: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
  """Returns (content_factors [Fc], pose_factors [T, Fp]) of a sample.

  Columns are those of config.content_factor_names and pose_factor_names.
  """
  pose = [sample["xs"], sample["ys"]]
  if config.rotating:
    pose.append(sample["orientations"])
  pose_factors = np.stack(pose, -1).reshape(config.seq_len, -1)
  content = [sample["content"].reshape(-1)]
  if config.num_sprites >= 2:
    content.append(sample["depth_order"].reshape(1))
  return np.concatenate(content).astype(np.int32), pose_factors


def render_frames(
  config: MovingDspritesConfig,
  content: np.ndarray,
  pose: np.ndarray,
  manual_dir: os.PathLike | str | None = None,
  *,
  images: np.ndarray | None = None,
) -> np.ndarray:
  """Renders single frames from their factors, exactly as video frames are.

  The builder renders every video with this function, so a frame re-renders
  from its stored content_factors and pose_factors row.

  Args:
    config: the dataset config.
    content: int [N, Fc], columns in the order of config.content_factor_names
      (per sprite shape, scale[, orientation], then depth_order if S >= 2).
    pose: int [N, Fp], columns in the order of config.pose_factor_names (per
      sprite x, y[, orientation]).
    manual_dir: "npz" configs: directory holding the official dSprites .npz,
      read when `images` is not given. Ignored by "renderer" configs.
    images: "npz" configs: the official images (dsprites_official), so
      repeated calls do not reload the 3 GB file.

  Returns:
    uint8 [N, 64, 64, 3] frames with values in {0, 255}.

  Raises:
    ValueError: wrong shapes, or a factor outside factor_sizes(config).
    FileNotFoundError: an "npz" config with neither images nor the file.
  """
  content_sizes, pose_sizes = factor_sizes(config)
  content = common.check_factors("content", content, content_sizes)
  pose = common.check_factors("pose", pose, pose_sizes)
  if len(content) != len(pose):
    raise ValueError(f"content has {len(content)} rows but pose has {len(pose)}.")
  num_frames, num_sprites = len(content), config.num_sprites
  sprite_content = content[:, : len(content_sizes) - (num_sprites > 1)].reshape(
    num_frames, num_sprites, -1
  )
  sprite_pose = pose.reshape(num_frames, num_sprites, -1)
  orientations = sprite_pose[..., 2] if config.rotating else sprite_content[..., 2]
  factors = (
    sprite_content[..., :2],
    orientations,
    sprite_pose[..., 0],
    sprite_pose[..., 1],
  )
  if config.source == "npz":
    if images is None:
      images = dsprites_official.images_in(manual_dir)
    frames = dsprites_official.official_frames(images, *factors)
  else:
    frames = shapes.render_frames(*factors)
  if num_sprites > 1:
    frames = occlude(frames, depth_orders(num_sprites)[content[:, -1]])
  return frames


class MovingDsprites(common.StoredStream, tfds.core.GeneratorBasedBuilder):
  """Moving dSprites with (shape, scale[, orientation]) content, grid positions as pose."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
    "1.0.0": "Initial release.",
    "1.1.0": (
      "Sprites occlude each other in a per-video depth order (each sprite is "
      "hidden where a sprite in front of it is lit, as in the authors' "
      "loader); the order is a last content factor, depth_order. Motion, "
      "shapes and the content split are those of 1.0.0."
    ),
    "2.0.0": (
      "The official dSprites geometry (sprites about twice the area, centres "
      "16-48 px), the authors' content split files and their bounce rule "
      "(clamp and reflect before drawing); 'rotating' is the default config."
    ),
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f"Only the *_npz configs need a manual dir: put {dsprites_official.DSPRITES_FILE} "
    f"(from {dsprites_official.DSPRITES_URL}) in it."
  )
  BUILDER_CONFIGS = [
    MovingDspritesConfig(
      name="fixed",
      description="Two sprites, orientation fixed per video, embedded renderer.",
      num_train=20_000,
      num_test=2_000,
    ),
    MovingDspritesConfig(
      name="rotating",
      description="Two sprites turning by a per-video step, embedded renderer.",
      rotating=True,
      num_train=20_000,
      num_test=2_000,
    ),
    MovingDspritesConfig(
      name="fixed_npz",
      description="As 'fixed', frames from the official dSprites .npz.",
      source="npz",
      num_train=20_000,
      num_test=2_000,
    ),
    MovingDspritesConfig(
      name="rotating_npz",
      description="As 'rotating', frames from the official dSprites .npz.",
      rotating=True,
      source="npz",
      num_train=20_000,
      num_test=2_000,
    ),
  ]
  # "<name>_2k" (2,000 train / 200 test videos): built in seconds on a GPU
  # host, for launch/device_check.sh.
  BUILDER_CONFIGS += [common.small_variant(c) for c in BUILDER_CONFIGS] + [
    common.small_variant(c, "2k", 2_000, 200) for c in BUILDER_CONFIGS
  ]
  DEFAULT_CONFIG_NAME = "rotating"

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    num_sprites = config.num_sprites
    contents = dsprites_splits.split_contents(config.rotating)
    content_sizes, pose_sizes = factor_sizes(config)
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=common.video_features(
        seq_len=config.seq_len,
        channels=3,
        num_content=len(content_sizes),
        num_pose=len(pose_sizes),
        extra={
          "velocities": tfds.features.Tensor(
            shape=(config.seq_len, 2 * num_sprites), dtype=np.int32
          ),
          "rotation_steps": tfds.features.Tensor(shape=(num_sprites,), dtype=np.int32),
        },
      ),
      homepage="https://github.com/deepmind/dsprites-dataset",
      metadata=common.factor_metadata(
        content_names=config.content_factor_names,
        content_sizes=content_sizes,
        pose_names=config.pose_factor_names,
        pose_sizes=pose_sizes,
        content_is_partial=False,
        content_combination_names=list(config.sprite_content_factor_names),
        train_contents=contents["train"].tolist(),
        test_contents=contents["test"].tolist(),
        depth_orders=depth_orders(num_sprites).tolist(),
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    images = None
    if self.builder_config.source == "npz":
      images = dsprites_official.images_in(common.manual_dir_of(dl_manager))
    return {
      split: self._generate_examples(split, self.example_fn(split, images=images))
      for split in ("train", "test")
    }

  def example_fn(
    self,
    split: str,
    manual_dir: epath.PathLike | None = None,
    seq_len: int | None = None,
    *,
    images: np.ndarray | None = None,
  ) -> common.ExampleFn:
    """index -> example `index` of `split`, as the build stores it.

    Indices past the split's size continue the stream (fresh videos of the
    split's contents). `seq_len`: only the first frames. "npz" configs read
    the official images from `manual_dir` unless `images` is given.
    """
    config = common.with_seq_len(self.builder_config, seq_len)
    if config.source == "npz" and images is None:
      images = dsprites_official.images_in(manual_dir)
    contents = dsprites_splits.split_contents(config.rotating)[split]

    def example(index: int) -> dict[str, np.ndarray]:
      sample = sample_video(config, split, index, contents)
      content_factors, pose_factors = pose_and_content(config, sample)
      video = render_frames(
        config,
        np.broadcast_to(content_factors, (config.seq_len, len(content_factors))),
        pose_factors,
        images=images,
      )
      return {
        "video": video,
        "content_factors": content_factors,
        "pose_factors": pose_factors,
        "id": index,
        "velocities": sample["velocities"].reshape(config.seq_len, -1),
        "rotation_steps": sample["rotation_steps"],
      }

    return example
