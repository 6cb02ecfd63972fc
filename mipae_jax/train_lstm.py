"""Stage 2: the pose LSTM trained on the frozen main network (Sec. III).

L minimises the l2 loss between its predicted poses z^_p^{2:C+T} and
E_p's poses of the ground-truth frames; Adam lr 2e-4, b1 0.9, 5 context and
10 future frames by default. Its checkpoints live in `workdir/lstm_checkpoints`
beside the main network's, which are only read.
"""

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
  predict,
  sharding,
  train,
  visualize,
)
from mipae_jax.models.networks import DTYPES
from mipae_jax.models.pose_lstm import PoseLSTM

Variables = dict[str, Any]


class LSTMState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Variables
  opt_state: optax.OptState
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


@flax.struct.dataclass
class LSTMMetrics(metrics.Collection):
  pose_loss: metrics.Average.from_output("pose_loss")
  future_pose_loss: metrics.Average.from_output("future_pose_loss")


def build_pose_lstm(config: ml_collections.ConfigDict) -> PoseLSTM:
  """L of Sec. IV-A from `config.lstm` and |z_p|."""
  return PoseLSTM(
    pose_dim=config.model.pose_dim,
    hidden_size=config.lstm.hidden_size,
    num_layers=config.lstm.num_layers,
    dtype=DTYPES[config.model.dtype],
  )


def lstm_fingerprint(
  config: ml_collections.ConfigDict, info: Any, main_step: int | None = None
) -> dict[str, Any]:
  """Main-network fingerprint, the LSTM's shape-defining fields and, when
  given, the main-network step the LSTM was trained on."""
  fingerprint = checkpointing.experiment_fingerprint(config, info)
  fingerprint.update(
    lstm_hidden_size=config.lstm.hidden_size, lstm_num_layers=config.lstm.num_layers
  )
  if main_step is not None:
    fingerprint["main_step"] = main_step
  return fingerprint


def create_lstm_state(
  pose_lstm: PoseLSTM, config: ml_collections.ConfigDict, rng: jax.Array
) -> LSTMState:
  content = jnp.zeros((1, config.model.content_dim), jnp.float32)
  poses = jnp.zeros((1, 2, config.model.pose_dim), jnp.float32)
  params = pose_lstm.init(rng, content, poses, np.array([True, False]))["params"]
  tx = optax.adam(config.lstm.learning_rate, b1=config.lstm.adam_b1)
  return LSTMState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx
  )


