"""The training loop of both stages: steps, clu metrics, the NaN/inf guard,
preemption, scheduled saves and image summaries.

`run` drives any `step_fn(state, batch, first_step, num_steps) -> (state,
metrics)`, one call running steps first_step ... first_step + num_steps - 1
on the batches `next_batch(num_steps)` returned: the main network's
(train.py) and the pose LSTM's (train_lstm.py). Everything the loop does
besides stepping (logging, images, saves, preemption, the NaN guard) happens
between calls.
"""

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import metric_writers, metrics, periodic_actions

from mipae_jax import checkpointing

StepFn = Callable[[Any, Any, int, int], tuple[Any, metrics.Collection]]
ImageHook = Callable[[metric_writers.MetricWriter, int, Any, Any], None]


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When a stage stops, logs, draws images and saves (in steps)."""

  num_train_steps: int
  log_every_steps: int
  image_every_steps: int
  checkpoint_every_steps: int
  # The config field of num_train_steps, named when there is nothing to do.
  steps_field: str = "num_train_steps"
  # Train steps per call of step_fn; calls end on its multiples.
  steps_per_call: int = 1

  def call_length(self, step: int) -> int:
    """Steps of the call after `step`: up to the next multiple of
    steps_per_call (so a resumed run calls as an uninterrupted one would)
    or the final step."""
    return min(
      self.steps_per_call - step % self.steps_per_call, self.num_train_steps - step
    )


@dataclasses.dataclass(frozen=True)
class Output:
  """Where a stage writes its summaries: `workdir` (events of `collection`,
  None: the main network's) and the hyperparameters logged at step 0."""

  workdir: str
  hparams: dict[str, Any]
  collection: str | None = None


@flax.struct.dataclass
class VectorAverage(metrics.Metric):
  """Mean over steps of a vector output, element by element (clu's Average
  averages every element into one number)."""

  total: jnp.ndarray
  count: jnp.ndarray

  @classmethod
  def from_model_output(cls, values: jnp.ndarray, **_) -> "VectorAverage":
    return cls(total=values.astype(jnp.float32), count=jnp.ones((), jnp.int32))

  def merge(self, other: "VectorAverage") -> "VectorAverage":
    return type(self)(total=self.total + other.total, count=self.count + other.count)

  def compute(self) -> jnp.ndarray:
    return self.total / self.count


def _kept(latest: int | None) -> str:
  return (
    f"the latest checkpoint on disk (step {latest}) is intact"
    if latest is not None
    else "no checkpoint was saved yet"
  )


def check_finite(values: dict[str, Any], step: int, latest: int | None) -> None:
  """The NaN/inf guard: raises before anything non-finite can be saved;
  `latest` is the latest step on disk (None: none)."""
  bad = {
    k: np.asarray(v).tolist() for k, v in values.items() if not np.all(np.isfinite(v))
  }
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


def averages(*names: str, **others: type[metrics.Metric]) -> type[metrics.Collection]:
  """A clu Collection averaging each of the step outputs `names` over steps,
  plus the metrics `others` (name -> metric class)."""
  fields = {name: metrics.Average.from_output(name) for name in names}
  return metrics.Collection.create(**fields, **others)


def scalars(values: dict[str, Any], prefix: str = "train") -> dict[str, Any]:
  """`prefix`_name -> value; a vector value of `name` gives one scalar
  `prefix`_nameNN per element (NN = index + 2: for the pose LSTM's
  `pose_loss_t`, the 1-based frame each loss predicts)."""
  out = {}
  for name, value in values.items():
    value = np.asarray(value)
    if value.ndim:
      out.update({f"{prefix}_{name}{t + 2:02d}": v for t, v in enumerate(value)})
    else:
      out[f"{prefix}_{name}"] = value
  return out


def _crossed(step: int, num_steps: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (step - num_steps, step]."""
  return step // every != (step - num_steps) // every


def summed(stacked: metrics.Collection) -> metrics.Collection:
  """Merges the per-step metrics of a scan (leading axis: the step) into one
  collection, on the device: every metric here merges by adding its fields
  (Average, VectorAverage)."""
  return jax.tree.map(lambda x: jnp.sum(x, axis=0), stacked)


def run(
  state: Any,
  step_fn: StepFn,
  next_batch: Callable[[int], Any],
  schedule: Schedule,
  checkpoints: checkpointing.Checkpointer,
  train_iter: Iterator[Any],
  output: Output,
  image_hook: ImageHook | None = None,
  name: str = "training",
) -> Any:
  """Steps `name` from `state.step` to `schedule.num_train_steps`, or until
  SIGTERM (a save, then a return before the final step), in calls of
  `schedule.steps_per_call` steps.

  After the call that reaches a multiple of `log_every_steps` the metrics are
  averaged, checked finite with the state and written as train_* scalars;
  at every multiple of `checkpoint_every_steps`, at the end and on
  preemption the state and `train_iter` (None: nothing to save) are saved,
  only after the NaN/inf guard passed on the state about to be written.
  `image_hook(writer, step, state, batch)` runs on process 0 after the call
  that reaches a multiple of `image_every_steps`, and at the end. A state
  already at the final step is returned with a warning.
  """
  step = int(state.step)
  final = schedule.num_train_steps
  if step >= final:
    logging.warning(
      "Nothing to do: the checkpoint of the %s in %s is at step %d and "
      "config.%s=%d; raise it to train further.",
      name,
      output.workdir,
      step,
      schedule.steps_field,
      final,
    )
    return state
  writer = metric_writers.create_default_writer(
    output.workdir, just_logging=jax.process_index() > 0, collection=output.collection
  )
  try:
    if step == 0:
      writer.write_hparams(output.hparams)
    logging.info("Training %s from step %d.", name, step)
    report_progress = periodic_actions.ReportProgress(
      num_train_steps=final, writer=writer
    )
    accumulated = None
    with checkpoints.preemption_guard() as preempted:
      while step < final:
        num_steps = schedule.call_length(step)
        batch = next_batch(num_steps)
        state, call_metrics = step_fn(state, batch, step + 1, num_steps)
        step += num_steps
        accumulated = (
          call_metrics if accumulated is None else accumulated.merge(call_metrics)
        )
        report_progress(step)
        is_last = step == final
        # Every step of the call is offered to the preemption check, in order
        # (multi-host sync points are agreed on step numbers).
        stopping = any(preempted(s) for s in range(step - num_steps + 1, step + 1))
        logging_now = (
          _crossed(step, num_steps, schedule.log_every_steps) or is_last or stopping
        )
        if logging_now:
          values = accumulated.compute()
          check_state_finite(state, step, checkpoints.latest_step())
          check_finite(values, step, checkpoints.latest_step())
          writer.write_scalars(step, scalars(values))
          accumulated = None
        if (
          image_hook is not None
          and jax.process_index() == 0
          and (_crossed(step, num_steps, schedule.image_every_steps) or is_last)
        ):
          image_hook(writer, step, state, batch)
        if step % schedule.checkpoint_every_steps == 0 or is_last or stopping:
          if not logging_now:  # else both were checked just above
            check_finite(accumulated.compute(), step, checkpoints.latest_step())
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
