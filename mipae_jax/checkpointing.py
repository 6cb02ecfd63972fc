"""The one Orbax CheckpointManager of a workdir: restore-or-initialise,
periodic and preemption saves, and compatibility checks before any compile.

Each checkpoint step holds three items: the train state, the grain iterator
state of every process, and an `experiment` fingerprint (method, dataset and
model shapes) that is compared with the config before anything is restored.
A `Checkpointer` is a context manager: leaving it, on success or on error,
finishes the saves in flight and removes the directories it created that
stayed empty.
"""

import contextlib
import json
import logging as pylogging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grain.python as grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from mipae_jax import sharding
from mipae_jax import workdir as workdir_lib

# 2: one Adam state for E_c, E_p, D and one for the critic (the reference step).
FORMAT_VERSION = 2
# Exit status of a run stopped by SIGTERM after saving (128 + SIGTERM, what a
# shell reports for a process the signal ended), so that a scheduler can tell
# a preempted run from a finished one (0).
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


class CheckpointError(ValueError):
  """A checkpoint is missing, corrupt, or belongs to another experiment."""


def experiment_fingerprint(
  config: ml_collections.ConfigDict, info: Any
) -> dict[str, Any]:
  """What must match between a checkpoint and the config that restores it."""
  return {
    "format_version": FORMAT_VERSION,
    "method": config.method,
    "dataset": config.dataset.name,
    "builder_config": config.dataset.builder_config,
    "dataset_version": info.version,
    "fresh_train_videos": config.dataset.get("fresh_train_videos", False),
    "placement": config.dataset.get("placement", "host"),
    "image_shape": [info.height, info.width, info.channels],
    "arch": config.model.arch,
    "content_dim": config.model.content_dim,
    "pose_dim": config.model.pose_dim,
    "skip_connections": config.model.skip_connections,
    "critic_hidden": config.model.critic_hidden,
    "scene_discriminator_hidden": config.model.scene_discriminator_hidden,
  }


# Fingerprint keys added after FORMAT_VERSION's first checkpoints, and the
# value those checkpoints implicitly had.
_ADDED_KEYS = {"fresh_train_videos": False, "placement": "host"}


def _mismatch(
  saved: dict[str, Any], wanted: dict[str, Any], keys=None
) -> dict[str, Any]:
  keys = wanted.keys() if keys is None else keys
  saved = {**_ADDED_KEYS, **saved}
  return {k: (saved.get(k), wanted[k]) for k in keys if saved.get(k) != wanted[k]}


def exit_code(step: int, final_step: int) -> int:
  """0 for a run that reached `final_step`, PREEMPTED_EXIT_CODE before it."""
  return PREEMPTED_EXIT_CODE if step < final_step else 0


class _OrbaxInfoFilter(pylogging.Filter):
  """Drops Orbax's and TensorStore's INFO lines (dozens per save) while
  absl's verbosity is the default; --verbosity=1 shows them again."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    noisy = "/orbax/" in record.pathname or "/tensorstore/" in record.pathname
    return not (
      noisy and record.levelno < pylogging.WARNING and logging.get_verbosity() < 1
    )


def quiet_orbax_info() -> None:
  """Installs _OrbaxInfoFilter on absl's logger, once."""
  logger = pylogging.getLogger("absl")
  if not any(isinstance(f, _OrbaxInfoFilter) for f in logger.filters):
    logger.addFilter(_OrbaxInfoFilter())


def _quiet_closed_loop_errors() -> None:
  """Wraps sys.unraisablehook to drop the "Event loop is closed"
  RuntimeErrors that tensorstore callbacks raise after a failed Orbax restore
  (one per array still in flight, printed after the real error); anything
  else goes to the previous hook."""
  previous = sys.unraisablehook
  if getattr(previous, "drops_closed_loop_errors", False):
    return

  def hook(unraisable: Any) -> None:
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
      return
    previous(unraisable)

  hook.drops_closed_loop_errors = True
  sys.unraisablehook = hook


def _unparsable_json(step_dir: str) -> str:
  """The first metadata file of `step_dir` that is not valid JSON (Orbax's
  JSON errors name no file), else `step_dir`."""
  for root, dirs, names in os.walk(step_dir):
    dirs[:] = sorted(d for d in dirs if d != "d")  # d/: binary array chunks.
    for name in sorted(names):
      path = os.path.join(root, name)
      if name in ("manifest.ocdbt", "commit_success.txt"):
        continue
      try:
        with open(path, "rb") as f:
          json.loads(f.read())
      except ValueError:
        return path
  return step_dir


def _short_reason(error: BaseException, step_dir: str) -> tuple[str, str]:
  """(file or directory to blame, one-line reason) of an Orbax read error:
  the first metadata file that is not valid JSON, else the one array data
  file of the step (or its data directories), and the first line of the
  innermost error."""
  root = error
  while root.__cause__ is not None or root.__context__ is not None:
    root = root.__cause__ or root.__context__
  blamed = _unparsable_json(step_dir)
  if blamed == step_dir:
    chunks = sorted(epath.Path(step_dir).glob("*/d/*"))
    blamed = str(chunks[0]) if len(chunks) == 1 else os.path.join(step_dir, "*", "d")
  reason = (str(root).splitlines() or [""])[0]
  if len(reason) > 100:
    reason = reason[:97] + "..."
  return blamed, f"{type(root).__name__}: {reason}"


