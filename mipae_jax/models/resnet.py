"""ResNet-18 pose encoder for 64x64 frames (Sec. IV-A, MPI3D).

E_p follows the authors' reference resnet_64: a torchvision-like stem scaled
down for 64x64 input (5x5 conv, stride 2, padding 3, then a 3x3 / stride-2
max-pool: 64 -> 33 -> 17 px), four stages of two BasicBlocks (64, 128, 256,
512 channels; stages 2-4 start with stride 2 and a 1x1 projection shortcut:
17 -> 9 -> 5 -> 3 px), then a 3x3 valid conv to |z_p| over the remaining 3x3,
BatchNorm and tanh. Keeping the reference's stem, rather than a stride-1 3x3
one, keeps its parameter count and runs the first stage on 17x17 maps instead
of 64x64 (about 14x fewer multiply-adds there).

`conv_impl` is `layers.conv`'s impl. Under "fast" only the head conv (over
the whole 3x3 map) changes form, to one matrix product; the others (odd
kernels, or 1x1 with stride 2) run as `lax` convs either way.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mipae_jax.models import initializers, layers

IMAGE_SIZE = 64
STAGE_FEATURES = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2
# Spatial size left after the last stage on 64x64 input; the head conv is
# valid over all of it.
FINAL_SPATIAL = 3


def _conv(
  features: int,
  kernel: int,
  strides: int,
  padding: int,
  impl: str,
  dtype: Any,
  name: str,
) -> nn.Module:
  """Square conv with symmetric (PyTorch-style) padding and DCGAN init."""
  return layers.conv(
    features,
    kernel_size=kernel,
    strides=strides,
    padding=((padding, padding), (padding, padding)),
    impl=impl,
    kernel_init=initializers.weight_init,
    dtype=dtype,
    name=name,
  )


class BasicBlock(nn.Module):
  """Two 3x3 conv + BatchNorm layers with a residual connection (He et al.).

  With `strides` > 1 or a change of width the shortcut is a 1x1 conv with the
  same stride and a BatchNorm.
  """

  features: int
  strides: int = 1
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    impl, dtype = self.conv_impl, self.dtype
    h = _conv(self.features, 3, self.strides, 1, impl, dtype, "conv1")(x)
    h = nn.relu(layers.batch_norm(train, dtype, "bn1")(h))
    h = _conv(self.features, 3, 1, 1, impl, dtype, "conv2")(h)
    h = layers.batch_norm(train, dtype, "bn2")(h)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = _conv(
        self.features, 1, self.strides, 0, impl, dtype, "projection_conv"
      )(x)
      shortcut = layers.batch_norm(train, dtype, "projection_bn")(shortcut)
    return nn.relu(h + shortcut)


class ResNetPoseEncoder(nn.Module):
  """E_p: 64x64 frame -> z_p [B, pose_dim] in [-1, 1] (ResNet-18)."""

  pose_dim: int
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if x.ndim != 4 or x.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
      raise ValueError(
        f"ResNetPoseEncoder expects frames [B, {IMAGE_SIZE}, {IMAGE_SIZE}, C], "
        f"got shape {x.shape}."
      )
    impl, dtype = self.conv_impl, self.dtype
    h = _conv(STAGE_FEATURES[0], 5, 2, 3, impl, dtype, "stem_conv")(x.astype(dtype))
    h = nn.relu(layers.batch_norm(train, dtype, "stem_bn")(h))
    h = nn.max_pool(h, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, features in enumerate(STAGE_FEATURES, start=1):
      for block in range(1, BLOCKS_PER_STAGE + 1):
        strides = 2 if stage > 1 and block == 1 else 1
        h = BasicBlock(
          features,
          strides,
          conv_impl=impl,
          dtype=dtype,
          name=f"stage{stage}_block{block}",
        )(h, train)
    h = _conv(self.pose_dim, FINAL_SPATIAL, 1, 0, impl, dtype, "head_conv")(h)
    h = layers.batch_norm(train, dtype, "head_bn")(h)
    return jnp.tanh(h).reshape(h.shape[0], self.pose_dim)
