"""The one list of methods and datasets, and where each pair's config lives."""

import importlib
import types

METHODS = ("mipae", "drnet")
DATASETS = ("moving_mnist", "moving_dsprites", "moving_mpi3d")
# Dataset name -> suffix of its configs/{method}_{suffix}.py.
CONFIG_SUFFIXES = {
  "moving_dsprites": "dsprites",
  "moving_mnist": "mnist",
  "moving_mpi3d": "mpi3d",
}


def config_module(method: str, dataset: str) -> types.ModuleType:
  """The module of configs/{method}_{suffix}.py (its get_config(variant))."""
  if dataset not in CONFIG_SUFFIXES:
    raise ValueError(
      f"Unknown dataset {dataset!r}; expected one of {sorted(CONFIG_SUFFIXES)}."
    )
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; expected some of {METHODS}.")
  return importlib.import_module(
    f"mipae_jax.configs.{method}_{CONFIG_SUFFIXES[dataset]}"
  )


def config_file(method: str, dataset: str) -> str:
  """The config file of the pair as a command line names it (from the root)."""
  return f"configs/{method}_{CONFIG_SUFFIXES.get(dataset, dataset)}.py"