def _iterator_args(data_iter: Any, save: bool):
  grain_iter = getattr(data_iter, "grain_iterator", data_iter)
  if save:
    return grain.PyGrainCheckpointSave(grain_iter)
  return grain.PyGrainCheckpointRestore(grain_iter)


class Checkpointer:
  """Checkpoints of one training run under `workdir/subdir`.

  Construction already checks the fingerprint of the step to resume from
  (`restore_step`, -1: the latest) against the config, so a wrong workdir
  fails before any compile; nothing on disk is ever changed by a failed
  check or restore. `step_flag` is the config field that picks another step
  (named in the error of a corrupt checkpoint). With `writable`, a workdir
  that cannot be written to is refused first.
  """

  def __init__(
    self,
    workdir: str,
    config: ml_collections.ConfigDict,
    info: Any,
    subdir: str = "checkpoints",
    keep: int | None = None,
    fingerprint: dict[str, Any] | None = None,
    restore_step: int = -1,
    step_flag: str = "restore_step",
    writable: bool = False,
  ):
    # Orbax's tensorstore writer needs an absolute path: a relative workdir
    # (e.g. --workdir=runs/x) otherwise fails at the first save.
    self.workdir = os.path.abspath(workdir)
    self.directory = epath.Path(self.workdir) / subdir
    self.fingerprint = fingerprint or experiment_fingerprint(config, info)
    self.restore_step = restore_step
    self.step_flag = step_flag
    self.manager = None
    self._lock = None
    self._created = workdir_lib.missing_dirs(str(self.directory))
    _quiet_closed_loop_errors()
    quiet_orbax_info()
    try:
      if writable:
        workdir_lib.check_writable(self.workdir)
        if jax.process_index() == 0:
          self._lock = workdir_lib.WorkdirLock(self.workdir)
      options = ocp.CheckpointManagerOptions(
        max_to_keep=keep or config.keep_checkpoints, create=True
      )
      self.manager = ocp.CheckpointManager(
        self.directory,
        options=options,
        item_names=("state", "data_iter", "experiment"),
      )
      step = self.resume_step()
      if step is not None:
        self.check_compatible(step)
    except BaseException:
      self.close()
      raise

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close(failed=exc_info[0] is not None)

  def _failed_save(self, step: int, error: BaseException) -> "CheckpointError":
    """The one-line error of a save that failed, once its temporary folder is
    removed: where, why, the free space, and the last good step."""
    for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
      shutil.rmtree(os.fspath(partial), ignore_errors=True)
    good = [s for s in self.manager.all_steps(read=True) if s != step]
    last = f"step {max(good)}" if good else "none yet"
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    try:
      free = f"; {shutil.disk_usage(self.directory).free / 2**20:.0f} MiB free there"
    except OSError:
      free = ""
    return CheckpointError(
      f"Saving step {step} to {self.directory} failed ({type(error).__name__}: "
      f"{reason}{free}); the last good checkpoint ({last}) is intact: free space "
      "and rerun the same command to resume."
    )

  def corrupt(self, step: int, error: BaseException) -> "CheckpointError":
    """The one-line error of an unreadable `step`, with the step to resume
    from instead."""
    step_dir = str(self.directory / str(step))
    blamed, reason = _short_reason(error, step_dir)
    earlier = [s for s in self.manager.all_steps() if s < step]
    if earlier:
      hint = (
        f"resume from the previous step with --config.{self.step_flag}={max(earlier)}"
      )
    else:
      hint = f"there is no earlier step: move {step_dir} aside to start over"
    return CheckpointError(
      f"Checkpoint step {step} is corrupt or incomplete: {blamed} ({reason}); "
      f"{hint} (nothing was deleted)."
    )

  def read_fingerprint(self, step: int) -> dict[str, Any]:
    try:
      restored = self.manager.restore(
        step, args=ocp.args.Composite(experiment=ocp.args.JsonRestore())
      )
    except Exception as e:  # Orbax raises many types for unreadable files.
      raise self.corrupt(step, e) from e
    return restored.experiment

  def check_compatible(self, step: int, keys=None) -> None:
    """Raises CheckpointError naming both sides of every mismatch."""
    saved = self.read_fingerprint(step)
    diff = _mismatch(saved, self.fingerprint, keys)
    if diff:
      details = "; ".join(
        f"{k}: checkpoint={a!r} vs config={b!r}" for k, (a, b) in diff.items()
      )
      raise CheckpointError(
        f"Checkpoint step {step} in {self.directory} is from another experiment: {details}. "
        "Use another --workdir or a matching config."
      )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def resume_step(self) -> int | None:
    """The step training resumes from: `restore_step`, or the latest (None
    when there is no checkpoint)."""
    if self.restore_step == -1:
      return self.manager.latest_step()
    available = self.manager.all_steps()
    if self.restore_step not in available:
      raise CheckpointError(
        f"No checkpoint of step {self.restore_step} in {self.directory} "
        f"(--config.{self.step_flag}); available: {sorted(available)}."
      )
    return self.restore_step

  def restore(
    self, step: int, abstract_state: Any, data_iter: Any | None = None
  ) -> Any:
    """Restores the state (and the iterator in place) of `step`."""
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      args["data_iter"] = _iterator_args(data_iter, save=False)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:
      raise self.corrupt(step, e) from e
    return restored.state

  def restore_trained(
    self, init_fn: Callable[[jax.Array], Any], step: int = -1, hint: str = ""
  ) -> tuple[Any, int]:
    """(state, step) of a finished stage for inference: latest step, or `step`.

    The state has the structure `init_fn(rng)` builds (nothing is computed:
    only its shapes are traced) and is restored replicated over the current
    mesh. Raises CheckpointError (with `hint` on how to make one) when there
    is none.
    """
    available = self.manager.all_steps()
    if not available:
      raise CheckpointError(f"No checkpoint in {self.directory}. {hint}".strip())
    step = max(available) if step == -1 else step
    if step not in available:
      raise CheckpointError(
        f"No checkpoint of step {step} in {self.directory}; available: {sorted(available)}."
      )
    self.check_compatible(step)
    replicated = sharding.replicated(sharding.create_mesh())
    abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(init_fn, jax.random.PRNGKey(0)),
    )
    return self.restore(step, abstract_state), step

  def restore_or_initialize(
    self,
    abstract_state: Any,
    init_fn: Callable[[], Any],
    data_iter: Any | None = None,
  ) -> Any:
    """The state of `resume_step()` (iterator restored in place), else
    `init_fn()`: nothing is compiled to resume.

    A resume from an earlier step than the latest moves the later steps to
    `workdir/<subdir>_superseded/` (nothing is deleted), so that training can save
    them again.
    """
    step = self.resume_step()
    if step is None:
      return init_fn()
    state = self.restore(step, abstract_state, data_iter)
    later = [s for s in self.manager.all_steps() if s > step]
    if later:
      self._set_aside(later)
    return state

  def _set_aside(self, steps: list[int]) -> None:
    aside = self.directory.parent / f"{self.directory.name}_superseded"
    if jax.process_index() == 0:
      aside.mkdir(parents=True, exist_ok=True)
      for step in steps:
        target = aside / str(step)
        suffix = 1
        while target.exists():
          target, suffix = aside / f"{step}.{suffix}", suffix + 1
        (self.directory / str(step)).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpoints_set_aside")
    self.manager.reload()
    logging.warning(
      "Resuming from step %d: later steps %s moved to %s.",
      self.restore_step,
      steps,
      aside,
    )

  def save(self, step: int, state: Any, data_iter: Any | None = None) -> None:
    args = {
      "state": ocp.args.StandardSave(state),
      "experiment": ocp.args.JsonSave(self.fingerprint),
    }
    if data_iter is not None:
      args["data_iter"] = _iterator_args(data_iter, save=True)
    logging.info("Saving step %d to %s.", step, self.directory)
    try:
      self.manager.save(step, args=ocp.args.Composite(**args), force=True)
      # Finished before training goes on, so a failed save stops training
      # at its own step (a full disk, a vanished directory).
      self.manager.wait_until_finished()
    except Exception as error:  # noqa: BLE001 (re-raised as one line)
      raise self._failed_save(step, error) from error
    logging.info("Saved step %d.", step)

  @contextlib.contextmanager
  def preemption_guard(self) -> Iterator[Callable[[int], bool]]:
    """Yields `preempted(step)`: True once SIGTERM arrived (one process) or
    when JAX's preemption sync point is reached (multi-host)."""
    flag = threading.Event()
    single = jax.process_count() == 1
    can_signal = single and threading.current_thread() is threading.main_thread()
    previous = (
      signal.signal(signal.SIGTERM, lambda *_: flag.set()) if can_signal else None
    )

    def preempted(step: int) -> bool:
      return flag.is_set() if single else self.manager.reached_preemption(step)

    try:
      yield preempted
    finally:
      if can_signal:
        signal.signal(signal.SIGTERM, previous)

  def close(self, failed: bool = False) -> None:
    """Waits for pending (async) saves, releases the manager and removes the
    directories this Checkpointer created that stayed empty.

    With `failed` (closing while an error propagates), an error of the saves
    themselves is logged rather than raised, so that the original error is
    the one reported.
    """
    if self.manager is not None:
      try:
        self.manager.wait_until_finished()
        self.manager.close()
      except Exception as e:
        if not failed:
          raise
        logging.error("Pending checkpoint save failed: %s: %s", type(e).__name__, e)
      self.manager = None
    if self._lock is not None:
      self._lock.release()
      self._lock = None
    workdir_lib.remove_if_empty(self._created)
