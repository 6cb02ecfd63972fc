"""Moving MPI3D-real: a real robot arm moving an object, 64x64x3 frames.

MPI3D-real (Gondal et al., 2019) photographs every combination of 7 factors:
object colour (6), object shape (6), object size (2), camera height (3),
background colour (3) and the arm's two degrees of freedom (40 each). Per
video the first five (content) are fixed and the two degrees of freedom
(pose) move with an integer velocity in [-4, 4] each, reflecting at their
ends (motion.bounce). Factor sizes are read from the .npz, which holds
"images" either flat [N, 64, 64, 3] (the release, N = 1036800) or shaped
[*factor_sizes, 64, 64, 3].
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

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
  """Moving MPI3D-real options (only the shared ones)."""


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
  config: MovingMpi3dConfig, split: str, index: int, factor_sizes: tuple[int, ...]
) -> dict[str, np.ndarray]:
  """Samples content [5] and the two degrees of freedom [T, 2] of one video."""
  rng = common.video_rng(config.seed, split, index)
  content_sizes = np.asarray(factor_sizes[:5])
  pose_sizes = np.asarray(factor_sizes[5:])
  content = rng.integers(0, content_sizes)
  start = rng.integers(0, pose_sizes)
  velocity = motion.sample_velocities(rng, (2,), *VELOCITY_RANGE)
  pose, velocities = motion.bounce(start, velocity, config.seq_len, pose_sizes - 1)
  return {"content": content.astype(np.int32), "pose": pose, "velocities": velocities}


def video_frames(
  images: np.ndarray, content: np.ndarray, pose: np.ndarray
) -> np.ndarray:
  """Gathers uint8 [T, 64, 64, 3] frames for content [5] and pose [T, 2]."""
  scene = images[tuple(int(c) for c in content)]
  return np.asarray(scene[pose[:, 0], pose[:, 1]])


class MovingMpi3d(tfds.core.GeneratorBasedBuilder):
  """Moving MPI3D-real: object and scene as content, arm angles as pose."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
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
      # Sizes are those of the release until the build reads them from the file.
      metadata=common.factor_metadata(
        content_names=CONTENT_FACTOR_NAMES,
        content_sizes=RELEASED_FACTOR_SIZES[:5],
        pose_names=POSE_FACTOR_NAMES,
        pose_sizes=RELEASED_FACTOR_SIZES[5:],
        content_is_partial=False,
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    path = common.find_manual_file(dl_manager, MPI3D_FILE, _HOW_TO_OBTAIN)
    images = load_images(path)
    factor_sizes = images.shape[:7]
    self.info.metadata.update(
      content_factor_sizes=list(factor_sizes[:5]),
      pose_factor_sizes=list(factor_sizes[5:]),
    )
    return {
      split: self._generate_examples(split, images) for split in ("train", "test")
    }

  def _generate_examples(self, split: str, images: np.ndarray):
    config = self.builder_config
    num_videos = config.num_train if split == "train" else config.num_test
    for index in range(num_videos):
      sample = sample_video(config, split, index, images.shape[:7])
      yield (
        index,
        {
          "video": video_frames(images, sample["content"], sample["pose"]),
          "content_factors": sample["content"],
          "pose_factors": sample["pose"],
          "id": index,
          "velocities": sample["velocities"],
        },
      )
