"""Moving-video TFDS builders; importing this package registers them.

After `import mipae_jax.datasets`, `tfds.builder("moving_mnist")`,
`tfds.builder("moving_dsprites")` and `tfds.builder("moving_mpi3d")` work.
"""

from mipae_jax.datasets.moving_dsprites import MovingDsprites, MovingDspritesConfig
from mipae_jax.datasets.moving_mnist import MovingMnist, MovingMnistConfig
from mipae_jax.datasets.moving_mpi3d import MovingMpi3d, MovingMpi3dConfig

__all__ = [
  "MovingDsprites",
  "MovingDspritesConfig",
  "MovingMnist",
  "MovingMnistConfig",
  "MovingMpi3d",
  "MovingMpi3dConfig",
]
