"""Input pipeline: TFDS array_record data sources -> grain -> global jax.Arrays.

Training batches come from a grain DataLoader (shuffled, infinite, each JAX
process reading only its shard) whose state is saved in the training
checkpoint, so a resumed run sees exactly the batches it would have seen.
Videos stay uint8 until they are on the device. The train iterator's
`get_state` / `set_state` / `start_prefetch` are those of grain's
DataLoaderIterator, so `grain.python.PyGrainCheckpointSave(iterator)` /
`PyGrainCheckpointRestore(iterator)` save and restore it through Orbax; the
grain iterator itself is `TrainIterator.grain_iterator`.

`dataset_config` everywhere is `config.dataset` of configs/base.py (name,
builder_config, data_dir, manual_dir, prepare, num_frames); builder_config is
a config name ("fixed", "grey_small", ...) or a BuilderConfig instance.
"""

import bisect
import math
import os
import zlib
from collections.abc import Iterator
from typing import Any

import grain.python as grain
import jax
import numpy as np
import tensorflow_datasets as tfds

# Registers moving_mnist, moving_dsprites and moving_mpi3d with TFDS.
import mipae_jax.datasets  # noqa: F401
from mipae_jax.datasets import prepared
from mipae_jax.datasets.prepared import CorruptDataError

# Threads reading and decoding records ahead of the training step (zlib
# releases the GIL). Grain polls every buffered read per element, so a short
# buffer is much cheaper than its default of 500.
_READ_THREADS = min(16, os.cpu_count() or 1)
_READ_OPTIONS = grain.ReadOptions(
  num_threads=_READ_THREADS, prefetch_buffer_size=2 * _READ_THREADS
)


class VideoPrefixDecoder(tfds.decode.Decoder):
  """Decodes only the first `num_frames` frames of a video.

  The builders store videos as raw or zlib-compressed bytes; inflating stops
  after the frames asked for.
  """

  def __init__(self, num_frames: int):
    super().__init__()
    self._num_frames = num_frames
    self._set_up_for = None  # the feature the derived fields below belong to

  def __repr__(self) -> str:  # Grain checks data source reprs on restore.
    return f"VideoPrefixDecoder(num_frames={self._num_frames})"

  def setup(self, *, feature: tfds.features.Tensor) -> None:
    # TFDS calls setup before decoding every example, from grain's reader
    # threads at once. The marker is set after the derived fields, so a
    # thread that skips the set-up finds them (the base class's `_feature`
    # is set before them: checking it raced).
    if self._set_up_for is feature:
      return
    super().setup(feature=feature)
    self._frame_shape = tuple(feature.shape[1:])
    self._dtype = np.dtype(feature.np_dtype)
    self._encoding = feature.to_json_content().encoding
    self._set_up_for = feature

  def decode_example(self, serialized_example: bytes) -> np.ndarray:
    return self.decode_example_np(serialized_example)

  def decode_example_np(self, serialized_example: bytes) -> np.ndarray:
    wanted = self._num_frames * math.prod(self._frame_shape) * self._dtype.itemsize
    if self._encoding == "zlib":
      try:
        data = zlib.decompressobj().decompress(serialized_example, wanted)
      except zlib.error as error:
        raise ValueError(f"Corrupted video record ({error}).") from error
    else:
      data = serialized_example[:wanted]
    if len(data) != wanted:
      raise ValueError(f"Corrupted video record: {len(data)} bytes, expected {wanted}.")
    return np.frombuffer(data, self._dtype).reshape(
      (self._num_frames, *self._frame_shape)
    )


class _SelectFrames(grain.MapTransform):
  """Keeps video, content and the first `num_frames` pose factors."""

  def __init__(self, num_frames: int):
    self._num_frames = num_frames

  def map(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
      "video": example["video"],
      "content_factors": example["content_factors"],
      "pose_factors": example["pose_factors"][: self._num_frames],
    }


