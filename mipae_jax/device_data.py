"""Training videos stored on the accelerators (`config.dataset.placement =
"device"`): put there once, gathered inside the jitted step.

The train split's first `num_frames` frames (uint8) are placed on the devices
once: replicated when a copy fits every device, else sharded over the data
axis. Every step then draws its two batches (the critic's, then the main
network's) inside the jitted call, so the host does nothing per step.

The draws follow the host path's sampling: the stored videos are read in
epochs, each a permutation of the split keyed by (seed, epoch), and the b-th
batch of the run holds records b * B ... (b + 1) * B - 1 of that endless
stream (a batch may straddle two epochs). Batch b of step s is 2 (s - 1) for
the critic and 2 (s - 1) + 1 for the main network, so a step's batches are a
function of (seed, step) alone: resume is exact with no iterator state, and
the number of steps per call changes nothing.
"""

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mipae_jax import input_pipeline, sharding
from mipae_jax.datasets import prepared


def load_train_videos(dataset_config, num_frames: int) -> np.ndarray:
  """uint8 [N, num_frames, H, W, C]: the first frames of every stored train video."""
  builder = prepared.prepare_dataset(dataset_config)
  input_pipeline.check_num_frames(builder, num_frames)
  source = input_pipeline.data_source(
    builder,
    "train",
    dataset_config,
    {"video": input_pipeline.VideoPrefixDecoder(num_frames)},
  )
  first = source[0]["video"]
  videos = np.empty((len(source), *first.shape), np.uint8)
  videos[0] = first
  for index in range(1, len(source)):
    videos[index] = source[index]["video"]
  return videos


def _free_bytes(device: jax.Device) -> tuple[int, str]:
  """(bytes free for one device, where that figure comes from)."""
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and "bytes_limit" in stats:
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0), str(device)
  # CPU devices share the host's memory.
  local = max(1, jax.local_device_count())
  available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  return available // local, f"host memory shared by {local} CPU devices"


def choose_sharding(
  nbytes: int, num_videos: int, mesh: jax.sharding.Mesh, memory_fraction: float
) -> jax.sharding.NamedSharding:
  """Replicated when a copy of the `nbytes` of videos fits in
  `memory_fraction` of every device's free memory, else sharded over the data
  axis; a ValueError of one line when neither fits."""
  free, where = min(_free_bytes(d) for d in mesh.devices.flat)
  budget = int(memory_fraction * free)
  if nbytes <= budget:
    return sharding.replicated(mesh)
  shards = mesh.shape[sharding.DATA_AXIS]
  if shards > 1 and math.ceil(nbytes / shards) <= budget:
    if num_videos % shards:
      raise ValueError(
        f"config.dataset.placement='device': {num_videos} train videos do not "
        f"split evenly over the {shards} data shards they must be spread over."
      )
    return sharding.batch_sharding(mesh)
  raise ValueError(
    f"config.dataset.placement='device': the train frames take "
    f"{nbytes / 2**30:.2f} GiB, more than the {budget / 2**30:.2f} GiB allowed "
    f"per device (config.dataset.device_memory_fraction={memory_fraction} of "
    f"{free / 2**30:.2f} GiB free, {where}), even sharded over {shards} data "
    "shard(s); use placement='host' or fewer dataset.num_frames."
  )


def place_train_videos(
  dataset_config, mesh: jax.sharding.Mesh, num_frames: int | None = None
) -> jax.Array:
  """The stored train videos as one uint8 jax.Array on the mesh (see
  choose_sharding); checked to fit before anything is placed."""
  num_frames = num_frames or dataset_config.num_frames
  videos = load_train_videos(dataset_config, num_frames)
  placement = choose_sharding(
    videos.nbytes, len(videos), mesh, dataset_config.device_memory_fraction
  )
  logging.info(
    "Placing %d train videos (%.1f MiB) on the devices, %s.",
    len(videos),
    videos.nbytes / 2**20,
    "replicated" if not tuple(placement.spec) else "sharded over the data axis",
  )
  return jax.make_array_from_callback(videos.shape, placement, lambda i: videos[i])


def stream_indices(
  key: jax.Array, num_videos: int, first_record: jax.Array, count: int
) -> jax.Array:
  """Records first_record ... first_record + count - 1 of the endless stream
  of epochs, each epoch e a permutation of range(num_videos) keyed by
  fold_in(key, e) (count <= num_videos: at most two epochs are touched)."""
  records = first_record + jnp.arange(count)
  epochs, positions = records // num_videos, records % num_videos
  first_epoch = first_record // num_videos
  permutations = jnp.stack(
    [
      jax.random.permutation(jax.random.fold_in(key, first_epoch + i), num_videos)
      for i in range(2)
    ]
  )
  return permutations[epochs - first_epoch, positions]


def step_batch(
  videos: jax.Array,
  key: jax.Array,
  step: jax.Array,
  batch_size: int,
  batch_sharding: jax.sharding.NamedSharding,
) -> dict[str, Any]:
  """The two batches of training step `step` (1-based), gathered on the
  devices: "critic_video" is stream batch 2 (step - 1), "video" the next."""
  num_videos = videos.shape[0]
  if batch_size > num_videos:
    raise ValueError(
      f"config.batch_size={batch_size} exceeds the {num_videos} stored train videos."
    )
  first = 2 * (step.astype(jnp.int32) - 1) * batch_size
  batches = {}
  for offset, name in enumerate(("critic_video", "video")):
    indices = stream_indices(key, num_videos, first + offset * batch_size, batch_size)
    batches[name] = jax.lax.with_sharding_constraint(
      jnp.take(videos, indices, axis=0), batch_sharding
    )
  return batches
