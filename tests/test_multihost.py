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


# Relative norm of (update in 2 processes - update in 1) per network: per
# leaf would divide rounding noise by rounding noise for biases before a
# BatchNorm, whose true gradient is 0. After one SGD step at lr 1, "plain"
# agrees to <= 2.6e-5 (float32 sums in another order); "fast" is the known
# discrepancy of docs/scaling.md, "Multi-process CPU" (8.8e-4).
UPDATE_RTOL = 2e-4
_FAST_ACROSS_PROCESSES = pytest.mark.xfail(
  reason="conv_impl='fast' across processes: docs/scaling.md, 'Multi-process CPU'",
  strict=False,
)


def _update_errors(two: pathlib.Path, one: pathlib.Path) -> dict[str, float]:
  """||delta_two - delta_one|| / ||delta_one|| per network (the first key of
  each parameter path), delta = final - initial parameters."""
  initial = np.load(one / "initial.npz")
  for key, value in np.load(two / "initial.npz").items():
    np.testing.assert_array_equal(value, initial[key])  # the same initialisation
  final_two, final_one = np.load(two / "params.npz"), np.load(one / "params.npz")
  assert set(final_two) == set(final_one) == set(initial)
  squares: dict[str, np.ndarray] = {}
  for key in initial:
    delta_one = final_one[key].astype(np.float64) - initial[key]
    delta_two = final_two[key].astype(np.float64) - initial[key]
    network = key.split("'")[1]  # "['content_encoder']['conv1']..."
    sums = squares.setdefault(network, np.zeros(2))
    sums += [np.sum((delta_two - delta_one) ** 2), np.sum(delta_one**2)]
  return {name: float(np.sqrt(d / n)) for name, (d, n) in squares.items()}


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

  errors = _update_errors(two, one)
  assert set(errors) == {"content_encoder", "pose_encoder", "decoder", "critic"}
  assert max(errors.values()) <= UPDATE_RTOL, errors
  params_two = np.load(two / "params.npz")

  events = list((two / "workdir").glob("events.out.tfevents.*"))
  assert len(events) == 1, events

  # The checkpoint both processes wrote restores in this single process.
  cfg = multihost_worker.config(conv_impl)
  info = types.SimpleNamespace(height=64, width=64, channels=3, version="")
  checkpoints = checkpointing.Checkpointer(str(two / "workdir"), cfg, info)
  networks = build_networks(cfg, 3)

  def init_fn(rng):  # the workers train with SGD
    state = train_state.create_train_state(networks, cfg, rng, (64, 64, 3))
    return state.replace(
      opt_state=train_state.init_opt_state(
        train.optax.sgd(multihost_worker.LEARNING_RATE), state.params
      )
    )

  state, step = checkpoints.restore_trained(init_fn)
  assert step == multihost_worker.NUM_STEPS
  restored = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
  for path, value in restored:
    np.testing.assert_array_equal(value, params_two[jax.tree_util.keystr(path)])
