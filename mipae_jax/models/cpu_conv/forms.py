"""The fast forms of strided convs and transposed convs, and their dispatch.

`conv2d` / `conv_transpose2d` compute `lax.conv_general_dilated` /
`lax.conv_transpose` (NHWC, HWIO), each of the three products of a layer in
the exact form XLA's CPU backend runs fastest (see the package docstring);
other configurations run the `lax` op itself.
"""

import math

import jax
import jax.numpy as jnp
from jax import lax

from mipae_jax.models.cpu_conv import geometry, gradients, winograd
from mipae_jax.models.cpu_conv.geometry import Pads

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Inputs with fewer channels (images) take the all-im2col strided-conv form.
_THIN_CHANNELS = 8
# Largest im2col patch matrix worth writing: beyond it a stride-1 `lax` conv
# is faster (XLA CPU; glibc also maps buffers past 32 MiB afresh each call).
IM2COL_MAX_BYTES = 32 * 2**20
# Maps of at most this many pixels (the small side of a strided conv or
# transposed conv: its output, resp. its input) have their forward computed
# as one matrix product (im2col, resp. product then col2im) while that product's
# patch matrix fits in IM2COL_MAX_BYTES: XLA CPU's convolution kernels run
# narrow maps at 65-80 % of the speed of the same products as one matmul.
MATRIX_FORM_MAX_PIXELS = 16
# Strided convs and transposed convs with a kernel twice the stride (all of
# the DCGAN's but the image layers) take the Winograd form when the strided
# conv's input (the transposed conv's output) has at least this many channels:
# its products contract over stride**2 times as many.
WINOGRAD_MIN_CHANNELS = _THIN_CHANNELS


def _conv_plain(
  x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads
) -> jax.Array:
  return lax.conv_general_dilated(
    x, kernel, strides, pads, dimension_numbers=_DIMENSION_NUMBERS
  )