class _NamedSource:
  """A TFDS data source whose read errors name the shard file and say how to
  rebuild it; its repr is the source's (grain checks it on restore)."""

  def __init__(
    self, source, builder: tfds.core.DatasetBuilder, split: str, dataset_config
  ):
    self._source = source
    self._paths, lengths = prepared.split_files(builder, split)
    self._ends = np.cumsum(lengths).tolist()
    self._hint = prepared.rebuild_hint(builder, dataset_config)

  def __len__(self) -> int:
    return len(self._source)

  def __repr__(self) -> str:
    return repr(self._source)

  def __getitem__(self, index: int) -> Any:
    try:
      return self._source[index]
    except (RuntimeError, ValueError, OSError) as e:
      path = self._paths[
        min(bisect.bisect_right(self._ends, index), len(self._paths) - 1)
      ]
      reason = str(e).splitlines()[0][:100] if str(e) else ""
      raise CorruptDataError(
        f"Corrupt record {index} in {path} ({type(e).__name__}: {reason}); "
        f"{self._hint}."
      ) from e


# Videos in the stream of fresh training videos: index_shuffle permutes it
# lazily, so none repeats before 2**31 - 1 videos (22 epochs of the paper's
# 240k steps x 100 x 2 batches).
FRESH_STREAM_LENGTH = 2**31 - 1


class FreshVideos:
  """Training videos rendered on demand: index i is the video the builder
  would store at index i of a train split holding more than i videos.

  Indices below num_train are the stored videos themselves; the rest are
  new draws from the same distribution (the split's contents, motion and
  occlusion), so a run never sees a video twice (the authors' loaders draw
  every video afresh). Only the first `num_frames` frames are rendered.
  """

  def __init__(
    self, builder: tfds.core.DatasetBuilder, dataset_config, num_frames: int
  ):
    manual_dir = dataset_config.manual_dir or os.fspath(
      builder.data_dir_root / "downloads" / "manual"
    )
    self._example = builder.example_fn("train", manual_dir, seq_len=num_frames)
    self._repr = (
      f"FreshVideos({builder.name}/{builder.builder_config.name}, "
      f"seed={builder.builder_config.seed}, num_frames={num_frames})"
    )

  def __len__(self) -> int:
    return FRESH_STREAM_LENGTH

  def __repr__(self) -> str:  # Grain checks data source reprs on restore.
    return self._repr

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    example = self._example(int(index))
    return {key: example[key] for key in ("video", "content_factors", "pose_factors")}


def data_source(
  builder: tfds.core.DatasetBuilder, split: str, dataset_config, decoders=None
) -> _NamedSource:
  """The checked data source of `split` (see check_split_files)."""
  prepared.check_split_files(builder, split, dataset_config)
  source = builder.as_data_source(split, decoders=decoders)
  return _NamedSource(source, builder, split, dataset_config)


def check_num_frames(builder: tfds.core.DatasetBuilder, num_frames: int) -> None:
  seq_len = builder.builder_config.seq_len
  if not 1 <= num_frames <= seq_len:
    raise ValueError(
      f"num_frames={num_frames} asked of {builder.name}/{builder.builder_config.name}, "
      f"whose videos have {seq_len} frames; build a config with a longer seq_len."
    )


def _local_batch_size(
  global_batch_size: int, sharding: jax.sharding.NamedSharding
) -> int:
  """Returns this process's share of the global batch, or a ValueError."""
  process_count = jax.process_count()
  spec = sharding.spec
  axes = spec[0] if len(spec) else None
  axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  data_shards = math.prod(sharding.mesh.shape[axis] for axis in axes)
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
      f"global_batch_size={global_batch_size} must be a positive multiple of "
      f"the {process_count} JAX processes."
    )
  if global_batch_size % data_shards:
    raise ValueError(
      f"global_batch_size={global_batch_size} must be a multiple of the "
      f"{data_shards} shards of the sharding's batch axis {axes}."
    )
  return global_batch_size // process_count


