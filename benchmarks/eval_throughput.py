"""Evaluation-metric throughput: MIG on N frames' codes and the frame metrics.

  python benchmarks/eval_throughput.py                     # defaults below
  python benchmarks/eval_throughput.py --mig_frames=20000 --lpips_vgg_sequences=5
  python benchmarks/eval_throughput.py --sections=mig_noise --mig_sklearn_frames=10000

MIG: eq. 8 on synthetic but realistic codes of --mig_frames frames. The
factors are dSprites-like: content = (shape 3, scale 6, orientation 40), 720
joint labels; pose = (x 32, y 32), 1024 joint labels. z_c (128-d) and z_p
(5-d) are tanh of random linear maps of smooth factor features with 5 %
leakage of the other group and noise of std 0.01, so the codes lie near a
low-dimensional manifold as learned codes do.

MIG on noise (--mig_noise_frames): the worst case for the k-NN searches,
z_c (128-d) and z_p (5-d) isotropic Gaussian noise, content and pose labels
drawn uniformly from --mig_noise_labels labels each. --mig_sklearn_frames > 0
adds the KD-tree reference (estimator="sklearn") and the JAX estimator on that
many frames of the same data, for comparison. MIG times include compilation
(shapes depend on the number of frames).

Frame metrics: PSNR, SSIM, LPIPS-alex and LPIPS-vgg on --sequences x --frames
images of 64x64x3, fed --batch_sequences sequences per call as an evaluation
loop would. Each metric is timed on its own number of sequences (the slow
LPIPS nets on a fraction) and extrapolated linearly to --sequences; the table
says which rows are extrapolated. Compilation is timed apart (first call).
"""

import os
import pathlib
import sys
import time

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mipae_jax.evaluation import disentanglement, metrics, mig_frames

FLAGS = flags.FLAGS
flags.DEFINE_integer("mig_frames", 100_000, "Frames whose codes MIG is computed on.")
flags.DEFINE_integer("sequences", 1000, "Test sequences the frame metrics cover.")
flags.DEFINE_integer("frames", 30, "Future frames per sequence.")
flags.DEFINE_integer("batch_sequences", 10, "Sequences per metric call.")
flags.DEFINE_integer("psnr_sequences", 1000, "Sequences actually timed for PSNR.")
flags.DEFINE_integer("ssim_sequences", 1000, "Sequences actually timed for SSIM.")
flags.DEFINE_integer("lpips_alex_sequences", 100, "Sequences timed for LPIPS-alex.")
flags.DEFINE_integer("lpips_vgg_sequences", 20, "Sequences timed for LPIPS-vgg.")
flags.DEFINE_integer("lpips_batch_size", 150, "Images per LPIPS network call.")
flags.DEFINE_list(
  "sections",
  ["mig", "mig_objects", "mig_noise", "frames"],
  "Parts to run: mig, mig_objects (two sprites' factors as the per-object "
  "protocol draws them, with each sprite's captured shares), mig_noise, frames.",
)
flags.DEFINE_integer("mig_noise_frames", 100_000, "Frames of the MIG-on-noise case.")
flags.DEFINE_integer("mig_noise_labels", 600, "Content (and pose) labels there.")
flags.DEFINE_integer(
  "mig_sklearn_frames", 0, "Frames for the sklearn-vs-JAX MIG comparison (0: none)."
)


def _code(rng, own, other, dims):
  """tanh of a random linear map of `own` features with a 5 % leak of `other`,
  plus noise of std 0.01: codes near a low-dimensional manifold."""
  mixed = own @ rng.normal(size=(own.shape[1], dims))
  leaked = 0.05 * other @ rng.normal(size=(other.shape[1], dims))
  return np.tanh(mixed + leaked) + 0.01 * rng.normal(size=(own.shape[0], dims))


