"""MIPAE on Moving dSprites (Sec. IV-C), paper settings.

  python -m mipae_jax.main --config=configs/mipae_dsprites.py --workdir=/tmp/mipae_dsprites
  ... --mode=train_lstm   (stage 2: the pose LSTM, same workdir)
  ... --mode=eval         (PSNR/SSIM/LPIPS curves, MIG, swap grids)
Small CPU variant (embedded renderer, a few minutes):
  python -m mipae_jax.main --config=configs/mipae_dsprites.py:smoke --workdir=/tmp/smoke
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """MIPAE / Moving dSprites; `arg="smoke"` gives the small CPU variant."""
  config = base.get_base_config()
  config.method = "mipae"
  config.dataset.name = "moving_dsprites"
  # Orientation fixed per video: shape, scale, orientation are content.
  config.dataset.builder_config = "fixed"
  config.model.arch = "dcgan"
  config.model.pose_dim = 5
  # 600 steps x 400 epochs in the reference.
  config.num_train_steps = 240_000
  if arg == "smoke":
    base.apply_smoke(config)
  elif arg is not None:
    raise ValueError(f"Unknown config variant {arg!r}; expected 'smoke' or none.")
  return config
