"""The prepared TFDS datasets: their builders, building them once (one
process first on several hosts), the versions and stale build folders a
data dir may hold, their shapes and factors (`DatasetInfo`), and the check
of a split's files before anything reads them."""

import dataclasses
import os
import shutil
import time

import jax
import tensorflow_datasets as tfds
from absl import logging
from array_record.python import array_record_module
from etils import epath
from jax.experimental import multihost_utils

from mipae_jax import commands, config_validation


class CorruptDataError(ValueError):
  """A file of a built dataset is truncated or holds a corrupt record."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Shapes, sizes and factor names of a moving-video dataset."""

  seq_len: int
  height: int
  width: int
  channels: int
  num_train: int
  num_test: int
  content_factor_names: tuple[str, ...]
  pose_factor_names: tuple[str, ...]
  # Content factors do not determine the content (MNIST: only digit labels).
  content_is_partial: bool
  # Number of values of each factor (for MI / MIG).
  content_factor_sizes: tuple[int, ...]
  pose_factor_sizes: tuple[int, ...]
  # The builder's version: data and checkpoints of another version differ.
  version: str = ""


def _builder_config_name(dataset_config) -> str:
  config = dataset_config.builder_config
  return config if isinstance(config, str) else config.name


def get_builder(dataset_config) -> tfds.core.DatasetBuilder:
  """Returns the TFDS builder of `dataset_config` (nothing is built)."""
  name = dataset_config.name
  builder_config = dataset_config.builder_config
  try:
    builder_cls = tfds.builder_cls(name)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise ValueError(
      f"Unknown dataset {name!r}; expected moving_mnist, moving_dsprites or "
      "moving_mpi3d."
    ) from error
  if isinstance(builder_config, str):
    known = [c.name for c in builder_cls.BUILDER_CONFIGS]
    if builder_config not in known:
      raise ValueError(
        f"{name} has no builder config {builder_config!r}; choose one of {known}."
      )
  return builder_cls(config=builder_config, data_dir=dataset_config.data_dir)


def _check_buildable(builder: tfds.core.DatasetBuilder, dataset_config) -> None:
  """A one-line error when the data dir cannot be written to."""
  root = builder.data_dir_root
  if (e := config_validation.unwritable(root)) is not None:
    raise PermissionError(
      f"Cannot build {dataset_config.name}/{_builder_config_name(dataset_config)} "
      f"in {root} ({e.strerror}); set --config.dataset.data_dir to a writable "
      "directory."
    ) from e


def prepare_dataset(dataset_config) -> tfds.core.DatasetBuilder:
  """Returns the builder of `dataset_config`, building the data if needed.

  With several processes, process 0 builds first and the others wait, then
  build themselves only if they do not see the data (disks not shared).

  Raises:
    FileNotFoundError: the data is not built and dataset_config.prepare is
      False; or a source file is missing.
  """
  builder = get_builder(dataset_config)
  if builder.is_prepared():
    return builder
  older = older_prepared_versions(builder)
  superseded = (
    f" (version {', '.join(older)} there is superseded and never read)" if older else ""
  )
  if not dataset_config.prepare:
    raise FileNotFoundError(
      f"{dataset_config.name}/{_builder_config_name(dataset_config)} version "
      f"{builder.version} is not built in {builder.data_dir}{superseded}; set "
      "config.dataset.prepare=True to build it on "
      "first use, or build it beforehand with "
      "mipae_jax.datasets.prepared.prepare_dataset or --mode=prepare (docs/datasets.md, 'Preparing data')."
    )
  _check_buildable(builder, dataset_config)
  if jax.process_index() == 0:
    remove_stale_builds(builder)
  if older and jax.process_index() == 0:
    logging.warning(
      "%s/%s: building version %s%s.",
      dataset_config.name,
      _builder_config_name(dataset_config),
      builder.version,
      superseded,
    )
  download_config = tfds.download.DownloadConfig(manual_dir=dataset_config.manual_dir)
  if jax.process_count() > 1:
    if jax.process_index() == 0:
      builder.download_and_prepare(
        file_format="array_record", download_config=download_config
      )
    multihost_utils.sync_global_devices("prepare_dataset")
    builder = get_builder(dataset_config)
    if builder.is_prepared():
      return builder
  builder.download_and_prepare(
    file_format="array_record", download_config=download_config
  )
  return get_builder(dataset_config)


