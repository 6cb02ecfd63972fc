"""Weight initialisers of the DCGAN reference, shared by every network.

The authors' reference applies DCGAN's `init_weights` to all of its networks
(ResNet included): conv, transposed-conv and linear kernels from N(0, 0.02),
BatchNorm scales from N(1, 0.02), every bias 0 (Flax's default bias_init).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Conv, transposed-conv and Dense kernels: N(0, 0.02).
weight_init = nn.initializers.normal(stddev=0.02)


def batchnorm_scale_init(
  key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32
) -> jax.Array:
  """BatchNorm scale drawn from N(1, 0.02)."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)
