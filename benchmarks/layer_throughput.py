"""Forward + backward time of the DCGAN convolutions, impl="plain" vs "fast".

  python benchmarks/layer_throughput.py                    # batch 100 and 16
  python benchmarks/layer_throughput.py --batch_sizes=16 --rounds=3
  python benchmarks/layer_throughput.py --sections=networks --flag_sweep

Prints Markdown tables: each convolution of the DCGAN 64x64 encoder / decoder
alone (gradients w.r.t. parameters and, except for the image layer, input),
then the project's whole DCGAN encoder and decoder (mipae_jax.models.dcgan,
BatchNorm in training mode) and a 2048x2048 float32 matmul as the peak
reference, all in one run. Plain and fast are timed in alternation, `rounds`
times each, and the best time is kept: on a shared machine that is the least
disturbed estimate, and both forms meet the same disturbance. The layer table
also times the fast forms with Winograd's switched off (what the layers too
thin for it run), and gives the fast form's rate in direct-convolution FLOPs.

--flag_sweep re-runs the network section in subprocesses, one per XLA_FLAGS
setting, to show what each setting changes.
"""

import contextlib
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mipae_jax.models import dcgan, layers  # noqa: E402
from mipae_jax.models.cpu_conv import forms  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["100", "16"], "Batch sizes.")
flags.DEFINE_list("sections", ["layers", "networks"], "What to time.")
flags.DEFINE_integer("rounds", 5, "Timed calls per form (the best is kept).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Activation dtype.")
flags.DEFINE_bool("flag_sweep", False, "Time the networks under XLA_FLAGS settings.")
flags.DEFINE_integer("sweep_repeats", 2, "Passes over the --flag_sweep settings.")
flags.DEFINE_bool("sweep_child", False, "Internal: one --flag_sweep setting.")

_STRIDED = dict(kernel_size=(4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))
_VALID = dict(kernel_size=(4, 4), padding="VALID")
_UP_STRIDED = dict(kernel_size=(4, 4), strides=(2, 2), padding=((2, 2), (2, 2)))

# name, layer factory, input [H, W, C], features, settings, gradient w.r.t. input.
_LAYERS = (
  ("enc1 64x64x3->32x32x64", layers.conv, (64, 64, 3), 64, _STRIDED, False),
  ("enc2 32x32x64->16x16x128", layers.conv, (32, 32, 64), 128, _STRIDED, True),
  ("enc3 16x16x128->8x8x256", layers.conv, (16, 16, 128), 256, _STRIDED, True),
  ("enc4 8x8x256->4x4x512", layers.conv, (8, 8, 256), 512, _STRIDED, True),
  ("enc5 4x4x512->1x1x128", layers.conv, (4, 4, 512), 128, _VALID, True),
  ("dec1 1x1x133->4x4x512", layers.conv_transpose, (1, 1, 133), 512, _VALID, True),
  (
    "dec2 4x4x512->8x8x256",
    layers.conv_transpose,
    (4, 4, 512),
    256,
    _UP_STRIDED,
    True,
  ),
  (
    "dec3 8x8x256->16x16x128",
    layers.conv_transpose,
    (8, 8, 256),
    128,
    _UP_STRIDED,
    True,
  ),
  (
    "dec4 16x16x128->32x32x64",
    layers.conv_transpose,
    (16, 16, 128),
    64,
    _UP_STRIDED,
    True,
  ),
  (
    "dec5 32x32x64->64x64x3",
    layers.conv_transpose,
    (32, 32, 64),
    3,
    _UP_STRIDED,
    True,
  ),
)

_SWEEP = (
  "",
  "--xla_cpu_multi_thread_eigen=false",
  "--xla_cpu_use_thunk_runtime=false",
  "--xla_cpu_use_xnnpack=true",
  "--xla_cpu_use_onednn=true",
  "--xla_cpu_experimental_onednn_fusion_type=dot",
  "--xla_cpu_experimental_ynn_fusion_type=dot",
  "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
  "--xla_cpu_enable_fast_math=true",
)
_SWEEP_TAG = "SWEEP"


def _conv_flops(module: nn.Module, x: jax.Array, transposed: bool) -> float:
  """Forward FLOPs, not counting products with the transposed conv's zeros."""
  y = jax.eval_shape(module.init_with_output, jax.random.key(0), x)[0]
  kh, kw = module.kernel_size
  # A conv spends kh*kw*C MACs per output pixel, a transposed conv per input.
  pixels = x.shape[1] * x.shape[2] if transposed else y.shape[1] * y.shape[2]
  return 2.0 * x.shape[0] * pixels * kh * kw * x.shape[3] * module.features


