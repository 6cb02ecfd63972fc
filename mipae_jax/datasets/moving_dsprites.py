"""Moving dSprites: 1-3 dSprites shapes bouncing in 64x64x3 frames.

Sprite n is drawn in colour channel n. Per video each sprite has a fixed
shape and scale; its position moves on the 32x32 dSprites grid with an
integer velocity in [-2, 2] per axis and mirror reflection (motion.bounce).
Its orientation is fixed per video ("fixed" configs, orientation is content)
or turns by a per-video step in [-2, 2] each frame, wrapping mod 40
("rotating" configs, orientation is pose).

Content combinations are split so the test split holds only combinations
never seen in training: (shape, scale, orientation) when fixed (500 train /
220 test of 720), (shape, scale) when rotating (12 / 6 of 18, two held-out
scales per shape, each scale held out for exactly one shape). The split is
seeded and stored in the metadata ("train_contents", "test_contents").

Frames come from the embedded renderer (dsprites_shapes, the default) or from
the official dSprites .npz ("*_npz" configs, manual dir).
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from mipae_jax.datasets import common, motion
from mipae_jax.datasets import dsprites_shapes as shapes

VELOCITY_RANGE = (-2, 2)
ROTATION_STEP_RANGE = (-2, 2)
MAX_POSITION = shapes.NUM_POSITIONS - 1
DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_URL = (
  f"https://github.com/deepmind/dsprites-dataset/raw/master/{DSPRITES_FILE}"
)
DSPRITES_IMAGES_SHAPE = (
  shapes.NUM_SHAPES
  * shapes.NUM_SCALES
  * shapes.NUM_ORIENTATIONS
  * shapes.NUM_POSITIONS
  * shapes.NUM_POSITIONS,
  shapes.CANVAS_SIZE,
  shapes.CANVAS_SIZE,
)
_HOW_TO_OBTAIN = f"download it from {DSPRITES_URL}"


@dataclasses.dataclass(eq=False)
class MovingDspritesConfig(common.MovingVideoConfig):
  """Moving dSprites options.

  Attributes:
    num_sprites: sprites per video, one per colour channel (1 to 3).
    rotating: orientation turns every frame (pose) instead of staying fixed
      (content).
    source: "renderer" (embedded, no download) or "npz" (official dSprites
      .npz from the manual dir).
    num_test_contents: (shape, scale, orientation) combinations of the 720
      held out for the test split when orientation is fixed. Rotating
      configs hold out 6 of the 18 (shape, scale) pairs, two per shape.
  """

  num_sprites: int = 2
  rotating: bool = False
  source: str = "renderer"
  num_test_contents: int = 220

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
    num_contents = len(all_contents(rotating=False))
    if not 1 <= self.num_test_contents < num_contents:
      raise ValueError(
        f"Config {self.name!r}: num_test_contents={self.num_test_contents} "
        f"must be in [1, {num_contents - 1}]."
      )

  @property
  def content_factor_names(self) -> tuple[str, ...]:
    """Per-sprite content factors."""
    return ("shape", "scale") if self.rotating else ("shape", "scale", "orientation")

  @property
  def pose_factor_names(self) -> tuple[str, ...]:
    """Per-sprite pose factors."""
    return ("x", "y", "orientation") if self.rotating else ("x", "y")


_FACTOR_SIZES = {
  "shape": shapes.NUM_SHAPES,
  "scale": shapes.NUM_SCALES,
  "orientation": shapes.NUM_ORIENTATIONS,
  "x": shapes.NUM_POSITIONS,
  "y": shapes.NUM_POSITIONS,
}


def all_contents(rotating: bool) -> np.ndarray:
  """Returns every content combination, int [N, 2 or 3], in lexicographic order."""
  sizes = [shapes.NUM_SHAPES, shapes.NUM_SCALES]
  if not rotating:
    sizes.append(shapes.NUM_ORIENTATIONS)
  return np.stack(np.unravel_index(np.arange(np.prod(sizes)), sizes), -1)


def split_contents(config: MovingDspritesConfig) -> dict[str, np.ndarray]:
  """Returns the seeded disjoint content combinations of each split.

  Fixed orientation: a random `num_test_contents` (default 220) of the 720
  (shape, scale, orientation) combinations are test-only. Rotating: scales
  are permuted and shape s holds out scales perm[2s], perm[2s + 1], so every
  shape and every scale still appears in training.
  """
  rng = np.random.default_rng([config.seed, 2])
  contents = all_contents(config.rotating)
  if config.rotating:
    permutation = rng.permutation(shapes.NUM_SCALES)
    held_out = {
      (shape, int(scale))
      for shape in range(shapes.NUM_SHAPES)
      for scale in permutation[2 * shape : 2 * shape + 2]
    }
    is_test = np.array([tuple(c) in held_out for c in contents.tolist()])
  else:
    is_test = np.zeros(len(contents), bool)
    is_test[rng.permutation(len(contents))[: config.num_test_contents]] = True
  return {"train": contents[~is_test], "test": contents[is_test]}


def sample_video(
  config: MovingDspritesConfig, split: str, index: int, contents: np.ndarray
) -> dict[str, np.ndarray]:
  """Samples the factors of one video.

  Args:
    config: the dataset config.
    split: "train" or "test".
    index: the video's index within the split.
    contents: the split's allowed content combinations (split_contents).

  Returns:
    "content" int32 [S, 2 or 3] (shape, scale[, orientation]) per sprite;
    "orientations", "xs", "ys" int32 [T, S]; "velocities" int32 [T, S, 2];
    "rotation_steps" int32 [S] (0 when fixed).
  """
  rng = common.video_rng(config.seed, split, index)
  num_sprites = config.num_sprites
  content = contents[rng.integers(0, len(contents), size=num_sprites)]
  start = rng.integers(0, MAX_POSITION + 1, size=(num_sprites, 2))
  velocity = motion.sample_velocities(rng, (num_sprites, 2), *VELOCITY_RANGE)
  positions, velocities = motion.bounce(start, velocity, config.seq_len, MAX_POSITION)
  if config.rotating:
    start_orientation = rng.integers(0, shapes.NUM_ORIENTATIONS, size=num_sprites)
    steps = motion.sample_velocities(rng, (num_sprites,), *ROTATION_STEP_RANGE)
    orientations = motion.rotate(
      start_orientation, steps, config.seq_len, shapes.NUM_ORIENTATIONS
    )
  else:
    steps = np.zeros(num_sprites, np.int32)
    orientations = np.broadcast_to(content[:, 2], (config.seq_len, num_sprites))
  return {
    "content": content.astype(np.int32),
    "orientations": np.asarray(orientations, np.int32),
    "xs": positions[..., 0],
    "ys": positions[..., 1],
    "velocities": velocities,
    "rotation_steps": steps,
  }


def load_official_images(path) -> np.ndarray:
  """Returns the official dSprites images, uint8 {0, 1} [737280, 64, 64]."""
  images = common.load_npz_array(path, "imgs")
  if images.shape != DSPRITES_IMAGES_SHAPE:
    raise ValueError(
      f"{path}: expected 'imgs' of shape {DSPRITES_IMAGES_SHAPE} (dSprites), "
      f"found {images.shape}."
    )
  return images


def official_frames(
  images: np.ndarray,
  content: np.ndarray,
  orientations: np.ndarray,
  xs: np.ndarray,
  ys: np.ndarray,
) -> np.ndarray:
  """Looks frames up in the official images; same contract as shapes.render_frames.

  dSprites orders its images by (shape, scale, orientation, posX, posY).
  """
  num_frames, num_sprites = xs.shape
  index = np.ravel_multi_index(
    (
      np.broadcast_to(content[:, 0], (num_frames, num_sprites)),
      np.broadcast_to(content[:, 1], (num_frames, num_sprites)),
      orientations,
      xs,
      ys,
    ),
    (
      shapes.NUM_SHAPES,
      shapes.NUM_SCALES,
      shapes.NUM_ORIENTATIONS,
      shapes.NUM_POSITIONS,
      shapes.NUM_POSITIONS,
    ),
  )
  frames = np.zeros((num_frames, shapes.CANVAS_SIZE, shapes.CANVAS_SIZE, 3), np.uint8)
  frames[..., :num_sprites] = np.moveaxis(images[index], 1, -1) * np.uint8(255)
  return frames


def pose_and_content(
  config: MovingDspritesConfig, sample: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
  """Returns (content_factors [S * Fc], pose_factors [T, S * Fp]) of a sample."""
  pose = [sample["xs"], sample["ys"]]
  if config.rotating:
    pose.append(sample["orientations"])
  pose_factors = np.stack(pose, -1).reshape(config.seq_len, -1)
  return sample["content"].reshape(-1), pose_factors


class MovingDsprites(tfds.core.GeneratorBasedBuilder):
  """Moving dSprites with (shape, scale[, orientation]) content, grid positions as pose."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f"Only the *_npz configs need a manual dir: put {DSPRITES_FILE} "
    f"(from {DSPRITES_URL}) in it."
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
  BUILDER_CONFIGS += [common.small_variant(c) for c in BUILDER_CONFIGS]
  DEFAULT_CONFIG_NAME = "fixed"

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    num_sprites = config.num_sprites
    contents = split_contents(config)
    content_names = config.content_factor_names
    pose_names = config.pose_factor_names
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=common.video_features(
        seq_len=config.seq_len,
        channels=3,
        num_content=num_sprites * len(content_names),
        num_pose=num_sprites * len(pose_names),
        extra={
          "velocities": tfds.features.Tensor(
            shape=(config.seq_len, 2 * num_sprites), dtype=np.int32
          ),
          "rotation_steps": tfds.features.Tensor(shape=(num_sprites,), dtype=np.int32),
        },
      ),
      homepage="https://github.com/deepmind/dsprites-dataset",
      metadata=common.factor_metadata(
        content_names=[
          f"sprite{s}_{n}" for s in range(num_sprites) for n in content_names
        ],
        content_sizes=[_FACTOR_SIZES[n] for n in content_names] * num_sprites,
        pose_names=[f"sprite{s}_{n}" for s in range(num_sprites) for n in pose_names],
        pose_sizes=[_FACTOR_SIZES[n] for n in pose_names] * num_sprites,
        content_is_partial=False,
        content_combination_names=list(content_names),
        train_contents=contents["train"].tolist(),
        test_contents=contents["test"].tolist(),
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    images = None
    if self.builder_config.source == "npz":
      path = common.find_manual_file(dl_manager, DSPRITES_FILE, _HOW_TO_OBTAIN)
      images = load_official_images(path)
    contents = split_contents(self.builder_config)
    return {
      split: self._generate_examples(split, contents[split], images)
      for split in ("train", "test")
    }

  def _generate_examples(
    self, split: str, contents: np.ndarray, images: np.ndarray | None
  ):
    config = self.builder_config
    num_videos = config.num_train if split == "train" else config.num_test
    for index in range(num_videos):
      sample = sample_video(config, split, index, contents)
      factors = (
        sample["content"][:, :2],
        sample["orientations"],
        sample["xs"],
        sample["ys"],
      )
      if images is None:
        video = shapes.render_frames(*factors)
      else:
        video = official_frames(images, *factors)
      content_factors, pose_factors = pose_and_content(config, sample)
      yield (
        index,
        {
          "video": video,
          "content_factors": content_factors,
          "pose_factors": pose_factors,
          "id": index,
          "velocities": sample["velocities"].reshape(config.seq_len, -1),
          "rotation_steps": sample["rotation_steps"],
        },
      )
