"""Stage 2: the pose LSTM trained on the frozen main network (Sec. III).

L minimises the l2 loss between its predicted poses z^_p^{2:C+T} and
E_p's poses of the ground-truth frames; Adam lr 2e-4, b1 0.9, 5 context and
10 future frames by default. Its checkpoints live in `workdir/lstm_checkpoints`
beside the main network's, which are only read.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, metrics

from mipae_jax import (
  autoencoder,
  config_fields,
  config_validation,
  input_pipeline,
  loop,
  predict,
  restore,
  sharding,
)
from mipae_jax.datasets import prepared
from mipae_jax.evaluation import visualize
from mipae_jax.models.pose_lstm import PoseLSTM
from mipae_jax.train_state import (
  LSTMState,
  Variables,
  build_pose_lstm,
  create_lstm_state,
)

# The loss of each predicted step, pose_loss_t, is logged as train_pose_loss_tNN.
LSTMMetrics = loop.averages(
  "pose_loss",
  "future_pose_loss",
  "grad_norm",
  "param_norm",
  pose_loss_t=loop.VectorAverage.from_output("pose_loss_t"),
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
) -> tuple[LSTMState, metrics.Collection]:
  """One Adam step on || z^_p^{2:C+T} - E_p(x^{2:C+T}) ||^2 (Sec. III)."""
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
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  step_metrics = LSTMMetrics.single_from_model_output(
    pose_loss=loss,
    future_pose_loss=jnp.mean(per_step[num_context - 1 :]),
    pose_loss_t=per_step,
    grad_norm=optax.tree.norm(grads),
    param_norm=optax.tree.norm(params),
  )
  return new_state, step_metrics


def make_prediction_hook(
  predictor: predict.Predictor, main: Variables, config: ml_collections.ConfigDict
) -> loop.ImageHook:
  """`hook(writer, step, state, batch)`: ground truth above predicted frames
  for a few training videos (the prediction jitted once)."""
  num_context, horizon = config.lstm.num_context, config.lstm.num_future
  predict_fn = jax.jit(functools.partial(predict.predict, predictor, horizon=horizon))
  local_main = jax.tree.map(lambda x: x.addressable_data(0), main)

  def hook(writer: metric_writers.MetricWriter, step: int, state, batch) -> None:
    video = batch["video"]
    if not video.is_fully_addressable:
      video = video.addressable_data(0)
    video = np.asarray(video)[:4, : num_context + horizon]
    lstm = jax.tree.map(lambda x: x.addressable_data(0), state.params)
    predicted = predict_fn({"main": local_main, "lstm": lstm}, video[:, :num_context])
    truth = video / 255.0
    padded = np.concatenate([truth[:, :num_context], np.asarray(predicted)], axis=1)
    strips = np.stack([truth, padded], axis=1).reshape(-1, *truth.shape[1:])
    writer.write_images(step, {"lstm_predictions": visualize.tile(strips)[None]})

  return hook


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> LSTMState:
  """Trains the pose LSTM on the frozen main network of `workdir`, resuming
  from its latest checkpoint (or config.lstm.restore_step).

  As in train.train_and_evaluate, the workdir, checkpoints and dataset are
  checked before anything compiles, and saves in flight finish on any exit.
  """
  config_validation.validate(config)
  config_validation.validate_lstm(config)
  mesh = sharding.create_mesh()
  config_validation.check_batch_size(config.lstm.batch_size, mesh, "lstm.batch_size")
  info = prepared.dataset_info(config.dataset)
  config_validation.check_dataset(config, info)
  config_validation.check_lstm_frames(config, info)
  num_frames = config.lstm.num_context + config.lstm.num_future
  networks, main, main_step = restore.load_main_network(
    config, workdir, info, step_flag="restore_step"
  )
  logging.info("Stage 2 on the main network of step %d.", main_step)
  predictor = predict.Predictor(networks, build_pose_lstm(config))
  with restore.lstm_checkpointer(
    config,
    workdir,
    info,
    main_step,
    restore_step=config.lstm.restore_step,
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
    jitted = jax.jit(
      functools.partial(lstm_train_step, predictor, config.lstm),
      in_shardings=(replicated, replicated, sharding.batch_sharding(mesh)),
      out_shardings=replicated,
      donate_argnums=1,
    )
    lstm = config.lstm
    return loop.run(
      state,
      lambda state, batch, step, num_steps: jitted(main, state, batch),
      lambda num_steps: next(train_iter),
      loop.Schedule(
        lstm.num_train_steps,
        lstm.log_every_steps,
        lstm.image_every_steps,
        lstm.checkpoint_every_steps,
        steps_field="lstm.num_train_steps",
      ),
      checkpoints,
      train_iter,
      loop.Output(workdir, config_fields.flat_hparams(config), collection="lstm"),
      make_prediction_hook(predictor, main, config),
      name="pose LSTM",
    )
