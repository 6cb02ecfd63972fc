"""The sharded MIPAE / DRNET train step, and its equality with the
reference solver's step written out by hand."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mipae_jax import feeds, objectives, sharding, train, train_state
from mipae_jax.configs import drnet_dsprites, mipae_dsprites
from mipae_jax.models import critics
from mipae_jax.models.main_network import MainNetwork
from mipae_jax.models.networks import Networks, build_networks


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


# DRNET's variants are slow checks: the same code path at the cost of a
# second compile (README, "Tests").
@pytest.mark.parametrize(
  "config_module",
  [mipae_dsprites, pytest.param(drnet_dsprites, marks=pytest.mark.slow)],
)
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


@pytest.mark.slow
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


# A second level over test_layers' per-layer and per-network equality.
@pytest.mark.slow
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


# The reference step: `train.train_step` equals the reference solver's step
# written out by hand.
#
# Tiny networks (one Dense layer and a BatchNorm each) keep it fast; the
# reference below recomputes every detached code outside the differentiated
# function, updates the critic first, and threads BatchNorm statistics in the
# reference's call order, so the comparison checks the gradient paths of
# `SolverAutoencoder.train_step`, not just its losses.


B, T, H, W, C = 6, 5, 4, 4, 1
CONTENT_DIM, POSE_DIM = 3, 2


class TinyEncoder(nn.Module):
  latent_dim: int
  return_skips: bool = True

  @nn.compact
  def __call__(self, x, train):
    # No bias before BatchNorm: it would get no gradient, and every other
    # parameter is checked to move.
    h = nn.Dense(self.latent_dim, use_bias=False)(x.reshape(x.shape[0], -1))
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
    return (jnp.tanh(h), ()) if self.return_skips else jnp.tanh(h)


class TinyDecoder(nn.Module):
  @nn.compact
  def __call__(self, content, pose, skips, train):
    h = nn.Dense(H * W * C, use_bias=False)(jnp.concatenate([content, pose], -1))
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
    return nn.sigmoid(h).reshape(-1, H, W, C)


def _networks(method):
  critic = critics.mi_critic(8) if method == "mipae" else critics.scene_discriminator(8)
  main = MainNetwork(
    TinyEncoder(CONTENT_DIM), TinyEncoder(POSE_DIM, False), TinyDecoder(), False
  )
  return Networks(main, critic)


def _loss_config(marginal_pairs="permutation"):
  return ml_collections.ConfigDict(
    dict(
      sim_weight=0.7,
      mi_weight=0.3,
      adversarial_weight=0.4,
      recon_target="offset",
      marginal_pairs=marginal_pairs,
    )
  )


def _state(networks, tx):
  params, batch_stats = train_state.init_variables(
    networks, jax.random.PRNGKey(0), (H, W, C), POSE_DIM
  )
  # A critic far from its N(0, 0.02) init, so that its gradients with
  # respect to the pose codes are large enough to tell the paths apart.
  params["critic"] = jax.tree.map(lambda p: 40.0 * p + 0.1, params["critic"])
  return train_state.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=train_state.init_opt_state(tx, params),
    tx=tx,
  )


def _batch():
  rng = np.random.default_rng(0)
  return {
    name: rng.integers(0, 256, (B, T, H, W, C), dtype=np.uint8)
    for name in ("video", "critic_video")
  }


def _reference_step(networks, loss_config, method, state, batch, draws, lr):
  """The reference solver's step with SGD(lr), written without train.py."""
  params, stats = dict(state.params), dict(state.batch_stats)

  def run(name, p, x):
    out, updates = getattr(networks.main, name).apply(
      {"params": p, "batch_stats": stats[name]}, *x, train=True, mutable=["batch_stats"]
    )
    stats[name] = updates["batch_stats"]
    return out

  frames = lambda video, t: video[:, t].astype(np.float32) / 255.0  # noqa: E731
  # Critic: Ep(x_i).detach(), Ep(x_j).detach(), computed outside any grad.
  i, j = (int(t) for t in draws.critic_frames)
  h1 = run("pose_encoder", params["pose_encoder"], (frames(batch["critic_video"], i),))
  h2 = run("pose_encoder", params["pose_encoder"], (frames(batch["critic_video"], j),))
  perm = np.asarray(draws.critic_partner)

  def critic_loss(p):
    joint = networks.critic.apply({"params": p}, h1, h2)
    marginal = networks.critic.apply({"params": p}, h1, h2[perm])
    if method == "mipae":
      return jnp.mean(jax.nn.softplus(-joint)) + jnp.mean(jax.nn.softplus(marginal))
    return 0.5 * (
      jnp.mean(optax.sigmoid_binary_cross_entropy(joint, jnp.ones_like(joint)))
      + jnp.mean(optax.sigmoid_binary_cross_entropy(marginal, jnp.zeros_like(marginal)))
    )

  g = jax.grad(critic_loss)(params["critic"])
  critic = jax.tree.map(lambda p, g: p - lr * g, params["critic"], g)

  # Main network: x_c1 = x[0], x_c2 = x_p1 = x[k], x_p2 = x[j'].
  video = batch["video"]
  k, j2 = int(draws.offset), int(draws.other_frame)
  x0, xk, xj = frames(video, 0), frames(video, k), frames(video, j2)
  perm = np.asarray(draws.partner)
  start_stats = dict(stats)

  def main_loss(p):
    stats.update(start_stats)
    content, _ = run("content_encoder", p["content_encoder"], (x0,))
    content_k = jax.lax.stop_gradient(
      run("content_encoder", p["content_encoder"], (xk,))[0]
    )
    pose = run("pose_encoder", p["pose_encoder"], (xk,))
    pose_other = jax.lax.stop_gradient(run("pose_encoder", p["pose_encoder"], (xj,)))
    decoded = run("decoder", p["decoder"], (content, pose, None))
    recon = jnp.mean((decoded - xk) ** 2)
    sim = jnp.mean((content - content_k) ** 2)
    joint = networks.critic.apply({"params": critic}, pose, pose_other)
    if method == "mipae":
      marginal = networks.critic.apply({"params": critic}, pose, pose_other[perm])
      term = loss_config.mi_weight * (jnp.mean(joint) - jnp.mean(jnp.exp(marginal)) + 1)
    else:
      sd = jnp.mean(
        optax.sigmoid_binary_cross_entropy(joint, jnp.full_like(joint, 0.5))
      )
      term = loss_config.adversarial_weight * sd
    return recon + loss_config.sim_weight * sim + term

  main = {n: params[n] for n in ("content_encoder", "pose_encoder", "decoder")}
  grads = jax.grad(main_loss)(main)
  main_loss(main)  # the statistics of the forward pass, outside the trace
  new = jax.tree.map(lambda p, g: p - lr * g, main, grads)
  return {**new, "critic": critic}, stats


