"""Training of the main network (E_c, E_p, D and the critic) for MIPAE and
DRNET: the train state, one pure sharded `train_step`, and the loop."""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, metrics, periodic_actions

from mipae_jax import (
  autoencoder,
  checkpointing,
  config_validation,
  input_pipeline,
  objectives,
  sharding,
  visualize,
)
from mipae_jax.models.networks import Networks, build_networks

Variables = dict[str, Any]
ENCODER_NAMES = ("content_encoder", "pose_encoder", "decoder")


class TrainState(flax.struct.PyTreeNode):
  """Parameters of all four networks, BatchNorm statistics, one Adam state.

  Adam is element-wise, so one optimiser over {E_c, E_p, D, critic} equals
  the reference's two optimisers with the same settings (Sec. IV-A).
  """

  step: jax.Array
  params: Variables
  batch_stats: Variables
  opt_state: optax.OptState
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


@flax.struct.dataclass
class MipaeMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  recon_loss: metrics.Average.from_output("recon_loss")
  sim_loss: metrics.Average.from_output("sim_loss")
  mi_estimate: metrics.Average.from_output("mi_estimate")
  critic_loss: metrics.Average.from_output("critic_loss")
  critic_accuracy: metrics.Average.from_output("critic_accuracy")


@flax.struct.dataclass
class DrnetMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  recon_loss: metrics.Average.from_output("recon_loss")
  sim_loss: metrics.Average.from_output("sim_loss")
  adversarial_loss: metrics.Average.from_output("adversarial_loss")
  discriminator_loss: metrics.Average.from_output("discriminator_loss")
  discriminator_accuracy: metrics.Average.from_output("discriminator_accuracy")


METRICS = {"mipae": MipaeMetrics, "drnet": DrnetMetrics}


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam, lr 0.002, b1 0.5 (Sec. IV-A)."""
  return optax.adam(config.learning_rate, b1=config.adam_b1, b2=config.adam_b2)


def init_variables(
  networks: Networks, rng: jax.Array, image_shape: tuple[int, int, int], pose_dim: int
) -> tuple[Variables, Variables]:
  """Initial (params, batch_stats) of the four networks for [H, W, C] frames."""
  rngs = jax.random.split(rng, 4)
  frames = jnp.zeros((2, *image_shape), jnp.float32)
  content_vars = networks.content_encoder.init(rngs[0], frames, train=False)
  pose_vars = networks.pose_encoder.init(rngs[1], frames, train=False)
  content_code, skips = networks.content_encoder.apply(
    content_vars, frames, train=False
  )
  pose_code = jnp.zeros((2, pose_dim), jnp.float32)
  decoder_vars = networks.decoder.init(
    rngs[2],
    content_code,
    pose_code,
    skips if networks.skip_connections else None,
    train=False,
  )
  critic_vars = networks.critic.init(rngs[3], pose_code, pose_code)
  params = {
    "content_encoder": content_vars["params"],
    "pose_encoder": pose_vars["params"],
    "decoder": decoder_vars["params"],
    "critic": critic_vars["params"],
  }
  batch_stats = {
    "content_encoder": content_vars["batch_stats"],
    "pose_encoder": pose_vars["batch_stats"],
    "decoder": decoder_vars["batch_stats"],
  }
  return params, batch_stats


def create_train_state(
  networks: Networks,
  config: ml_collections.ConfigDict,
  rng: jax.Array,
  image_shape: tuple[int, int, int],
) -> TrainState:
  """A fresh TrainState (call under jit with out_shardings to place it)."""
  params, batch_stats = init_variables(
    networks, rng, image_shape, config.model.pose_dim
  )
  tx = create_optimizer(config)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    tx=tx,
  )


def sample_frame_pairs(
  video: jnp.ndarray, rng: jax.Array
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Per video, k ~ U[1, T-1] and t ~ U[0, T-1-k]: frames x^t and x^{t+k}."""
  batch_size, num_frames = video.shape[:2]
  rng_k, rng_t = jax.random.split(rng)
  offset = jax.random.randint(rng_k, (batch_size,), 1, num_frames)
  start = jax.random.randint(rng_t, (batch_size,), 0, num_frames - offset)

  def take(index):
    index = index[:, None, None, None, None]
    return jnp.take_along_axis(video, index, axis=1)[:, 0]

  return take(start), take(start + offset)


def _apply_train(module, params, batch_stats, *args):
  """Applies a network in training mode; returns (output, new batch_stats)."""
  out, updates = module.apply(
    {"params": params, "batch_stats": batch_stats},
    *args,
    train=True,
    mutable=["batch_stats"],
  )
  return out, updates["batch_stats"]


def _pose_code(out):
  return out[0] if isinstance(out, tuple) else out


def _accuracy(joint_logits, marginal_logits):
  return 0.5 * (jnp.mean(joint_logits > 0) + jnp.mean(marginal_logits < 0))


