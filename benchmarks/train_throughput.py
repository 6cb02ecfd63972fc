"""Training-step throughput: MIPAE and DRNET main steps, the stage-2 LSTM step
and the prediction rollout, with achieved FLOP/s against a matmul peak.

  python benchmarks/train_throughput.py                       # batch 16 and 100
  python benchmarks/train_throughput.py --batch_sizes=16 --conv_impls=fast,plain
  python benchmarks/train_throughput.py --torch_python=/path/to/venv/bin/python

Prints one Markdown table. FLOPs come from XLA's cost analysis of the
compiled step; the peak is a 2048x2048 float32 matmul timed in the same run.
The Winograd form of the fast convolutions does fewer FLOPs than the direct
convolutions, so the table also gives the direct-convolution rate: the FLOPs
of the same step with conv_impl="plain" (cost analysis of its lowered HLO)
per second of the timed step.
With --torch_python (an interpreter that has torch), the PyTorch peers are
timed beside ours: ../shared/bench/ref_mipae_torch.py for MIPAE and
torch_step_reference.py for DRNET and the stage-2 step; mipae-jax itself
never imports torch.
"""

import dataclasses
import functools
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mipae_jax import predict, sharding, train, train_lstm, train_state  # noqa: E402
from mipae_jax.configs import drnet_dsprites, mipae_dsprites  # noqa: E402
from mipae_jax.models.networks import build_networks  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["16", "100"], "Global batch sizes.")
flags.DEFINE_list("methods", ["mipae", "drnet"], "Main-network methods.")
flags.DEFINE_list("conv_impls", ["fast"], "model.conv_impl values to time.")
flags.DEFINE_list("dtypes", ["float32"], "model.dtype values to time.")
flags.DEFINE_integer("steps", 5, "Timed steps (after 2 warm-up steps).")
flags.DEFINE_integer("num_frames", 15, "Frames per training video (C + T).")
flags.DEFINE_bool("lstm", True, "Also time the stage-2 step and the rollout.")
flags.DEFINE_string("torch_python", None, "Python with torch, for the reference.")

_REF_SCRIPT = (
  pathlib.Path(__file__).resolve().parents[2] / "shared/bench/ref_mipae_torch.py"
)
# PyTorch peers of the DRNET step and the stage-2 step (this directory).
_PEER_SCRIPT = pathlib.Path(__file__).resolve().parent / "torch_step_reference.py"


