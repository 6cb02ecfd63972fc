"""The trained main network in inference mode: encode, decode, swap.

Pure functions of the state's (params, batch_stats) dicts, each one
`MainNetwork.apply(..., method=...)` call, used by image summaries, the pose
LSTM stage, prediction and evaluation.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mipae_jax.models import common
from mipae_jax.models.main_network import MainNetwork
from mipae_jax.models.networks import Networks

Variables = dict[str, Any]


def to_float_frames(frames: jnp.ndarray) -> jnp.ndarray:
  """uint8 frames in [0, 255] to float32 in [0, 1]; floats pass through."""
  if frames.dtype == jnp.uint8:
    return frames.astype(jnp.float32) / 255.0
  return frames.astype(jnp.float32)


def _in_calls(
  encode: Callable[[jnp.ndarray], Any], frames: jnp.ndarray, frames_per_call: int
) -> Any:
  """encode(frames) for an encoder in inference mode, run in several calls.

  Each frame's code depends on that frame alone (BatchNorm uses its running
  statistics), so the frames can go through in `lax.map` calls of about
  `frames_per_call` per device: XLA CPU's convolutions run 1.2-1.5x faster
  on such cache-sized batches than on one batch of thousands of frames. The
  calls take `common.interleaved_chunks`, so frames sharded over the batch
  axis stay where they are. 0, or too few frames, makes one call.
  """
  num_frames = frames.shape[0]
  calls = 1
  if frames_per_call > 0:
    wanted = num_frames // (frames_per_call * jax.device_count())
    calls = common.num_batch_chunks(num_frames, wanted)
  if calls == 1:
    return encode(frames)
  chunks = common.interleaved_chunks(frames, calls)
  out = jax.lax.map(encode, jnp.swapaxes(chunks, 0, 1))
  return jax.tree.map(
    lambda x: jnp.swapaxes(x, 0, 1).reshape(num_frames, *x.shape[2:]), out
  )


def _main_variables(params: Variables, batch_stats: Variables) -> Variables:
  """The MainNetwork's variables out of the state's (which hold the critic)."""
  return {
    "params": {k: v for k, v in params.items() if k != "critic"},
    "batch_stats": batch_stats,
  }


def _encode(
  networks: Networks,
  params: Variables,
  batch_stats: Variables,
  frames: jnp.ndarray,
  method: Callable[..., Any],
) -> Any:
  """A MainNetwork encoder `method` of frames [N, H, W, C], in inference
  mode and in calls of networks.inference_frames_per_call."""
  variables = _main_variables(params, batch_stats)

  def encode(chunk):
    return networks.main.apply(variables, to_float_frames(chunk), method=method)

  return _in_calls(encode, frames, networks.inference_frames_per_call)


def encode_content(
  networks: Networks, params: Variables, batch_stats: Variables, frames: jnp.ndarray
) -> tuple[jnp.ndarray, tuple[jnp.ndarray, ...]]:
  """E_c(x) for frames [N, H, W, C]: (z_c [N, |z_c|], skips)."""
  return _encode(networks, params, batch_stats, frames, MainNetwork.encode_content)


def encode_pose(
  networks: Networks, params: Variables, batch_stats: Variables, frames: jnp.ndarray
) -> jnp.ndarray:
  """E_p(x) for frames [N, H, W, C]: z_p [N, |z_p|]."""
  return _encode(networks, params, batch_stats, frames, MainNetwork.encode_pose)


def decode(
  networks: Networks,
  params: Variables,
  batch_stats: Variables,
  content_code: jnp.ndarray,
  pose_code: jnp.ndarray,
  skips: tuple[jnp.ndarray, ...] | None,
) -> jnp.ndarray:
  """D(z_c, z_p): frames [N, H, W, C] in [0, 1]."""
  return networks.main.apply(
    _main_variables(params, batch_stats),
    content_code,
    pose_code,
    skips,
    method=MainNetwork.decode,
  )


def swap_decode(
  networks: Networks,
  params: Variables,
  batch_stats: Variables,
  content_frames: jnp.ndarray,
  pose_frames: jnp.ndarray,
) -> jnp.ndarray:
  """Every (content, pose) pairing decoded: [R, M, H, W, C] (Figs. 3, 4, 6).

  Cell (r, m) is D(E_c(content_frames[r]), E_p(pose_frames[m])).
  """
  content_code, skips = encode_content(networks, params, batch_stats, content_frames)
  pose_code = encode_pose(networks, params, batch_stats, pose_frames)
  rows, cols = content_code.shape[0], pose_code.shape[0]
  tile = lambda a: jnp.repeat(a, cols, axis=0)  # noqa: E731
  decoded = decode(
    networks,
    params,
    batch_stats,
    tile(content_code),
    jnp.tile(pose_code, (rows, 1)),
    jax.tree.map(tile, skips),
  )
  return decoded.reshape(rows, cols, *decoded.shape[1:])