# A build folder untouched this long belongs to a killed prepare, not a live one.
STALE_BUILD_S = 600.0


def remove_stale_builds(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Removes the `incomplete.*` folders a killed prepare left beside
  `builder`'s data (none of their files written for STALE_BUILD_S), naming
  each in a warning; names and keeps a recent one (another prepare may be
  writing it). Returns the removed paths."""
  config_dir = epath.Path(builder.data_dir).parent
  if not config_dir.exists():
    return []
  removed = []
  for folder in sorted(config_dir.glob("incomplete.*")):
    newest = max(
      os.stat(os.path.join(directory, name)).st_mtime
      for directory, dirs, files in os.walk(os.fspath(folder))
      for name in (".", *dirs, *files)
    )
    age = time.time() - newest
    if age < STALE_BUILD_S:
      logging.warning(
        "Leaving %s: written %.0f s ago, another prepare may be building it.",
        folder,
        age,
      )
      continue
    logging.warning("Removing %s, left by a prepare that was stopped.", folder)
    shutil.rmtree(os.fspath(folder))
    removed.append(str(folder))
  return removed


def older_prepared_versions(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Versions of `builder`'s config prepared in its data dir, older than its own."""
  config_dir = epath.Path(builder.data_dir).parent
  if not config_dir.exists():
    return []
  found = []
  for child in config_dir.iterdir():
    try:
      version = tfds.core.Version(child.name)
    except ValueError:
      continue
    if version < builder.version and (child / "dataset_info.json").exists():
      found.append(str(version))
  return sorted(found, key=tfds.core.Version)


def dataset_info(dataset_config) -> DatasetInfo:
  """Returns shapes, sizes and factor names of `dataset_config`'s dataset."""
  builder = get_builder(dataset_config)
  config = builder.builder_config
  _, height, width, channels = builder.info.features["video"].shape
  metadata = builder.info.metadata
  return DatasetInfo(
    seq_len=config.seq_len,
    height=height,
    width=width,
    channels=channels,
    num_train=config.num_train,
    num_test=config.num_test,
    content_factor_names=tuple(metadata["content_factor_names"]),
    pose_factor_names=tuple(metadata["pose_factor_names"]),
    content_is_partial=bool(metadata["content_is_partial"]),
    content_factor_sizes=tuple(metadata["content_factor_sizes"]),
    pose_factor_sizes=tuple(metadata["pose_factor_sizes"]),
    version=str(builder.version),
  )


def rebuild_hint(builder: tfds.core.DatasetBuilder, dataset_config) -> str:
  return (
    f"rebuild the dataset: delete {builder.data_dir} and run "
    + commands.prepare_command(dataset_config)
  )


def split_files(builder: tfds.core.DatasetBuilder, split: str):
  """(shard paths, records per shard) of `split`, in the data source's order."""
  split_info = builder.info.splits[split]
  return [str(path) for path in split_info.filepaths], list(split_info.shard_lengths)


def check_split_files(
  builder: tfds.core.DatasetBuilder, split: str, dataset_config
) -> None:
  """Opens every shard of `split` and compares its record count with the
  dataset's info: a missing, truncated or overwritten file is named here,
  before anything compiles (a corrupt record inside a shard is only found
  when it is read)."""
  for path, expected in zip(*split_files(builder, split), strict=True):
    try:
      reader = array_record_module.ArrayRecordReader(path)
      try:
        count = reader.num_records()
      finally:
        reader.close()
    except Exception as e:  # array_record raises RuntimeError / ValueError / OSError.
      count, reason = 0, f" ({type(e).__name__}: {str(e).splitlines()[0][:100]})"
    else:
      reason = ""
    if count != expected:
      raise CorruptDataError(
        f"Dataset file {path} is missing, truncated or corrupt: {count} of its "
        f"{expected} records readable{reason}; {rebuild_hint(builder, dataset_config)}."
      )
