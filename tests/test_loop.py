"""The training loop: exact resume, preemption, NaN guard, bad checkpoints."""

import logging
import os
import shutil
import signal

import jax
import numpy as np
import pytest
from conftest import main_params, tiny_config

from mipae_jax import (
  checkpointing,
  config_validation,
  input_pipeline,
  objectives,
  train,
)
from mipae_jax.datasets import prepared


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_resumed_run_equals_uninterrupted_run(
  tmp_path, dsprites_data_dir, trained_workdir
):
  """The shared 4-step run saved step 2 on its way: a run holding only that
  checkpoint (one stopped there) resumes from it and ends where the
  uninterrupted run did, bit for bit."""
  config = tiny_config(dsprites_data_dir)
  resumed_dir = tmp_path / "resumed"
  shutil.copytree(
    trained_workdir / "checkpoints" / "2", resumed_dir / "checkpoints" / "2"
  )
  train.train_and_evaluate(config, str(resumed_dir))
  resumed, step = main_params(resumed_dir, config)
  uninterrupted, _ = main_params(trained_workdir, config)
  assert step == 4
  _assert_trees_equal(resumed, uninterrupted)


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path, dsprites_data_dir, monkeypatch):
  create = input_pipeline.create_train_iterator

  def preempting_iterator(*args, **kwargs):
    iterator = create(*args, **kwargs)

    class Preempting:
      calls = 0
      grain_iterator = getattr(iterator, "grain_iterator", iterator)

      def __next__(self):
        Preempting.calls += 1
        # Two batches per step: call 5 is step 3's critic batch.
        if Preempting.calls == 5:
          os.kill(os.getpid(), signal.SIGTERM)
        return next(iterator)

    return Preempting()

  monkeypatch.setattr(
    train.input_pipeline, "create_train_iterator", preempting_iterator
  )
  config = tiny_config(dsprites_data_dir, num_train_steps=50, checkpoint_every_steps=50)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 3
  assert main_params(tmp_path, config)[1] == 3


def test_nan_loss_stops_training_and_keeps_last_checkpoint(
  tmp_path, dsprites_data_dir, trained_workdir, monkeypatch
):
  shutil.copytree(trained_workdir / "checkpoints", tmp_path / "checkpoints")
  config = tiny_config(dsprites_data_dir, num_train_steps=6)
  before, _ = main_params(tmp_path, config)
  monkeypatch.setattr(objectives, "reconstruction_loss", lambda decoded, target: np.nan)
  with pytest.raises(FloatingPointError, match="Non-finite training metrics at step 6"):
    train.train_and_evaluate(config, str(tmp_path))
  after, step = main_params(tmp_path, config)
  assert step == 4
  _assert_trees_equal(before, after)


@pytest.mark.slow
def test_non_finite_parameters_are_never_saved(tmp_path, dsprites_data_dir):
  """lr 1e39: the logged losses of the first step (from the initial
  parameters) are finite, but the parameters it produces are not."""
  train.train_and_evaluate(
    tiny_config(dsprites_data_dir, num_train_steps=2), str(tmp_path)
  )
  checkpoints = tmp_path / "checkpoints"
  before = {p: p.read_bytes() for p in checkpoints.rglob("*") if p.is_file()}
  config = tiny_config(
    dsprites_data_dir, num_train_steps=3, checkpoint_every_steps=1, learning_rate=1e39
  )
  with pytest.raises(FloatingPointError, match="at step 3: not saved.*step 2"):
    train.train_and_evaluate(config, str(tmp_path))
  after = {p: p.read_bytes() for p in checkpoints.rglob("*") if p.is_file()}
  assert after == before
  params, step = main_params(tmp_path, tiny_config(dsprites_data_dir))
  assert step == 2
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


def test_checkpoint_of_another_experiment_is_refused_before_compiling(
  trained_workdir, dsprites_data_dir, monkeypatch
):
  def no_compile(*args, **kwargs):
    raise AssertionError("compiled before checking the checkpoint")

  monkeypatch.setattr(train, "init_state", no_compile)
  wrong_pose = tiny_config(dsprites_data_dir, **{"model.pose_dim": 7})
  with pytest.raises(
    checkpointing.CheckpointError, match="pose_dim: checkpoint=5 vs config=7"
  ):
    train.train_and_evaluate(wrong_pose, str(trained_workdir))
  drnet = tiny_config(dsprites_data_dir, "drnet")
  with pytest.raises(checkpointing.CheckpointError, match="method: checkpoint='mipae'"):
    train.train_and_evaluate(drnet, str(trained_workdir))
  fresh = tiny_config(dsprites_data_dir, **{"dataset.fresh_train_videos": True})
  with pytest.raises(
    checkpointing.CheckpointError,
    match="fresh_train_videos: checkpoint=False vs config=True",
  ):
    train.train_and_evaluate(fresh, str(trained_workdir))


def test_checkpoints_from_before_fresh_videos_count_as_stored_videos(
  dsprites_data_dir,
):
  config = tiny_config(dsprites_data_dir)
  info = prepared.dataset_info(config.dataset)
  wanted = checkpointing.experiment_fingerprint(config, info)
  older = {k: v for k, v in wanted.items() if k != "fresh_train_videos"}
  assert checkpointing._mismatch(older, wanted) == {}
  config.dataset.fresh_train_videos = True
  fresh = checkpointing.experiment_fingerprint(config, info)
  assert checkpointing._mismatch(older, fresh) == {"fresh_train_videos": (False, True)}