def _median_seconds(fn, steps: int) -> float:
  fn()
  fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak_flops() -> float:
  """FLOP/s of a 2048x2048 float32 matmul on the default device."""
  a = jnp.ones((2048, 2048), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  seconds = _median_seconds(lambda: matmul(a).block_until_ready(), 10)
  return 2 * 2048**3 / seconds


def _flops(compiled_or_lowered) -> float:
  analysis = compiled_or_lowered.cost_analysis()
  if isinstance(analysis, list):
    analysis = analysis[0]
  return float(analysis.get("flops", float("nan")))


def _plain_networks(config):
  """The networks with flax's direct convolutions, for their FLOP count."""
  config = config.copy_and_resolve_references()
  config.model.conv_impl = "plain"
  return build_networks(config, 3)


def time_main_step(method: str, batch_size: int, conv_impl: str, dtype: str):
  """(median step seconds, its FLOPs, the direct-convolution step's FLOPs)."""
  config = (mipae_dsprites if method == "mipae" else drnet_dsprites).get_config()
  config.batch_size = batch_size
  config.model.conv_impl = conv_impl
  config.model.dtype = dtype
  mesh = sharding.create_mesh()
  networks = build_networks(config, 3)
  state, state_sharding = train_state.init_state(networks, config, mesh, (64, 64, 3))
  step_fn = train.make_train_step(networks, config, mesh, state_sharding)
  direct_step = train.make_train_step(
    _plain_networks(config), config, mesh, state_sharding
  )
  videos = np.random.default_rng(0).integers(
    0, 256, (2, batch_size, FLAGS.num_frames, 64, 64, 3), dtype=np.uint8
  )
  batch = jax.device_put(
    {"video": videos[0], "critic_video": videos[1]}, sharding.batch_sharding(mesh)
  )
  rng = jax.random.PRNGKey(0)
  flops = _flops(step_fn.lower(state, batch, rng).compile())
  direct_flops = _flops(direct_step.lower(state, batch, rng))
  holder = [state]

  def run():
    holder[0], metrics = step_fn(holder[0], batch, rng)
    jax.block_until_ready(metrics)

  return _median_seconds(run, FLAGS.steps), flops, direct_flops


def time_lstm(batch_size: int, horizon: int, context: int = 5):
  """(stage-2 step seconds, its FLOPs, the direct-convolution step's FLOPs,
  rollout sequences/s for `horizon`)."""
  config = mipae_dsprites.get_config()
  config.lstm.batch_size = batch_size
  mesh = sharding.create_mesh()
  networks = build_networks(config, 3)
  main_state, _ = train_state.init_state(networks, config, mesh, (64, 64, 3))
  main = {"params": main_state.params, "batch_stats": main_state.batch_stats}
  predictor = predict.Predictor(networks, train_state.build_pose_lstm(config))
  lstm_state = train_state.create_lstm_state(
    predictor.pose_lstm, config, jax.random.PRNGKey(1)
  )
  video = np.random.default_rng(0).integers(
    0, 256, (batch_size, context + horizon, 64, 64, 3), dtype=np.uint8
  )
  batch = jax.device_put({"video": video}, sharding.batch_sharding(mesh))
  lstm_config = config.lstm.copy_and_resolve_references()
  lstm_config.num_context, lstm_config.num_future = context, horizon
  step_fn = jax.jit(
    functools.partial(train_lstm.lstm_train_step, predictor, lstm_config)
  )

  # XLA's cost analysis counts a loop body once: take the FLOPs of the same
  # step with the frozen encoders in one call (the LSTM's scan is still
  # counted once, a negligible share).
  def one_call_step(networks):
    one_call = predict.Predictor(
      dataclasses.replace(networks, inference_frames_per_call=0),
      predictor.pose_lstm,
    )
    step = functools.partial(train_lstm.lstm_train_step, one_call, lstm_config)
    return jax.jit(step).lower(main, lstm_state, batch)

  flops = _flops(one_call_step(networks).compile())
  direct_flops = _flops(one_call_step(_plain_networks(config)))
  holder = [lstm_state]

  def run_step():
    holder[0], metrics = step_fn(main, holder[0], batch)
    jax.block_until_ready(metrics)

  step_seconds = _median_seconds(run_step, FLAGS.steps)
  predict_fn = predict.make_predict_fn(predictor, mesh, horizon)
  params = {"main": main, "lstm": lstm_state.params}
  context_frames = jax.device_put(video[:, :context], sharding.batch_sharding(mesh))
  rollout_seconds = _median_seconds(
    lambda: predict_fn(params, context_frames).block_until_ready(), FLAGS.steps
  )
  return step_seconds, flops, direct_flops, batch_size / rollout_seconds


def torch_reference(step: str, batch_size: int, horizon: int = 10) -> float | None:
  """Median seconds of the PyTorch peer of `step` (mipae, drnet or lstm)."""
  if FLAGS.torch_python is None:
    return None
  if step == "mipae":
    if not _REF_SCRIPT.exists():
      return None
    command = [str(_REF_SCRIPT), str(batch_size), str(FLAGS.steps)]
  else:
    command = [str(_PEER_SCRIPT), step, str(batch_size), str(FLAGS.steps)]
    command.append(f"--horizon={horizon}")
  out = subprocess.run(
    [FLAGS.torch_python, *command], capture_output=True, text=True, check=True
  ).stdout
  match = re.search(r"median_s_per_step=([0-9.]+)", out)
  return float(match.group(1)) if match else None


def _torch_row(name: str, batch_size: int, seconds: float | None, frames: int) -> None:
  if seconds is not None:
    print(
      f"| PyTorch {name} | {batch_size} | - | float32 | {seconds:.3f} | "
      f"{1 / seconds:.2f} | {frames / seconds:.0f} | - | - | - | - |",
      flush=True,
    )


def main(argv):
  del argv
  device = jax.devices()[0]
  peak = matmul_peak_flops()
  print(
    f"# {jax.device_count()} x {device.device_kind} ({device.platform}), jax {jax.__version__}, "
    f"os.cpu_count={os.cpu_count()}, "
    f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}; "
    f"matmul peak {peak / 1e9:.1f} GFLOP/s\n"
  )
  print(
    "| step | batch | conv | dtype | s/step | steps/s | frames/s | GFLOP/s | % peak "
    "| direct-conv GFLOP/s | % peak |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|")

  def rates(flops, direct_flops, seconds):
    return " | ".join(
      f"{f / seconds / 1e9:.1f} | {100 * f / seconds / peak:.0f}"
      for f in (flops, direct_flops)
    )

  for batch_size in map(int, FLAGS.batch_sizes):
    for method in FLAGS.methods:
      for conv_impl in FLAGS.conv_impls:
        for dtype in FLAGS.dtypes:
          seconds, flops, direct = time_main_step(method, batch_size, conv_impl, dtype)
          # Each step reads two frames of every video of the batch.
          print(
            f"| {method} main | {batch_size} | {conv_impl} | {dtype} | {seconds:.3f} | "
            f"{1 / seconds:.2f} | {2 * batch_size / seconds:.0f} | "
            f"{rates(flops, direct, seconds)} |",
            flush=True,
          )
    for method in FLAGS.methods:
      reference = torch_reference(method, batch_size)
      _torch_row(f"reference {method.upper()}", batch_size, reference, 2 * batch_size)
    if FLAGS.lstm:
      for horizon in (10, 30):
        seconds, flops, direct, sequences = time_lstm(batch_size, horizon)
        print(
          f"| LSTM stage 2, 5->{horizon} | {batch_size} | - | float32 | {seconds:.3f} | "
          f"{1 / seconds:.2f} | {batch_size * (5 + horizon) / seconds:.0f} | "
          f"{rates(flops, direct, seconds)} |",
          flush=True,
        )
        reference = torch_reference("lstm", batch_size, horizon)
        _torch_row(
          f"stage 2, 5->{horizon}", batch_size, reference, batch_size * (5 + horizon)
        )
        print(
          f"| rollout+decode 5->{horizon} | {batch_size} | - | float32 | "
          f"{batch_size / sequences:.3f} | - | {sequences * horizon:.0f} | - | - | - | - |"
          f" <- {sequences:.1f} sequences/s",
          flush=True,
        )


if __name__ == "__main__":
  app.run(main)
