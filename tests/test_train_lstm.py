"""Stage 2: the pose LSTM on a frozen main network, prediction, bad input."""

import jax
import numpy as np
import pytest
from conftest import tiny_config

from mipae_jax import (
  checkpointing,
  input_pipeline,
  predict,
  restore,
  sharding,
  train_lstm,
  train_state,
)
from mipae_jax.datasets import prepared


@pytest.fixture(scope="module")
def lstm_workdir(tmp_path_factory, trained_workdir, dsprites_data_dir):
  """A copy of the trained main network with 12 stage-2 steps on top."""
  import shutil

  workdir = tmp_path_factory.mktemp("lstm")
  shutil.copytree(trained_workdir / "checkpoints", workdir / "checkpoints")
  config = tiny_config(
    dsprites_data_dir,
    **{
      "lstm.num_train_steps": 12,
      "lstm.log_every_steps": 4,
      "lstm.learning_rate": 1e-2,
    },
  )
  train_lstm.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.mark.slow
def test_stage_two_lowers_the_pose_loss(lstm_workdir, dsprites_data_dir):
  config = tiny_config(dsprites_data_dir)
  info = prepared.dataset_info(config.dataset)
  networks, main, _ = restore.load_main_network(config, str(lstm_workdir), info)
  pose_lstm, trained, _ = restore.load_pose_lstm(config, str(lstm_workdir), info)
  initial = train_state.create_lstm_state(
    pose_lstm, config, jax.random.fold_in(jax.random.PRNGKey(config.seed), 2)
  )
  predictor = predict.Predictor(networks, pose_lstm)
  batch = next(
    input_pipeline.create_eval_iterator(
      config.dataset,
      split="train",
      global_batch_size=8,
      sharding=sharding.batch_sharding(sharding.create_mesh()),
      num_frames=config.lstm.num_context + config.lstm.num_future,
    )
  )

  def pose_loss(params):
    _, metrics = train_lstm.lstm_train_step(
      predictor, config.lstm, main, initial.replace(params=params), batch
    )
    return float(metrics.compute()["pose_loss"])

  assert pose_loss(trained) < 0.7 * pose_loss(initial.params)


def test_stage_two_leaves_the_main_network_bit_identical(
  lstm_workdir, trained_workdir, dsprites_data_dir
):
  config = tiny_config(dsprites_data_dir)
  info = prepared.dataset_info(config.dataset)
  _, before, _ = restore.load_main_network(config, str(trained_workdir), info)
  _, after, _ = restore.load_main_network(config, str(lstm_workdir), info)
  jax.tree.map(
    np.testing.assert_array_equal, jax.device_get(before), jax.device_get(after)
  )


@pytest.mark.parametrize("horizon", [1, 4, 12])
def test_prediction_has_the_asked_horizon(lstm_workdir, dsprites_data_dir, horizon):
  config = tiny_config(dsprites_data_dir)
  info = prepared.dataset_info(config.dataset)
  networks, main, _ = restore.load_main_network(config, str(lstm_workdir), info)
  pose_lstm, lstm_params, step = restore.load_pose_lstm(config, str(lstm_workdir), info)
  assert step == 12
  mesh = sharding.create_mesh()
  predict_fn = predict.make_predict_fn(
    predict.Predictor(networks, pose_lstm), mesh, horizon
  )
  context = np.random.default_rng(0).integers(0, 255, (8, 3, 64, 64, 3), dtype=np.uint8)
  frames = predict_fn({"main": main, "lstm": lstm_params}, context)
  assert frames.shape == (8, horizon, 64, 64, 3)
  assert np.all((np.asarray(frames) >= 0) & (np.asarray(frames) <= 1))


@pytest.mark.slow  # stage one's twin, test_loop, runs by default
def test_resumed_stage_two_equals_uninterrupted(
  tmp_path, lstm_workdir, trained_workdir, dsprites_data_dir
):
  import shutil

  shutil.copytree(trained_workdir / "checkpoints", tmp_path / "checkpoints")
  full = tiny_config(
    dsprites_data_dir,
    **{
      "lstm.num_train_steps": 12,
      "lstm.log_every_steps": 4,
      "lstm.learning_rate": 1e-2,
    },
  )
  train_lstm.train_and_evaluate(
    tiny_config(
      dsprites_data_dir, **{"lstm.num_train_steps": 4, "lstm.learning_rate": 1e-2}
    ),
    str(tmp_path),
  )
  resumed = train_lstm.train_and_evaluate(full, str(tmp_path))
  info = prepared.dataset_info(full.dataset)
  _, uninterrupted, _ = restore.load_pose_lstm(full, str(lstm_workdir), info)
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(resumed.params),
    jax.device_get(uninterrupted),
  )


def test_missing_main_checkpoint_is_a_clear_error(tmp_path, dsprites_data_dir):
  with pytest.raises(
    checkpointing.CheckpointError, match="No checkpoint in .*Train it first"
  ):
    train_lstm.train_and_evaluate(tiny_config(dsprites_data_dir), str(tmp_path))


def test_main_checkpoint_with_other_latent_sizes_is_refused(
  trained_workdir, dsprites_data_dir
):
  config = tiny_config(dsprites_data_dir, **{"model.content_dim": 64})
  with pytest.raises(
    checkpointing.CheckpointError, match="content_dim: checkpoint=128 vs config=64"
  ):
    train_lstm.train_and_evaluate(config, str(trained_workdir))


def test_context_longer_than_the_video_is_refused(trained_workdir, dsprites_data_dir):
  config = tiny_config(
    dsprites_data_dir, **{"lstm.num_context": 30, "lstm.num_future": 30}
  )
  with pytest.raises(ValueError, match="exceeds the .* frames per video"):
    train_lstm.train_and_evaluate(config, str(trained_workdir))


def test_horizon_below_one_is_refused(lstm_workdir, dsprites_data_dir):
  config = tiny_config(dsprites_data_dir)
  info = prepared.dataset_info(config.dataset)
  networks, main, _ = restore.load_main_network(config, str(lstm_workdir), info)
  pose_lstm, lstm_params, _ = restore.load_pose_lstm(config, str(lstm_workdir), info)
  context = np.zeros((2, 3, 64, 64, 3), np.uint8)
  with pytest.raises(ValueError, match="horizon must be >= 1"):
    predict.predict(
      predict.Predictor(networks, pose_lstm),
      {"main": main, "lstm": lstm_params},
      context,
      0,
    )


def test_lstm_of_another_main_network_step_is_refused(lstm_workdir, dsprites_data_dir):
  config = tiny_config(dsprites_data_dir)
  info = prepared.dataset_info(config.dataset)
  with pytest.raises(
    checkpointing.CheckpointError, match="main_step: checkpoint=4 vs config=2"
  ):
    restore.load_pose_lstm(config, str(lstm_workdir), info, main_step=2)
