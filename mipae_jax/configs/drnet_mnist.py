"""DRNET baseline on Moving MNIST: the MIPAE config with the adversarial loss.

Same data, architecture, optimiser and number of training frames as
configs/mipae_mnist.py (Sec. IV-A: "for fair comparison").
  python -m mipae_jax.main --config=configs/drnet_mnist.py --workdir=/tmp/drnet_mnist
Variants as configs/mipae_mnist.py, e.g. --config=configs/drnet_mnist.py:smoke
"""

import ml_collections

from mipae_jax.configs import mipae_mnist


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """DRNET / Moving MNIST; variants as configs/mipae_mnist.py."""
  config = mipae_mnist.get_config(arg)
  # Scene discriminator + adversarial pose loss instead of eq. 3.
  config.method = "drnet"
  return config
