"""The one Orbax CheckpointManager of a workdir: restore-or-initialise,
periodic and preemption saves, and compatibility checks before any compile.

Each checkpoint step holds three items: the train state, the grain iterator
state of every process, and an `experiment` fingerprint (method, dataset and
model shapes) that is compared with the config before anything is restored.
"""

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grain.python as grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from mipae_jax import sharding

# 2: one Adam state for E_c, E_p, D and one for the critic (the reference step).
FORMAT_VERSION = 2


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
    "image_shape": [info.height, info.width, info.channels],
    "arch": config.model.arch,
    "content_dim": config.model.content_dim,
    "pose_dim": config.model.pose_dim,
    "skip_connections": config.model.skip_connections,
    "critic_hidden": config.model.critic_hidden,
    "scene_discriminator_hidden": config.model.scene_discriminator_hidden,
  }


def _mismatch(
  saved: dict[str, Any], wanted: dict[str, Any], keys=None
) -> dict[str, Any]:
  keys = wanted.keys() if keys is None else keys
  return {k: (saved.get(k), wanted[k]) for k in keys if saved.get(k) != wanted[k]}


def _iterator_args(data_iter: Any, save: bool):
  grain_iter = getattr(data_iter, "grain_iterator", data_iter)
  if save:
    return grain.PyGrainCheckpointSave(grain_iter)
  return grain.PyGrainCheckpointRestore(grain_iter)


class Checkpointer:
  """Checkpoints of one training run under `workdir/subdir`.

  Construction already checks the latest checkpoint's fingerprint against
  the config, so a wrong workdir fails before any compile; nothing on disk is
  ever changed by a failed check or restore.
  """

  def __init__(
    self,
    workdir: str,
    config: ml_collections.ConfigDict,
    info: Any,
    subdir: str = "checkpoints",
    keep: int | None = None,
    fingerprint: dict[str, Any] | None = None,
  ):
    # Orbax's tensorstore writer needs an absolute path: a relative workdir
    # (e.g. --workdir=runs/x) otherwise fails at the first save.
    self.directory = epath.Path(os.path.abspath(workdir)) / subdir
    self.fingerprint = fingerprint or experiment_fingerprint(config, info)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep or config.keep_checkpoints, create=True
    )
    self.manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=("state", "data_iter", "experiment")
    )
    latest = self.manager.latest_step()
    if latest is not None:
      self.check_compatible(latest)

  def read_fingerprint(self, step: int) -> dict[str, Any]:
    try:
      restored = self.manager.restore(
        step, args=ocp.args.Composite(experiment=ocp.args.JsonRestore())
      )
    except Exception as e:  # Orbax raises many types for unreadable files.
      raise CheckpointError(
        f"Checkpoint step {step} in {self.directory} is unreadable ({type(e).__name__}: "
        f"{e}); it may be corrupt or incomplete."
      ) from e
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
      raise CheckpointError(
        f"Could not restore step {step} from {self.directory} ({type(e).__name__}: {e}). "
        "The checkpoint is corrupt, incomplete, or from an incompatible model."
      ) from e
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

  def restore_or_initialize(self, state: Any, data_iter: Any | None = None) -> Any:
    """The latest checkpoint if there is one (with iterator state), else `state`."""
    step = self.manager.latest_step()
    if step is None:
      return state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self.restore(step, abstract, data_iter)

  def save(self, step: int, state: Any, data_iter: Any | None = None) -> None:
    args = {
      "state": ocp.args.StandardSave(state),
      "experiment": ocp.args.JsonSave(self.fingerprint),
    }
    if data_iter is not None:
      args["data_iter"] = _iterator_args(data_iter, save=True)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)

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

  def close(self) -> None:
    """Waits for pending (async) saves, then releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()
