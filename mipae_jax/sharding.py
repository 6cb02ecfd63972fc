"""The device mesh, the shardings of state and batches, and multi-host set-up.

One code path for 1 CPU, 8 GPUs or a pod: a 1-D mesh over every global device
with the batch split over its "data" axis and parameters replicated.
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

_ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
_ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAX_PROCESS_ID"


def initialize_distributed() -> None:
  """Calls `jax.distributed.initialize()` once, before any device is touched.

  With JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set (a
  generic launcher, or the tests' two local processes) those are used;
  otherwise JAX detects SLURM or Cloud TPU environments by itself.
  """
  if jax.distributed.is_initialized():
    return
  if _ENV_COORDINATOR in os.environ:
    jax.distributed.initialize(
      coordinator_address=os.environ[_ENV_COORDINATOR],
      num_processes=int(os.environ[_ENV_NUM_PROCESSES]),
      process_id=int(os.environ[_ENV_PROCESS_ID]),
    )
  else:
    jax.distributed.initialize()


def create_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over all global devices (or the given ones)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis, the rest whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimiser state, RNG)."""
  return NamedSharding(mesh, PartitionSpec())
