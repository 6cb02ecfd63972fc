"""Data throughput: frames/s building each dataset and loading it into device batches.

  python benchmarks/data_throughput.py
  python benchmarks/data_throughput.py --num_train=512 --batches=40

Builds each dataset's config (default the "_small" ones) into a temporary
directory, then times the training input pipeline (grain, global batches of
--batch_size videos of --num_frames frames, placed on all local devices).
Moving MNIST reads ../shared/data/mnist when present, else random idx files;
Moving MPI3D reads a synthetic .npz with the released layout's two 40-value
arm axes and few content values. Prints one Markdown table; "load frames per
CPU-s" divides by the CPU time of all the loader's threads (the rate one
dedicated core sustains, whatever else runs on the machine); "x training" is
loading's wall-clock frames/s over what a training step of
--train_step_seconds consumes (batch_size * num_frames frames per step).
"fresh" columns time the same loader with config.dataset.fresh_train_videos
(every video rendered on demand instead of read from the build).
"""

import dataclasses
import gzip
import pathlib
import struct
import sys
import tempfile
import time

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mipae_jax import input_pipeline  # noqa: E402
from mipae_jax.datasets import moving_mnist, moving_mpi3d, prepared  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
  "datasets",
  [
    "moving_mnist/grey_small",
    "moving_mnist/colour_small",
    "moving_dsprites/fixed_small",
    "moving_dsprites/rotating_small",
    "moving_mpi3d/default_small",
  ],
  "name/builder_config pairs to time.",
)
flags.DEFINE_integer("num_train", None, "Override the configs' train videos.")
flags.DEFINE_integer("batch_size", 100, "Global batch of the loader.")
flags.DEFINE_integer("num_frames", 15, "Frames per training video (C + T).")
flags.DEFINE_integer("batches", 30, "Timed batches (after 2 warm-up batches).")
flags.DEFINE_float("train_step_seconds", 1.0, "Seconds of one training step.")
flags.DEFINE_string(
  "mnist_dir",
  str(pathlib.Path(__file__).resolve().parents[2] / "shared/data/mnist"),
  "Directory of the MNIST idx .gz files (random ones are written if absent).",
)

_MPI3D_BENCH_FACTOR_SIZES = (2, 2, 1, 2, 1, 40, 40)


def _write_random_mnist(directory: pathlib.Path) -> None:
  rng = np.random.default_rng(0)
  for split, count in (("train", 1000), ("test", 200)):
    images = np.zeros((count, 28, 28), np.uint8)
    images[:, 4:24, 4:24] = rng.integers(0, 256, (count, 20, 20))
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images_name, labels_name = moving_mnist.MNIST_FILES[split]
    for name, array, magic in (
      (images_name, images, 2051),
      (labels_name, labels, 2049),
    ):
      with gzip.open(directory / name, "wb") as f:
        f.write(
          struct.pack(f">{1 + array.ndim}i", magic, *array.shape) + array.tobytes()
        )


def _write_synthetic_mpi3d(path: pathlib.Path) -> None:
  """Smooth gradients with sensor-like noise: roughly photo-like for zlib."""
  rng = np.random.default_rng(0)
  sizes = _MPI3D_BENCH_FACTOR_SIZES
  ramp = np.linspace(0, 160, 64)[None, :, None] + np.linspace(0, 60, 3)[None, None, :]
  images = np.empty((*sizes, 64, 64, 3), np.uint8)
  flat = images.reshape(-1, 64, 64, 3)
  for i in range(len(flat)):
    noise = rng.normal(0, 6, (64, 64, 3))
    flat[i] = np.clip(ramp + (i % 40) * 2 + noise, 0, 255)
  np.savez(path, images=images)


def _dataset_config(name: str, builder_config, data_dir: str, manual_dir: str | None):
  return ml_collections.ConfigDict(
    {
      "name": name,
      "builder_config": builder_config,
      "data_dir": data_dir,
      "manual_dir": manual_dir,
      "prepare": True,
      "num_frames": FLAGS.num_frames,
      "fresh_train_videos": False,
    }
  )


