"""What the moving-video builders share: config fields, features, source files."""

import dataclasses
import importlib.resources.abc
import os
import struct
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

# TFDS 4.9 looks up `importlib_resources.abc.Traversable` for every builder
# defined inside a package but depends on that backport only before Python
# 3.9; the standard library module has the same API.
try:
  import importlib_resources  # noqa: F401
except ImportError:
  sys.modules["importlib_resources"] = importlib.resources

FRAME_SIZE = 64
SPLIT_CODES = {"train": 0, "test": 1}

# index -> one example of a split, as the builder stores it (builders'
# `example_fn`). Videos are drawn from the index alone (video_rng), so an
# index past the split's size continues the same stream: fresh videos.
ExampleFn = Callable[[int], dict[str, np.ndarray]]


@dataclasses.dataclass(eq=False)
class MovingVideoConfig(tfds.core.BuilderConfig):
  """Fields every moving-video BuilderConfig has.

  Attributes:
    seq_len: frames per video; 35 = 5 context + 30 future, the longest
      evaluation horizon (training uses the first `dataset.num_frames`).
    num_train: videos in the train split.
    num_test: videos in the test split.
    seed: seed of everything random in the dataset (motion, content, split).
  """

  seq_len: int = 35
  num_train: int = 10_000
  num_test: int = 1_000
  seed: int = 0

  def __post_init__(self):
    if self.seq_len < 2:
      raise ValueError(
        f"Config {self.name!r}: seq_len={self.seq_len} must be >= 2 "
        "(at least one context and one future frame)."
      )
    if self.num_train < 1 or self.num_test < 1:
      raise ValueError(
        f"Config {self.name!r}: num_train={self.num_train} and "
        f"num_test={self.num_test} must both be >= 1."
      )


def small_variant(
  config: MovingVideoConfig,
  suffix: str = "small",
  num_train: int = 256,
  num_test: int = 64,
) -> MovingVideoConfig:
  """Returns `config` renamed `<name>_<suffix>` with fewer videos (default:
  `<name>_small`, 256 train / 64 test)."""
  return dataclasses.replace(
    config,
    name=f"{config.name}_{suffix}",
    description=(
      f"{config.description} {suffix.capitalize()}: {num_train} train / "
      f"{num_test} test videos."
    ),
    num_train=num_train,
    num_test=num_test,
  )


def with_seq_len(config: MovingVideoConfig, seq_len: int | None) -> MovingVideoConfig:
  """`config` with videos cut to their first `seq_len` frames (None: as is).

  Every builder draws a video's random numbers before its motion is rolled
  out, so the shorter videos are exactly the stored ones' first frames.
  """
  if seq_len is None or seq_len == config.seq_len:
    return config
  return dataclasses.replace(config, seq_len=seq_len)


class StoredStream:
  """Builder mixin: a split stores the first num_<split> videos of the
  stream of the builder's `example_fn(split, ...)`."""

  def _generate_examples(
    self, split: str, example_fn: ExampleFn
  ) -> Iterator[tuple[int, dict]]:
    for index in range(getattr(self.builder_config, f"num_{split}")):
      yield index, example_fn(index)


def video_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """Returns the generator of one video: independent of generation order."""
  return np.random.default_rng([seed, SPLIT_CODES[split], index])


def video_features(
  *,
  seq_len: int,
  channels: int,
  num_content: int,
  num_pose: int,
  compress_video: bool = True,
  extra: dict[str, tfds.features.Tensor] | None = None,
) -> tfds.features.FeaturesDict:
  """Returns the features every builder stores, plus `extra` ones.

  "video" uint8 [T, 64, 64, C] (raw bytes, zlib-compressed if `compress_video`),
  "content_factors" int32 [Fc] (fixed over the video), "pose_factors" int32
  [T, Fp] (per frame) and "id" int32, the video's index in generation order
  within its split.
  """
  features = {
    "video": tfds.features.Tensor(
      shape=(seq_len, FRAME_SIZE, FRAME_SIZE, channels),
      dtype=np.uint8,
      encoding=(
        tfds.features.Encoding.ZLIB if compress_video else tfds.features.Encoding.BYTES
      ),
    ),
    "content_factors": tfds.features.Tensor(shape=(num_content,), dtype=np.int32),
    "pose_factors": tfds.features.Tensor(shape=(seq_len, num_pose), dtype=np.int32),
    "id": tfds.features.Tensor(shape=(), dtype=np.int32),
  }
  features.update(extra or {})
  return tfds.features.FeaturesDict(features)