def _to_global(
  local_batch: dict[str, np.ndarray],
  sharding: jax.sharding.NamedSharding,
  global_batch_size: int,
) -> dict[str, jax.Array]:
  """Assembles each process's rows into global arrays sharded on the batch axis."""
  return {
    key: jax.make_array_from_process_local_data(
      sharding, value, (global_batch_size, *value.shape[1:])
    )
    for key, value in local_batch.items()
  }


class TrainIterator(Iterator[dict[str, jax.Array]]):
  """Infinite iterator of global training batches with grain's state API.

  Batches: "video" uint8 [B, num_frames, H, W, C], "content_factors" int32
  [B, Fc], "pose_factors" int32 [B, num_frames, Fp], all global jax.Arrays
  placed with the given sharding on the batch axis.
  """

  def __init__(
    self,
    grain_iterator: grain.PyGrainDatasetIterator,
    sharding: jax.sharding.NamedSharding,
    global_batch_size: int,
  ):
    self.grain_iterator = grain_iterator
    self._sharding = sharding
    self._global_batch_size = global_batch_size

  def __next__(self) -> dict[str, jax.Array]:
    return _to_global(
      next(self.grain_iterator), self._sharding, self._global_batch_size
    )

  def next_stacked(self, count: int) -> dict[str, jax.Array]:
    """The next `count` batches as arrays [count, B, ...], the batch axis
    placed as in __next__ (the stream advances exactly as `count` calls of
    next would)."""
    local = [next(self.grain_iterator) for _ in range(count)]
    stacked = {key: np.stack([b[key] for b in local]) for key in local[0]}
    spec = jax.sharding.PartitionSpec(None, *self._sharding.spec)
    placement = jax.sharding.NamedSharding(self._sharding.mesh, spec)
    return {
      key: jax.make_array_from_process_local_data(
        placement, value, (count, self._global_batch_size, *value.shape[2:])
      )
      for key, value in stacked.items()
    }

  def get_state(self) -> bytes:
    """Returns the position in the data stream (grain's JSON state)."""
    return self.grain_iterator.get_state()

  def set_state(self, state: bytes) -> None:
    """Moves to the position `state` returned by get_state."""
    self.grain_iterator.set_state(state)

  def start_prefetch(self) -> None:
    """Starts reading ahead (called by grain's checkpoint handler on restore)."""
    self.grain_iterator.start_prefetch()


def create_train_iterator(
  dataset_config,
  *,
  global_batch_size: int,
  sharding: jax.sharding.NamedSharding,
  seed: int,
  num_frames: int | None = None,
) -> TrainIterator:
  """Returns the infinite, shuffled training iterator (deterministic given seed).

  The videos are the stored train split, or with
  `dataset_config.fresh_train_videos` a shuffled stream of fresh ones
  (FreshVideos) whose first num_train are the stored ones.

  Args:
    dataset_config: config.dataset.
    global_batch_size: videos per batch over all processes.
    sharding: placement of the batch axis (the leading one) of every array.
    seed: seed of the shuffling of every epoch.
    num_frames: first frames kept of each video; default dataset_config.num_frames.
  """
  num_frames = num_frames or dataset_config.num_frames
  builder = prepared.prepare_dataset(dataset_config)
  check_num_frames(builder, num_frames)
  local_batch_size = _local_batch_size(global_batch_size, sharding)
  if dataset_config.get("fresh_train_videos", False):
    source = FreshVideos(builder, dataset_config, num_frames)
  else:
    source = data_source(
      builder, "train", dataset_config, {"video": VideoPrefixDecoder(num_frames)}
    )
  shard_options = grain.ShardByJaxProcess(drop_remainder=True)
  if len(source) < jax.process_count():
    raise ValueError(
      f"The train split has {len(source)} videos, fewer than the "
      f"{jax.process_count()} processes reading it."
    )
  sampler = grain.IndexSampler(
    num_records=len(source),
    shard_options=shard_options,
    shuffle=True,
    seed=seed,
    num_epochs=None,
  )
  loader = grain.DataLoader(
    data_source=source,
    sampler=sampler,
    operations=[
      _SelectFrames(num_frames),
      grain.Batch(local_batch_size, drop_remainder=True),
    ],
    worker_count=0,
    shard_options=shard_options,
    read_options=_READ_OPTIONS,
  )
  return TrainIterator(iter(loader), sharding, global_batch_size)


