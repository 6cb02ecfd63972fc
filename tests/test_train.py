"""The DCGAN networks and the sharded MIPAE / DRNET train step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mipae_jax import sharding, train, train_state
from mipae_jax.configs import drnet_dsprites, mipae_dsprites
from mipae_jax.models import dcgan
from mipae_jax.models.networks import build_networks


def _count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def _conv(k, c_in, c_out):
  return k * k * c_in * c_out + c_out


def test_dcgan_encoder_parameter_count_and_shapes():
  enc = dcgan.DCGANEncoder(128)
  x = jnp.zeros((2, 64, 64, 3))
  variables = enc.init(jax.random.PRNGKey(0), x, train=False)
  (code, skips), _ = enc.apply(variables, x, train=True, mutable=["batch_stats"])
  channels = [3, 64, 128, 256, 512]
  expected = sum(
    _conv(4, a, b) + 2 * b for a, b in zip(channels[:-1], channels[1:], strict=True)
  )
  expected += _conv(4, 512, 128) + 2 * 128
  assert _count(variables["params"]) == expected
  assert code.shape == (2, 128)
  assert [s.shape for s in skips] == [
    (2, 32, 32, 64),
    (2, 16, 16, 128),
    (2, 8, 8, 256),
    (2, 4, 4, 512),
  ]
  assert np.all(np.abs(code) <= 1)


@pytest.mark.parametrize("skip_connections", [False, True])
def test_dcgan_decoder_parameter_count_and_shapes(skip_connections):
  dec = dcgan.DCGANDecoder(3, skip_connections=skip_connections)
  skips = tuple(jnp.zeros((2, 64 // 2**i, 64 // 2**i, 32 * 2**i)) for i in range(1, 5))
  variables = dec.init(
    jax.random.PRNGKey(0), jnp.zeros((2, 128)), jnp.zeros((2, 5)), skips, False
  )
  out = dec.apply(variables, jnp.zeros((2, 128)), jnp.zeros((2, 5)), skips, False)
  m = 2 if skip_connections else 1
  expected = _conv(4, 133, 512) + 2 * 512
  expected += _conv(4, 512 * m, 256) + 2 * 256
  expected += _conv(4, 256 * m, 128) + 2 * 128
  expected += _conv(4, 128 * m, 64) + 2 * 64
  expected += _conv(4, 64 * m, 3)
  assert _count(variables["params"]) == expected
  assert out.shape == (2, 64, 64, 3)
  assert np.all((out >= 0) & (out <= 1))


def _setup(config, mesh):
  networks = build_networks(config, 3)
  state, state_sharding = train_state.init_state(networks, config, mesh, (64, 64, 3))
  step_fn = train.make_train_step(networks, config, mesh, state_sharding)
  return networks, state, step_fn


def _videos(batch_size, num_frames, seed):
  """Squares moving right: learnable, with a per-video colour and row."""
  rng = np.random.default_rng(seed)
  video = np.zeros((batch_size, num_frames, 64, 64, 3), np.uint8)
  for b in range(batch_size):
    colour = rng.integers(0, 3)
    y = rng.integers(0, 48)
    for t in range(num_frames):
      x = 4 * t
      video[b, t, y : y + 12, x : x + 12, colour] = 255
  return video


def _video_batch(batch_size, num_frames=6, seed=0):
  """The two batches of one step: the main network's and the critic's."""
  return {
    "video": _videos(batch_size, num_frames, seed),
    "critic_video": _videos(batch_size, num_frames, seed + 1),
  }


def _small(config_module):
  config = config_module.get_config()
  config.batch_size = 8
  return config


@pytest.mark.parametrize("config_module", [mipae_dsprites, drnet_dsprites])
def test_step_runs_once_compiled_and_reports_every_loss(config_module):
  config = _small(config_module)
  mesh = sharding.create_mesh()
  _, state, step_fn = _setup(config, mesh)
  batch = jax.device_put(_video_batch(8), sharding.batch_sharding(mesh))
  for i in range(2):
    state, metrics = step_fn(state, batch, jax.random.PRNGKey(i))
  assert step_fn._cache_size() == 1
  values = metrics.compute()
  expected = {
    "loss",
    "recon_loss",
    "sim_loss",
    "grad_norm",
    "critic_grad_norm",
    "param_norm",
  } | (
    {"mi_estimate", "critic_loss", "critic_accuracy"}
    if config.method == "mipae"
    else {"adversarial_loss", "discriminator_loss", "discriminator_accuracy"}
  )
  assert set(values) == expected
  assert all(np.isfinite(v) for v in values.values())
  assert int(state.step) == 2


@pytest.mark.slow
def test_steps_lower_the_reconstruction_loss():
  config = _small(mipae_dsprites)
  mesh = sharding.create_mesh(jax.devices()[:1])
  _, state, step_fn = _setup(config, mesh)
  batch = _video_batch(8)
  losses = []
  for i in range(12):
    state, metrics = step_fn(state, batch, jax.random.PRNGKey(i))
    losses.append(float(metrics.compute()["recon_loss"]))
  assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


def _replicated_like(tree, mesh):
  replicated = sharding.replicated(mesh)
  return jax.tree.map(lambda _: replicated, tree)


def _sgd_steps(config, devices, num_steps=2):
  """Params and metrics after `num_steps` SGD (lr 1) steps on a fixed batch.

  With lr 1 a parameter difference is a gradient difference. (Adam's first
  update is lr * sign(g), which turns float-rounding noise in near-zero
  gradients into differences of size lr.)
  """
  batch = _video_batch(8)
  sgd = optax.sgd(1.0)
  mesh = sharding.create_mesh(devices)
  networks = build_networks(config, 3)
  state, _ = train_state.init_state(networks, config, mesh, (64, 64, 3))
  state = state.replace(tx=sgd, opt_state=train_state.init_opt_state(sgd, state.params))
  state_sharding = _replicated_like(state, mesh)
  step_fn = train.make_train_step(networks, config, mesh, state_sharding)
  for i in range(num_steps):
    state, metrics = step_fn(
      state,
      jax.device_put(batch, sharding.batch_sharding(mesh)),
      jax.random.PRNGKey(i),
    )
  return jax.device_get(state.params), metrics.compute()


def _assert_same_step(result, expected):
  (params, metrics), (expected_params, expected_metrics) = result, expected
  assert set(metrics) == set(expected_metrics)
  for key in metrics:
    # atol: I_JS = mean(C) - mean(exp C) + 1 cancels O(1) terms to ~1e-3.
    np.testing.assert_allclose(
      metrics[key], expected_metrics[key], rtol=1e-4, atol=1e-5
    )
  jax.tree.map(
    functools.partial(np.testing.assert_allclose, rtol=1e-3, atol=2e-5),
    params,
    expected_params,
  )


def test_eight_device_step_equals_one_device_step():
  """Same batches and RNG on 1 and 8 devices: same metrics and gradients.

  One step (critic and main network): a second lr-1 step would start from
  parameters it blows up, where summation-order rounding grows past 1e-3.
  """
  assert jax.device_count() == 8, "conftest.py sets 8 simulated CPU devices"
  config = _small(mipae_dsprites)
  _assert_same_step(
    _sgd_steps(config, jax.devices(), num_steps=1),
    _sgd_steps(config, jax.devices()[:1], num_steps=1),
  )


@pytest.mark.parametrize("config_module", [mipae_dsprites, drnet_dsprites])
def test_fast_and_plain_convs_give_the_same_losses_and_gradients(config_module):
  """model.conv_impl changes how the convolutions run, not what they compute.

  One step: the metrics and, through SGD with lr 1, the gradients on the same
  batch. (A second step would start from parameters that a step of lr 1 blows
  up; there the Winograd form's rounding, gradients within 3e-5 of their
  scale, moves the critic's MI estimate by 1e-4.)
  """
  results = {}
  for conv_impl in ("fast", "plain"):
    config = _small(config_module)
    config.model.conv_impl = conv_impl
    results[conv_impl] = _sgd_steps(config, jax.devices()[:1], num_steps=1)
  _assert_same_step(results["fast"], results["plain"])


@pytest.mark.slow
def test_bfloat16_training_tracks_float32():
  """bfloat16 activations (float32 params): finite, within 5 % of float32."""
  batch = _video_batch(8)
  mesh = sharding.create_mesh(jax.devices()[:1])
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config = _small(mipae_dsprites)
    config.model.dtype = dtype
    _, state, step_fn = _setup(config, mesh)
    for i in range(3):
      state, metrics = step_fn(state, batch, jax.random.PRNGKey(i))
    losses[dtype] = metrics.compute()
    leaves = jax.tree.leaves(state.params)
    assert all(leaf.dtype == np.float32 for leaf in leaves)
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves)
  for key in ("recon_loss", "loss"):
    np.testing.assert_allclose(
      losses["bfloat16"][key], losses["float32"][key], rtol=0.05
    )
