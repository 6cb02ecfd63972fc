"""`Conv2D` / `ConvTranspose2D`: `nn.Conv` / `nn.ConvTranspose` in the fast forms.

Each owns the same parameters as the flax layer built with the same settings
(names "kernel" and "bias", HWIO kernel shape, dtypes and initialisation,
drawn in the same order), so a parameter tree or a checkpoint made with one
loads into the other.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mipae_jax.models.cpu_conv import forms, geometry


class _ConvLayer(nn.Module):
  """Fields and parameters shared by `Conv2D` and `ConvTranspose2D`.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: (sh, sw).
    padding: "SAME", "VALID", an int, or ((lo, hi), (lo, hi)).
    use_bias: add a bias.
    dtype: computation dtype (default: promoted from inputs and parameters).
    param_dtype: parameter dtype.
    kernel_init: kernel initializer (flax's default for both layers).
    bias_init: bias initializer (flax's default for both layers).
  """

  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: geometry.PaddingLike = "SAME"
  use_bias: bool = True
  dtype: jnp.dtype | None = None
  param_dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  def _promoted_params(
    self, inputs: jax.Array
  ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Declares "kernel" (HWIO) and "bias" as flax does; promotes all three."""
    kernel = self.param(
      "kernel",
      self.kernel_init,
      (*self.kernel_size, inputs.shape[-1], self.features),
      self.param_dtype,
    )
    bias = (
      self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    return nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)


class Conv2D(_ConvLayer):
  """`nn.Conv` for NHWC inputs, computed by `forms.conv2d`."""

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the convolution to [B, H, W, C] inputs."""
    inputs, kernel, bias = self._promoted_params(inputs)
    pads = geometry.conv_pads(
      self.padding, inputs.shape[1:3], self.kernel_size, self.strides
    )
    y = forms.conv2d(inputs, kernel, tuple(self.strides), pads)
    return y if bias is None else y + bias


class ConvTranspose2D(_ConvLayer):
  """`nn.ConvTranspose` (transpose_kernel=False) for NHWC inputs, computed by
  `forms.conv_transpose2d`.

  Padding follows `lax.conv_transpose`, not PyTorch: PyTorch's
  ConvTranspose2d(4, stride=2, padding=1) (output 2n) is padding ((2, 2),
  (2, 2)) or "SAME" here, with the kernel flipped; see
  `geometry.conv_transpose_pads`.
  """

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the transposed convolution to [B, H, W, C] inputs."""
    inputs, kernel, bias = self._promoted_params(inputs)
    pads = geometry.conv_transpose_pads(self.padding, self.kernel_size, self.strides)
    y = forms.conv_transpose2d(inputs, kernel, tuple(self.strides), pads)
    return y if bias is None else y + bias
