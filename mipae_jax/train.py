"""Training of the main network (E_c, E_p, D and the critic) for MIPAE and
DRNET: the train state, one pure sharded `train_step`, and the loop."""

import functools
from collections.abc import Iterator
from typing import Any, NamedTuple

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


class TrainState(flax.struct.PyTreeNode):
  """Parameters of all four networks, BatchNorm statistics, two Adam states.

  As in the reference, E_c, E_p and D share one Adam state ("main") and the
  critic has its own ("critic"); both use `tx` (Sec. IV-A settings). The two
  are updated at different moments of a step (critic first), so they cannot
  be one optimiser over all parameters.
  """

  step: jax.Array
  params: Variables
  batch_stats: Variables
  opt_state: dict[str, optax.OptState]
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


@flax.struct.dataclass
class MipaeMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  recon_loss: metrics.Average.from_output("recon_loss")
  sim_loss: metrics.Average.from_output("sim_loss")
  mi_estimate: metrics.Average.from_output("mi_estimate")
  critic_loss: metrics.Average.from_output("critic_loss")
  critic_accuracy: metrics.Average.from_output("critic_accuracy")
  grad_norm: metrics.Average.from_output("grad_norm")
  critic_grad_norm: metrics.Average.from_output("critic_grad_norm")
  param_norm: metrics.Average.from_output("param_norm")


@flax.struct.dataclass
class DrnetMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  recon_loss: metrics.Average.from_output("recon_loss")
  sim_loss: metrics.Average.from_output("sim_loss")
  adversarial_loss: metrics.Average.from_output("adversarial_loss")
  discriminator_loss: metrics.Average.from_output("discriminator_loss")
  discriminator_accuracy: metrics.Average.from_output("discriminator_accuracy")
  grad_norm: metrics.Average.from_output("grad_norm")
  critic_grad_norm: metrics.Average.from_output("critic_grad_norm")
  param_norm: metrics.Average.from_output("param_norm")