def test_checkpoints_of_another_dataset_version_are_refused(dsprites_data_dir):
  config = tiny_config(dsprites_data_dir)
  info = prepared.dataset_info(config.dataset)
  wanted = checkpointing.experiment_fingerprint(config, info)
  assert wanted["dataset_version"] == "2.0.0"
  older = {**wanted, "dataset_version": "1.1.0"}
  assert checkpointing._mismatch(older, wanted) == {
    "dataset_version": ("1.1.0", "2.0.0")
  }
  unversioned = {k: v for k, v in wanted.items() if k != "dataset_version"}
  assert checkpointing._mismatch(unversioned, wanted) == {
    "dataset_version": (None, "2.0.0")
  }


def test_a_save_logs_one_line_of_ours_and_none_of_orbaxs(tmp_path, caplog):
  info = type("Info", (), {"height": 64, "width": 64, "channels": 3, "version": ""})
  state = {"w": np.arange(6.0).reshape(2, 3)}
  with caplog.at_level("INFO", logger="absl"):
    checkpoints = checkpointing.Checkpointer(
      str(tmp_path), tiny_config(tmp_path), info, writable=True
    )
    checkpoints.save(1, state)
    checkpoints.save(2, state)
    checkpoints.close()
  ours = [r.getMessage() for r in caplog.records if "mipae_jax" in r.pathname]
  assert [m for m in ours if m.startswith("Saved step")] == [
    "Saved step 1.",
    "Saved step 2.",
  ]
  orbax = [r for r in caplog.records if "/orbax/" in r.pathname]
  assert all(r.levelno >= logging.WARNING for r in orbax), orbax[:3]
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [1, 2]


def test_a_save_that_fails_is_one_line_and_leaves_no_temporary_folder(
  tmp_path, monkeypatch
):
  """A full disk during a save (Orbax's error injected once the temporary
  folder exists): one line naming the folder, the cause, the free space and
  the last good step; the temporary folder goes; step 1 stays intact."""
  info = type("Info", (), {"height": 64, "width": 64, "channels": 3, "version": ""})
  state = {"w": np.arange(6.0).reshape(2, 3)}
  checkpoints = checkpointing.Checkpointer(
    str(tmp_path), tiny_config(tmp_path), info, writable=True
  )
  checkpoints.save(1, state)
  before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  real_save = checkpoints.manager.save

  def full_disk(step, *args, **kwargs):
    (tmp_path / "checkpoints" / f"{step}.orbax-checkpoint-tmp-123").mkdir()
    raise ValueError("RESOURCE_EXHAUSTED: No space left on device [OS error 28]")

  monkeypatch.setattr(checkpoints.manager, "save", full_disk)
  with pytest.raises(checkpointing.CheckpointError) as raised:
    checkpoints.save(2, state)
  message = str(raised.value)
  assert "\n" not in message
  assert message.startswith(
    f"Saving step 2 to {tmp_path / 'checkpoints'} failed (ValueError: "
    "RESOURCE_EXHAUSTED: No space left on device"
  )
  assert "MiB free there" in message
  assert message.endswith(
    "the last good checkpoint (step 1) is intact: free space and rerun the same "
    "command to resume."
  )
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
  monkeypatch.setattr(checkpoints.manager, "save", real_save)
  checkpoints.save(2, state)  # Space is back: the next save works.
  checkpoints.close()
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [1, 2]


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path, dsprites_data_dir):
  config = tiny_config(dsprites_data_dir, num_train_steps=2)
  train.train_and_evaluate(config, str(tmp_path))
  for path in (tmp_path / "checkpoints" / "2" / "state").rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(b"garbage")
  with pytest.raises(checkpointing.CheckpointError, match="corrupt"):
    main_params(tmp_path, config)


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("method", "vae", "config.method='vae'"),
    ("model.arch", "unet", "config.model.arch='unet'"),
    ("batch_size", 1, "marginal pairs need >= 2"),
    ("dataset.num_frames", 1, "need >= 2"),
    ("loss.recon_target", "next", "config.loss.recon_target"),
    ("model.pose_dim", 0, "config.model.pose_dim=0"),
    ("model.inference_frames_per_call", -1, "inference_frames_per_call=-1"),
    ("seed", -1, "config.seed=-1 must be an integer in"),
    ("loss.marginal_pairs", "shuffle", "config.loss.marginal_pairs='shuffle'"),
  ],
)
def test_impossible_config_values_are_named(field, value, message, tmp_path):
  config = tiny_config(tmp_path, **{field: value})
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config_validation.validate(config)


def test_batch_not_divisible_by_devices_is_refused(tmp_path, dsprites_data_dir):
  config = tiny_config(dsprites_data_dir, batch_size=12)
  with pytest.raises(ValueError, match="batch_size=12 must be divisible"):
    train.train_and_evaluate(config, str(tmp_path))


def test_wrong_frame_size_for_the_model_is_refused(tmp_path):
  class Info:
    height, width, channels, seq_len = 32, 32, 3, 20

  with pytest.raises(ValueError, match="take 64x64 frames"):
    config_validation.check_dataset(tiny_config(tmp_path), Info)


def test_a_relative_workdir_is_made_absolute(tmp_path, monkeypatch):
  """Orbax refuses relative paths at the first save (the long run died so)."""
  monkeypatch.chdir(tmp_path)
  info = type("Info", (), {"height": 64, "width": 64, "channels": 3, "version": ""})
  checkpoints = checkpointing.Checkpointer("runs/x", tiny_config(tmp_path), info)
  assert str(checkpoints.directory) == str(tmp_path / "runs" / "x" / "checkpoints")
  checkpoints.close()
