"""One process of the multi-host test: a few SGD train steps on fixed global
batches, a checkpoint through Orbax, a log writer; run by test_multihost.py.

  python tests/multihost_worker.py OUT_DIR [CONV_IMPL]   (JAX_* variables set
  for 2 processes; CONV_IMPL is config.model.conv_impl, default "auto")
"""

import os
import pathlib
import sys
import types

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from clu import metric_writers  # noqa: E402

from mipae_jax import checkpointing, sharding, train, train_state  # noqa: E402
from mipae_jax.configs import mipae_dsprites  # noqa: E402
from mipae_jax.models.networks import build_networks  # noqa: E402

NUM_STEPS = 1
GLOBAL_BATCH = 8
# One step at lr 1: the update is the gradient itself, summed across
# processes, and lands far above float32 rounding of the parameters. A second
# step (or a small lr) would measure rounding noise amplified by training.
LEARNING_RATE = 1.0


def global_batches() -> list[np.ndarray]:
  rng = np.random.default_rng(0)
  return [
    rng.integers(0, 256, (GLOBAL_BATCH, 4, 64, 64, 3), dtype=np.uint8)
    for _ in range(NUM_STEPS)
  ]


def config(conv_impl: str = "auto"):
  cfg = mipae_dsprites.get_config()
  cfg.batch_size = GLOBAL_BATCH
  cfg.model.conv_impl = conv_impl
  return cfg


def main(out_dir: str, conv_impl: str = "auto") -> None:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if "JAX_NUM_PROCESSES" in os.environ:
    sharding.initialize_distributed()
  out = pathlib.Path(out_dir)
  cfg = config(conv_impl)
  mesh = sharding.create_mesh()
  networks = build_networks(cfg, 3)
  state, _ = train_state.init_state(networks, cfg, mesh, (64, 64, 3))
  sgd = optax.sgd(LEARNING_RATE)
  state = state.replace(tx=sgd, opt_state=train_state.init_opt_state(sgd, state.params))
  initial = jax.device_get(state.params)
  replicated = sharding.replicated(mesh)
  state_sharding = jax.tree.map(lambda _: replicated, state)
  step_fn = train.make_train_step(networks, cfg, mesh, state_sharding)
  batch_sharding = sharding.batch_sharding(mesh)
  per_process = GLOBAL_BATCH // jax.process_count()
  start = jax.process_index() * per_process
  for step, video in enumerate(global_batches()):
    local = {
      "video": video[start : start + per_process],
      "critic_video": video[start : start + per_process, ::-1],
    }
    batch = jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(batch_sharding, x), local
    )
    state, metrics = step_fn(state, batch, jax.random.PRNGKey(step))
  info = types.SimpleNamespace(height=64, width=64, channels=3, version="")
  checkpoints = checkpointing.Checkpointer(str(out / "workdir"), cfg, info)
  checkpoints.save(NUM_STEPS, state)
  checkpoints.close()
  writer = metric_writers.create_default_writer(
    str(out / "workdir"), just_logging=jax.process_index() > 0
  )
  writer.write_scalars(NUM_STEPS, {"train_loss": float(metrics.compute()["loss"])})
  writer.flush()
  if jax.process_index() == 0:
    for name, params in (("initial", initial), ("params", state.params)):
      flat = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
      np.savez(out / f"{name}.npz", **{jax.tree_util.keystr(p): v for p, v in flat})


if __name__ == "__main__":
  main(*sys.argv[1:])
