"""Test set-up: 8 simulated CPU devices, so sharded code paths run here."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from mipae_jax import reproduce  # noqa: E402


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
  from mipae_jax import input_pipeline

  data_dir = tmp_path_factory.mktemp("tfds")
  input_pipeline.prepare_dataset(tiny_config(data_dir).dataset)
  return data_dir


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, dsprites_data_dir):
  """A main network trained for 4 steps, shared by stage-2 and eval tests."""
  from mipae_jax import train

  workdir = tmp_path_factory.mktemp("trained")
  train.train_and_evaluate(tiny_config(dsprites_data_dir), str(workdir))
  return workdir


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """Reuse XLA executables across tests that compile the same step, in one
  cache for every xdist worker of this run (each worker's base temp dir is a
  subdirectory of the run's; the cache writes its entries atomically)."""
  import jax

  base = tmp_path_factory.getbasetemp()
  if "PYTEST_XDIST_WORKER" in os.environ:
    base = base.parent
  cache = base / "xla_cache"
  cache.mkdir(exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(cache))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