def train_step(
  networks: Networks,
  loss_config: ml_collections.ConfigDict,
  method: str,
  state: TrainState,
  batch: dict[str, jnp.ndarray],
  rng: jax.Array,
) -> tuple[TrainState, metrics.Collection]:
  """One update of E_c, E_p, D (eq. 5, or DRNET's loss) and of the critic.

  The encoders see two frames x^t, x^{t+k} of each video; D reconstructs
  x^{t+k} from (E_c(x^t), E_p(x^{t+k})) (or x^t from its own codes, eq. 4 as
  printed). Joint pose pairs come from the same video, marginal pairs from a
  derangement of the batch. Critic and main network are updated from one
  backward pass: each objective sees the other's inputs through
  stop_gradient, so the critic ascends eq. 6 while the encoders descend eq. 5.
  """
  rng_pairs, rng_perm = jax.random.split(rng)
  frames_t, frames_tk = sample_frame_pairs(batch["video"], rng_pairs)
  frames_t = autoencoder.to_float_frames(frames_t)
  frames_tk = autoencoder.to_float_frames(frames_tk)
  partner = objectives.derangement(rng_perm, frames_t.shape[0])
  sg = jax.lax.stop_gradient

  def loss_fn(params):
    stats = dict(state.batch_stats)
    (content_t, skips_t), stats["content_encoder"] = _apply_train(
      networks.content_encoder,
      params["content_encoder"],
      stats["content_encoder"],
      frames_t,
    )
    (content_tk, _), stats["content_encoder"] = _apply_train(
      networks.content_encoder,
      params["content_encoder"],
      stats["content_encoder"],
      frames_tk,
    )
    pose_t, stats["pose_encoder"] = _apply_train(
      networks.pose_encoder, params["pose_encoder"], stats["pose_encoder"], frames_t
    )
    pose_tk, stats["pose_encoder"] = _apply_train(
      networks.pose_encoder, params["pose_encoder"], stats["pose_encoder"], frames_tk
    )
    pose_t, pose_tk = _pose_code(pose_t), _pose_code(pose_tk)
    if loss_config.recon_target == "offset":
      recon_pose, target = pose_tk, frames_tk
    else:
      recon_pose, target = pose_t, frames_t
    decoded, stats["decoder"] = _apply_train(
      networks.decoder,
      params["decoder"],
      stats["decoder"],
      content_t,
      recon_pose,
      skips_t if networks.skip_connections else None,
    )
    recon = objectives.reconstruction_loss(decoded, target)
    sim = objectives.similarity_loss(content_t, content_tk)
    pose_marginal = pose_tk[partner]

    def critic(critic_params, a, b):
      return networks.critic.apply({"params": critic_params}, a, b)

    # Logits seen by the encoders (critic frozen) and by the critic (codes frozen).
    joint = critic(sg(params["critic"]), pose_t, pose_tk)
    marginal = critic(sg(params["critic"]), pose_t, pose_marginal)
    critic_joint = critic(params["critic"], sg(pose_t), sg(pose_tk))
    critic_marginal = critic(params["critic"], sg(pose_t), sg(pose_marginal))
    accuracy = _accuracy(critic_joint, critic_marginal)
    if method == "mipae":
      mi = objectives.mutual_information_bound(joint, marginal)
      main = objectives.mipae_loss(
        recon, sim, mi, loss_config.sim_weight, loss_config.mi_weight
      )
      critic_objective = objectives.critic_loss(critic_joint, critic_marginal)
      logs = dict(
        mi_estimate=objectives.mutual_information_bound(critic_joint, critic_marginal),
        critic_loss=critic_objective,
        critic_accuracy=accuracy,
      )
    else:
      adversarial = objectives.adversarial_pose_loss(joint)
      main = (
        recon
        + loss_config.sim_weight * sim
        + loss_config.adversarial_weight * adversarial
      )
      critic_objective = objectives.scene_discriminator_loss(
        critic_joint, critic_marginal
      )
      logs = dict(
        adversarial_loss=adversarial,
        discriminator_loss=critic_objective,
        discriminator_accuracy=accuracy,
      )
    logs.update(loss=main, recon_loss=recon, sim_loss=sim)
    return main + critic_objective, (stats, logs)

  grads, (batch_stats, logs) = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    batch_stats=batch_stats,
    opt_state=opt_state,
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


def init_state(
  networks: Networks,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  image_shape: tuple[int, int, int],
) -> tuple[TrainState, Any]:
  """Initialises the state straight into its (replicated) shardings."""
  init_fn = functools.partial(
    create_train_state, networks, config, image_shape=image_shape
  )
  abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), abstract)
  rng = jax.random.PRNGKey(config.seed)
  state = jax.jit(init_fn, out_shardings=state_sharding)(rng)
  return state, state_sharding


