"""Training data on the devices and several steps per call: the same batches
as the host path, exact resume, and a memory check before anything runs."""

import shutil

import jax
import numpy as np
import pytest
from conftest import main_params, tiny_config

from mipae_jax import (
  config_validation,
  device_data,
  feeds,
  input_pipeline,
  sharding,
  train,
)
from mipae_jax.datasets import prepared


def test_stream_reads_each_video_once_per_epoch_across_batch_edges():
  key = jax.random.PRNGKey(7)
  stream = np.concatenate(
    [np.asarray(device_data.stream_indices(key, 10, start, 4)) for start in (0, 4, 8)]
    + [np.asarray(device_data.stream_indices(key, 10, 12, 4))]
  )
  # Records 0-9 are epoch 0, 10-15 the start of epoch 1: the batch at 8
  # straddles the edge.
  assert sorted(stream[:10]) == list(range(10))
  assert len(set(stream[10:])) == 6
  assert not np.array_equal(stream[:6], stream[10:])


def test_device_batch_equals_the_stored_videos_at_its_indices(dsprites_data_dir):
  config = tiny_config(dsprites_data_dir)
  mesh = sharding.create_mesh()
  videos = device_data.place_train_videos(config.dataset, mesh)
  key = jax.random.PRNGKey(3)
  batch = jax.jit(
    lambda v, step: device_data.step_batch(
      v, key, step, 8, sharding.batch_sharding(mesh)
    )
  )(videos, np.int32(5))
  builder = prepared.prepare_dataset(config.dataset)
  source = input_pipeline.data_source(builder, "train", config.dataset)
  num_frames = config.dataset.num_frames
  for offset, name in enumerate(("critic_video", "video")):
    indices = device_data.stream_indices(key, len(source), (2 * 4 + offset) * 8, 8)
    expected = np.stack([source[int(i)]["video"][:num_frames] for i in indices])
    np.testing.assert_array_equal(np.asarray(batch[name]), expected)
  assert batch["video"].sharding.spec == sharding.batch_sharding(mesh).spec


def test_stacked_batches_are_the_next_batches_in_order(dsprites_data_dir):
  config = tiny_config(dsprites_data_dir)
  mesh = sharding.create_mesh()

  def iterator():
    return input_pipeline.create_train_iterator(
      config.dataset,
      global_batch_size=8,
      sharding=sharding.batch_sharding(mesh),
      seed=0,
    )

  one_by_one, stacked = iterator(), iterator()
  expected = np.stack([np.asarray(next(one_by_one)["video"]) for _ in range(3)])
  got = stacked.next_stacked(3)["video"]
  np.testing.assert_array_equal(np.asarray(got), expected)
  assert got.shape[:2] == (3, 8)
  assert one_by_one.get_state() == stacked.get_state()


def test_one_step_per_call_is_one_jitted_train_step_per_step(
  dsprites_data_dir, trained_workdir
):
  """train_and_evaluate with steps_per_call 1 (the shared 4-step run) equals
  the jitted train_step called by hand on next_batch's batches."""
  config = tiny_config(dsprites_data_dir)
  mesh = sharding.create_mesh()
  info = prepared.dataset_info(config.dataset)
  networks = train.build_networks(config, info.channels)
  state = train.init_state(networks, config, mesh, (64, 64, 3))[0]
  step_fn = train.make_train_step(networks, config, mesh, sharding.replicated(mesh))
  train_iter = input_pipeline.create_train_iterator(
    config.dataset,
    global_batch_size=config.batch_size,
    sharding=sharding.batch_sharding(mesh),
    seed=config.seed,
  )
  base_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  for step in range(1, config.num_train_steps + 1):
    batch = feeds.next_batch(train_iter)
    state, _ = step_fn(state, batch, jax.random.fold_in(base_rng, step))
  expected, _ = main_params(trained_workdir, config)
  got = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  jax.tree.map(np.testing.assert_array_equal, got, expected)


@pytest.mark.slow  # two runs of the scanned 4-step call on 8 CPU devices: ~2 min
def test_device_data_in_calls_of_four_steps_resumes_bit_identically(
  tmp_path, dsprites_data_dir
):
  def config(steps):
    return tiny_config(
      dsprites_data_dir,
      num_train_steps=steps,
      steps_per_call=4,
      checkpoint_every_steps=4,
      log_every_steps=4,
      **{"dataset.placement": "device"},
    )

  whole, resumed = tmp_path / "whole", tmp_path / "resumed"
  train.train_and_evaluate(config(8), str(whole))
  # The run killed after its first call: the checkpoint of step 4.
  shutil.copytree(whole / "checkpoints" / "4", resumed / "checkpoints" / "4")
  train.train_and_evaluate(config(8), str(resumed))
  a, step = main_params(resumed, config(8))
  b, _ = main_params(whole, config(8))
  assert step == 8
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_data_too_big_for_the_device_is_refused_in_one_line(
  tmp_path, dsprites_data_dir, monkeypatch
):
  def no_compile(*args, **kwargs):
    raise AssertionError("compiled before the memory check")

  monkeypatch.setattr(train, "init_state", no_compile)
  config = tiny_config(
    dsprites_data_dir,
    **{"dataset.placement": "device", "dataset.device_memory_fraction": 1e-9},
  )
  with pytest.raises(ValueError, match="placement='device'.*GiB") as error:
    train.train_and_evaluate(config, str(tmp_path))
  assert "\n" not in str(error.value)


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"steps_per_call": 3}, "steps_per_call=3 must divide"),
    ({"steps_per_call": 0}, "steps_per_call=0 must be a positive integer"),
    ({"dataset.placement": "gpu"}, "dataset.placement='gpu'"),
    (
      {"dataset.placement": "device", "dataset.fresh_train_videos": True},
      "needs config.dataset.fresh_train_videos=False",
    ),
    ({"dataset.device_memory_fraction": 0.0}, "device_memory_fraction=0.0"),
  ],
)
def test_bad_placement_fields_are_config_errors(dsprites_data_dir, overrides, message):
  with pytest.raises(config_validation.ConfigError, match=message):
    config_validation.validate(tiny_config(dsprites_data_dir, **overrides))
