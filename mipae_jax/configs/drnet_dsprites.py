"""DRNET baseline on Moving dSprites: the MIPAE config with the adversarial loss.

Same data, architecture, optimiser and number of training frames as
configs/mipae_dsprites.py (Sec. IV-A: "for fair comparison").
  python -m mipae_jax.main --config=configs/drnet_dsprites.py --workdir=/tmp/drnet_dsprites
Variants as configs/mipae_dsprites.py, e.g. --config=configs/drnet_dsprites.py:smoke
CPU long run: --config=configs/drnet_dsprites.py:long_cpu --workdir=workdir_long/drnet
Seeds x adversarial weight: python launch/sweep.py --config=configs/drnet_dsprites.py --workdir_root=DIR
"""

import ml_collections

from mipae_jax import sweeps
from mipae_jax.configs import mipae_dsprites


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """DRNET / Moving dSprites; variants as configs/mipae_dsprites.py."""
  config = mipae_dsprites.get_config(arg)
  # Scene discriminator + adversarial pose loss instead of eq. 3.
  config.method = "drnet"
  return config


def get_sweep(arg: str | None = None) -> list[sweeps.Overrides]:
  """Two seeds x DRNET's adversarial weight around its 1e-4."""
  del arg
  return sweeps.product(
    sweeps.sweep("seed", [0, 1]),
    sweeps.sweep("loss.adversarial_weight", [1e-5, 1e-4, 1e-3]),
  )
