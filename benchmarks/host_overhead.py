"""Host time per training step of each data path, with several steps per call.

  python benchmarks/host_overhead.py                   # K in 1, 8, 32; batch 100
  python benchmarks/host_overhead.py --steps_per_call=1,8 --batch_size=16

The train step, the loop's feeds (feeds.host_feed, feeds.device_feed)
and the data are the real ones; only the networks are tiny (a mean-pooled
Dense per encoder, a Dense decoder painting one colour per frame), so that
compute is negligible and the wall time per step is the host's: batch
assembly and transfer (host path) and the dispatch of each call. Calls are
dispatched back to back and the last is waited for, as in training.

Prints three Markdown tables:
  1. host time and wall time per step for each path and K (goal: host time
     <= 50 us with device data and K >= 8); the host time is what the
     Python side spends per step in next_batch and in dispatching calls
     (JAX returns before the computation ends), the wall time includes the
     computation, here on the benchmark's own devices;
  2. the input rate of each path alone, in batches/s (a step takes two);
  3. the FLOPs of one MIPAE and one DRNET step at batch 100 (XLA's cost
     analysis of the step with direct convolutions, the form a GPU runs) and
     the time per step they imply at 10 % and 20 % of an H100's dense bf16
     peak (989 TFLOP/s).
The device-rendered path (fresh Moving dSprites drawn on the device) is not
built yet and is listed as such. With --networks=real the first table gives
the step times of the paper's networks (launch/device_check.sh runs it for
both methods in float32 and bfloat16).
"""

import functools
import pathlib
import sys
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mipae_jax import (  # noqa: E402
  device_data,
  feeds,
  input_pipeline,
  sharding,
  train,
  train_state,
)
from mipae_jax.datasets import prepared  # noqa: E402
from mipae_jax.experiments import reproduce  # noqa: E402
from mipae_jax.models.main_network import MainNetwork  # noqa: E402
from mipae_jax.models.networks import Networks, build_networks  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("steps_per_call", ["1", "8", "32"], "K values to time.")
flags.DEFINE_integer("batch_size", 100, "Global batch (videos per batch).")
flags.DEFINE_integer("min_steps", 256, "Timed steps per row (whole calls).")
flags.DEFINE_string(
  "data_dir", None, "TFDS data dir (default: a temporary one, built here)."
)
flags.DEFINE_bool("flops", True, "Also print the FLOPs of the real steps.")
flags.DEFINE_bool("rates", True, "Also print each input path's rate alone.")
flags.DEFINE_enum(
  "networks",
  "tiny",
  ["tiny", "real"],
  "tiny: negligible compute (the host's time per step); real: the paper's "
  "networks (step times on this machine's devices).",
)
flags.DEFINE_list("methods", ["mipae"], "Methods timed.")
flags.DEFINE_list("dtypes", ["float32"], "model.dtype values timed.")

H100_BF16_DENSE_PEAK = 989e12


class _TinyEncoder(nn.Module):
  features: int
  return_skips: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    code = nn.Dense(self.features)(jnp.mean(x.astype(jnp.float32), axis=(1, 2)))
    code = nn.BatchNorm(use_running_average=not train)(code)
    return (code, ()) if self.return_skips else code


class _TinyDecoder(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, content, pose, skips, train: bool = False):
    colour = nn.sigmoid(nn.Dense(self.channels)(jnp.concatenate([content, pose], -1)))
    return jnp.broadcast_to(
      colour[:, None, None, :], (colour.shape[0], 64, 64, self.channels)
    )


def _tiny_networks(config) -> Networks:
  real = build_networks(config, 3)
  return Networks(
    MainNetwork(
      _TinyEncoder(config.model.content_dim),
      _TinyEncoder(config.model.pose_dim, return_skips=False),
      _TinyDecoder(3),
      skip_connections=False,
    ),
    real.critic,
  )


def _config(
  data_dir: str,
  placement: str,
  steps_per_call: int,
  method: str = "mipae",
  dtype: str = "float32",
):
  config = reproduce.build_config(
    "moving_dsprites", method, "tiny", data_dir=data_dir, overrides={}
  )
  config.model.dtype = dtype
  config.dataset.num_frames = 15  # the paper's videos (the tiny variant cuts them)
  config.batch_size = FLAGS.batch_size
  config.dataset.placement = placement
  config.steps_per_call = steps_per_call
  return config


def _feed(config, networks, mesh):
  base_rng = jax.random.PRNGKey(1)
  one_step = functools.partial(train.train_step, networks, config.loss, config.method)
  if config.dataset.placement == "device":
    videos = device_data.place_train_videos(config.dataset, mesh)
    return feeds.device_feed(one_step, config, mesh, videos, base_rng)
  train_iter = input_pipeline.create_train_iterator(
    config.dataset,
    global_batch_size=config.batch_size,
    sharding=sharding.batch_sharding(mesh),
    seed=0,
  )
  single = train.make_train_step(networks, config, mesh, sharding.replicated(mesh))
  return feeds.host_feed(one_step, single, mesh, train_iter, base_rng)


