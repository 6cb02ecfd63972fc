"""Training of the main network (E_c, E_p, D and the critic) for MIPAE and
DRNET: one pure sharded `train_step` and the stage's entry point (the loop
is loop.run, its feeds feeds.py, the state train_state.TrainState)."""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metric_writers, metrics

from mipae_jax import (
  autoencoder,
  checkpointing,
  config_fields,
  config_validation,
  device_data,
  feeds,
  input_pipeline,
  loop,
  objectives,
  sharding,
)
from mipae_jax.datasets import prepared
from mipae_jax.evaluation import visualize
from mipae_jax.models.main_network import MainNetwork
from mipae_jax.models.networks import Networks, build_networks
from mipae_jax.train_state import TrainState, abstract_state, init_state, split_params

_SHARED_METRICS = ("loss", "recon_loss", "sim_loss", "grad_norm", "critic_grad_norm")
# The clu metric collection of each method: averages of these step outputs.
METRICS = {
  "mipae": loop.averages(
    *_SHARED_METRICS, "mi_estimate", "critic_loss", "critic_accuracy", "param_norm"
  ),
  "drnet": loop.averages(
    *_SHARED_METRICS,
    "adversarial_loss",
    "discriminator_loss",
    "discriminator_accuracy",
    "param_norm",
  ),
}


def take_frame(video: jnp.ndarray, index: jax.Array) -> jnp.ndarray:
  """Frame `index` (one scalar for the whole batch) of every video [B, T, ...]."""
  return jax.lax.dynamic_index_in_dim(video, index, axis=1, keepdims=False)


def _accuracy(joint_logits, marginal_logits):
  return 0.5 * (jnp.mean(joint_logits > 0) + jnp.mean(marginal_logits < 0))


def marginal_partner(rng: jax.Array, size: int, kind: str) -> jnp.ndarray:
  """Index of each video's marginal partner: torch.randperm as in the
  reference ("permutation", about one fixed point per batch) or a
  derangement (the paper's "distinct video sequences")."""
  if kind == "derangement":
    return objectives.derangement(rng, size)
  return jax.random.permutation(rng, size)


class StepDraws(NamedTuple):
  """The random choices of one `train_step`."""

  critic_frames: jax.Array  # [2]: frames i, j of the critic's pairs
  critic_partner: jax.Array  # [B]: marginal partner of each critic pair
  offset: jax.Array  # k in [1, T-1]: the frame E_p and D work on
  other_frame: jax.Array  # j in [0, T-1]: the detached second pose code
  partner: jax.Array  # [B]: marginal partner of each main-network pair


def draw_step(
  rng: jax.Array, num_frames: int, batch_size: int, marginal_pairs: str
) -> StepDraws:
  """Draws a step's frame indices (one per batch, as the reference's
  `random.randint`) and marginal partners."""
  keys = jax.random.split(rng, 5)
  return StepDraws(
    critic_frames=jax.random.randint(keys[0], (2,), 0, num_frames),
    critic_partner=marginal_partner(keys[1], batch_size, marginal_pairs),
    offset=jax.random.randint(keys[2], (), 1, num_frames),
    other_frame=jax.random.randint(keys[3], (), 0, num_frames),
    partner=marginal_partner(keys[4], batch_size, marginal_pairs),
  )


def _critic_objective(method: str, joint: jnp.ndarray, marginal: jnp.ndarray):
  """Loss the critic minimises: -eq. 6 (MIPAE) or DRNET's BCE."""
  if method == "mipae":
    return objectives.critic_loss(joint, marginal)
  return objectives.scene_discriminator_loss(joint, marginal)


