"""VGG-16 style content encoder and decoder for 64x64 frames (Sec. IV-A, MPI3D).

E_c is the 64x64 VGG of the authors' reference (DRNET's / SVG's vgg_64): four
stages of 3x3 conv blocks (64, 64 | 128, 128 | 256 x 3 | 512 x 3), 2x2
max-pooling between them, then a 4x4 valid conv to |z_c|, BatchNorm and tanh.
D mirrors it with nearest-neighbour upsampling in place of pooling and, in
U-Net style, concatenates each content-encoder stage output with the
upsampled decoder features of the same resolution.

`conv_impl` is `layers.conv`'s impl. Under "fast" only the 4x4 head conv and
the decoder's input transposed conv (between a 1x1 and a 4x4 map) change
form, to one matrix product each; the 3x3 convs run as `lax` convs either way.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mipae_jax.models import initializers, layers

IMAGE_SIZE = 64
# Output channels of the 3x3 conv blocks of each encoder stage (64 .. 8 px).
ENCODER_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512))
# Decoder stages at 8, 16, 32 and 64 px: each mirrors an encoder stage and
# its last block narrows to the width of the next stage. A final 3x3 conv to
# the image channels follows the last stage.
DECODER_STAGES = ((512, 512, 256), (256, 256, 128), (128, 64), (64,))


def _upsample_nearest(x: jnp.ndarray) -> jnp.ndarray:
  """Nearest-neighbour x2 upsampling of [B, H, W, C] to [B, 2H, 2W, C]."""
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


class VGGBlock(nn.Module):
  """3x3 conv (padding 1), BatchNorm, LeakyReLU(0.2)."""

  features: int
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = layers.conv(
      self.features,
      kernel_size=(3, 3),
      padding=((1, 1), (1, 1)),
      impl=self.conv_impl,
      kernel_init=initializers.weight_init,
      dtype=self.dtype,
      name="conv",
    )(x)
    x = layers.batch_norm(train, self.dtype, "bn")(x)
    return nn.leaky_relu(x, 0.2)


class VGGContentEncoder(nn.Module):
  """E_c: 64x64 frame -> (z_c [B, content_dim] in [-1, 1], stage outputs).

  The skips are the four stage outputs before pooling: [B, 64, 64, 64],
  [B, 32, 32, 128], [B, 16, 16, 256] and [B, 8, 8, 512].
  """

  content_dim: int
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self, x: jnp.ndarray, train: bool
  ) -> tuple[jnp.ndarray, tuple[jnp.ndarray, ...]]:
    if x.ndim != 4 or x.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
      raise ValueError(
        f"VGGContentEncoder expects frames [B, {IMAGE_SIZE}, {IMAGE_SIZE}, C], "
        f"got shape {x.shape}."
      )
    h = x.astype(self.dtype)
    skips = []
    for stage, widths in enumerate(ENCODER_STAGES, start=1):
      if stage > 1:
        h = nn.max_pool(h, window_shape=(2, 2), strides=(2, 2))
      for block, features in enumerate(widths, start=1):
        h = VGGBlock(
          features,
          conv_impl=self.conv_impl,
          dtype=self.dtype,
          name=f"stage{stage}_block{block}",
        )(h, train)
      skips.append(h)
    h = nn.max_pool(h, window_shape=(2, 2), strides=(2, 2))
    h = layers.conv(
      self.content_dim,
      kernel_size=(4, 4),
      padding="VALID",
      impl=self.conv_impl,
      kernel_init=initializers.weight_init,
      dtype=self.dtype,
      name="head_conv",
    )(h)
    h = layers.batch_norm(train, self.dtype, "head_bn")(h)
    code = jnp.tanh(h).reshape(h.shape[0], self.content_dim)
    return code, tuple(skips)


class VGGDecoder(nn.Module):
  """D: concat(z_c, z_p) -> 64x64 image in [0, 1], mirroring `VGGContentEncoder`.

  A 4x4 valid transposed conv lifts the code to [B, 4, 4, 512] (BatchNorm,
  LeakyReLU); each of the four stages then upsamples x2, concatenates the
  content encoder's output of that resolution when `skip_connections` is on,
  and applies its 3x3 conv blocks; a last 3x3 conv and a sigmoid give the
  image.
  """

  out_channels: int
  skip_connections: bool = True
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
    if self.skip_connections and (skips is None or len(skips) != len(DECODER_STAGES)):
      raise ValueError(
        f"skip_connections=True needs the content encoder's {len(DECODER_STAGES)} "
        "skips."
      )
    h = jnp.concatenate([content_code, pose_code], axis=-1).astype(self.dtype)
    h = layers.conv_transpose(
      ENCODER_STAGES[-1][-1],
      kernel_size=(4, 4),
      padding="VALID",
      impl=self.conv_impl,
      kernel_init=initializers.weight_init,
      dtype=self.dtype,
      name="input_upconv",
    )(h[:, None, None, :])
    h = nn.leaky_relu(layers.batch_norm(train, self.dtype, "input_bn")(h), 0.2)
    for stage, widths in enumerate(DECODER_STAGES, start=1):
      h = _upsample_nearest(h)
      if self.skip_connections:
        skip = skips[len(DECODER_STAGES) - stage]
        if skip.shape[:3] != h.shape[:3]:
          raise ValueError(
            f"Decoder stage {stage} needs a skip of shape {h.shape[:3]} + (C,), "
            f"got {skip.shape}."
          )
        h = jnp.concatenate([h, skip.astype(self.dtype)], axis=-1)
      for block, features in enumerate(widths, start=1):
        h = VGGBlock(
          features,
          conv_impl=self.conv_impl,
          dtype=self.dtype,
          name=f"stage{stage}_block{block}",
        )(h, train)
    h = layers.conv(
      self.out_channels,
      kernel_size=(3, 3),
      padding=((1, 1), (1, 1)),
      impl=self.conv_impl,
      kernel_init=initializers.weight_init,
      dtype=self.dtype,
      name="output_conv",
    )(h)
    return nn.sigmoid(h.astype(jnp.float32))
