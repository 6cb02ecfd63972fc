"""MIPAE on Moving MNIST (Sec. IV-B), paper settings: two grey digits.

  python -m mipae_jax.main --config=configs/mipae_mnist.py --workdir=/tmp/mipae_mnist \
      --config.dataset.manual_dir=/path/to/mnist_idx_files
Variants (configs/base.py, VARIANTS): `:reduced`, `:smoke` (small CPU run),
`:tiny`, `:long_cpu`, e.g. --config=configs/mipae_mnist.py:smoke
"""

import ml_collections

from mipae_jax.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """MIPAE / Moving MNIST; `arg`: a variant of base.VARIANTS, or none."""
  config = base.get_base_config()
  config.method = "mipae"
  config.dataset.name = "moving_mnist"
  # "grey" (digits summed, Fig. 3) or "colour" (digit n in channel n).
  config.dataset.builder_config = "grey"
  config.model.arch = "dcgan"
  config.model.pose_dim = 5
  # 600 steps x 400 epochs in the reference.
  config.num_train_steps = 240_000
  return base.apply_variant(config, arg)
