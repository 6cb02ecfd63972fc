"""DRNET baseline on Moving MPI3D-real: the MIPAE config with the adversarial loss.

Same data, architecture, optimiser and number of training frames as
configs/mipae_mpi3d.py (Sec. IV-A: "for fair comparison").
  python -m mipae_jax.main --config=configs/drnet_mpi3d.py --workdir=/tmp/drnet_mpi3d
Variants as configs/mipae_mpi3d.py, e.g. --config=configs/drnet_mpi3d.py:smoke
"""

import ml_collections

from mipae_jax.configs import mipae_mpi3d


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """DRNET / Moving MPI3D-real; variants as configs/mipae_mpi3d.py."""
  config = mipae_mpi3d.get_config(arg)
  # Scene discriminator + adversarial pose loss instead of eq. 3.
  config.method = "drnet"
  return config
