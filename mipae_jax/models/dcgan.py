"""DCGAN 64x64 encoder and decoder (Sec. IV-A, Moving MNIST and dSprites).

The same encoder class serves as `content_encoder` (|z_c| = 128, returning its
block outputs as U-Net skips) and as `pose_encoder` (|z_p| = 5, the code
alone: `return_skips=False`). The decoder
mirrors it with transposed convolutions and decodes concat(z_c, z_p).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mipae_jax.models import initializers, layers

_BLOCK_FEATURES = (64, 128, 256, 512)


class DCGANEncoder(nn.Module):
  """Four 4x4/stride-2 conv blocks (64..512), a 4x4 valid conv, BN, tanh.

  Returns the code [B, latent_dim] and, with `return_skips`, the four block
  outputs (64x32x32 .. 512x4x4) as skips for the decoder.
  """

  latent_dim: int
  conv_impl: str = "auto"
  dtype: Any = jnp.float32
  return_skips: bool = True

  @nn.compact
  def __call__(
    self, x: jnp.ndarray, train: bool
  ) -> jnp.ndarray | tuple[jnp.ndarray, tuple[jnp.ndarray, ...]]:
    h = x.astype(self.dtype)
    skips = []
    for i, features in enumerate(_BLOCK_FEATURES, start=1):
      h = layers.conv(
        features,
        kernel_size=(4, 4),
        strides=(2, 2),
        padding=((1, 1), (1, 1)),
        kernel_init=initializers.weight_init,
        dtype=self.dtype,
        impl=self.conv_impl,
        name=f"conv{i}",
      )(h)
      h = layers.batch_norm(train, self.dtype, f"bn{i}")(h)
      h = nn.leaky_relu(h, 0.2)
      skips.append(h)
    h = layers.conv(
      self.latent_dim,
      kernel_size=(4, 4),
      padding="VALID",
      kernel_init=initializers.weight_init,
      dtype=self.dtype,
      impl=self.conv_impl,
      name=f"conv{len(_BLOCK_FEATURES) + 1}",
    )(h)
    h = layers.batch_norm(train, self.dtype, f"bn{len(_BLOCK_FEATURES) + 1}")(h)
    code = jnp.tanh(h).reshape(h.shape[0], self.latent_dim)
    return (code, tuple(skips)) if self.return_skips else code


class DCGANDecoder(nn.Module):
  """Mirror of `DCGANEncoder`: concat(z_c, z_p) -> 64x64 image in [0, 1].

  A 4x4 valid transposed conv to 512x4x4, three 4x4/stride-2 transposed conv
  blocks (256, 128, 64) and a last one to `out_channels` with a sigmoid.
  With `skip_connections` each block also takes the matching content-encoder
  block output (U-Net style).
  """

  out_channels: int
  skip_connections: bool = False
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    content_code: jnp.ndarray,
    pose_code: jnp.ndarray,
    skips: Sequence[jnp.ndarray] | None,
    train: bool,
  ) -> jnp.ndarray:
    if self.skip_connections and (skips is None or len(skips) != 4):
      raise ValueError("skip_connections=True needs the encoder's 4 skips.")
    h = jnp.concatenate([content_code, pose_code], axis=-1).astype(self.dtype)
    h = h[:, None, None, :]
    h = layers.conv_transpose(
      _BLOCK_FEATURES[-1],
      kernel_size=(4, 4),
      padding="VALID",
      kernel_init=initializers.weight_init,
      dtype=self.dtype,
      impl=self.conv_impl,
      name="upconv1",
    )(h)
    h = nn.leaky_relu(layers.batch_norm(train, self.dtype, "bn1")(h), 0.2)
    out_features = (*reversed(_BLOCK_FEATURES[:-1]), self.out_channels)
    for i, features in enumerate(out_features, start=2):
      if self.skip_connections:
        h = jnp.concatenate([h, skips[len(_BLOCK_FEATURES) + 1 - i]], axis=-1)
      h = layers.conv_transpose(
        features,
        kernel_size=(4, 4),
        strides=(2, 2),
        # lax.conv_transpose padding k - 1 - p = 2: PyTorch's padding 1.
        padding=((2, 2), (2, 2)),
        kernel_init=initializers.weight_init,
        dtype=self.dtype,
        impl=self.conv_impl,
        name=f"upconv{i}",
      )(h)
      if i <= len(_BLOCK_FEATURES):
        h = nn.leaky_relu(layers.batch_norm(train, self.dtype, f"bn{i}")(h), 0.2)
    return nn.sigmoid(h.astype(jnp.float32))