def _grad_fn(
  module: nn.Module,
  inputs: tuple[jax.Array, ...],
  with_input: bool,
  **call_kwargs: Any,
) -> Callable[[], jax.Array]:
  """A jitted fwd+bwd of mean(module(*inputs) ** 2), ready to call.

  BatchNorm runs in training mode (batch statistics updated); of a tuple
  output (the encoder's code and skips) the first entry is the loss's.
  """
  variables = module.init(jax.random.key(0), *inputs, **call_kwargs)
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}

  def loss(params, inputs):
    y, _ = module.apply(
      {"params": params, **state}, *inputs, **call_kwargs, mutable=["batch_stats"]
    )
    y = y[0] if isinstance(y, tuple) else y
    return jnp.mean(jnp.square(y.astype(jnp.float32)))

  step = jax.jit(jax.grad(loss, argnums=(0, 1) if with_input else 0))
  compiled = step.lower(params, inputs).compile()  # traced now, not at first call
  return lambda: compiled(params, inputs)


@contextlib.contextmanager
def _winograd_off():
  """Layers built (traced) inside take the fast forms other than Winograd's."""
  saved = forms.WINOGRAD_MIN_CHANNELS
  forms.WINOGRAD_MIN_CHANNELS = sys.maxsize
  try:
    yield
  finally:
    forms.WINOGRAD_MIN_CHANNELS = saved


def _best_times(fns: dict[str, Callable[[], jax.Array]], rounds: int) -> dict:
  """Best wall time of each fn over `rounds` alternating calls (after warm-up)."""
  for fn in fns.values():
    jax.block_until_ready(fn())
  best = dict.fromkeys(fns, float("inf"))
  for _ in range(rounds):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      best[name] = min(best[name], time.perf_counter() - start)
  return best


def matmul_gflops(rounds: int) -> float:
  """GFLOP/s of a 2048x2048 float32 matmul, best of `rounds` calls."""
  a = jnp.asarray(np.random.RandomState(0).randn(2048, 2048), jnp.float32)
  matmul = jax.jit(lambda a: a @ a)
  seconds = _best_times({"mm": lambda: matmul(a)}, max(rounds, 5))["mm"]
  return 2 * 2048**3 / seconds / 1e9


def time_layers(batch: int, dtype: jnp.dtype, rounds: int) -> list[tuple]:
  """(name, plain s, fast s, fast-without-Winograd s, fwd+bwd GFLOP) of each
  DCGAN convolution."""
  rows = []
  for name, make, in_shape, features, settings, with_input in _LAYERS:
    x = jnp.asarray(np.random.RandomState(0).randn(batch, *in_shape), dtype)
    modules = {
      impl: make(features, impl=impl, dtype=dtype, **settings)
      for impl in ("plain", "fast")
    }
    fns = {impl: _grad_fn(module, (x,), with_input) for impl, module in modules.items()}
    with _winograd_off():
      fns["no_winograd"] = _grad_fn(modules["fast"], (x,), with_input)
    best = _best_times(fns, rounds)
    # Backward: one product like the forward per gradient taken.
    transposed = make is layers.conv_transpose
    flops = _conv_flops(modules["plain"], x, transposed) * (3 if with_input else 2)
    rows.append((name, best["plain"], best["fast"], best["no_winograd"], flops / 1e9))
  return rows


def time_networks(batch: int, dtype: jnp.dtype, rounds: int) -> list[tuple]:
  """(name, plain s, fast s) of the project's DCGAN encoder / decoder fwd + bwd."""
  rng = np.random.RandomState(0)
  image = jnp.asarray(rng.rand(batch, 64, 64, 3), jnp.float32)
  codes = (
    jnp.asarray(rng.randn(batch, 128), jnp.float32),
    jnp.asarray(rng.randn(batch, 5), jnp.float32),
  )
  rows = []
  for name, make, inputs, call_kwargs, with_input in (
    (
      "encoder (latent 128)",
      lambda impl: dcgan.DCGANEncoder(128, conv_impl=impl, dtype=dtype),
      (image,),
      dict(train=True),
      False,
    ),
    (
      "decoder (3 channels)",
      lambda impl: dcgan.DCGANDecoder(3, conv_impl=impl, dtype=dtype),
      codes,
      dict(skips=None, train=True),
      True,
    ),
  ):
    fns = {
      impl: _grad_fn(make(impl), inputs, with_input, **call_kwargs)
      for impl in ("plain", "fast")
    }
    best = _best_times(fns, rounds)
    rows.append((name, best["plain"], best["fast"]))
  return rows