def pose_targets(
  predictor: predict.Predictor, main: Variables, video: jnp.ndarray, num_context: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Frozen E_c(x^C) and E_p(x^{1:C+T}) of a batch of videos."""
  frames = jax.lax.stop_gradient(video)
  _, _, poses = predict.encode_video(predictor.networks, main, frames)
  content, _ = autoencoder.encode_content(
    predictor.networks, main["params"], main["batch_stats"], frames[:, num_context - 1]
  )
  return jax.lax.stop_gradient(content), jax.lax.stop_gradient(poses)


def lstm_train_step(
  predictor: predict.Predictor,
  lstm_config: ml_collections.ConfigDict,
  main: Variables,
  state: LSTMState,
  batch: dict[str, jnp.ndarray],
) -> tuple[LSTMState, LSTMMetrics, jnp.ndarray]:
  """One Adam step on || z^_p^{2:C+T} - E_p(x^{2:C+T}) ||^2 (Sec. III).

  Returns the new state, the metrics and the loss per predicted step.
  """
  num_context, horizon = lstm_config.num_context, lstm_config.num_future
  video = batch["video"][:, : num_context + horizon]
  content, poses = pose_targets(predictor, main, video, num_context)

  def loss_fn(params):
    predicted = predictor.pose_lstm.apply(
      {"params": params},
      content,
      poses[:, :num_context],
      horizon,
      poses if lstm_config.teacher_forcing else None,
      lstm_config.teacher_forcing,
      method=PoseLSTM.rollout,
    )["all"]
    per_step = jnp.mean(jnp.square(predicted - poses[:, 1:]), axis=(0, 2))
    return jnp.mean(per_step), per_step

  (loss, per_step), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    opt_state=opt_state,
  )
  step_metrics = LSTMMetrics.single_from_model_output(
    pose_loss=loss, future_pose_loss=jnp.mean(per_step[num_context - 1 :])
  )
  return new_state, step_metrics, per_step


def _write_prediction_strip(
  writer, step, predictor, main, state, video, config
) -> None:
  """Ground truth above predicted frames for a few test-like videos."""
  num_context, horizon = config.lstm.num_context, config.lstm.num_future
  if not video.is_fully_addressable:
    video = video.addressable_data(0)
  video = np.asarray(video)[:4, : num_context + horizon]
  local = jax.tree.map(
    lambda x: x.addressable_data(0), {"main": main, "lstm": state.params}
  )
  predicted = jax.jit(functools.partial(predict.predict, predictor, horizon=horizon))(
    local, video[:, :num_context]
  )
  truth = video / 255.0
  padded = np.concatenate([truth[:, :num_context], np.asarray(predicted)], axis=1)
  strips = np.stack([truth, padded], axis=1).reshape(-1, *truth.shape[1:])
  writer.write_images(step, {"lstm_predictions": visualize.tile(strips)[None]})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> LSTMState:
  """Trains the pose LSTM on the frozen main network of `workdir`, resuming
  from its latest checkpoint (or config.lstm.restore_step).

  As in train.train_and_evaluate, the workdir, checkpoints and dataset are
  checked before anything compiles, and saves in flight finish on any exit.
  """
  config_validation.validate(config)
  config_validation.validate_lstm(config)
  mesh = sharding.create_mesh()
  sharding.check_batch_size(config.lstm.batch_size, mesh, "lstm.batch_size")
  info = input_pipeline.dataset_info(config.dataset)
  config_validation.check_dataset(config, info)
  num_frames = config.lstm.num_context + config.lstm.num_future
  if num_frames > info.seq_len:
    raise ValueError(
      f"Bad config: lstm.num_context + lstm.num_future = {num_frames} exceeds the "
      f"{info.seq_len} frames per video of {config.dataset.name}."
    )
  networks, main, main_step = train.load_main_network(
    config, workdir, info, step_flag="restore_step"
  )
  logging.info("Stage 2 on the main network of step %d.", main_step)
  predictor = predict.Predictor(networks, build_pose_lstm(config))
  with checkpointing.Checkpointer(
    workdir,
    config,
    info,
    subdir="lstm_checkpoints",
    fingerprint=lstm_fingerprint(config, info, main_step),
    restore_step=config.lstm.restore_step,
    step_flag="lstm.restore_step",
    writable=True,
  ) as checkpoints:
    train_iter = input_pipeline.create_train_iterator(
      config.dataset,
      global_batch_size=config.lstm.batch_size,
      sharding=sharding.batch_sharding(mesh),
      seed=config.seed + 1,
      num_frames=num_frames,
    )
    init_fn = functools.partial(create_lstm_state, predictor.pose_lstm, config)
    replicated = sharding.replicated(mesh)
    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(init_fn, jax.random.PRNGKey(0)),
    )
    state = checkpoints.restore_or_initialize(
      abstract,
      lambda: jax.jit(init_fn, out_shardings=replicated)(
        jax.random.fold_in(jax.random.PRNGKey(config.seed), 2)
      ),
      train_iter,
    )
    step_fn = jax.jit(
      functools.partial(lstm_train_step, predictor, config.lstm),
      in_shardings=(replicated, replicated, sharding.batch_sharding(mesh)),
      out_shardings=replicated,
      donate_argnums=1,
    )
    writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0, collection="lstm"
    )
    try:
      return _train_loop(
        config, predictor, main, state, step_fn, train_iter, checkpoints, writer
      )
    finally:
      writer.close()


def _train_loop(
  config: ml_collections.ConfigDict,
  predictor: predict.Predictor,
  main: Variables,
  state: LSTMState,
  step_fn: Any,
  train_iter: Any,
  checkpoints: checkpointing.Checkpointer,
  writer: metric_writers.MetricWriter,
) -> LSTMState:
  """Steps from `state.step` to config.lstm.num_train_steps (or SIGTERM)."""
  report_progress = periodic_actions.ReportProgress(
    num_train_steps=config.lstm.num_train_steps, writer=writer
  )
  step = int(state.step)
  logging.info("Training the pose LSTM from step %d.", step)
  train_metrics, per_step_sum, per_step_count = None, 0.0, 0
  with checkpoints.preemption_guard() as preempted:
    while step < config.lstm.num_train_steps:
      step += 1
      batch = next(train_iter)
      state, step_metrics, per_step = step_fn(main, state, batch)
      train_metrics = (
        step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
      )
      per_step_sum, per_step_count = per_step_sum + per_step, per_step_count + 1
      report_progress(step)
      is_last = step == config.lstm.num_train_steps
      stopping = preempted(step)
      if step % config.lstm.log_every_steps == 0 or is_last or stopping:
        values = train_metrics.compute()
        train.check_finite(values, step, checkpoints.latest_step())
        scalars = {f"train_{k}": v for k, v in values.items()}
        per_step_mean = np.asarray(per_step_sum) / per_step_count
        scalars.update(
          {f"train_pose_loss_t{t + 2:02d}": v for t, v in enumerate(per_step_mean)}
        )
        writer.write_scalars(step, scalars)
        train_metrics, per_step_sum, per_step_count = None, 0.0, 0
      if jax.process_index() == 0 and (
        step % config.lstm.image_every_steps == 0 or is_last
      ):
        _write_prediction_strip(
          writer, step, predictor, main, state, batch["video"], config
        )
      if step % config.lstm.checkpoint_every_steps == 0 or is_last or stopping:
        if train_metrics is not None:
          train.check_finite(train_metrics.compute(), step, checkpoints.latest_step())
        train.check_state_finite(state, step, checkpoints.latest_step())
        checkpoints.save(step, state, train_iter)
      if stopping:
        logging.warning(
          "Preempted at step %d: checkpoint saved, exiting with status %d.",
          step,
          checkpointing.PREEMPTED_EXIT_CODE,
        )
        break
  return state


def load_pose_lstm(
  config: ml_collections.ConfigDict,
  workdir: str,
  info: Any,
  step: int = -1,
  main_step: int | None = None,
) -> tuple[PoseLSTM, Variables, int]:
  """Restores the pose LSTM of `workdir` (latest step or `step`).

  With `main_step`, an LSTM trained on another main-network step is refused.
  """
  pose_lstm = build_pose_lstm(config)
  with checkpointing.Checkpointer(
    workdir,
    config,
    info,
    subdir="lstm_checkpoints",
    fingerprint=lstm_fingerprint(config, info, main_step),
    step_flag="lstm.restore_step",
  ) as checkpoints:
    state, step = checkpoints.restore_trained(
      functools.partial(create_lstm_state, pose_lstm, config),
      step,
      "Run stage 2 first: " + config_validation.command(config, workdir, "train_lstm"),
    )
  return pose_lstm, state.params, step
