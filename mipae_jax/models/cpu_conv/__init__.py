"""CPU-speed forms of the 2-D convolutions: a plug-in of `models.layers.conv`.

`layers.conv(..., impl="fast")` (and "auto" on the CPU backend) builds
`Conv2D` / `ConvTranspose2D` from here: the same function and parameters as
`nn.Conv` / `nn.ConvTranspose`, each of its three products (output, input
gradient, kernel gradient) computed in the exact form that XLA's CPU backend
runs fastest, joined by a `jax.custom_vjp` (`forms`, `gradients`):

- strided conv or transposed conv with a kernel twice the stride (the
  DCGAN's 4x4 / stride 2) whose small-side map is even and whose input (the
  transposed conv's output) has at least `forms.WINOGRAD_MIN_CHANNELS`
  channels: space-to-depth + Winograd's F(2x2, 2x2) (`winograd`) for all
  three products, 9 multiplies per 2x2 output block and channel pair where
  the direct conv has 16 (equal to it up to float rounding). The forms below
  serve the other layers;
- strided conv (kernel size a multiple of the stride): `lax`'s strided conv
  for the output (on a small output map, `forms.MATRIX_FORM_MAX_PIXELS`, the
  space-to-depth + im2col matrix product instead) and the kernel gradient;
  for the input gradient the transpose of space-to-depth + stride-1 conv (the
  plain input gradient convolves a zero-dilated tensor, XLA CPU's slow case),
  the stride-1 conv as one im2col matrix product while its patch matrix is
  small (`forms.IM2COL_MAX_BYTES`), else as a `lax` conv. Images (under 8
  channels) use space-to-depth + im2col throughout;
- strided transposed conv (kernel size a multiple of the stride): the
  sub-pixel form for the output (one stride-1 conv computes every output
  phase, then depth-to-space: no multiply touches a dilation zero), or on a
  small input map one matrix product followed by col2im; the adjoint strided
  conv (kernel flipped and transposed) in the strided conv's fast forward
  form for the input gradient, and its kernel gradient (input: the output
  gradient) for the kernel gradient;
- a conv or transposed conv between a 1x1 map and a map of the kernel's
  size: a matrix product.

Other configurations run the `lax` op itself. Being a `custom_vjp`, the fast
form supports reverse-mode differentiation (what training uses), not forward
mode (`jax.jvp`); use impl="plain" for that. docs/performance.md and
benchmarks/layer_throughput.py give the measurements.
"""

from mipae_jax.models.cpu_conv.layers import Conv2D, ConvTranspose2D

__all__ = ["Conv2D", "ConvTranspose2D"]
