"""Frame prediction: encode the context, roll the pose LSTM, decode (Fig. 2).

x^_t = D(z_c^C, z^_p^t) with z_c^C the content of the last context frame and
z^_p^t from the scanned pose LSTM (eq. 7), for any horizon.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from mipae_jax import autoencoder, sharding
from mipae_jax.models.networks import Networks
from mipae_jax.models.pose_lstm import PoseLSTM

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Predictor:
  """The two trained stages: main network and pose LSTM (no parameters)."""

  networks: Networks
  pose_lstm: PoseLSTM


def encode_video(
  networks: Networks, main: Params, frames: jnp.ndarray
) -> tuple[jnp.ndarray, tuple[jnp.ndarray, ...], jnp.ndarray]:
  """(z_c, skips) of the last frame and E_p of every frame [B, S, |z_p|]."""
  batch_size, num_frames = frames.shape[:2]
  flat = frames.reshape(batch_size * num_frames, *frames.shape[2:])
  poses = autoencoder.encode_pose(networks, main["params"], main["batch_stats"], flat)
  content, skips = autoencoder.encode_content(
    networks, main["params"], main["batch_stats"], frames[:, -1]
  )
  return content, skips, poses.reshape(batch_size, num_frames, -1)


def _decode_future(
  networks: Networks, main: Params, content, skips, poses: jnp.ndarray
) -> jnp.ndarray:
  """D(z_c, z_p^t) for poses [B, T, |z_p|] and one content per video: [B, T, H, W, C]."""
  batch_size, horizon = poses.shape[:2]
  repeat = functools.partial(jnp.repeat, repeats=horizon, axis=0)
  frames = autoencoder.decode(
    networks,
    main["params"],
    main["batch_stats"],
    repeat(content),
    poses.reshape(batch_size * horizon, -1),
    jax.tree.map(repeat, skips),
  )
  return frames.reshape(batch_size, horizon, *frames.shape[1:])


def predict(
  predictor: Predictor, params: Params, context_frames: jnp.ndarray, horizon: int
) -> jnp.ndarray:
  """Predicted frames [B, horizon, H, W, C] in [0, 1] from C context frames.

  `params` is {"main": {"params", "batch_stats"}, "lstm": pose-LSTM params}.
  """
  if horizon < 1:
    raise ValueError(f"horizon must be >= 1, got {horizon}.")
  if context_frames.ndim != 5:
    raise ValueError(
      f"context_frames must be [B, C, H, W, ch], got {context_frames.shape}."
    )
  networks, main = predictor.networks, params["main"]
  content, skips, context_poses = encode_video(networks, main, context_frames)
  future = predictor.pose_lstm.apply(
    {"params": params["lstm"]}, content, context_poses, horizon, method=PoseLSTM.rollout
  )["future"]
  return _decode_future(networks, main, content, skips, future)


def make_predict_fn(predictor: Predictor, mesh: jax.sharding.Mesh, horizon: int):
  """`predict` jitted for one horizon, sharded over the batch like training."""
  return jax.jit(
    functools.partial(predict, predictor, horizon=horizon),
    in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
    out_shardings=sharding.batch_sharding(mesh),
  )


def reconstruct(
  networks: Networks, main: Params, context_frames: jnp.ndarray, frames: jnp.ndarray
) -> jnp.ndarray:
  """D(z_c^C, E_p(x^t)) for frames [B, T, H, W, C]: the future decoded with
  its true poses and the last context frame's content, in [0, 1] (what the
  decoder draws when the pose LSTM is perfect)."""
  batch_size, horizon = frames.shape[:2]
  content, skips = autoencoder.encode_content(
    networks, main["params"], main["batch_stats"], context_frames[:, -1]
  )
  poses = autoencoder.encode_pose(
    networks,
    main["params"],
    main["batch_stats"],
    frames.reshape(batch_size * horizon, *frames.shape[2:]),
  )
  return _decode_future(
    networks, main, content, skips, poses.reshape(batch_size, horizon, -1)
  )


def make_reconstruct_fn(networks: Networks, mesh: jax.sharding.Mesh):
  """`reconstruct` jitted, sharded over the batch: (main, context, future)."""
  batch = sharding.batch_sharding(mesh)
  return jax.jit(
    functools.partial(reconstruct, networks),
    in_shardings=(sharding.replicated(mesh), batch, batch),
    out_shardings=batch,
  )
