"""MIPAE against DRNET over seeds on Moving dSprites: the gap of docs/results.md.

get_config is configs/mipae_dsprites.py (variants included); the sweep sets
`method`, which is all configs/drnet_dsprites.py changes, so every run equals
the run of its method's own config with that seed.
  python launch/sweep.py --config=configs/mipae_vs_drnet_dsprites.py:long_cpu \\
      --workdir_root=DIR --stages=train,curves -- --config.num_train_steps=4000
The authors'-data seeds of docs/results.md add, after `--`:
  --config.dataset.builder_config=rotating --config.dataset.fresh_train_videos=True
  --config.checkpoint_every_steps=1000 --config.eval.num_mig_frames=10000
"""

import ml_collections

from mipae_jax import sweeps
from mipae_jax.configs import mipae_dsprites


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """MIPAE / Moving dSprites; variants as configs/mipae_dsprites.py."""
  return mipae_dsprites.get_config(arg)


def get_sweep(arg: str | None = None) -> list[sweeps.Overrides]:
  """Both methods x two seeds (the last varies fastest)."""
  del arg
  return sweeps.product(
    sweeps.sweep("method", ["mipae", "drnet"]),
    sweeps.sweep("seed", [0, 1]),
  )
