"""The frozen main network in inference mode: encoding in cache-sized calls."""

import dataclasses

import jax
import numpy as np
import pytest

from mipae_jax import autoencoder, train_state
from mipae_jax.configs import mipae_dsprites
from mipae_jax.models.networks import build_networks


@pytest.fixture(scope="module")
def trained_like_main():
  """Networks and variables with non-trivial BatchNorm running statistics."""
  config = mipae_dsprites.get_config()
  networks = build_networks(config, 3)
  params, batch_stats = jax.jit(train_state.init_variables, static_argnums=(0, 2, 3))(
    networks, jax.random.PRNGKey(0), (64, 64, 3), config.model.pose_dim
  )
  batch_stats = jax.tree.map(lambda s: s + 0.3, batch_stats)
  return networks, params, batch_stats


def _lowered_encode_pose(networks, params, batch_stats, frames) -> str:
  return (
    jax.jit(autoencoder.encode_pose, static_argnums=0)
    .lower(networks, params, batch_stats, frames)
    .as_text()
  )


def _frames(count):
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("frames_per_call, calls", [(1, 6), (2, 3), (3, 2)])
def test_encoding_in_several_calls_equals_one_call(
  trained_like_main, frames_per_call, calls
):
  networks, params, batch_stats = trained_like_main
  frames = _frames(6 * jax.device_count())
  chunked = dataclasses.replace(networks, inference_frames_per_call=frames_per_call)
  hlo = _lowered_encode_pose(chunked, params, batch_stats, frames)
  per_call = frames.shape[0] // calls
  assert f"tensor<{calls}x{per_call}x64x64x3xui8>" in hlo  # the frames, by call
  for encode in (autoencoder.encode_pose, autoencoder.encode_content):
    whole = jax.jit(encode, static_argnums=0)(networks, params, batch_stats, frames)
    split = jax.jit(encode, static_argnums=0)(chunked, params, batch_stats, frames)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), split, whole
    )


def test_encoding_in_calls_is_a_loop_over_chunks(trained_like_main):
  networks, params, batch_stats = trained_like_main
  frames = _frames(8 * jax.device_count())
  one_call = _lowered_encode_pose(networks, params, batch_stats, frames)
  chunked = dataclasses.replace(networks, inference_frames_per_call=2)
  assert "while" not in one_call  # the check can fail
  assert "while" in _lowered_encode_pose(chunked, params, batch_stats, frames)
