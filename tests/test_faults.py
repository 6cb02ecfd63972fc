"""Faults on tiny runs: each probe checks the exception or exit
status, the one-line message, and that every checkpoint on disk before it is
byte-identical after it. Probes fail before compiling where they can, and
the rest reuse the session's compiled tiny step."""

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import main_params, tiny_config

from mipae_jax import (
  checkpointing,
  config_fields,
  config_validation,
  train,
)
from mipae_jax import workdir as workdir_lib
from mipae_jax.datasets import prepared

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hashes(directory) -> dict[str, str]:
  """sha256 of every file under `directory`, by relative path."""
  return {
    os.path.relpath(os.path.join(root, name), directory): hashlib.sha256(
      open(os.path.join(root, name), "rb").read()
    ).hexdigest()
    for root, _, names in os.walk(directory)
    for name in names
  }


def _one_line(error: BaseException) -> str:
  message = str(error)
  assert "\n" not in message, message
  return message


@pytest.fixture
def workdir(tmp_path, trained_workdir):
  """A copy of the session's 4-step workdir (checkpoints 2 and 4)."""
  copy = tmp_path / "workdir"
  shutil.copytree(trained_workdir, copy)
  return copy


@pytest.fixture
def no_compile(monkeypatch):
  """Fails a test that compiles the initial state or the train step."""

  def refuse(*args, **kwargs):
    raise AssertionError("compiled before the fault was found")

  monkeypatch.setattr(train, "init_state", refuse)
  monkeypatch.setattr(train, "make_train_step", lambda *args, **kwargs: refuse)


def _train_shard(data_dir) -> str:
  builder = prepared.get_builder(tiny_config(data_dir).dataset)
  (path,) = builder.info.splits["train"].filepaths
  return str(path)


@pytest.fixture
def data_copy(tmp_path, dsprites_data_dir):
  """A copy of the built tiny dataset, free to corrupt."""
  copy = tmp_path / "tfds"
  shutil.copytree(dsprites_data_dir, copy)
  return copy