def train_step(
  networks: Networks,
  loss_config: ml_collections.ConfigDict,
  method: str,
  state: TrainState,
  batch: dict[str, jnp.ndarray],
  rng: jax.Array,
) -> tuple[TrainState, metrics.Collection]:
  """One step of the reference solver: the critic, then E_c, E_p and D.

  1. Critic (eq. 6, or DRNET's scene discriminator) on `batch["critic_video"]`:
     pose codes of two frames i, j drawn independently (no gradient into
     E_p), marginal pairs by shuffling the second code over the batch.
  2. E_c, E_p, D (eq. 5, or DRNET's loss) on `batch["video"]` against the
     critic just updated: k ~ U[1, T-1], j ~ U[0, T-1]; z_c = E_c(x^0)
     (eq. 1 against E_c(x^k), detached); D reconstructs x^k from
     (z_c, E_p(x^k)) (eq. 4; x^0 from its own codes with recon_target
     "same"); eq. 3 pairs E_p(x^k) with the detached E_p(x^j), so the
     gradient flows through one pose code only.
  Frame indices are one draw per batch, as in the reference. BatchNorm
  statistics follow every training-mode call, critic phase included.
  """
  sg = jax.lax.stop_gradient
  video, critic_video = batch["video"], batch["critic_video"]
  draws = draw_step(rng, video.shape[1], video.shape[0], loss_config.marginal_pairs)
  main_params, critic_params = split_params(state.params)
  stats = state.batch_stats

  def critic_fn(params, a, b):
    return networks.critic.apply({"params": params}, a, b)

  # 1. The critic, on its own batch.
  codes = []
  for index in draws.critic_frames:
    frames = autoencoder.to_float_frames(take_frame(critic_video, index))
    code, updates = networks.main.apply(
      {"params": main_params, "batch_stats": stats},
      frames,
      train=True,
      method=MainNetwork.encode_pose,
      mutable=["batch_stats"],
    )
    stats = updates["batch_stats"]
    codes.append(sg(code))
  pose_i, pose_j = codes

  def critic_loss_fn(params):
    joint = critic_fn(params, pose_i, pose_j)
    marginal = critic_fn(params, pose_i, pose_j[draws.critic_partner])
    return _critic_objective(method, joint, marginal), (joint, marginal)

  (critic_objective, (joint_c, marginal_c)), critic_grads = jax.value_and_grad(
    critic_loss_fn, has_aux=True
  )(critic_params)
  critic_updates, critic_opt = state.tx.update(
    critic_grads, state.opt_state["critic"], critic_params
  )
  critic_params = optax.apply_updates(critic_params, critic_updates)

  # 2. E_c, E_p and D, on the other batch, against the updated critic.
  frames_0 = autoencoder.to_float_frames(take_frame(video, 0))
  frames_k = autoencoder.to_float_frames(take_frame(video, draws.offset))
  frames_j = autoencoder.to_float_frames(take_frame(video, draws.other_frame))
  recon_frames = frames_0 if loss_config.recon_target == "same" else frames_k

  def loss_fn(params):
    out, updates = networks.main.apply(
      {"params": params, "batch_stats": stats},
      frames_0,
      frames_k,
      recon_frames,
      frames_j,
      train=True,
      mutable=["batch_stats"],
    )
    content_0, decoded = out["content_0"], out["decoded"]
    content_k, pose, pose_other = out["content_k"], out["pose"], sg(out["pose_other"])
    recon = objectives.reconstruction_loss(decoded, recon_frames)
    sim = objectives.similarity_loss(content_0, content_k)
    joint = critic_fn(critic_params, pose, pose_other)
    if method == "mipae":
      marginal = critic_fn(critic_params, pose, pose_other[draws.partner])
      mi = objectives.mutual_information_bound(joint, marginal)
      main = objectives.mipae_loss(
        recon, sim, mi, loss_config.sim_weight, loss_config.mi_weight
      )
      logs = dict(mi_estimate=mi)
    else:
      adversarial = objectives.adversarial_pose_loss(joint)
      main = objectives.drnet_loss(
        recon, sim, adversarial, loss_config.sim_weight, loss_config.adversarial_weight
      )
      logs = dict(adversarial_loss=adversarial)
    logs.update(loss=main, recon_loss=recon, sim_loss=sim)
    return main, (updates["batch_stats"], logs)

  grads, (batch_stats, logs) = jax.grad(loss_fn, has_aux=True)(main_params)
  updates, main_opt = state.tx.update(grads, state.opt_state["main"], main_params)
  main_params = optax.apply_updates(main_params, updates)
  params = {**main_params, "critic": critic_params}
  accuracy = _accuracy(joint_c, marginal_c)
  if method == "mipae":
    logs.update(critic_loss=critic_objective, critic_accuracy=accuracy)
  else:
    logs.update(discriminator_loss=critic_objective, discriminator_accuracy=accuracy)
  logs.update(
    grad_norm=optax.tree.norm(grads),
    critic_grad_norm=optax.tree.norm(critic_grads),
    param_norm=optax.tree.norm(params),
  )
  new_state = state.replace(
    step=state.step + 1,
    params=params,
    batch_stats=batch_stats,
    opt_state={"main": main_opt, "critic": critic_opt},
  )
  return new_state, METRICS[method].single_from_model_output(**logs)