def synthetic_factors_and_codes(num_frames: int, seed: int = 0):
  """dSprites-like discrete factors and codes that mostly disentangle them."""
  rng = np.random.default_rng(seed)
  shape = rng.integers(0, 3, num_frames)
  scale = rng.integers(0, 6, num_frames)
  orientation = rng.integers(0, 40, num_frames)
  x, y = rng.integers(0, 32, num_frames), rng.integers(0, 32, num_frames)
  angle = orientation * 2.0 * np.pi / 40.0
  content_features = np.concatenate(
    [np.eye(3)[shape], np.stack([scale / 5.0, np.cos(angle), np.sin(angle)], 1)],
    axis=1,
  )
  pose_features = np.stack([x / 31.0, y / 31.0], 1)

  z_c = _code(rng, content_features, pose_features, 128)
  z_p = _code(rng, pose_features, content_features, 5)
  content = np.stack([shape, scale, orientation], 1)
  pose = np.stack([x, y], 1)
  return content, pose, z_c.astype(np.float32), z_p.astype(np.float32)


def per_object_factors_and_codes(num_frames: int, seed: int = 0):
  """Two sprites' factors as the per-object protocol draws them on rotating
  Moving dSprites (mig_frames.per_object_supports: 6 content rows and L_p
  positions per sprite, two depth orders), and codes that mostly
  disentangle them as in synthetic_factors_and_codes. Returns (content,
  pose, z_c, z_p, objects)."""
  rng = np.random.default_rng(seed)
  num_c, num_p = mig_frames.per_object_supports(num_frames, 2, 2, num_contents=6)
  content_rows = [rng.permutation(18)[:num_c] for _ in range(2)]
  pose_rows = [rng.permutation(32 * 32)[:num_p] for _ in range(2)]
  picks = [rng.integers(0, size, (num_frames, 2)) for size in (num_c, num_p)]
  contents = np.stack([content_rows[s][picks[0][:, s]] for s in range(2)], 1)
  poses = np.stack([pose_rows[s][picks[1][:, s]] for s in range(2)], 1)
  depth = rng.integers(0, 2, num_frames)
  shape, scale = contents // 6, contents % 6
  x, y = poses // 32, poses % 32
  content_features = np.concatenate(
    [np.eye(3)[shape].reshape(num_frames, 6), scale / 5.0, depth[:, None]], axis=1
  )
  pose_features = np.concatenate([x / 31.0, y / 31.0], axis=1)

  z_c = _code(rng, content_features, pose_features, 128)
  z_p = _code(rng, pose_features, content_features, 5)
  content = np.stack([shape[:, 0], scale[:, 0], shape[:, 1], scale[:, 1], depth], 1)
  pose = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)
  objects = {"sprite0": ((0, 1), (0, 1)), "sprite1": ((2, 3), (2, 3))}
  return content, pose, z_c.astype(np.float32), z_p.astype(np.float32), objects


def noise_factors_and_codes(num_frames: int, num_labels: int, seed: int = 0):
  """Uniform content / pose labels and isotropic Gaussian z_c (128-d), z_p (5-d)."""
  rng = np.random.default_rng(seed)
  content = rng.integers(0, num_labels, num_frames)
  pose = rng.integers(0, num_labels, num_frames)
  z_c = rng.normal(size=(num_frames, 128)).astype(np.float32)
  z_p = rng.normal(size=(num_frames, 5)).astype(np.float32)
  return content, pose, z_c, z_p


def time_mig(num_frames: int, data=None, **kwargs) -> tuple[float, dict[str, float]]:
  content, pose, z_c, z_p = data or synthetic_factors_and_codes(num_frames)
  start = time.perf_counter()
  row = disentanglement.mig(content, pose, z_c, z_p, **kwargs)
  return time.perf_counter() - start, row


def mig_row(name: str, num_frames: int, seconds: float):
  return (
    name,
    f"{num_frames} frames",
    "-",
    seconds,
    seconds,
    f"{num_frames / seconds:.0f} frames/s",
  )


