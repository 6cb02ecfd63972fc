"""Moving MNIST: MNIST digits bouncing independently in 64x64 frames.

Each digit is resized to 32x32 and placed with its top-left corner at (x, y),
x, y in [0, 31]; start positions are uniform, velocities are integers in
[-4, 3] per axis, constant except for mirror reflection at the frame edge
(motion.bounce). Digits of the test split come from MNIST's test set.
"""

import dataclasses
import gzip
import struct
import zlib

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mipae_jax.datasets import common, motion

DIGIT_SIZE = 32
MAX_POSITION = common.FRAME_SIZE - DIGIT_SIZE - 1
VELOCITY_RANGE = (-4, 3)
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
MNIST_FILES = {
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
ALL_MNIST_FILES = MNIST_FILES["train"] + MNIST_FILES["test"]
_HOW_TO_OBTAIN = (
  f"download the four MNIST idx .gz files from {MNIST_URL} (or "
  "http://yann.lecun.com/exdb/mnist/)"
)


@dataclasses.dataclass(eq=False)
class MovingMnistConfig(common.MovingVideoConfig):
  """Moving MNIST options.

  Attributes:
    colour: digit n drawn in colour channel n (3 channels); otherwise digits
      are summed and clipped into one grey channel.
    num_digits: digits per video (at most 3 in colour).
  """

  colour: bool = False
  num_digits: int = 2

  def __post_init__(self):
    super().__post_init__()
    if self.num_digits < 1:
      raise ValueError(f"Config {self.name!r}: num_digits must be >= 1.")
    if self.colour and self.num_digits > 3:
      raise ValueError(
        f"Config {self.name!r}: {self.num_digits} digits do not fit in 3 "
        "colour channels (one digit per channel)."
      )

  @property
  def channels(self) -> int:
    return 3 if self.colour else 1


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
  """Returns [size_out, size_in] weights of bilinear resizing (pixel centres)."""
  source = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
  source = np.clip(source, 0, size_in - 1)
  low = np.floor(source).astype(int)
  high = np.minimum(low + 1, size_in - 1)
  weight = source - low
  matrix = np.zeros((size_out, size_in))
  matrix[np.arange(size_out), low] += 1 - weight
  matrix[np.arange(size_out), high] += weight
  return matrix


def resize_digits(digits: np.ndarray) -> np.ndarray:
  """Resizes uint8 [N, 28, 28] digits bilinearly to uint8 [N, 32, 32]."""
  rows = _resize_matrix(digits.shape[1], DIGIT_SIZE)
  cols = _resize_matrix(digits.shape[2], DIGIT_SIZE)
  resized = np.einsum("ij,njk,lk->nil", rows, digits.astype(np.float64), cols)
  return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def render_video(
  digits: np.ndarray, xs: np.ndarray, ys: np.ndarray, colour: bool
) -> np.ndarray:
  """Draws 32x32 digits at top-left corners (xs, ys).

  Args:
    digits: uint8 [D, 32, 32].
    xs, ys: int [T, D] column and row of each digit's top-left corner.
    colour: digit n in channel n of 3; else summed and clipped to 255, grey.

  Returns:
    uint8 [T, 64, 64, C] frames.
  """
  num_frames, num_digits = xs.shape
  canvas = np.zeros(
    (num_frames, common.FRAME_SIZE, common.FRAME_SIZE, 3 if colour else 1),
    np.uint16,
  )
  for t in range(num_frames):
    for d in range(num_digits):
      channel = d if colour else 0
      y, x = ys[t, d], xs[t, d]
      canvas[t, y : y + DIGIT_SIZE, x : x + DIGIT_SIZE, channel] += digits[d]
  return np.minimum(canvas, 255).astype(np.uint8)


def _read_idx(path: epath.Path, magic: int, num_dims: int) -> np.ndarray:
  """Reads a gzipped idx file (MNIST's format) into a uint8 array."""
  try:
    with path.open("rb") as f:
      data = gzip.decompress(f.read())
    found_magic, *shape = struct.unpack(f">{1 + num_dims}i", data[: 4 * (1 + num_dims)])
  except (OSError, EOFError, zlib.error, struct.error) as error:
    raise ValueError(
      f"{path} is corrupted ({error}); {_HOW_TO_OBTAIN} again."
    ) from error
  body = data[4 * (1 + num_dims) :]
  if found_magic != magic or len(body) != int(np.prod(shape)):
    raise ValueError(
      f"{path} is corrupted: expected an idx file with magic {magic} and "
      f"{int(np.prod(shape))} bytes of data, found magic {found_magic} and "
      f"{len(body)} bytes; {_HOW_TO_OBTAIN} again."
    )
  return np.frombuffer(body, np.uint8).reshape(shape)


def load_mnist(directory: epath.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns (uint8 [N, 28, 28] images, uint8 [N] labels) of an MNIST split."""
  images_name, labels_name = MNIST_FILES[split]
  directory = epath.Path(directory)
  images = _read_idx(directory / images_name, magic=2051, num_dims=3)
  labels = _read_idx(directory / labels_name, magic=2049, num_dims=1)
  if len(images) != len(labels):
    raise ValueError(
      f"{directory}: {images_name} has {len(images)} images but {labels_name} "
      f"has {len(labels)} labels; {_HOW_TO_OBTAIN} again."
    )
  return images, labels


def load_mnist_in(
  manual_dir: epath.PathLike | None, split: str
) -> tuple[np.ndarray, np.ndarray]:
  """load_mnist of `split` from a manual dir, or a one-line error naming the
  missing file."""
  paths = [
    common.find_manual_file(manual_dir, name, _HOW_TO_OBTAIN)
    for name in MNIST_FILES[split]
  ]
  return load_mnist(paths[0].parent, split)


def sample_video(
  config: MovingMnistConfig, split: str, index: int, num_images: int
) -> dict[str, np.ndarray]:
  """Samples the digit indices and trajectories of one video (no pixels)."""
  rng = common.video_rng(config.seed, split, index)
  digit_indices = rng.integers(0, num_images, size=config.num_digits)
  start = rng.integers(0, MAX_POSITION + 1, size=(config.num_digits, 2))
  velocity = motion.sample_velocities(rng, (config.num_digits, 2), *VELOCITY_RANGE)
  positions, velocities = motion.bounce(start, velocity, config.seq_len, MAX_POSITION)
  return {
    "digit_indices": digit_indices.astype(np.int32),
    "positions": positions,  # [T, D, (x, y)]
    "velocities": velocities,
  }


class MovingMnist(common.StoredStream, tfds.core.GeneratorBasedBuilder):
  """Moving MNIST with digit labels as (partial) content and positions as pose."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f"Put the four MNIST idx .gz files ({', '.join(ALL_MNIST_FILES)}) "
    f"in the manual dir; they are at {MNIST_URL}."
  )
  BUILDER_CONFIGS = [
    MovingMnistConfig(
      name="grey",
      description="Two digits summed into one grey channel.",
      num_train=50_000,
      num_test=2_000,
    ),
    MovingMnistConfig(
      name="colour",
      description="Digit n in colour channel n.",
      colour=True,
      num_train=50_000,
      num_test=2_000,
    ),
  ]
  BUILDER_CONFIGS += [common.small_variant(c) for c in BUILDER_CONFIGS]
  DEFAULT_CONFIG_NAME = "grey"

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    digits = range(config.num_digits)
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=common.video_features(
        seq_len=config.seq_len,
        channels=config.channels,
        num_content=config.num_digits,
        num_pose=2 * config.num_digits,
        extra={
          "digit_indices": tfds.features.Tensor(
            shape=(config.num_digits,), dtype=np.int32
          ),
          "velocities": tfds.features.Tensor(
            shape=(config.seq_len, 2 * config.num_digits), dtype=np.int32
          ),
        },
      ),
      homepage="http://yann.lecun.com/exdb/mnist/",
      metadata=common.factor_metadata(
        content_names=[f"digit{d}_label" for d in digits],
        content_sizes=[10] * config.num_digits,
        pose_names=[f"digit{d}_{axis}" for d in digits for axis in ("x", "y")],
        pose_sizes=[MAX_POSITION + 1] * (2 * config.num_digits),
        content_is_partial=True,
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    directory = common.manual_dir_of(dl_manager)
    return {
      split: self._generate_examples(split, self.example_fn(split, directory))
      for split in ("train", "test")
    }

  def example_fn(
    self,
    split: str,
    manual_dir: epath.PathLike | None = None,
    seq_len: int | None = None,
  ) -> common.ExampleFn:
    """index -> example `index` of `split`, as the build stores it.

    Indices past the split's size continue the stream (fresh videos of the
    split's MNIST digits), read from the idx files in `manual_dir`.
    `seq_len`: only the first frames.
    """
    config = common.with_seq_len(self.builder_config, seq_len)
    images, labels = load_mnist_in(manual_dir, split)

    def example(index: int) -> dict[str, np.ndarray]:
      sample = sample_video(config, split, index, len(images))
      digits = resize_digits(images[sample["digit_indices"]])
      positions = sample["positions"]
      return {
        "video": render_video(
          digits, positions[..., 0], positions[..., 1], config.colour
        ),
        "content_factors": labels[sample["digit_indices"]].astype(np.int32),
        "pose_factors": positions.reshape(config.seq_len, -1),
        "id": index,
        "digit_indices": sample["digit_indices"],
        "velocities": sample["velocities"].reshape(config.seq_len, -1),
      }

    return example