def _time_loader(config, sharding) -> tuple[float, float]:
  """(wall, CPU) frames/s of the training iterator of `config`."""
  iterator = input_pipeline.create_train_iterator(
    config, global_batch_size=FLAGS.batch_size, sharding=sharding, seed=0
  )
  for _ in range(2):
    jax.block_until_ready(next(iterator))
  start, start_cpu = time.perf_counter(), time.process_time()
  for _ in range(FLAGS.batches):
    jax.block_until_ready(next(iterator))
  frames = FLAGS.batches * FLAGS.batch_size * FLAGS.num_frames
  return (
    frames / (time.perf_counter() - start),
    frames / (time.process_time() - start_cpu),
  )


def _time_dataset(
  spec: str, work_dir: pathlib.Path, manual_dirs: dict[str, str]
) -> dict:
  name, config_name = spec.split("/")
  builder_cls = tfds.builder_cls(name)
  builder_config = next(c for c in builder_cls.BUILDER_CONFIGS if c.name == config_name)
  if FLAGS.num_train:
    builder_config = dataclasses.replace(builder_config, num_train=FLAGS.num_train)
  config = _dataset_config(
    name, builder_config, str(work_dir / spec), manual_dirs.get(name)
  )
  start = time.perf_counter()
  prepared.prepare_dataset(config)
  build_seconds = time.perf_counter() - start
  num_videos = builder_config.num_train + builder_config.num_test

  mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  load_fps, load_cpu_fps = _time_loader(config, sharding)
  config.fresh_train_videos = True
  fresh_fps, fresh_cpu_fps = _time_loader(config, sharding)
  consumed_fps = FLAGS.batch_size * FLAGS.num_frames / FLAGS.train_step_seconds
  return {
    "dataset": spec,
    "videos": num_videos,
    "build_fps": num_videos * builder_config.seq_len / build_seconds,
    "load_fps": load_fps,
    "load_cpu_fps": load_cpu_fps,
    "margin": load_fps / consumed_fps,
    "fresh_fps": fresh_fps,
    "fresh_cpu_fps": fresh_cpu_fps,
    "fresh_margin": fresh_fps / consumed_fps,
  }


def main(argv):
  del argv
  tfds.disable_progress_bar()
  with tempfile.TemporaryDirectory() as tmp:
    work_dir = pathlib.Path(tmp)
    mnist_dir = pathlib.Path(FLAGS.mnist_dir)
    if not (mnist_dir / moving_mnist.MNIST_FILES["train"][0]).exists():
      mnist_dir = work_dir / "mnist"
      mnist_dir.mkdir()
      _write_random_mnist(mnist_dir)
    mpi3d_dir = work_dir / "mpi3d"
    mpi3d_dir.mkdir()
    _write_synthetic_mpi3d(mpi3d_dir / moving_mpi3d.MPI3D_FILE)
    manual_dirs = {"moving_mnist": str(mnist_dir), "moving_mpi3d": str(mpi3d_dir)}
    rows = [_time_dataset(spec, work_dir, manual_dirs) for spec in FLAGS.datasets]
  print(
    f"\nbatch {FLAGS.batch_size} x {FLAGS.num_frames} frames, "
    f"{len(jax.local_devices())} {jax.default_backend()} device(s); "
    f"x training = load frames/s over {FLAGS.batch_size * FLAGS.num_frames} "
    f"frames per {FLAGS.train_step_seconds:g} s step\n"
  )
  print(
    "| dataset | videos built | build frames/s | load frames/s "
    "| load frames per CPU-s | x training | fresh frames/s "
    "| fresh frames per CPU-s | fresh x training |"
  )
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for row in rows:
    print(
      f"| {row['dataset']} | {row['videos']} | {row['build_fps']:,.0f} | "
      f"{row['load_fps']:,.0f} | {row['load_cpu_fps']:,.0f} | {row['margin']:.1f} | "
      f"{row['fresh_fps']:,.0f} | {row['fresh_cpu_fps']:,.0f} | "
      f"{row['fresh_margin']:.1f} |"
    )


if __name__ == "__main__":
  app.run(main)