def _valid_conv_lax(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 VALID conv, one `lax` convolution."""
  return _conv_plain(x, kernel, (1, 1), ((0, 0), (0, 0)))


def _valid_conv_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 VALID conv as one matrix product over shifted windows (im2col)."""
  b, h, w, c = x.shape
  kh, kw, _, out = kernel.shape
  oh, ow = h - kh + 1, w - kw + 1
  windows = [x[:, i : i + oh, j : j + ow, :] for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(windows, axis=-1).reshape(b * oh * ow, kh * kw * c)
  return (patches @ kernel.reshape(kh * kw * c, out)).reshape(b, oh, ow, out)


def _conv_space_to_depth(
  x: jax.Array,
  kernel: jax.Array,
  stride: int,
  pads: Pads,
  valid_conv: gradients.Bilinear,
) -> jax.Array:
  """Stride-s conv (kernel size a multiple of s) as space-to-depth + stride 1."""
  z = geometry.space_to_depth_input(x, kernel.shape[:2], stride, pads)
  return valid_conv(z, geometry.space_to_depth_kernel(kernel, stride))


def _conv_transpose_phases(
  x: jax.Array, kernel: jax.Array, stride: int, pads: Pads
) -> jax.Array:
  """Stride-s transposed conv (kernel size a multiple of s), sub-pixel form.

  All stride**2 output phases come from one stride-1 conv with a (k/s)x(k/s)
  kernel and stride**2 * features outputs, over the input padded so that every
  phase's window fits; each phase is then read at its shift and the phases are
  interleaved (depth-to-space). No multiply touches a dilation zero.
  """
  kh, kw, _, out = kernel.shape
  geometries = [
    geometry.phase_geometry(n, k, stride, pad)
    for n, k, pad in zip(x.shape[1:3], (kh, kw), pads, strict=True)
  ]
  window_pads, starts = [], []
  for n, k, (_, _, shifts, per_phase) in zip(
    x.shape[1:3], (kh, kw), geometries, strict=True
  ):
    first = min(shifts)
    joint = per_phase + max(shifts) - first
    window_pads.append((-first, joint + k // stride - 1 - n + first))
    starts.append([shift - first for shift in shifts])
  (out_h, offsets_h, _, rows), (out_w, offsets_w, _, cols) = geometries
  phase_kernels = [
    kernel[dh::stride, dw::stride] for dh in offsets_h for dw in offsets_w
  ]
  joint_kernel = jnp.concatenate(phase_kernels, axis=-1)
  y = _valid_conv_lax(geometry.pad_or_crop(x, window_pads), joint_kernel)
  phases = [
    y[
      :,
      starts[0][r] : starts[0][r] + rows,
      starts[1][q] : starts[1][q] + cols,
      (r * stride + q) * out : (r * stride + q + 1) * out,
    ]
    for r in range(stride)
    for q in range(stride)
  ]
  y = jnp.stack(phases, axis=3).reshape(x.shape[0], rows, cols, stride, stride, out)
  y = y.transpose(0, 1, 3, 2, 4, 5).reshape(
    x.shape[0], rows * stride, cols * stride, out
  )
  return y[:, :out_h, :out_w, :]


def _strided_conv_fast(
  x: jax.Array, kernel: jax.Array, stride: int, pads: Pads
) -> jax.Array:
  """Strided conv whose three products each run in their fastest exact form.

  Thin inputs (the image layer): space-to-depth + im2col matrix product for
  everything. Otherwise the forward and the kernel gradient are `lax`'s
  strided conv (the kernel gradient summed over batch chunks), and the input
  gradient is that of space-to-depth + stride-1 conv (the plain one dilates
  the output gradient): as im2col when its patch matrix is small, else as a
  `lax` stride-1 conv.
  """
  if x.shape[-1] < _THIN_CHANNELS:
    return _conv_space_to_depth(x, kernel, stride, pads, _valid_conv_im2col)
  strides = (stride, stride)
  out_h, out_w = geometry.conv_out_map(x.shape[1:3], kernel.shape[:2], strides, pads)
  patch_bytes = x.shape[0] * out_h * out_w * kernel[..., 0].size * x.dtype.itemsize
  fits = patch_bytes <= IM2COL_MAX_BYTES
  valid_conv = _valid_conv_im2col if fits else _valid_conv_lax

  def plain(inputs, weights):
    return _conv_plain(inputs, weights, strides, pads)

  def space_to_depth_form(inputs, weights):
    return _conv_space_to_depth(inputs, weights, stride, pads, valid_conv)

  def kernel_grad(inputs, weights, dy):
    return gradients.kernel_grad_in_batch_chunks(
      gradients.kernel_grad_of(plain), inputs, weights, dy
    )

  small_map = out_h * out_w <= MATRIX_FORM_MAX_PIXELS
  forward = space_to_depth_form if fits and small_map else plain
  conv = gradients.with_gradient_forms(
    forward, gradients.input_grad_of(space_to_depth_form), kernel_grad
  )
  return conv(x, kernel)


def _strided_conv_winograd(
  x: jax.Array, kernel: jax.Array, stride: int, pads: Pads
) -> jax.Array:
  """Strided conv with kernel size 2 * stride: space-to-depth + F(2x2, 2x2)."""
  z = geometry.space_to_depth_input(x, kernel.shape[:2], stride, pads)
  return winograd.conv_2x2(z, geometry.space_to_depth_kernel(kernel, stride))


def _conv_transpose_winograd(
  x: jax.Array, kernel: jax.Array, stride: int, pads: Pads, adjoint_pads: Pads
) -> jax.Array:
  """Transposed conv with kernel size 2 * stride: the transpose of its adjoint
  strided conv in `_strided_conv_winograd`'s form."""
  out = jax.ShapeDtypeStruct(
    geometry.conv_transpose_out_shape(x, kernel, stride, pads), x.dtype
  )

  def adjoint_input(dy):
    return geometry.space_to_depth_input(dy, kernel.shape[:2], stride, adjoint_pads)

  adjoint_kernel = geometry.space_to_depth_kernel(
    geometry.adjoint_kernel(kernel), stride
  )
  z = winograd.conv_2x2_transpose(x, adjoint_kernel)
  return jax.linear_transpose(adjoint_input, out)(z)[0]


def _winograd_applies(
  kernel_size: tuple[int, int],
  strides: tuple[int, int],
  small_map: tuple[int, ...],
  channels: int,
) -> bool:
  """Kernel size twice the stride, an even small-side map, enough channels.

  small_map is the strided conv's output (the transposed conv's input).
  """
  return (
    strides[0] == strides[1] > 1
    and kernel_size == (2 * strides[0],) * 2
    and all(n > 0 and n % 2 == 0 for n in small_map)
    and channels >= WINOGRAD_MIN_CHANNELS
  )


def _conv_transpose_fast(
  x: jax.Array, kernel: jax.Array, stride: int, pads: Pads, adjoint_pads: Pads
) -> jax.Array:
  """Strided transposed conv, each product in its fastest exact form.

  The layer is the transpose (in its input) of the adjoint strided conv, which
  maps the output gradient dy to x. Forward: on a small input map, the
  transpose of that conv's im2col form (one matrix product, then col2im);
  else the sub-pixel form. Input gradient: the adjoint conv itself, in
  `_strided_conv_fast`'s forward form. Kernel gradient: that of the adjoint
  conv (input dy, output gradient x), which `lax` computes without the
  dilated input of the plain form, summed over batch chunks.
  """
  strides = (stride, stride)
  out_shape = geometry.conv_transpose_out_shape(x, kernel, stride, pads)
  patch_bytes = math.prod(x.shape[:-1]) * kernel[..., 0, :].size * x.dtype.itemsize

  def adjoint(dy, weights):
    return _conv_plain(dy, geometry.adjoint_kernel(weights), strides, adjoint_pads)

  def input_grad(inputs, weights, dy):
    return _strided_conv_fast(
      dy, geometry.adjoint_kernel(weights), stride, adjoint_pads
    )

  def col2im_form(inputs, weights):
    def adjoint_im2col(dy):
      return _conv_space_to_depth(
        dy, geometry.adjoint_kernel(weights), stride, adjoint_pads, _valid_conv_im2col
      )

    out = jax.ShapeDtypeStruct(out_shape, inputs.dtype)
    return jax.linear_transpose(adjoint_im2col, out)(inputs)[0]

  def kernel_grad(inputs, weights, dy):
    # The adjoint conv maps dy to x: its input, the one chunked, is dy.
    return gradients.kernel_grad_in_batch_chunks(
      gradients.kernel_grad_of(adjoint), dy, weights, inputs
    )

  def sub_pixel_form(inputs, weights):
    return _conv_transpose_phases(inputs, weights, stride, pads)

  small_map = x.shape[1] * x.shape[2] <= MATRIX_FORM_MAX_PIXELS
  fits = patch_bytes <= IM2COL_MAX_BYTES
  forward = col2im_form if small_map and fits else sub_pixel_form
  conv_transpose = gradients.with_gradient_forms(forward, input_grad, kernel_grad)
  return conv_transpose(x, kernel)


def _strided_by_kernel_multiple(
  kernel_size: tuple[int, int], strides: tuple[int, int]
) -> bool:
  """Equal strides > 1 that divide both kernel sides."""
  stride = strides[0]
  return strides[1] == stride > 1 and all(k % stride == 0 for k in kernel_size)


def conv2d(
  x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads
) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, strides, pads)` in NHWC / HWIO."""
  kernel_size = kernel.shape[:2]
  unpadded = all(p == (0, 0) for p in pads)
  if unpadded and x.shape[1:3] == kernel_size:
    b = x.shape[0]
    y = x.reshape(b, -1) @ kernel.reshape(-1, kernel.shape[-1])
    return y.reshape(b, 1, 1, -1)
  out_map = geometry.conv_out_map(x.shape[1:3], kernel_size, strides, pads)
  if _winograd_applies(kernel_size, strides, out_map, x.shape[-1]):
    return _strided_conv_winograd(x, kernel, strides[0], pads)
  if _strided_by_kernel_multiple(kernel_size, strides):
    return _strided_conv_fast(x, kernel, strides[0], pads)
  return _conv_plain(x, kernel, strides, pads)


def conv_transpose2d(
  x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads
) -> jax.Array:
  """`lax.conv_transpose(x, kernel, strides, pads)` in NHWC / HWIO."""
  kh, kw, c, out = kernel.shape
  if x.shape[1:3] == (1, 1) and pads == ((kh - 1,) * 2, (kw - 1,) * 2):
    # One input pixel: output pixel (i, j) is x @ kernel[kh-1-i, kw-1-j].
    b = x.shape[0]
    flipped = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(c, kh * kw * out)
    return (x.reshape(b, c) @ flipped).reshape(b, kh, kw, out)
  adjoint_pads = geometry.adjoint_pads(pads, (kh, kw))
  if adjoint_pads is not None:
    if _winograd_applies((kh, kw), strides, x.shape[1:3], out):
      return _conv_transpose_winograd(x, kernel, strides[0], pads, adjoint_pads)
    if _strided_by_kernel_multiple((kh, kw), strides):
      return _conv_transpose_fast(x, kernel, strides[0], pads, adjoint_pads)
  return lax.conv_transpose(
    x, kernel, strides, pads, dimension_numbers=_DIMENSION_NUMBERS
  )
