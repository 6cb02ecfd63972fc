"""Moving MPI3D-real: a real robot arm moving an object, 64x64x3 frames.

MPI3D-real (Gondal et al., 2019) photographs every combination of 7 factors:
object colour (6), object shape (6), object size (2), camera height (3),
background colour (3) and the arm's two degrees of freedom (40 each). Per
video the first five (content) are fixed and the two degrees of freedom
(pose) move with an integer velocity in [-4, 4] each, reflecting at their
ends (motion.bounce). Factor sizes are read from the .npz, which holds
"images" either flat [N, 64, 64, 3] (the release, N = 1036800) or shaped
[*factor_sizes, 64, 64, 3].

The test split holds content never seen in training: a seeded third of the
(colour, shape, size, camera height, background) combinations (216 of the
release's 648) is test-only, chosen so that every value of every content
factor still appears in training; each video draws its content uniformly
from its split's combinations. The authors' split (data/mpi3d_toy_*_split.npy)
is a random 96 of the 288 combinations of the first 4 colours and 4 shapes;
this one spans all 6 of each. The combinations are stored in the metadata
("train_contents", "test_contents").

render_frames gathers single frames from given factors with the code that
gathers the videos (MIG's factor-sampled frames); factor_sizes gives each
factor column's number of values.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mipae_jax.datasets import common, motion

MPI3D_FILE = "mpi3d_real.npz"
MPI3D_URL = (
  "https://storage.googleapis.com/disentanglement_dataset/Final_Dataset/" + MPI3D_FILE
)
CONTENT_FACTOR_NAMES = (
  "object_color",
  "object_shape",
  "object_size",
  "camera_height",
  "background_color",
)
POSE_FACTOR_NAMES = ("horizontal_axis", "vertical_axis")
RELEASED_FACTOR_SIZES = (6, 6, 2, 3, 3, 40, 40)
IMAGE_SHAPE = (common.FRAME_SIZE, common.FRAME_SIZE, 3)
VELOCITY_RANGE = (-4, 4)
_HOW_TO_OBTAIN = f"download it (about 12 GB) from {MPI3D_URL}"


@dataclasses.dataclass(eq=False)
class MovingMpi3dConfig(common.MovingVideoConfig):
  """Moving MPI3D-real options.

  Attributes:
    test_content_fraction: share of the content combinations held out for
      the test split (rounded, at least one; the authors hold out a third).
  """

  test_content_fraction: float = 1 / 3

  def __post_init__(self):
    super().__post_init__()
    if not 0 < self.test_content_fraction < 1:
      raise ValueError(
        f"Config {self.name!r}: test_content_fraction="
        f"{self.test_content_fraction} must be in (0, 1)."
      )


def factor_sizes(
  config: MovingMpi3dConfig, images: np.ndarray | None = None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Returns the number of values of the content [5] and pose [2] columns.

  Those of `images` (load_images) when given, else those of the release.
  Columns are CONTENT_FACTOR_NAMES and POSE_FACTOR_NAMES; which content rows
  each split allows is split_contents(config, content_sizes)[split].
  """
  del config  # Every config has the layout of its file.
  sizes = RELEASED_FACTOR_SIZES if images is None else images.shape[:7]
  return tuple(int(s) for s in sizes[:5]), tuple(int(s) for s in sizes[5:])


def split_contents(
  config: MovingMpi3dConfig,
  content_sizes: tuple[int, ...] = RELEASED_FACTOR_SIZES[:5],
) -> dict[str, np.ndarray]:
  """Returns the seeded disjoint content combinations of each split, int [N, 5].

  Combinations are visited in a seeded random order and moved to the test
  split, round(test_content_fraction * total) of them (at least one), except
  those whose removal would leave some factor value unseen in training.

  Raises:
    ValueError: no combination can be held out (every one is needed to keep
      each factor value in training).
  """
  contents = np.stack(
    np.unravel_index(np.arange(np.prod(content_sizes)), content_sizes), -1
  )
  num_test = max(1, round(config.test_content_fraction * len(contents)))
  # train_counts[f][v]: training combinations with factor f equal to v.
  train_counts = [
    np.bincount(contents[:, f], minlength=n) for f, n in enumerate(content_sizes)
  ]
  is_test = np.zeros(len(contents), bool)
  rng = np.random.default_rng([config.seed, 3])
  for row in rng.permutation(len(contents)):
    values = contents[row]
    if all(train_counts[f][v] > 1 for f, v in enumerate(values)):
      is_test[row] = True
      for f, v in enumerate(values):
        train_counts[f][v] -= 1
      if is_test.sum() == num_test:
        break
  if not is_test.any():
    raise ValueError(
      f"Content factor sizes {list(content_sizes)}: no combination can be held "
      "out for the test split without leaving a factor value unseen in training."
    )
  return {"train": contents[~is_test], "test": contents[is_test]}


def load_images(path) -> np.ndarray:
  """Returns the images as [*factor_sizes, 64, 64, 3] uint8 (memory-mapped).

  Raises:
    ValueError: the layout is neither the released flat one nor 7 factor
      axes followed by 64x64x3 images.
  """
  images = common.load_npz_array(path, "images")
  num_released = int(np.prod(RELEASED_FACTOR_SIZES))
  if images.shape == (num_released, *IMAGE_SHAPE):
    return images.reshape(*RELEASED_FACTOR_SIZES, *IMAGE_SHAPE)
  num_factors = len(RELEASED_FACTOR_SIZES)
  if (
    images.ndim == num_factors + 3
    and images.shape[num_factors:] == IMAGE_SHAPE
    and images.dtype == np.uint8
    and min(images.shape[:num_factors]) >= 1
  ):
    return images
  raise ValueError(
    f"{path}: expected uint8 'images' of shape {(num_released, *IMAGE_SHAPE)} "
    f"or {(*RELEASED_FACTOR_SIZES, *IMAGE_SHAPE)} (7 factor axes, then "
    f"64x64x3), found {images.dtype} {images.shape}."
  )


