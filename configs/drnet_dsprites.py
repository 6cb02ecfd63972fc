"""DRNET baseline on Moving dSprites: the MIPAE config with the adversarial loss.

Same data, architecture, optimiser and number of training frames as
configs/mipae_dsprites.py (Sec. IV-A: "for fair comparison").
  python -m mipae_jax.main --config=configs/drnet_dsprites.py --workdir=/tmp/drnet_dsprites
Small CPU variant: --config=configs/drnet_dsprites.py:smoke
"""

import ml_collections

from configs import mipae_dsprites


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """DRNET / Moving dSprites; `arg="smoke"` gives the small CPU variant."""
  config = mipae_dsprites.get_config(arg)
  # Scene discriminator + adversarial pose loss instead of eq. 3.
  config.method = "drnet"
  return config