@pytest.mark.slow  # five saves of a resumed run: about 50 s
def test_an_error_after_an_async_save_leaves_that_save_finalized(
  workdir, dsprites_data_dir, monkeypatch
):
  """A learning rate of 1e30, a checkpoint every step: the error raised while the
  step-5 save is in flight is the one that propagates, the save completes
  and nothing earlier changes."""
  checkpoints = workdir / "checkpoints"
  before = _hashes(checkpoints)
  save = checkpointing.Checkpointer.save

  def save_then_fail(self, step, state, data_iter=None):
    save(self, step, state, data_iter)
    raise FloatingPointError(f"Non-finite parameters at step {step} (probe).")

  monkeypatch.setattr(checkpointing.Checkpointer, "save", save_then_fail)
  config = tiny_config(dsprites_data_dir, num_train_steps=6, checkpoint_every_steps=1)
  with pytest.raises(FloatingPointError, match=r"^Non-finite parameters at step 5"):
    train.train_and_evaluate(config, str(workdir))
  assert not list(checkpoints.glob("*orbax-checkpoint-tmp*"))
  after = _hashes(checkpoints)
  assert {k: after[k] for k in before} == before
  params, step = main_params(workdir, config)
  assert step == 5
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("damage", ["overwrite", "truncate"])
def test_a_corrupt_latest_checkpoint_names_the_file_and_the_step_before(
  damage, workdir, dsprites_data_dir, no_compile
):
  """One line naming step 4, the damaged file and
  --config.restore_step=2; nothing on disk changes."""
  name = "state/d" if damage == "overwrite" else "state/_METADATA"
  target = workdir / "checkpoints" / "4" / name
  if target.is_dir():
    (target,) = target.iterdir()
  data = target.read_bytes()
  if damage == "overwrite":
    third = len(data) // 3
    target.write_bytes(data[:third] + b"\xff" * 16 + data[third + 16 :])
  else:
    target.write_bytes(data[: len(data) // 2])
  before = _hashes(workdir)
  with pytest.raises(checkpointing.CheckpointError) as raised:
    train.train_and_evaluate(
      tiny_config(dsprites_data_dir, num_train_steps=6), str(workdir)
    )
  message = _one_line(raised.value)
  assert message.startswith("Checkpoint step 4 is corrupt or incomplete:")
  assert str(target) in message
  assert "--config.restore_step=2" in message and "nothing was deleted" in message
  assert len(message) < 400
  assert _hashes(workdir) == before


def test_restore_step_resumes_from_the_previous_good_step(
  workdir, dsprites_data_dir, trained_workdir
):
  """The advice of the corrupt-checkpoint message works: steps 3-4 are
  trained again from step 2, bit-identical to the uninterrupted run, and the
  corrupt step 4 is kept byte for byte in checkpoints_superseded/."""
  corrupt = workdir / "checkpoints" / "4"
  (chunk,) = (corrupt / "state" / "d").iterdir()
  chunk.write_bytes(b"garbage")
  kept = _hashes(corrupt)
  config = tiny_config(dsprites_data_dir, restore_step=2)
  train.train_and_evaluate(config, str(workdir))
  assert _hashes(workdir / "checkpoints_superseded" / "4") == kept
  resumed, step = main_params(workdir, config)
  assert step == 4
  expected, _ = main_params(trained_workdir, config)
  jax.tree.map(np.testing.assert_array_equal, resumed, expected)


def test_a_missing_restore_step_is_named(workdir, dsprites_data_dir, no_compile):
  with pytest.raises(checkpointing.CheckpointError) as raised:
    train.train_and_evaluate(
      tiny_config(dsprites_data_dir, restore_step=3), str(workdir)
    )
  assert "No checkpoint of step 3" in _one_line(raised.value)
  assert "available: [2, 4]" in str(raised.value)


def test_a_truncated_train_shard_is_named_before_compiling(
  workdir, data_copy, no_compile
):
  """the shard's record count is checked when the iterator is made."""
  shard = _train_shard(data_copy)
  data = open(shard, "rb").read()
  open(shard, "wb").write(data[: len(data) * 2 // 3])
  before = _hashes(workdir / "checkpoints")
  with pytest.raises(prepared.CorruptDataError) as raised:
    train.train_and_evaluate(tiny_config(data_copy, num_train_steps=6), str(workdir))
  message = _one_line(raised.value)
  assert message.startswith(f"Dataset file {shard} is missing, truncated or corrupt")
  assert f"delete {os.path.dirname(shard)} and run python -m mipae_jax.main" in message
  assert "--mode=prepare" in message and "--config=configs/mipae_dsprites.py" in message
  assert _hashes(workdir / "checkpoints") == before


def test_a_bad_record_names_its_file_and_no_save_is_left_half_done(
  workdir, data_copy, no_compile
):
  """records overwritten inside the train shard (its index intact)
  fail at the first read of step 5 with the shard named."""
  shard = _train_shard(data_copy)
  data = bytearray(open(shard, "rb").read())
  start, stop = len(data) // 10, len(data) * 6 // 10
  data[start:stop] = random.Random(3).randbytes(stop - start)
  open(shard, "wb").write(bytes(data))
  before = _hashes(workdir / "checkpoints")
  with pytest.raises(prepared.CorruptDataError) as raised:
    train.train_and_evaluate(tiny_config(data_copy, num_train_steps=6), str(workdir))
  message = _one_line(raised.value)
  assert message.startswith("Corrupt record ") and f" in {shard} (" in message
  assert "rebuild the dataset: delete" in message
  assert _hashes(workdir / "checkpoints") == before


def test_a_failed_run_leaves_no_empty_folders(tmp_path, data_copy, no_compile):
  """A run that fails before saving removes the directories it created."""
  open(_train_shard(data_copy), "wb").write(b"")
  new = tmp_path / "new"
  with pytest.raises(prepared.CorruptDataError, match="0 of its 256 records"):
    train.train_and_evaluate(tiny_config(data_copy), str(new / "run"))
  assert not new.exists()


def test_an_unwritable_workdir_is_one_line(tmp_path, dsprites_data_dir, no_compile):
  """A workdir under a regular file (unwritable even for root)."""
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(PermissionError) as raised:
    train.train_and_evaluate(tiny_config(dsprites_data_dir), str(blocker / "run"))
  assert _one_line(raised.value).startswith(
    f"Cannot write to the workdir {blocker / 'run'} (Not a directory)"
  )


def test_an_unbuildable_data_dir_fails_before_compiling(tmp_path, no_compile):
  """the dataset is prepared before anything compiles."""
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(PermissionError) as raised:
    train.train_and_evaluate(tiny_config(blocker / "tfds"), str(tmp_path / "run"))
  assert _one_line(raised.value).startswith(
    f"Cannot build moving_dsprites/rotating_small in {blocker / 'tfds'}"
  )
  assert not (tmp_path / "run").exists()


def test_critic_width_mismatch_is_refused_before_compiling(
  workdir, dsprites_data_dir, no_compile
):
  """--config.model.critic_hidden=256 on a 512-wide workdir."""
  before = _hashes(workdir)
  config = tiny_config(dsprites_data_dir, **{"model.critic_hidden": 256})
  with pytest.raises(checkpointing.CheckpointError) as raised:
    train.train_and_evaluate(config, str(workdir))
  assert "critic_hidden: checkpoint=512 vs config=256" in _one_line(raised.value)
  assert _hashes(workdir) == before


def test_num_train_steps_below_the_checkpoint_says_nothing_to_do(
  workdir, dsprites_data_dir, no_compile, caplog
):
  """exits normally, says so, and changes nothing."""
  before = _hashes(workdir)
  state = train.train_and_evaluate(
    tiny_config(dsprites_data_dir, num_train_steps=2), str(workdir)
  )
  assert int(state.step) == 4
  assert "Nothing to do: the checkpoint of the mipae main network" in caplog.text
  assert checkpointing.exit_code(int(state.step), 2) == 0
  assert _hashes(workdir) == before


def test_preempted_runs_exit_143():
  """the status main returns after a SIGTERM stop."""
  assert checkpointing.PREEMPTED_EXIT_CODE == 143
  assert checkpointing.exit_code(3, 50) == 143
  assert checkpointing.exit_code(50, 50) == 0


def _main(*args, env=None, **kwargs) -> subprocess.Popen:
  return subprocess.Popen(
    [sys.executable, "-m", "mipae_jax.main", *args],
    cwd=REPO,
    env={**os.environ, **(env or {})},
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
    **kwargs,
  )


def test_an_unknown_config_field_is_named_on_the_command_line(tmp_path):
  """Through the real command line; nothing is created."""
  run = _main(
    "--config=configs/mipae_dsprites.py",
    f"--workdir={tmp_path / 'run'}",
    "--config.model.critic_hiden=3",
  )
  _, stderr = run.communicate(timeout=120)
  assert run.returncode == 1
  assert stderr.strip().splitlines()[-1] == (
    "FATAL Flags parsing error: unknown config field 'model.critic_hiden' (did you "
    "mean 'model.critic_hidden', 'model.arch', 'model.scene_discriminator_hidden'?)"
  )
  assert not (tmp_path / "run").exists()


def test_a_batch_the_devices_cannot_split_is_a_config_error_before_compiling(
  tmp_path, dsprites_data_dir, no_compile
):
  """--config.batch_size=7 on the 8 test devices: one line, nothing written."""
  with pytest.raises(config_validation.ConfigError) as raised:
    train.train_and_evaluate(
      tiny_config(dsprites_data_dir, batch_size=7), str(tmp_path / "run")
    )
  assert _one_line(raised.value) == (
    "Bad config: config.batch_size=7 must be divisible by the number of devices "
    "(8) and of processes (1)."
  )
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_every_mode_refuses_a_workdir_that_is_a_file(tmp_path):
  """eval, train_lstm, curves and reproduce check --workdir as train does:
  one line, exit 1, the file untouched."""
  blocker = tmp_path / "file"
  blocker.write_text("not a workdir")
  for mode in ("eval", "train_lstm", "curves", "reproduce"):
    run = _main(
      "--config=configs/mipae_dsprites.py:tiny",
      f"--workdir={blocker}",
      f"--mode={mode}",
    )
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 1, (mode, stderr)
    assert stderr.strip().splitlines()[-1] == (
      f"PermissionError: The workdir {blocker} is not a directory (a file is "
      "there); use another --workdir."
    )
    assert "Traceback" not in stderr
  assert blocker.read_text() == "not a workdir"


def test_one_training_process_per_workdir(workdir, dsprites_data_dir, no_compile):
  """A second writer exits at once with one line naming the first; the lock
  goes with its holder, and checkpoints are untouched."""
  before = _hashes(workdir / "checkpoints")
  holder = workdir_lib.WorkdirLock(str(workdir))
  try:
    with pytest.raises(workdir_lib.WorkdirInUseError) as raised:
      train.train_and_evaluate(tiny_config(dsprites_data_dir), str(workdir))
    message = _one_line(raised.value)
    assert message.startswith(f"The workdir {workdir} is in use by another")
    assert f"pid {os.getpid()}" in message
    assert isinstance(raised.value, PermissionError)  # one line on the CLI
  finally:
    holder.release()
  assert not (workdir / workdir_lib.LOCK_FILE).exists()
  assert _hashes(workdir / "checkpoints") == before
  # Free again: the next writer takes it (and gives it back on its way out).
  workdir_lib.WorkdirLock(str(workdir)).release()


def test_a_killed_writers_lock_does_not_block_the_next(tmp_path):
  run = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import sys, time; from mipae_jax import workdir; "
      f"lock = workdir.WorkdirLock({str(tmp_path)!r}); print('held', flush=True); "
      "time.sleep(60)",
    ],
    cwd=REPO,
    stdout=subprocess.PIPE,
    text=True,
  )
  assert run.stdout.readline().strip() == "held"
  with pytest.raises(workdir_lib.WorkdirInUseError, match=f"pid {run.pid}"):
    workdir_lib.WorkdirLock(str(tmp_path))
  run.send_signal(signal.SIGKILL)
  run.wait(timeout=30)
  workdir_lib.WorkdirLock(str(tmp_path)).release()


def test_an_error_that_is_not_ours_is_one_line_with_its_traceback_on_demand(
  tmp_path,
):
  """compare of an unevaluated workdir raises FileNotFoundError: one line
  last, no traceback; --verbosity=1 adds the traceback before it."""
  missing = tmp_path / "never_evaluated"
  for verbosity, traceback in ((0, False), (1, True)):
    run = _main("--mode=compare", f"--workdirs={missing}", f"--verbosity={verbosity}")
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(
      f"FileNotFoundError: {missing}/eval/metrics.json does not exist"
    )
    assert last.endswith("(--verbosity=1 shows the traceback)")
    assert ("Traceback" in stderr) == traceback
    assert "sys.meta_path is None" not in stderr


def test_a_missing_or_unparsable_config_file_is_one_line(tmp_path):
  """The file named, and the line of a syntax error; nothing is created."""
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config(arg=None):\n  return {\n")
  for spec, last in (
    (
      "configs/no_such_config.py",
      "config file configs/no_such_config.py does not exist",
    ),
    (f"{broken}:smoke", f"config file {broken}, line 2: "),
    (str(tmp_path), f"config file {tmp_path} is not a file"),
  ):
    run = _main(f"--config={spec}", f"--workdir={tmp_path / 'run'}")
    _, stderr = run.communicate(timeout=120)
    lines = stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1, stderr
    assert lines[0].startswith(f"FATAL Flags parsing error: {last}")
  assert not (tmp_path / "run").exists()


def test_unknown_field_without_a_close_name(tmp_path):
  config = tiny_config(tmp_path)
  assert config_fields.unknown_field(config, "model.pose_dim") is None
  assert config_fields.unknown_field(config, "bogus_field") == (
    "unknown config field 'bogus_field' (none is close; see configs/base.py)"
  )


def _tiny_flags(data_dir, workdir, **fields) -> list[str]:
  """The command-line form of tiny_config(data_dir, **fields)."""
  flat = {
    "dataset.builder_config": "rotating_small",
    "dataset.fresh_train_videos": False,
    "dataset.data_dir": str(data_dir),
    "dataset.num_frames": 6,
    "batch_size": 8,
    "log_every_steps": 2,
    "image_every_steps": 1000,
    **fields,
  }
  return [
    "--config=configs/mipae_dsprites.py",
    f"--workdir={workdir}",
    *(f"--config.{k}={v}" for k, v in flat.items()),
  ]


def _steps(workdir) -> list[int]:
  """Finalized checkpoint steps of `workdir` (not the tmp dirs of a save)."""
  directory = workdir / "checkpoints"
  return sorted(int(p.name) for p in directory.glob("*") if p.name.isdigit())


def _env() -> dict[str, str]:
  """Subprocesses share this session's XLA cache (same 8 CPU devices)."""
  return {
    "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
  }


def test_the_real_error_is_the_last_line_printed(workdir, dsprites_data_dir):
  """A corrupt checkpoint through the command line: its one-line error ends
  stderr, printed once, with none of Orbax's thread noise after it."""
  (chunk,) = (workdir / "checkpoints" / "4" / "state" / "d").iterdir()
  chunk.write_bytes(b"garbage")
  before = _hashes(workdir)
  run = _main(*_tiny_flags(dsprites_data_dir, workdir, num_train_steps=6), env=_env())
  _, stderr = run.communicate(timeout=300)
  assert run.returncode == 1
  last = stderr.strip().splitlines()[-1]
  assert last.startswith(
    "mipae_jax.checkpointing.CheckpointError: Checkpoint step 4 is corrupt"
  )
  assert last.endswith("--config.restore_step=2 (nothing was deleted).")
  assert stderr.count("Checkpoint step 4 is corrupt") == 1
  assert "Event loop is closed" not in stderr
  assert "cannot schedule new futures" not in stderr
  assert _hashes(workdir) == before


def _wait_for_step(workdir, run: subprocess.Popen, step: int) -> None:
  """Waits until `run` has finalized a checkpoint of `step` or later."""
  deadline = time.monotonic() + 300
  while not _steps(workdir) or _steps(workdir)[-1] < step:
    if run.poll() is not None or time.monotonic() > deadline:
      pytest.fail(f"no step {step} saved: {run.communicate()[1][-2000:]}")
    time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_at_random_moments_resumes_bit_identical(tmp_path, dsprites_data_dir):
  """kill -9 five times at random moments (a save every step, so during
  saves too), resuming each time, then a SIGTERM (status 143) and a last
  resume to the end: the parameters equal an uninterrupted run's bit for
  bit and no save is left half-done."""
  steps = 30
  reference = tmp_path / "reference"
  config = tiny_config(dsprites_data_dir, num_train_steps=steps, image_every_steps=1000)
  train.train_and_evaluate(config, str(reference))
  workdir = tmp_path / "killed"
  args = _tiny_flags(
    dsprites_data_dir, workdir, num_train_steps=steps, checkpoint_every_steps=1
  )
  rng = random.Random(0)
  for _ in range(5):
    start = _steps(workdir)[-1] if _steps(workdir) else 0
    run = _main(*args, env=_env())
    _wait_for_step(workdir, run, start + 1)
    time.sleep(rng.uniform(0.0, 1.5))
    assert run.poll() is None, "the run ended before it was killed"
    run.send_signal(signal.SIGKILL)
    run.communicate()
  run = _main(*args, env=_env())
  _wait_for_step(workdir, run, _steps(workdir)[-1] + 1)
  run.send_signal(signal.SIGTERM)
  _, stderr = run.communicate(timeout=300)
  assert run.returncode == checkpointing.PREEMPTED_EXIT_CODE, stderr[-2000:]
  assert _steps(workdir)[-1] < steps
  run = _main(*args, env=_env())
  _, stderr = run.communicate(timeout=600)
  assert run.returncode == 0, stderr[-2000:]
  assert not list((workdir / "checkpoints").glob("*orbax-checkpoint-tmp*"))
  killed, step = main_params(workdir, config)
  expected, _ = main_params(reference, config)
  assert step == steps
  jax.tree.map(np.testing.assert_array_equal, killed, expected)