def time_path(
  data_dir: str, placement: str, steps_per_call: int, method: str, dtype: str
) -> tuple[float, float]:
  """(host seconds per step, wall seconds per step) of calls of
  `steps_per_call` steps dispatched back to back: the host's share is the
  time spent in next_batch and in dispatching the call (JAX returns before
  the computation ends)."""
  config = _config(data_dir, placement, steps_per_call, method, dtype)
  mesh = sharding.create_mesh()
  if FLAGS.networks == "tiny":
    networks = _tiny_networks(config)
  else:
    networks = build_networks(config, 3)
  state, _ = train_state.init_state(networks, config, mesh, (64, 64, 3))
  feed = _feed(config, networks, mesh)
  step = 0

  def calls(count: int) -> float:
    nonlocal state, step
    host = 0.0
    for _ in range(count):
      start = time.perf_counter()
      batch = feed.next_batch(steps_per_call)
      state, metrics = feed.step_fn(state, batch, step + 1, steps_per_call)
      host += time.perf_counter() - start
      step += steps_per_call
    jax.block_until_ready((state, metrics))
    return host

  calls(2)  # compile, warm up
  num_calls = max(2, -(-FLAGS.min_steps // steps_per_call))
  start = time.perf_counter()
  host = calls(num_calls)
  wall = time.perf_counter() - start
  return host / (num_calls * steps_per_call), wall / (num_calls * steps_per_call)


def input_rates(data_dir: str) -> dict[str, float]:
  """Batches/s each path delivers alone: grain batches placed on the
  devices; device gathers (two batches per call)."""
  config = _config(data_dir, "host", 1)
  mesh = sharding.create_mesh()
  train_iter = input_pipeline.create_train_iterator(
    config.dataset,
    global_batch_size=config.batch_size,
    sharding=sharding.batch_sharding(mesh),
    seed=0,
  )
  jax.block_until_ready(next(train_iter))
  count = 64
  start = time.perf_counter()
  for _ in range(count):
    batch = next(train_iter)
  jax.block_until_ready(batch)
  rates = {"host": count / (time.perf_counter() - start)}
  videos = device_data.place_train_videos(config.dataset, mesh)
  key = jax.random.PRNGKey(0)
  gather = jax.jit(
    lambda v, step: device_data.step_batch(
      v, key, step, config.batch_size, sharding.batch_sharding(mesh)
    )
  )
  jax.block_until_ready(gather(videos, np.int32(1)))
  start = time.perf_counter()
  for step in range(1, count + 1):
    batch = gather(videos, np.int32(step))
  jax.block_until_ready(batch)
  rates["device"] = 2 * count / (time.perf_counter() - start)
  return rates


def step_flops(method: str, batch_size: int = 100) -> float:
  """XLA's FLOP count of one step of `method` at `batch_size`, direct
  convolutions (lowered, not compiled)."""
  config = reproduce.build_config("moving_dsprites", method)
  config.batch_size = batch_size
  config.model.conv_impl = "plain"
  mesh = sharding.create_mesh(jax.devices()[:1])  # batch 100 on any device count
  networks = build_networks(config, 3)
  state = jax.eval_shape(
    lambda: train_state.create_train_state(
      networks, config, jax.random.PRNGKey(0), (64, 64, 3)
    )
  )
  batch = {
    name: jax.ShapeDtypeStruct((batch_size, 15, 64, 64, 3), jnp.uint8)
    for name in ("video", "critic_video")
  }
  state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), state)
  step = train.make_train_step(networks, config, mesh, state_sharding)
  analysis = step.lower(state, batch, jax.random.PRNGKey(0)).cost_analysis()
  if isinstance(analysis, list):
    analysis = analysis[0]
  return float(analysis["flops"])


def main(argv):
  del argv
  data_dir = FLAGS.data_dir or tempfile.mkdtemp(prefix="host_overhead_")
  prepared.prepare_dataset(_config(data_dir, "host", 1).dataset)
  print(
    f"\n{jax.device_count()} x {jax.devices()[0].device_kind}, jax "
    f"{jax.__version__}, batch {FLAGS.batch_size}, {FLAGS.networks} networks\n"
  )
  ks = [int(k) for k in FLAGS.steps_per_call]
  print("Host time / wall time per step:\n")
  print("| step | data path | " + " | ".join(f"K = {k}" for k in ks) + " |")
  print("|---|---|" + "---|" * len(ks))
  for method in FLAGS.methods:
    for dtype in FLAGS.dtypes:
      for placement, label in (("host", "grain (host)"), ("device", "device-stored")):
        cells = []
        for k in ks:
          host, wall = time_path(data_dir, placement, k, method, dtype)
          cells.append(f"{1e6 * host:.0f} us / {1e6 * wall:.0f} us")
        print(f"| {method} {dtype} | {label} | " + " | ".join(cells) + " |", flush=True)
      print(
        f"| {method} {dtype} | device-rendered | "
        + " | ".join("not built" for _ in ks)
        + " |"
      )

  if FLAGS.rates:
    rates = input_rates(data_dir)
    print("\n| input path | batches/s alone |\n|---|---|")
    print(f"| grain (host), placed on the devices | {rates['host']:.1f} |")
    print(f"| device-stored, gathered on the device | {rates['device']:.1f} |")

  if FLAGS.flops:
    print(
      "\n| step at batch 100 | TFLOP | at 10 % of H100 bf16 | at 20 % |\n|---|---|---|---|"
    )
    for method in ("mipae", "drnet"):
      flops = step_flops(method)
      slow, fast = (flops / (f * H100_BF16_DENSE_PEAK) for f in (0.1, 0.2))
      print(
        f"| {method} | {flops / 1e12:.3f} | {1e3 * slow:.2f} ms "
        f"({1 / slow:.0f} steps/s) | {1e3 * fast:.2f} ms ({1 / fast:.0f} steps/s) |"
      )


if __name__ == "__main__":
  app.run(main)
