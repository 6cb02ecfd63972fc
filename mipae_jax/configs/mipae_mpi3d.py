"""MIPAE on Moving MPI3D-real (Sec. IV-D): ResNet-18 E_p, VGG-16 E_c and D.

  python -m mipae_jax.main --config=configs/mipae_mpi3d.py --workdir=/tmp/mipae_mpi3d \
      --config.dataset.manual_dir=DIR
DIR is the directory holding mpi3d_real.npz (about 12 GB, from
https://storage.googleapis.com/disentanglement_dataset/Final_Dataset/mpi3d_real.npz),
the file datasets/moving_mpi3d.py reads (MPI3D_FILE).
Variants (configs/base.py, VARIANTS): `:reduced`, `:smoke` (small CPU run),
`:tiny`, `:long_cpu`, e.g. --config=configs/mipae_mpi3d.py:smoke
"""

import ml_collections

from mipae_jax.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """MIPAE / Moving MPI3D-real; `arg`: a variant of base.VARIANTS, or none."""
  config = base.get_base_config()
  config.method = "mipae"
  config.dataset.name = "moving_mpi3d"
  config.dataset.builder_config = "default"
  config.model.arch = "vgg_resnet"
  # |z_p| = 10 on MPI3D (Sec. IV-A).
  config.model.pose_dim = 10
  # U-Net skips from E_c into D (Sec. IV-A).
  config.model.skip_connections = True
  # 600 steps x 200 epochs in the reference.
  config.num_train_steps = 120_000
  return base.apply_variant(config, arg)