def _run_sweep(batch_sizes: list[str], rounds: int, repeats: int) -> None:
  """Times the networks in subprocesses, one per XLA_FLAGS setting.

  The settings are visited `repeats` times in turn and each keeps its best
  times, so that a busy spell of the machine does not land on one setting.
  """
  best = {}
  failures = {}
  for _ in range(repeats):
    for setting in _SWEEP:
      command = [
        sys.executable,
        __file__,
        "--sections=networks",
        "--sweep_child",
        f"--batch_sizes={','.join(batch_sizes)}",
        f"--rounds={rounds}",
        f"--dtype={FLAGS.dtype}",
      ]
      result = subprocess.run(
        command,
        env=dict(os.environ, XLA_FLAGS=setting),
        capture_output=True,
        text=True,
      )
      lines = [
        line.split()[1:]
        for line in result.stdout.splitlines()
        if line.startswith(_SWEEP_TAG)
      ]
      if result.returncode != 0 or not lines:
        failures[setting] = (result.stderr.strip().splitlines() or ["no output"])[-1]
      for batch, *seconds in lines:
        key = (setting, batch)
        times = [float(t) for t in seconds]
        best[key] = [
          min(a, b) for a, b in zip(best.get(key, times), times, strict=True)
        ]
        print(f"  {setting or '(none)'} batch {batch}: {' '.join(seconds)}", flush=True)
  print("\n| XLA_FLAGS | batch | encoder plain / fast (s) | decoder plain / fast (s) |")
  print("|---|---|---|---|")
  for setting in _SWEEP:
    name = f"`{setting}`" if setting else "(none)"
    if setting in failures:
      print(f"| {name} | - | failed: {failures[setting][:80]} | |")
      continue
    for batch in batch_sizes:
      enc_plain, enc_fast, dec_plain, dec_fast = best[(setting, batch)]
      print(
        f"| {name} | {batch} | {enc_plain:.3f} / {enc_fast:.3f} "
        f"| {dec_plain:.3f} / {dec_fast:.3f} |"
      )


def main(argv: list[str]) -> None:
  del argv
  dtype = jnp.dtype(FLAGS.dtype)
  batch_sizes = [int(b) for b in FLAGS.batch_sizes]
  print(
    f"jax {jax.__version__}, {jax.devices()[0].device_kind}, "
    f"{os.cpu_count()} CPUs, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
    f"dtype {FLAGS.dtype}, best of {FLAGS.rounds}"
  )
  peak = matmul_gflops(FLAGS.rounds)
  print(f"\n2048x2048 float32 matmul: {peak:.0f} GFLOP/s")
  if "layers" in FLAGS.sections:
    print(
      "\n| layer (fwd+bwd) | batch | plain (ms) | fast (ms) | speed-up "
      "| fast without Winograd (ms) | plain GFLOP/s | fast GFLOP/s (direct-conv) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for batch in batch_sizes:
      for name, plain, fast, no_winograd, gflop in time_layers(
        batch, dtype, FLAGS.rounds
      ):
        print(
          f"| {name} | {batch} | {plain * 1e3:.1f} | {fast * 1e3:.1f} "
          f"| {plain / fast:.2f}x | {no_winograd * 1e3:.1f} | {gflop / plain:.0f} "
          f"| {gflop / fast:.0f} |"
        )
  if "networks" in FLAGS.sections:
    print("\n| network (fwd+bwd) | batch | plain (s) | fast (s) | speed-up |")
    print("|---|---|---|---|---|")
    for batch in batch_sizes:
      rows = time_networks(batch, dtype, FLAGS.rounds)
      for name, plain, fast in rows:
        print(f"| {name} | {batch} | {plain:.3f} | {fast:.3f} | {plain / fast:.2f}x |")
      if FLAGS.sweep_child:
        (_, enc_plain, enc_fast), (_, dec_plain, dec_fast) = rows
        print(
          f"{_SWEEP_TAG} {batch} {enc_plain:.3f} {enc_fast:.3f} "
          f"{dec_plain:.3f} {dec_fast:.3f}"
        )
  if FLAGS.flag_sweep:
    _run_sweep(FLAGS.batch_sizes, FLAGS.rounds, FLAGS.sweep_repeats)


if __name__ == "__main__":
  app.run(main)
