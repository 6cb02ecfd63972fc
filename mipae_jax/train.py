"""Training of the main network (E_c, E_p, D and the critic) for MIPAE and
DRNET: one pure sharded `train_step` and the stage's entry point (the loop
is loop.run, the state train_state.TrainState)."""

import functools
from collections.abc import Callable, Iterator
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


def next_batch(train_iter: Iterator[dict[str, Any]]) -> dict[str, Any]:
  """The two batches of one step, drawn in the reference's order: the
  critic's first, then the main network's."""
  critic = next(train_iter)["video"]
  return {"critic_video": critic, "video": next(train_iter)["video"]}


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


def _scanned_steps(
  one_step: Callable, state: TrainState, xs: Any
) -> tuple[TrainState, metrics.Collection]:
  """`one_step(state, x)` over the leading axis of `xs`, metrics merged on
  the device."""
  state, stacked = jax.lax.scan(one_step, state, xs)
  return state, loop.summed(stacked)


def host_steps(
  networks: Networks,
  loss_config: ml_collections.ConfigDict,
  method: str,
  state: TrainState,
  videos: jnp.ndarray,
  steps: jax.Array,
  base_rng: jax.Array,
) -> tuple[TrainState, metrics.Collection]:
  """len(steps) train steps in one call, on host batches `videos` [2 K, B,
  ...] (critic, main, critic, ...: the order of next_batch)."""
  pairs = videos.reshape(len(steps), 2, *videos.shape[1:])

  def one_step(state, x):
    pair, step = x
    batch = {"critic_video": pair[0], "video": pair[1]}
    rng = jax.random.fold_in(base_rng, step)
    return train_step(networks, loss_config, method, state, batch, rng)

  return _scanned_steps(one_step, state, (pairs, steps))


def device_steps(
  networks: Networks,
  loss_config: ml_collections.ConfigDict,
  method: str,
  batch_size: int,
  batch_sharding: jax.sharding.NamedSharding,
  num_steps: int,
  state: TrainState,
  videos: jax.Array,
  first_step: jax.Array,
  base_rng: jax.Array,
  data_key: jax.Array,
) -> tuple[TrainState, metrics.Collection]:
  """`num_steps` train steps in one call, each gathering its batches from
  the device-stored `videos` (device_data.step_batch)."""

  def one_step(state, step):
    batch = device_data.step_batch(videos, data_key, step, batch_size, batch_sharding)
    rng = jax.random.fold_in(base_rng, step)
    return train_step(networks, loss_config, method, state, batch, rng)

  return _scanned_steps(one_step, state, first_step + jnp.arange(num_steps))


class TrainData(NamedTuple):
  """How the loop feeds the steps: `next_batch(num_steps)`, `step_fn(state,
  batch, first_step, num_steps)`, the iterator state to checkpoint (None:
  nothing), and `video_of(step, batch)`, the main-network batch of a call's
  last step for the image hook."""

  next_batch: Callable[[int], Any]
  step_fn: loop.StepFn
  train_iter: Any
  video_of: Callable[[int, Any], Any]


def host_data(
  networks: Networks,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  train_iter: input_pipeline.TrainIterator,
  base_rng: jax.Array,
) -> TrainData:
  """Batches from the grain iterator: one per call of the jitted train_step
  (steps_per_call 1), or 2 K stacked for a call of K scanned steps."""
  # One replicated sharding for every leaf of the state: the restored and the
  # initial state carry different (equal-shaped) optimiser objects.
  replicated = sharding.replicated(mesh)
  single = make_train_step(networks, config, mesh, replicated)
  stacked = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
  several = jax.jit(
    functools.partial(host_steps, networks, config.loss, config.method),
    in_shardings=(replicated, stacked, replicated, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )

  def next_batches(num_steps: int) -> Any:
    if num_steps == 1:
      return next_batch(train_iter)
    return train_iter.next_stacked(2 * num_steps)["video"]

  def step_fn(state, batch, first_step: int, num_steps: int):
    if num_steps == 1:
      return single(state, batch, jax.random.fold_in(base_rng, first_step))
    steps = np.arange(first_step, first_step + num_steps, dtype=np.int32)
    return several(state, batch, steps, base_rng)

  def video_of(step: int, batch: Any) -> Any:
    return batch["video"] if isinstance(batch, dict) else batch[-1]

  return TrainData(next_batches, step_fn, train_iter, video_of)


def device_data_feed(
  networks: Networks,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  videos: jax.Array,
  base_rng: jax.Array,
) -> TrainData:
  """Batches gathered inside the step from the device-stored `videos`: the
  host passes only the first step number of each call."""
  replicated = sharding.replicated(mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  data_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 3)

  @functools.cache
  def compiled(num_steps: int):
    return jax.jit(
      functools.partial(
        device_steps,
        networks,
        config.loss,
        config.method,
        config.batch_size,
        batch_sharding,
        num_steps,
      ),
      in_shardings=(replicated, videos.sharding, replicated, replicated, replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=0,
    )

  def step_fn(state, batch, first_step: int, num_steps: int):
    return compiled(num_steps)(state, videos, np.int32(first_step), base_rng, data_key)

  gather = jax.jit(
    lambda videos, step: device_data.step_batch(
      videos, data_key, step, config.batch_size, batch_sharding
    )["video"]
  )

  def video_of(step: int, batch: Any) -> Any:
    return gather(videos, np.int32(step))

  return TrainData(lambda num_steps: None, step_fn, None, video_of)


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
    if config.dataset.placement == "device":
      feed = device_data_feed(
        networks,
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
      feed = host_data(networks, config, mesh, train_iter, base_rng)
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