def sample_video(
  config: MovingMpi3dConfig,
  split: str,
  index: int,
  contents: np.ndarray,
  pose_sizes: tuple[int, ...],
) -> dict[str, np.ndarray]:
  """Samples content [5] and the two degrees of freedom [T, 2] of one video.

  Args:
    config: the dataset config.
    split: "train" or "test".
    index: the video's index within the split.
    contents: the split's allowed content combinations (split_contents).
    pose_sizes: the number of values of each degree of freedom.
  """
  rng = common.video_rng(config.seed, split, index)
  pose_sizes = np.asarray(pose_sizes)
  content = contents[rng.integers(0, len(contents))]
  start = rng.integers(0, pose_sizes)
  velocity = motion.sample_velocities(rng, (2,), *VELOCITY_RANGE)
  pose, velocities = motion.bounce(start, velocity, config.seq_len, pose_sizes - 1)
  return {"content": content.astype(np.int32), "pose": pose, "velocities": velocities}


def render_frames(
  config: MovingMpi3dConfig, content: np.ndarray, pose: np.ndarray, images: np.ndarray
) -> np.ndarray:
  """Gathers single frames from their factors, exactly as video frames are.

  Args:
    config: the dataset config.
    content: int [N, 5], columns in the order of CONTENT_FACTOR_NAMES.
    pose: int [N, 2], columns in the order of POSE_FACTOR_NAMES.
    images: [*factor_sizes, 64, 64, 3] uint8 (load_images).

  Returns:
    uint8 [N, 64, 64, 3] photographs.

  Raises:
    ValueError: wrong shapes, or a factor outside factor_sizes(config, images).
  """
  content_sizes, pose_sizes = factor_sizes(config, images)
  content = common.check_factors("content", content, content_sizes)
  pose = common.check_factors("pose", pose, pose_sizes)
  if len(content) != len(pose):
    raise ValueError(f"content has {len(content)} rows but pose has {len(pose)}.")
  index = tuple(np.concatenate([content, pose], axis=1).T)
  return np.asarray(images[index], np.uint8)


def images_in(manual_dir: epath.PathLike | None) -> np.ndarray:
  """Loads the MPI3D images from a manual dir, or a one-line error."""
  return load_images(common.find_manual_file(manual_dir, MPI3D_FILE, _HOW_TO_OBTAIN))


class MovingMpi3d(common.StoredStream, tfds.core.GeneratorBasedBuilder):
  """Moving MPI3D-real: object and scene as content, arm angles as pose."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
    "1.0.0": "Initial release.",
    "1.1.0": (
      "Content split: a seeded third of the content combinations is "
      "test-only (train_contents / test_contents in the metadata)."
    ),
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f"Put {MPI3D_FILE} (about 12 GB, from {MPI3D_URL}) in the manual dir."
  )
  BUILDER_CONFIGS = [
    MovingMpi3dConfig(
      name="default",
      description="Arm angles bouncing, object and scene fixed per video.",
      num_train=10_000,
      num_test=1_000,
    ),
  ]
  BUILDER_CONFIGS += [common.small_variant(c) for c in BUILDER_CONFIGS]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    contents = split_contents(config)
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=common.video_features(
        seq_len=config.seq_len,
        channels=3,
        num_content=len(CONTENT_FACTOR_NAMES),
        num_pose=len(POSE_FACTOR_NAMES),
        # Photographs barely compress, and inflating them would slow loading.
        compress_video=False,
        extra={
          "velocities": tfds.features.Tensor(shape=(config.seq_len, 2), dtype=np.int32),
        },
      ),
      homepage="https://github.com/rr-learning/disentanglement_dataset",
      # Sizes and contents are those of the release until the build reads
      # the sizes from the file.
      metadata=common.factor_metadata(
        content_names=CONTENT_FACTOR_NAMES,
        content_sizes=RELEASED_FACTOR_SIZES[:5],
        pose_names=POSE_FACTOR_NAMES,
        pose_sizes=RELEASED_FACTOR_SIZES[5:],
        content_is_partial=False,
        content_combination_names=list(CONTENT_FACTOR_NAMES),
        train_contents=contents["train"].tolist(),
        test_contents=contents["test"].tolist(),
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    images = images_in(common.manual_dir_of(dl_manager))
    content_sizes, pose_sizes = factor_sizes(self.builder_config, images)
    contents = split_contents(self.builder_config, content_sizes)
    self.info.metadata.update(
      content_factor_sizes=list(content_sizes),
      pose_factor_sizes=list(pose_sizes),
      train_contents=contents["train"].tolist(),
      test_contents=contents["test"].tolist(),
    )
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
    split's contents). The images come from `manual_dir` unless given.
    `seq_len`: only the first frames.
    """
    config = common.with_seq_len(self.builder_config, seq_len)
    if images is None:
      images = images_in(manual_dir)
    content_sizes, pose_sizes = factor_sizes(config, images)
    contents = split_contents(config, content_sizes)[split]

    def example(index: int) -> dict[str, np.ndarray]:
      sample = sample_video(config, split, index, contents, pose_sizes)
      content = np.broadcast_to(sample["content"], (config.seq_len, 5))
      return {
        "video": render_frames(config, content, sample["pose"], images),
        "content_factors": sample["content"],
        "pose_factors": sample["pose"],
        "id": index,
        "velocities": sample["velocities"],
      }

    return example