def factor_metadata(
  *,
  content_names: Sequence[str],
  content_sizes: Sequence[int],
  pose_names: Sequence[str],
  pose_sizes: Sequence[int],
  content_is_partial: bool,
  **extra,
) -> tfds.core.MetadataDict:
  """Returns the metadata naming the factors (stored as metadata.json)."""
  return tfds.core.MetadataDict(
    content_factor_names=list(content_names),
    content_factor_sizes=[int(s) for s in content_sizes],
    pose_factor_names=list(pose_names),
    pose_factor_sizes=[int(s) for s in pose_sizes],
    content_is_partial=bool(content_is_partial),
    **extra,
  )


def check_factors(name: str, factors, sizes: Sequence[int]) -> np.ndarray:
  """Returns `factors` as an int array [N, len(sizes)], each column in [0, size).

  Raises:
    ValueError: another shape, a non-integer dtype or a value out of range.
  """
  factors = np.asarray(factors)
  if factors.ndim != 2 or factors.shape[1] != len(sizes):
    raise ValueError(
      f"{name} must be [N, {len(sizes)}] (one column per factor), found "
      f"{factors.shape}."
    )
  if not np.issubdtype(factors.dtype, np.integer):
    raise ValueError(f"{name} must hold integer factor indices, found {factors.dtype}.")
  if factors.size and ((factors < 0).any() or (factors >= np.asarray(sizes)).any()):
    raise ValueError(
      f"{name} has values outside [0, size) for the column sizes {list(sizes)}."
    )
  return factors


def manual_dir_of(dl_manager: tfds.download.DownloadManager) -> epath.Path | None:
  """The manual dir a build was given (or TFDS's default), None if unset."""
  try:
    return dl_manager.manual_dir
  except AssertionError:  # TFDS: manual dir not given, absent or empty.
    return dl_manager._manual_dir  # pylint: disable=protected-access


def find_manual_file(
  directory: epath.PathLike | None, filename: str, how_to_obtain: str
) -> epath.Path:
  """Returns the path of `filename` in the manual dir `directory`, or a
  one-line error.

  Raises:
    FileNotFoundError: naming the file, the directory searched and how to
      obtain the file.
  """
  path = epath.Path(directory) / filename if directory else None
  if path is None or not path.exists():
    raise FileNotFoundError(
      f"{filename} not found in manual dir {directory}; {how_to_obtain} and "
      "pass its directory as the manual dir (config.dataset.manual_dir, or "
      "tfds build --manual_dir)."
    )
  return path


def _stored_member_offset(path: str, info: zipfile.ZipInfo) -> int:
  """Returns the file offset of an uncompressed zip member's bytes."""
  with open(path, "rb") as f:
    f.seek(info.header_offset)
    header = f.read(30)
  signature, *_, name_length, extra_length = struct.unpack("<IHHHHHIIIHH", header)
  if signature != 0x04034B50:
    raise zipfile.BadZipFile(f"bad local header for {info.filename}")
  return info.header_offset + 30 + name_length + extra_length


def load_npz_array(path: os.PathLike | str, key: str) -> np.ndarray:
  """Returns `key` of an .npz, memory-mapped when stored uncompressed.

  np.savez stores arrays uncompressed, so a 12 GB file (MPI3D) is read
  lazily; compressed members (np.savez_compressed, dSprites) are loaded.

  Raises:
    ValueError: the file is not a readable .npz, lacks `key`, or is truncated.
  """
  path = os.fspath(path)
  array = None
  try:
    with zipfile.ZipFile(path) as archive:
      names = [name.removesuffix(".npy") for name in archive.namelist()]
      if key in names:
        info = archive.getinfo(f"{key}.npy")
        with archive.open(info) as member:
          if info.compress_type != zipfile.ZIP_STORED:
            array = np.lib.format.read_array(member, allow_pickle=False)
          else:
            version = np.lib.format.read_magic(member)
            read_header = (
              np.lib.format.read_array_header_1_0
              if version == (1, 0)
              else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(member)
            offset = _stored_member_offset(path, info) + member.tell()
            array = np.memmap(
              path,
              dtype=dtype,
              mode="r",
              offset=offset,
              shape=shape,
              order="F" if fortran_order else "C",
            )
  except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error) as error:
    raise ValueError(
      f"{path} is corrupted or not an .npz file ({error}); download it again."
    ) from error
  if array is None:
    raise ValueError(f"{path} has no array {key!r} (found {names}).")
  return array
