"""Test set-up: 8 simulated CPU devices, so sharded code paths run here."""

import fcntl
import gzip
import os
import shutil
import struct

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mipae_jax.datasets import (
  moving_mnist,  # noqa: E402
  prepared,
)
from mipae_jax.experiments import reproduce


def tiny_config(data_dir, method="mipae", /, **overrides):
  """The Moving dSprites config of `method` at the `tiny` variant
  (`--config=configs/{method}_dsprites.py:tiny`, the reproduction's tiny scale).

  `overrides` are dotted config fields, e.g. **{"model.pose_dim": 7}; the
  positional-only `method` leaves **{"method": ...} to them.
  """
  return reproduce.build_config(
    "moving_dsprites", method, "tiny", data_dir=str(data_dir), overrides=overrides
  )


@pytest.fixture(scope="session")
def dsprites_data_dir(tmp_path_factory):
  """The small embedded Moving dSprites, built once per test session."""

  data_dir = tmp_path_factory.mktemp("tfds")
  prepared.prepare_dataset(tiny_config(data_dir).dataset)
  return data_dir


def _run_temp(tmp_path_factory):
  """The temp dir of this whole run: each xdist worker's base temp dir is a
  subdirectory of it."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, dsprites_data_dir):
  """A main network trained for 4 steps, shared by stage-2 and eval tests.

  The first xdist worker to need it trains it, under a lock, into the run's
  temp dir; every worker then gets its own copy, so a test that writes to it
  never races another worker's copying."""
  from mipae_jax import train

  run_temp = _run_temp(tmp_path_factory)
  shared = run_temp / "trained_shared"
  with open(run_temp / "trained_shared.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (shared / "DONE").exists():
      shutil.rmtree(shared, ignore_errors=True)  # a worker that died mid-way
      train.train_and_evaluate(tiny_config(dsprites_data_dir), str(shared))
      (shared / "DONE").touch()
  workdir = tmp_path_factory.mktemp("trained")
  shutil.copytree(
    shared, workdir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("DONE")
  )
  return workdir


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """Reuse XLA executables across tests that compile the same step, in one
  cache for every xdist worker of this run (the cache writes its entries
  atomically)."""
  import jax

  cache = _run_temp(tmp_path_factory) / "xla_cache"
  cache.mkdir(exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(cache))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main_params(workdir, config, step=-1):
  """(the main network's variables saved in `workdir` at `step`, -1: the
  latest, on the host; that step)."""
  import jax

  from mipae_jax import restore

  info = prepared.dataset_info(config.dataset)
  _, variables, step = restore.load_main_network(config, str(workdir), info, step)
  return jax.device_get(variables), step


def _write_idx(path, array, magic):
  header = struct.pack(f">{1 + array.ndim}i", magic, *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_tiny_mnist(directory, num_train=20, num_test=10):
  """Train labels are 0-4 and test labels 5-9, so splits are distinguishable."""
  rng = np.random.default_rng(0)
  directory.mkdir(parents=True, exist_ok=True)
  for split, count, labels in (
    ("train", num_train, rng.integers(0, 5, num_train)),
    ("test", num_test, rng.integers(5, 10, num_test)),
  ):
    images = np.zeros((count, 28, 28), np.uint8)
    images[:, 4:24, 6:22] = rng.integers(1, 256, (count, 20, 16))
    images_name, labels_name = moving_mnist.MNIST_FILES[split]
    _write_idx(directory / images_name, images, 2051)
    _write_idx(directory / labels_name, labels, 2049)
  return directory
