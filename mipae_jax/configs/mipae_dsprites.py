"""MIPAE on Moving dSprites (Sec. IV-C), paper settings.

  python -m mipae_jax.main --config=configs/mipae_dsprites.py --workdir=/tmp/mipae_dsprites
  ... --mode=train_lstm   (stage 2: the pose LSTM, same workdir)
  ... --mode=eval         (PSNR/SSIM/LPIPS curves, MIG, swap grids)
Variants (configs/base.py, VARIANTS): `:reduced` (the reproduction's reduced
scale), `:smoke` (embedded renderer, a few minutes), `:tiny` (seconds, for
tests) and `:long_cpu`, e.g.
  python -m mipae_jax.main --config=configs/mipae_dsprites.py:smoke --workdir=/tmp/smoke
CPU long run (batch 16, resumable; docs/results.md "Long run"):
  python -m mipae_jax.main --config=configs/mipae_dsprites.py:long_cpu --workdir=workdir_long/mipae
Seeds x MI weight: python launch/sweep.py --config=configs/mipae_dsprites.py --workdir_root=DIR
"""

import ml_collections

from mipae_jax import sweeps
from mipae_jax.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """MIPAE / Moving dSprites; `arg`: a variant of base.VARIANTS, or none."""
  config = base.get_base_config()
  config.method = "mipae"
  config.dataset.name = "moving_dsprites"
  # As the authors' train_autoencoder.py: sprites turn (orientation is pose;
  # shape and scale are content), fresh videos every batch. "fixed" keeps the
  # orientation per video (content), as their released test videos.
  config.dataset.builder_config = "rotating"
  config.dataset.fresh_train_videos = True
  config.model.arch = "dcgan"
  config.model.pose_dim = 5
  # 600 steps x 400 epochs in the reference.
  config.num_train_steps = 240_000
  return base.apply_variant(config, arg)


def get_sweep(arg: str | None = None) -> list[sweeps.Overrides]:
  """Two seeds x beta of eq. 5 around the paper's 1e-4."""
  del arg
  return sweeps.product(
    sweeps.sweep("seed", [0, 1]),
    sweeps.sweep("loss.mi_weight", [1e-5, 1e-4, 1e-3]),
  )