@pytest.mark.parametrize("method", ["mipae", "drnet"])
@pytest.mark.parametrize(
  "marginal_pairs", ["permutation", pytest.param("derangement", marks=pytest.mark.slow)]
)
def test_step_equals_the_hand_written_reference_step(method, marginal_pairs):
  networks, loss_config = _networks(method), _loss_config(marginal_pairs)
  lr = 0.5
  state = _state(networks, optax.sgd(lr))
  batch, rng = _batch(), jax.random.PRNGKey(3)
  new_state, _ = jax.jit(
    lambda s, b, r: train.train_step(networks, loss_config, method, s, b, r)
  )(state, batch, rng)
  draws = train.draw_step(rng, T, B, marginal_pairs)
  params, stats = _reference_step(
    networks, loss_config, method, state, batch, draws, lr
  )
  # float32 rounding, amplified by the critic scaled 40x, reaches ~3e-4 of
  # a value (eager or jitted alike, before and after the MainNetwork); a
  # gradient through the detached pose code moves E_p's parameters by 8-17x
  # their value.
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # noqa: E731
  jax.tree.map(close, jax.device_get(new_state.params), jax.device_get(params))
  jax.tree.map(close, jax.device_get(new_state.batch_stats), jax.device_get(stats))
  # Every parameter moved: no network is cut off from its loss.
  moved = jax.tree.map(
    lambda a, b: bool(np.any(a != b)), new_state.params, state.params
  )
  assert all(jax.tree.leaves(moved)), moved


def test_draws_follow_the_reference_ranges():
  for seed in range(50):
    draws = train.draw_step(jax.random.PRNGKey(seed), T, B, "derangement")
    assert 1 <= int(draws.offset) <= T - 1
    assert 0 <= int(draws.other_frame) <= T - 1
    assert np.all(
      (0 <= np.asarray(draws.critic_frames)) & (np.asarray(draws.critic_frames) < T)
    )
    for partner in (draws.critic_partner, draws.partner):
      assert sorted(np.asarray(partner)) == list(range(B))
      assert np.all(np.asarray(partner) != np.arange(B))


@pytest.mark.parametrize("factory", [critics.mi_critic, critics.scene_discriminator])
def test_critic_init_is_normal_002_with_zero_bias(factory):
  critic = factory()
  assert critic.hidden_size == 512
  params = critic.init(jax.random.PRNGKey(0), jnp.zeros((1, 5)), jnp.zeros((1, 5)))[
    "params"
  ]
  for layer in ("hidden1", "hidden2", "logit"):
    kernel = np.asarray(params[layer]["kernel"])
    assert np.all(np.asarray(params[layer]["bias"]) == 0)
    if kernel.size > 1000:
      assert abs(kernel.std() - 0.02) < 0.002, (layer, kernel.std())
      assert abs(kernel.mean()) < 0.002
    else:
      assert np.max(np.abs(kernel)) < 0.1


def test_next_batch_takes_the_critic_batch_first():
  batches = iter([{"video": np.full((1,), n)} for n in range(4)])
  first, second = feeds.next_batch(batches), feeds.next_batch(batches)
  assert [int(first["critic_video"][0]), int(first["video"][0])] == [0, 1]
  assert [int(second["critic_video"][0]), int(second["video"][0])] == [2, 3]


def test_drnet_loss_is_the_weighted_sum():
  np.testing.assert_allclose(objectives.drnet_loss(1.0, 2.0, 3.0, 0.5, 0.1), 2.3)