def create_eval_iterator(
  dataset_config,
  *,
  split: str,
  global_batch_size: int,
  sharding: jax.sharding.NamedSharding,
  num_frames: int,
  num_sequences: int = -1,
) -> Iterator[dict[str, jax.Array]]:
  """Yields one pass over the first `num_sequences` videos of `split`, in order.

  Every batch holds global_batch_size rows, as in training, plus "mask" bool
  [B]: False marks the zero rows that pad the last batch.
  """
  builder = prepared.prepare_dataset(dataset_config)
  check_num_frames(builder, num_frames)
  local_batch_size = _local_batch_size(global_batch_size, sharding)
  source = data_source(
    builder, split, dataset_config, {"video": VideoPrefixDecoder(num_frames)}
  )
  if num_sequences == -1:
    num_sequences = len(source)
  if not 1 <= num_sequences <= len(source):
    raise ValueError(
      f"num_sequences={num_sequences} must be -1 or in [1, {len(source)}] "
      f"(the {split} split's size)."
    )
  select = _SelectFrames(num_frames)
  # This process's rows of every global batch (contiguous on the batch axis).
  first_row = min(
    rows.start or 0
    for rows, *_ in sharding.addressable_devices_indices_map(
      (global_batch_size,)
    ).values()
  )
  template = select.map(source[0])

  def batches() -> Iterator[dict[str, jax.Array]]:
    for start in range(0, num_sequences, global_batch_size):
      indices = start + first_row + np.arange(local_batch_size)
      mask = indices < num_sequences
      local = {
        key: np.zeros((local_batch_size, *value.shape), value.dtype)
        for key, value in template.items()
      }
      for row in np.flatnonzero(mask):
        for key, value in select.map(source[int(indices[row])]).items():
          local[key][row] = value
      local["mask"] = mask
      yield _to_global(local, sharding, global_batch_size)

  return batches()


def load_frames(
  dataset_config, *, split: str, num_frames: int, seed: int
) -> dict[str, np.ndarray]:
  """Returns `num_frames` single frames with their factors, for MIG (eq. 8).

  Frames are drawn uniformly (seeded) over the videos of `split` and their
  time steps, and read one video at a time.

  Returns:
    "frames" uint8 [N, H, W, C], "content_factors" int32 [N, Fc],
    "pose_factors" int32 [N, Fp].
  """
  builder = prepared.prepare_dataset(dataset_config)
  source = data_source(builder, split, dataset_config)
  seq_len = builder.builder_config.seq_len
  rng = np.random.default_rng(seed)
  video_ids = rng.integers(0, len(source), size=num_frames)
  time_steps = rng.integers(0, seq_len, size=num_frames)
  features = builder.info.features
  _, height, width, channels = features["video"].shape
  result = {
    "frames": np.zeros((num_frames, height, width, channels), np.uint8),
    "content_factors": np.zeros(
      (num_frames, *features["content_factors"].shape), np.int32
    ),
    "pose_factors": np.zeros(
      (num_frames, features["pose_factors"].shape[-1]), np.int32
    ),
  }
  order = np.argsort(video_ids, kind="stable")
  unique_ids, starts = np.unique(video_ids[order], return_index=True)
  for video_id, rows in zip(unique_ids, np.split(order, starts[1:]), strict=True):
    example = source[int(video_id)]
    steps = time_steps[rows]
    result["frames"][rows] = example["video"][steps]
    result["content_factors"][rows] = example["content_factors"]
    result["pose_factors"][rows] = example["pose_factors"][steps]
  return result