def time_frame_metric(metric_fn, timed_sequences: int) -> tuple[float, float]:
  """Returns (first-call seconds, seconds for `timed_sequences` sequences)."""
  rng = np.random.default_rng(1)
  shape = (FLAGS.batch_sequences, FLAGS.frames, 64, 64, 3)
  ground_truth = rng.uniform(size=shape).astype(np.float32)
  predicted = np.clip(ground_truth + 0.1 * rng.normal(size=shape), 0, 1)
  predicted = predicted.astype(np.float32)

  start = time.perf_counter()
  jax.block_until_ready(metric_fn(ground_truth, predicted))
  first_call = time.perf_counter() - start

  num_batches = -(-timed_sequences // FLAGS.batch_sequences)
  start = time.perf_counter()
  for _ in range(num_batches):
    jax.block_until_ready(metric_fn(ground_truth, predicted))
  return first_call, time.perf_counter() - start


def main(argv):
  del argv
  print(
    f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
    f"{os.cpu_count()} CPU cores"
  )
  print("load average (1, 5, 15 min):", os.getloadavg())
  rows = []

  def report(name, num_frames, seconds, terms):
    rows.append(mig_row(name, num_frames, seconds))
    rounded = {term: round(value, 5) for term, value in terms.items()}
    print(f"{name}, {num_frames} frames, {seconds:.1f} s:", rounded, flush=True)

  if "mig" in FLAGS.sections:
    seconds, terms = time_mig(FLAGS.mig_frames)
    report("MIG (4 MIs + 2 entropies)", FLAGS.mig_frames, seconds, terms)
  if "mig_objects" in FLAGS.sections:
    *data, objects = per_object_factors_and_codes(FLAGS.mig_frames)
    seconds, terms = time_mig(FLAGS.mig_frames, data, objects=objects)
    report(
      "MIG + 2 sprites' shares, per-object frames", FLAGS.mig_frames, seconds, terms
    )
  if "mig_noise" in FLAGS.sections:
    num_frames, labels = FLAGS.mig_noise_frames, FLAGS.mig_noise_labels
    data = noise_factors_and_codes(num_frames, labels)
    seconds, terms = time_mig(num_frames, data)
    report(f"MIG, noise codes, {labels} labels (jax)", num_frames, seconds, terms)
    if FLAGS.mig_sklearn_frames:
      num_frames = FLAGS.mig_sklearn_frames
      data = noise_factors_and_codes(num_frames, labels)
      for estimator in ("jax", "sklearn"):
        seconds, terms = time_mig(num_frames, data, estimator=estimator)
        name = f"MIG, noise codes, {labels} labels ({estimator})"
        report(name, num_frames, seconds, terms)
  if "frames" not in FLAGS.sections:
    print_table(rows)
    return

  lpips_batch = FLAGS.lpips_batch_size
  frame_metrics = [
    ("PSNR", metrics.psnr, FLAGS.psnr_sequences),
    ("SSIM", metrics.ssim, FLAGS.ssim_sequences),
    (
      "LPIPS-alex",
      lambda a, b: metrics.lpips(a, b, net="alex", batch_size=lpips_batch),
      FLAGS.lpips_alex_sequences,
    ),
    (
      "LPIPS-vgg",
      lambda a, b: metrics.lpips(a, b, net="vgg", batch_size=lpips_batch),
      FLAGS.lpips_vgg_sequences,
    ),
  ]
  for name, metric_fn, timed_sequences in frame_metrics:
    timed_sequences = min(timed_sequences, FLAGS.sequences)
    first_call, seconds = time_frame_metric(metric_fn, timed_sequences)
    timed = -(-timed_sequences // FLAGS.batch_sequences) * FLAGS.batch_sequences
    full = seconds * FLAGS.sequences / timed
    label = f"{timed} seq x {FLAGS.frames} frames"
    rows.append(
      (
        name,
        label,
        f"{first_call:.1f}",
        seconds,
        full,
        f"{timed * FLAGS.frames / seconds:.0f} frames/s",
      )
    )

  print_table(rows)


def print_table(rows) -> None:
  print()
  print(
    "| metric | timed on | first call (s) | timed (s) | full size (s)* | throughput |"
  )
  print("|---|---|---|---|---|---|")
  for name, label, first_call, seconds, full, throughput in rows:
    print(
      f"| {name} | {label} | {first_call} | {seconds:.1f} | {full:.1f} | {throughput} |"
    )
  print(
    "\n* full size: MIG rows on the frames they name (compilation included); "
    f"frame metrics on {FLAGS.sequences} sequences x {FLAGS.frames} frames, "
    "extrapolated linearly from the timed sequences where fewer were timed."
  )


if __name__ == "__main__":
  app.run(main)