METRICS = {"mipae": MipaeMetrics, "drnet": DrnetMetrics}


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam, lr 0.002, b1 0.5 (Sec. IV-A)."""
  return optax.adam(config.learning_rate, b1=config.adam_b1, b2=config.adam_b2)


def split_params(params: Variables) -> tuple[Variables, Variables]:
  """(E_c, E_p, D parameters, critic parameters)."""
  main = {name: value for name, value in params.items() if name != "critic"}
  return main, params["critic"]


def init_opt_state(
  tx: optax.GradientTransformation, params: Variables
) -> dict[str, optax.OptState]:
  """One state of `tx` for the main network and one for the critic."""
  main, critic = split_params(params)
  return {"main": tx.init(main), "critic": tx.init(critic)}


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
    opt_state=init_opt_state(tx, params),
    tx=tx,
  )


def take_frame(video: jnp.ndarray, index: jax.Array) -> jnp.ndarray:
  """Frame `index` (one scalar for the whole batch) of every video [B, T, ...]."""
  return jax.lax.dynamic_index_in_dim(video, index, axis=1, keepdims=False)


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
  stats = dict(state.batch_stats)

  def critic_fn(params, a, b):
    return networks.critic.apply({"params": params}, a, b)

  # 1. The critic, on its own batch.
  codes = []
  for index in draws.critic_frames:
    frames = autoencoder.to_float_frames(take_frame(critic_video, index))
    code, stats["pose_encoder"] = _apply_train(
      networks.pose_encoder, main_params["pose_encoder"], stats["pose_encoder"], frames
    )
    codes.append(sg(_pose_code(code)))
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
  same_frame = loss_config.recon_target == "same"

  def loss_fn(params):
    new_stats = dict(stats)

    def run(name, *args):
      out, new_stats[name] = _apply_train(
        getattr(networks, name), params[name], new_stats[name], *args
      )
      return out

    content_0, skips = run("content_encoder", frames_0)
    content_k, _ = run("content_encoder", frames_k)
    recon_frames = frames_0 if same_frame else frames_k
    pose = _pose_code(run("pose_encoder", recon_frames))
    pose_other = sg(_pose_code(run("pose_encoder", frames_j)))
    decoded = run(
      "decoder",
      content_0,
      pose,
      skips if networks.skip_connections else None,
    )
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
    return main, (new_stats, logs)

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


def abstract_state(
  networks: Networks,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  image_shape: tuple[int, int, int],
) -> Any:
  """The state's shapes, replicated over `mesh`: what a restore needs, with
  nothing compiled."""
  init_fn = functools.partial(
    create_train_state, networks, config, image_shape=image_shape
  )
  replicated = sharding.replicated(mesh)
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
    jax.eval_shape(init_fn, jax.random.PRNGKey(0)),
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


def _kept(latest: int | None) -> str:
  return (
    f"the latest checkpoint on disk (step {latest}) is intact"
    if latest is not None
    else "no checkpoint was saved yet"
  )


def check_finite(values: dict[str, Any], step: int, latest: int | None) -> None:
  """The NaN/inf guard: raises before anything non-finite can be saved;
  `latest` is the latest step on disk (None: none)."""
  bad = {k: float(v) for k, v in values.items() if not np.all(np.isfinite(v))}
  if bad:
    raise FloatingPointError(
      f"Non-finite training metrics at step {step}: {bad}. Training stopped; "
      f"{_kept(latest)}."
    )


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  """True when every floating-point value of `tree` is finite."""
  leaves = [
    jnp.all(jnp.isfinite(x))
    for x in jax.tree.leaves(tree)
    if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def check_state_finite(state: Any, step: int, latest: int | None) -> None:
  """The NaN/inf guard on what is about to be saved: parameters, BatchNorm
  statistics and optimiser state (one jitted reduction)."""
  if not bool(
    _all_finite((state.params, getattr(state, "batch_stats", {}), state.opt_state))
  ):
    raise FloatingPointError(
      f"Non-finite parameters or optimiser state at step {step}: not saved. "
      f"Training stopped; {_kept(latest)}."
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
  """Trains the main network in `workdir`, resuming from its latest checkpoint
  (or config.restore_step).

  Everything that can fail without compiling is checked first: the config,
  the workdir (writable), the checkpoint's fingerprint, the dataset and its
  files. The checkpoint manager is closed on every exit: saves in flight
  finish, and an error propagates as it was raised.
  """
  config_validation.validate(config)
  mesh = sharding.create_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  info = input_pipeline.dataset_info(config.dataset)
  config_validation.check_dataset(config, info)
  image_shape = (info.height, info.width, info.channels)
  networks = build_networks(config, info.channels)

  with checkpointing.Checkpointer(
    workdir, config, info, restore_step=config.restore_step, writable=True
  ) as checkpoints:
    train_iter = input_pipeline.create_train_iterator(
      config.dataset,
      global_batch_size=config.batch_size,
      sharding=sharding.batch_sharding(mesh),
      seed=config.seed,
    )
    state = checkpoints.restore_or_initialize(
      abstract_state(networks, config, mesh, image_shape),
      lambda: init_state(networks, config, mesh, image_shape)[0],
      train_iter,
    )
    initial_step = int(state.step)
    if initial_step >= config.num_train_steps:
      logging.warning(
        "Nothing to do: the checkpoint in %s is at step %d and "
        "config.num_train_steps=%d; raise num_train_steps to train further.",
        workdir,
        initial_step,
        config.num_train_steps,
      )
      return state
    return _train_loop(config, workdir, networks, mesh, state, train_iter, checkpoints)


def _train_loop(
  config: ml_collections.ConfigDict,
  workdir: str,
  networks: Networks,
  mesh: jax.sharding.Mesh,
  state: TrainState,
  train_iter: Iterator[dict[str, Any]],
  checkpoints: checkpointing.Checkpointer,
) -> TrainState:
  """Steps from `state.step` to config.num_train_steps (or SIGTERM)."""
  initial_step = int(state.step)
  writer = metric_writers.create_default_writer(
    workdir, just_logging=jax.process_index() > 0
  )
  if initial_step == 0:
    writer.write_hparams(config_validation.flat_hparams(config))
  logging.info("Training %s from step %d.", config.method, initial_step)
  # One replicated sharding for every leaf: the restored and the initial
  # state carry different (equal-shaped) optimiser objects.
  step_fn = make_train_step(networks, config, mesh, sharding.replicated(mesh))
  report_progress = periodic_actions.ReportProgress(
    num_train_steps=config.num_train_steps, writer=writer
  )
  base_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  train_metrics = None
  step = initial_step
  try:
    with checkpoints.preemption_guard() as preempted:
      while step < config.num_train_steps:
        step += 1
        batch = next_batch(train_iter)
        state, step_metrics = step_fn(state, batch, jax.random.fold_in(base_rng, step))
        train_metrics = (
          step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
        )
        report_progress(step)
        is_last = step == config.num_train_steps
        stopping = preempted(step)
        if step % config.log_every_steps == 0 or is_last or stopping:
          values = train_metrics.compute()
          check_state_finite(state, step, checkpoints.latest_step())
          check_finite(values, step, checkpoints.latest_step())
          writer.write_scalars(step, {f"train_{k}": v for k, v in values.items()})
          train_metrics = None
        if jax.process_index() == 0 and (
          step % config.image_every_steps == 0 or is_last
        ):
          write_image_summaries(writer, step, networks, state, batch["video"])
        if step % config.checkpoint_every_steps == 0 or is_last or stopping:
          if train_metrics is not None:
            check_finite(train_metrics.compute(), step, checkpoints.latest_step())
          check_state_finite(state, step, checkpoints.latest_step())
          checkpoints.save(step, state, train_iter)
        if stopping:
          logging.warning(
            "Preempted at step %d: checkpoint saved, exiting with status %d.",
            step,
            checkpointing.PREEMPTED_EXIT_CODE,
          )
          break
  finally:
    writer.close()
  return state


def load_main_network(
  config: ml_collections.ConfigDict,
  workdir: str,
  info: Any,
  step: int = -1,
  step_flag: str = "eval.step",
) -> tuple[Networks, Variables, int]:
  """Restores the main network of `workdir` (latest step, or `step`).

  Returns the networks, {"params", "batch_stats"} on the host's default
  device layout, and the restored step. Fails before any compile with a
  CheckpointError when there is no checkpoint, it belongs to another
  experiment, or it is corrupt (naming `step_flag`, the config field that
  picks another step).
  """
  networks = build_networks(config, info.channels)
  init_fn = functools.partial(
    create_train_state,
    networks,
    config,
    image_shape=(info.height, info.width, info.channels),
  )
  with checkpointing.Checkpointer(
    workdir, config, info, step_flag=step_flag
  ) as checkpoints:
    state, step = checkpoints.restore_trained(
      init_fn,
      step,
      f"Train it first: {config_validation.command(config, workdir, 'train')}",
    )
  return networks, {"params": state.params, "batch_stats": state.batch_stats}, step
