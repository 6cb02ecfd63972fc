"""Two processes through jax.distributed on this CPU equal one process."""

import os
import pathlib
import subprocess
import sys
import types

import jax
import numpy as np
import portpicker
import pytest

from mipae_jax import checkpointing, train, train_state
from mipae_jax.models.networks import build_networks

WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")
sys.path.insert(0, str(WORKER.parent))
import multihost_worker  # noqa: E402


def _run_workers(
  out: pathlib.Path, num_processes: int, devices_per_process: int, conv_impl: str
) -> None:
  port = portpicker.pick_unused_port()
  procs = []
  for process_id in range(num_processes):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_process}"
    if num_processes > 1:
      env.update(
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        JAX_NUM_PROCESSES=str(num_processes),
        JAX_PROCESS_ID=str(process_id),
      )
    procs.append(
      subprocess.Popen([sys.executable, str(WORKER), str(out), conv_impl], env=env)
    )
  codes = [p.wait(timeout=900) for p in procs]
  assert codes == [0] * num_processes


# The fast CPU forms across processes: known discrepancy (docs/scaling.md,
# "Multi-process CPU"). One SGD step of the content encoder differs from one
# process by 8.8e-4 (relative norm of the update) against 5e-6 for every
# other network and for "plain"; the compiled programs are the same, the
# result is deterministic and independent of threads and matmul precision,
# and it vanishes with the Winograd form disabled. Not yet explained.
_FAST_ACROSS_PROCESSES = pytest.mark.xfail(
  reason="conv_impl='fast' (Winograd form) x 2 processes: the content "
  "encoder's update differs from 1 process by 8.8e-4 after one step; see "
  "docs/scaling.md, 'Multi-process CPU'",
  strict=False,
)


@pytest.mark.slow
@pytest.mark.parametrize(
  "conv_impl", ["plain", pytest.param("fast", marks=_FAST_ACROSS_PROCESSES)]
)
def test_two_processes_equal_one_and_only_process_zero_logs(tmp_path, conv_impl):
  two, one = tmp_path / "two", tmp_path / "one"
  two.mkdir()
  one.mkdir()
  _run_workers(two, num_processes=2, devices_per_process=2, conv_impl=conv_impl)
  _run_workers(one, num_processes=1, devices_per_process=4, conv_impl=conv_impl)

  params_two, params_one = np.load(two / "params.npz"), np.load(one / "params.npz")
  assert set(params_two) == set(params_one)
  for key in params_one:
    np.testing.assert_allclose(params_two[key], params_one[key], rtol=1e-3, atol=2e-5)

  events = list((two / "workdir").glob("events.out.tfevents.*"))
  assert len(events) == 1, events

  # The checkpoint both processes wrote restores in this single process.
  cfg = multihost_worker.config(conv_impl)
  info = types.SimpleNamespace(height=64, width=64, channels=3)
  checkpoints = checkpointing.Checkpointer(str(two / "workdir"), cfg, info)
  networks = build_networks(cfg, 3)

  def init_fn(rng):  # the workers train with SGD
    state = train_state.create_train_state(networks, cfg, rng, (64, 64, 3))
    return state.replace(
      opt_state=train_state.init_opt_state(train.optax.sgd(1.0), state.params)
    )

  state, step = checkpoints.restore_trained(init_fn)
  assert step == multihost_worker.NUM_STEPS
  restored = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
  for path, value in restored:
    np.testing.assert_array_equal(value, params_two[jax.tree_util.keystr(path)])