def check_finite(values: dict[str, Any], step: int) -> None:
  """The NaN/inf guard: raises before anything non-finite can be saved."""
  bad = {k: float(v) for k, v in values.items() if not np.all(np.isfinite(v))}
  if bad:
    raise FloatingPointError(
      f"Non-finite training metrics at step {step}: {bad}. Training stopped; "
      "the last checkpoint on disk is from before this and is intact."
    )


def write_image_summaries(
  writer: metric_writers.MetricWriter,
  step: int,
  networks: Networks,
  state: TrainState,
  video: np.ndarray,
  prefix: str = "train",
) -> None:
  """Reconstructions and a pose/content swap grid of a few videos."""
  # Local copies: process 0 renders alone, with no cross-process collective.
  if isinstance(video, jax.Array) and not video.is_fully_addressable:
    video = video.addressable_data(0)
  video = np.asarray(video)
  params, batch_stats = jax.tree.map(
    lambda x: x.addressable_data(0), (state.params, state.batch_stats)
  )
  num = min(4, video.shape[0])
  content_frames = video[:num, 0]
  pose_frames = video[0, : min(8, video.shape[1])]
  grid = np.asarray(
    jax.jit(functools.partial(autoencoder.swap_decode, networks))(
      params, batch_stats, content_frames, pose_frames
    )
  )
  # Row 0 pairs video 0's content with its own poses: its reconstructions.
  reconstructions = np.stack([pose_frames / 255.0, grid[0]], axis=0)
  writer.write_images(
    step,
    {
      f"{prefix}_swap_grid": visualize.swap_grid_image(
        content_frames, pose_frames, grid
      )[None],
      f"{prefix}_reconstructions": visualize.tile(reconstructions)[None],
    },
  )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains the main network in `workdir`, resuming from its latest checkpoint."""
  config_validation.validate(config)
  mesh = sharding.create_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  info = input_pipeline.dataset_info(config.dataset)
  config_validation.check_dataset(config, info)
  image_shape = (info.height, info.width, info.channels)
  networks = build_networks(config, info.channels)

  checkpoints = checkpointing.Checkpointer(workdir, config, info)
  state, state_sharding = init_state(networks, config, mesh, image_shape)
  train_iter = input_pipeline.create_train_iterator(
    config.dataset,
    global_batch_size=config.batch_size,
    sharding=sharding.batch_sharding(mesh),
    seed=config.seed,
  )
  state = checkpoints.restore_or_initialize(state, train_iter)
  initial_step = int(state.step)

  writer = metric_writers.create_default_writer(
    workdir, just_logging=jax.process_index() > 0
  )
  if initial_step == 0:
    writer.write_hparams(config_validation.flat_hparams(config))
  logging.info("Training %s from step %d.", config.method, initial_step)
  step_fn = make_train_step(networks, config, mesh, state_sharding)
  report_progress = periodic_actions.ReportProgress(
    num_train_steps=config.num_train_steps, writer=writer
  )
  base_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  train_metrics = None
  step = initial_step
  with checkpoints.preemption_guard() as preempted:
    while step < config.num_train_steps:
      step += 1
      batch = next(train_iter)
      state, step_metrics = step_fn(state, batch, jax.random.fold_in(base_rng, step))
      train_metrics = (
        step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
      )
      report_progress(step)
      is_last = step == config.num_train_steps
      stopping = preempted(step)
      if step % config.log_every_steps == 0 or is_last or stopping:
        values = train_metrics.compute()
        check_finite(values, step)
        writer.write_scalars(step, {f"train_{k}": v for k, v in values.items()})
        train_metrics = None
      if jax.process_index() == 0 and (step % config.image_every_steps == 0 or is_last):
        write_image_summaries(writer, step, networks, state, batch["video"])
      if step % config.checkpoint_every_steps == 0 or is_last or stopping:
        if train_metrics is not None:
          check_finite(train_metrics.compute(), step)
        checkpoints.save(step, state, train_iter)
      if stopping:
        logging.warning("Preempted at step %d: checkpoint saved, exiting.", step)
        break
  writer.flush()
  checkpoints.close()
  return state


def load_main_network(
  config: ml_collections.ConfigDict, workdir: str, info: Any, step: int = -1
) -> tuple[Networks, Variables, int]:
  """Restores the main network of `workdir` (latest step, or `step`).

  Returns the networks, {"params", "batch_stats"} on the host's default
  device layout, and the restored step. Fails before any compile with a
  CheckpointError when there is no checkpoint or it belongs to another
  experiment.
  """
  networks = build_networks(config, info.channels)
  checkpoints = checkpointing.Checkpointer(workdir, config, info)
  init_fn = functools.partial(
    create_train_state,
    networks,
    config,
    image_shape=(info.height, info.width, info.channels),
  )
  state, step = checkpoints.restore_trained(
    init_fn,
    step,
    f"Train it first: python -m mipae_jax.main --mode=train --workdir={workdir}",
  )
  checkpoints.close()
  return networks, {"params": state.params, "batch_stats": state.batch_stats}, step
