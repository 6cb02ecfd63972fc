"""How the training loop feeds the main network's steps: batches from the
host (grain) or gathered on the devices, one step per call or K scanned
steps per call (`config.steps_per_call`).

`one_step(state, batch, rng) -> (state, metrics)` is train.train_step with
its networks, loss config and method bound; the rng of step s is
fold_in(base_rng, s) on every path.
"""

import functools
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metrics

from mipae_jax import device_data, input_pipeline, loop, sharding

StepFn = Callable[[Any, dict[str, Any], jax.Array], tuple[Any, metrics.Collection]]


def next_batch(train_iter: Iterator[dict[str, Any]]) -> dict[str, Any]:
  """The two batches of one step, drawn in the reference's order: the
  critic's first, then the main network's."""
  critic = next(train_iter)["video"]
  return {"critic_video": critic, "video": next(train_iter)["video"]}


def _scanned_steps(
  step_with_input: Callable, state: Any, xs: Any
) -> tuple[Any, metrics.Collection]:
  """`step_with_input(state, x)` over the leading axis of `xs`, metrics
  merged on the device."""
  state, stacked = jax.lax.scan(step_with_input, state, xs)
  return state, loop.summed(stacked)


def host_steps(
  one_step: StepFn,
  state: Any,
  videos: jnp.ndarray,
  steps: jax.Array,
  base_rng: jax.Array,
) -> tuple[Any, metrics.Collection]:
  """len(steps) train steps in one call, on host batches `videos` [2 K, B,
  ...] (critic, main, critic, ...: the order of next_batch)."""
  pairs = videos.reshape(len(steps), 2, *videos.shape[1:])

  def step_with_input(state, x):
    pair, step = x
    batch = {"critic_video": pair[0], "video": pair[1]}
    return one_step(state, batch, jax.random.fold_in(base_rng, step))

  return _scanned_steps(step_with_input, state, (pairs, steps))


def device_steps(
  one_step: StepFn,
  batch_size: int,
  batch_sharding: jax.sharding.NamedSharding,
  num_steps: int,
  state: Any,
  videos: jax.Array,
  first_step: jax.Array,
  base_rng: jax.Array,
  data_key: jax.Array,
) -> tuple[Any, metrics.Collection]:
  """`num_steps` train steps in one call, each gathering its batches from
  the device-stored `videos` (device_data.step_batch)."""

  def step_with_input(state, step):
    batch = device_data.step_batch(videos, data_key, step, batch_size, batch_sharding)
    return one_step(state, batch, jax.random.fold_in(base_rng, step))

  return _scanned_steps(step_with_input, state, first_step + jnp.arange(num_steps))


class TrainData(NamedTuple):
  """How the loop feeds the steps: `next_batch(num_steps)`, `step_fn(state,
  batch, first_step, num_steps)`, the iterator state to checkpoint (None:
  nothing), and `video_of(step, batch)`, the main-network batch of a call's
  last step for the image hook."""

  next_batch: Callable[[int], Any]
  step_fn: loop.StepFn
  train_iter: Any
  video_of: Callable[[int, Any], Any]


def host_feed(
  one_step: StepFn,
  single: Callable,
  mesh: jax.sharding.Mesh,
  train_iter: input_pipeline.TrainIterator,
  base_rng: jax.Array,
) -> TrainData:
  """Batches from the grain iterator: one per call of `single` (one_step
  jitted, train.make_train_step) for a call of one step, or 2 K stacked for
  a call of K scanned steps. The state is replicated."""
  replicated = sharding.replicated(mesh)
  stacked = jax.sharding.NamedSharding(
    mesh, jax.sharding.PartitionSpec(None, sharding.DATA_AXIS)
  )
  several = jax.jit(
    functools.partial(host_steps, one_step),
    in_shardings=(replicated, stacked, replicated, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )

  def next_batches(num_steps: int) -> Any:
    if num_steps == 1:
      return next_batch(train_iter)
    return train_iter.next_stacked(2 * num_steps)["video"]

  def step_fn(state, batch, first_step: int, num_steps: int):
    if num_steps == 1:
      return single(state, batch, jax.random.fold_in(base_rng, first_step))
    steps = np.arange(first_step, first_step + num_steps, dtype=np.int32)
    return several(state, batch, steps, base_rng)

  def video_of(step: int, batch: Any) -> Any:
    return batch["video"] if isinstance(batch, dict) else batch[-1]

  return TrainData(next_batches, step_fn, train_iter, video_of)


def device_feed(
  one_step: StepFn,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  videos: jax.Array,
  base_rng: jax.Array,
) -> TrainData:
  """Batches gathered inside the step from the device-stored `videos`: the
  host passes only the first step number of each call."""
  replicated = sharding.replicated(mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  data_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 3)

  @functools.cache
  def compiled(num_steps: int):
    return jax.jit(
      functools.partial(
        device_steps, one_step, config.batch_size, batch_sharding, num_steps
      ),
      in_shardings=(replicated, videos.sharding, replicated, replicated, replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=0,
    )

  def step_fn(state, batch, first_step: int, num_steps: int):
    return compiled(num_steps)(state, videos, np.int32(first_step), base_rng, data_key)

  gather = jax.jit(
    lambda videos, step: device_data.step_batch(
      videos, data_key, step, config.batch_size, batch_sharding
    )["video"]
  )

  def video_of(step: int, batch: Any) -> Any:
    return gather(videos, np.int32(step))

  return TrainData(lambda num_steps: None, step_fn, None, video_of)