def make_train_step(
  networks: Networks,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  state_sharding,
):
  """`train_step` jitted once with explicit shardings and the state donated."""
  batch_sharding = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)
  return jax.jit(
    functools.partial(train_step, networks, config.loss, config.method),
    in_shardings=(state_sharding, batch_sharding, replicated),
    out_shardings=(state_sharding, replicated),
    donate_argnums=0,
  )


def make_image_hook(
  networks: Networks, video_of: Callable[[int, Any], Any]
) -> Callable[..., None]:
  """`hook(writer, step, state, batch)`: reconstructions and a pose/content
  swap grid of a few videos of the main-network batch `video_of(step,
  batch)` (the decoder jitted once)."""
  swap_decode = jax.jit(functools.partial(autoencoder.swap_decode, networks))

  def hook(writer: metric_writers.MetricWriter, step: int, state, batch) -> None:
    # Local copies: process 0 renders alone, with no cross-process collective.
    video = video_of(step, batch)
    if isinstance(video, jax.Array) and not video.is_fully_addressable:
      video = video.addressable_data(0)
    video = np.asarray(video)
    params, batch_stats = jax.tree.map(
      lambda x: x.addressable_data(0), (state.params, state.batch_stats)
    )
    content_frames = video[: min(4, video.shape[0]), 0]
    pose_frames = video[0, : min(8, video.shape[1])]
    grid = np.asarray(swap_decode(params, batch_stats, content_frames, pose_frames))
    # Row 0 pairs video 0's content with its own poses: its reconstructions.
    reconstructions = np.stack([pose_frames / 255.0, grid[0]], axis=0)
    writer.write_images(
      step,
      {
        "train_swap_grid": visualize.labelled(
          visualize.swap_grid_image(content_frames, pose_frames, grid),
          f"step {step}: swap grid (training videos)",
          *visualize.SWAP_GRID_LABELS,
        )[None],
        "train_reconstructions": visualize.tile(reconstructions)[None],
      },
    )

  return hook


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains the main network in `workdir`, resuming from its latest checkpoint
  (or config.restore_step).

  Everything that can fail without compiling is checked first: the config,
  the workdir (writable), the checkpoint's fingerprint, the dataset and its
  files. The checkpoint manager is closed on every exit: saves in flight
  finish, and an error propagates as it was raised.
  """
  config_validation.validate(config)
  mesh = sharding.create_mesh()
  config_validation.check_batch_size(config.batch_size, mesh)
  info = prepared.dataset_info(config.dataset)
  config_validation.check_dataset(config, info)
  image_shape = (info.height, info.width, info.channels)
  networks = build_networks(config, info.channels)

  with checkpointing.Checkpointer(
    workdir, config, info, restore_step=config.restore_step, writable=True
  ) as checkpoints:
    base_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    one_step = functools.partial(train_step, networks, config.loss, config.method)
    if config.dataset.placement == "device":
      feed = feeds.device_feed(
        one_step,
        config,
        mesh,
        device_data.place_train_videos(config.dataset, mesh),
        base_rng,
      )
    else:
      train_iter = input_pipeline.create_train_iterator(
        config.dataset,
        global_batch_size=config.batch_size,
        sharding=sharding.batch_sharding(mesh),
        seed=config.seed,
      )
      # One replicated sharding for every leaf of the state: the restored and
      # the initial state carry different (equal-shaped) optimiser objects.
      single = make_train_step(networks, config, mesh, sharding.replicated(mesh))
      feed = feeds.host_feed(one_step, single, mesh, train_iter, base_rng)
    state = checkpoints.restore_or_initialize(
      abstract_state(networks, config, mesh, image_shape),
      lambda: init_state(networks, config, mesh, image_shape)[0],
      feed.train_iter,
    )
    return loop.run(
      state,
      feed.step_fn,
      feed.next_batch,
      loop.Schedule(
        config.num_train_steps,
        config.log_every_steps,
        config.image_every_steps,
        config.checkpoint_every_steps,
        steps_per_call=config.steps_per_call,
      ),
      checkpoints,
      feed.train_iter,
      loop.Output(workdir, config_fields.flat_hparams(config)),
      make_image_hook(networks, feed.video_of),
      name=f"{config.method} main network",
    )
