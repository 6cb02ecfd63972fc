"""2-D convolutions that are exact twins of `nn.Conv` / `nn.ConvTranspose`.

`Conv2D` and `ConvTranspose2D` own the same parameters as the flax layers
built with the same settings (names "kernel" and "bias", shapes, dtypes and
initialisation, drawn in the same order), so a parameter tree or a checkpoint
made with one loads into the other. `impl` picks how the function is computed:

- "plain": `lax.conv_general_dilated` / `lax.conv_transpose`, as flax does.
- "fast": the same function, each of its three products (output, input
  gradient, kernel gradient) computed in the exact form that XLA's CPU
  backend runs fastest, joined by a `jax.custom_vjp`:
  * strided conv or transposed conv with a kernel twice the stride (the
    DCGAN's 4x4 / stride 2) whose small-side map is even and whose input
    (the transposed conv's output) has at least `WINOGRAD_MIN_CHANNELS`
    channels: space-to-depth + Winograd's F(2x2, 2x2) (`winograd`) for all
    three products, 9 multiplies per 2x2 output block and channel pair where
    the direct conv has 16 (equal to it up to float rounding). The forms
    below serve the other layers;
  * strided conv (kernel size a multiple of the stride): `lax`'s strided conv
    for the output (on a small output map, `MATRIX_FORM_MAX_PIXELS`, the
    space-to-depth + im2col matrix product instead) and the kernel gradient;
    for the input gradient the
    transpose of space-to-depth + stride-1 conv (the plain input gradient
    convolves a zero-dilated tensor, XLA CPU's slow case), the stride-1 conv
    as one im2col matrix product while its patch matrix is small
    (`IM2COL_MAX_BYTES`), else as a `lax` conv. Images (under
    `_THIN_CHANNELS` channels) use space-to-depth + im2col throughout;
  * strided transposed conv (kernel size a multiple of the stride): the
    sub-pixel form for the output (one stride-1 conv computes every output
    phase, then depth-to-space: no multiply touches a dilation zero), or on a
    small input map one matrix product followed by col2im; the adjoint
    strided conv (kernel flipped and transposed) in the strided conv's fast
    forward form for the input gradient, and its kernel gradient (input: the
    output gradient) for the kernel gradient;
  * a conv or transposed conv between a 1x1 map and a map of the kernel's
    size: a matrix product.
  Other configurations fall back to "plain". Being a `custom_vjp`, the fast
  form supports reverse-mode differentiation (what training uses), not
  forward mode (`jax.jvp`); use "plain" for that.

Inputs are NHWC with one batch axis; kernels are HWIO, as in flax.
docs/performance.md and benchmarks/layer_throughput.py give the measurements.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from mipae_jax.models import initializers, winograd

ConvImpl = Literal["plain", "fast"]
PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]
Pads = tuple[tuple[int, int], tuple[int, int]]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
_IMPLS = ("plain", "fast")
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
# Kernel gradients of big-batch convs are summed over batch chunks whose
# input is about this size (cache-sized pieces run 1.3-1.7x faster on XLA CPU).
KERNEL_GRAD_CHUNK_BYTES = 2 * 2**20


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
  """An int or a length-2 sequence as a pair of ints."""
  if isinstance(value, int):
    return (value, value)
  value = tuple(value)
  if len(value) != 2:
    raise ValueError(f"{name} must be an int or 2 ints, got {value}.")
  return value


def _padding_pairs(padding: PaddingLike) -> Pads | None:
  """Explicit (low, high) pads from an int or sequence; None for strings."""
  if isinstance(padding, str):
    return None
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  padding = tuple(padding)
  if len(padding) != 2:
    raise ValueError(f"padding needs one entry per spatial dim, got {padding}.")
  return tuple(
    (p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding
  )


def conv_pads(
  padding: PaddingLike,
  spatial_shape: Sequence[int],
  kernel_size: Sequence[int],
  strides: Sequence[int],
) -> Pads:
  """The explicit pads `lax.conv_general_dilated` applies for `padding`."""
  pairs = _padding_pairs(padding)
  if pairs is not None:
    return pairs
  if padding.upper() not in ("SAME", "VALID"):
    raise ValueError(f"Unsupported padding {padding!r}: use SAME, VALID or pads.")
  return tuple(
    tuple(p) for p in lax.padtype_to_pads(spatial_shape, kernel_size, strides, padding)
  )


def conv_transpose_pads(
  padding: PaddingLike, kernel_size: Sequence[int], strides: Sequence[int]
) -> Pads:
  """The explicit pads `lax.conv_transpose` applies for `padding`.

  These pad the stride-dilated input before a stride-1 correlation with the
  (unflipped) kernel, so the output size is (n - 1) * s + lo + hi - k + 2.
  PyTorch's ConvTranspose2d(k, s, p) is lo = hi = k - 1 - p (with the kernel
  flipped): for k=4, s=2, p=1 that is ((2, 2), (2, 2)), which is also what
  "SAME" gives here; output size 2n.
  """
  pairs = _padding_pairs(padding)
  if pairs is not None:
    return pairs
  mode = padding.upper()
  if mode not in ("SAME", "VALID"):
    raise ValueError(f"Unsupported padding {padding!r}: use SAME, VALID or pads.")
  pads = []
  for k, s in zip(kernel_size, strides, strict=True):
    if mode == "SAME":
      total = k + s - 2
      low = k - 1 if s > k - 1 else -(-total // 2)
    else:
      total = k + s - 2 + max(k - s, 0)
      low = k - 1
    pads.append((low, total - low))
  return tuple(pads)


def space_to_depth(x: jax.Array, block: int) -> jax.Array:
  """[B, H, W, C] -> [B, H/block, W/block, block*block*C], channels (p, q, c)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // block, block, w // block, block, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // block, w // block, block * block * c)


def depth_to_space(x: jax.Array, block: int) -> jax.Array:
  """Inverse of `space_to_depth`."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, block, block, c // (block * block))
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, c // (block * block))


def _conv_plain(
  x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads
) -> jax.Array:
  return lax.conv_general_dilated(
    x, kernel, strides, pads, dimension_numbers=_DIMENSION_NUMBERS
  )


def _conv_transpose_plain(
  x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads
) -> jax.Array:
  return lax.conv_transpose(
    x, kernel, strides, pads, dimension_numbers=_DIMENSION_NUMBERS
  )


def _valid_conv_lax(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 VALID conv, one `lax` convolution."""
  return lax.conv_general_dilated(
    x, kernel, (1, 1), "VALID", dimension_numbers=_DIMENSION_NUMBERS
  )


def _valid_conv_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 VALID conv as one matrix product over shifted windows (im2col)."""
  b, h, w, c = x.shape
  kh, kw, _, out = kernel.shape
  oh, ow = h - kh + 1, w - kw + 1
  windows = [x[:, i : i + oh, j : j + ow, :] for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(windows, axis=-1).reshape(b * oh * ow, kh * kw * c)
  return (patches @ kernel.reshape(kh * kw * c, out)).reshape(b, oh, ow, out)


def _pad_or_crop(x: jax.Array, pads: Sequence[tuple[int, int]]) -> jax.Array:
  """Zero-pads H and W by (low, high); negative amounts crop."""
  zero = jnp.zeros((), x.dtype)
  return lax.pad(x, zero, ((0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)))


def _conv_out_map(
  spatial: Sequence[int],
  kernel_size: Sequence[int],
  strides: Sequence[int],
  pads: Pads,
) -> tuple[int, int]:
  """Output height and width of a conv of a map of size `spatial`."""
  return tuple(
    (n + lo + hi - k) // s + 1
    for n, (lo, hi), k, s in zip(spatial, pads, kernel_size, strides, strict=True)
  )


def _space_to_depth_input(
  x: jax.Array, kernel_size: tuple[int, int], stride: int, pads: Pads
) -> jax.Array:
  """x padded (or cropped) to the rows and columns a stride-s conv reads, then
  space-to-depth: a stride-1 conv of the result with `_space_to_depth_kernel`
  is the stride-s conv.

  Output pixel m reads padded rows s*m + s*a + p for kernel row s*a + p: row
  block m + a of the space-to-depth input at depth offset p.
  """
  out_map = _conv_out_map(x.shape[1:3], kernel_size, (stride, stride), pads)
  sizes = [
    (lo, stride * (out_size - 1) + k - n - lo)
    for n, (lo, _), k, out_size in zip(
      x.shape[1:3], pads, kernel_size, out_map, strict=True
    )
  ]
  return space_to_depth(_pad_or_crop(x, sizes), stride)


def _space_to_depth_kernel(kernel: jax.Array, stride: int) -> jax.Array:
  """[kh, kw, C, O] -> [kh/s, kw/s, s*s*C, O], input channels (p, q, c)."""
  kh, kw, c, out = kernel.shape
  taps_h, taps_w = kh // stride, kw // stride
  kernel = kernel.reshape(taps_h, stride, taps_w, stride, c, out)
  kernel = kernel.transpose(0, 2, 1, 3, 4, 5)
  return kernel.reshape(taps_h, taps_w, stride * stride * c, out)


def _conv_space_to_depth(
  x: jax.Array,
  kernel: jax.Array,
  stride: int,
  pads: Pads,
  valid_conv: Callable[[jax.Array, jax.Array], jax.Array],
) -> jax.Array:
  """Stride-s conv (kernel size a multiple of s) as space-to-depth + stride 1."""
  z = _space_to_depth_input(x, kernel.shape[:2], stride, pads)
  return valid_conv(z, _space_to_depth_kernel(kernel, stride))


def _phase_geometry(
  n: int, k: int, s: int, pad: tuple[int, int]
) -> tuple[int, list[int], list[int], int]:
  """Per-phase kernel offsets and input shifts of a 1-D transposed conv.

  With the input dilated by s and padded by (lo, hi), output s*m + r is
  sum_a x[m + a + shift_r] * kernel[s*a + offset_r], a < k / s. Returns the
  output size, offsets, shifts and the number of outputs per phase.
  """
  lo, hi = pad
  out_size = (n - 1) * s + lo + hi - k + 2
  offsets = [(lo - r) % s for r in range(s)]
  shifts = [(r + d - lo) // s for r, d in enumerate(offsets)]
  return out_size, offsets, shifts, -(-out_size // s)


def _conv_transpose_phases(
  x: jax.Array, kernel: jax.Array, stride: int, pads: Pads
) -> jax.Array:
  """Stride-s transposed conv (kernel size a multiple of s), sub-pixel form.

  All stride**2 output phases come from one stride-1 conv with a (k/s)x(k/s)
  kernel and stride**2 * features outputs, over the input padded so that every
  phase's window fits; each phase is then read at its shift and the phases are
  interleaved (depth-to-space). No multiply touches a dilation zero.
  """
  kh, kw, c, out = kernel.shape
  geometry = [
    _phase_geometry(n, k, stride, pad)
    for n, k, pad in zip(x.shape[1:3], (kh, kw), pads, strict=True)
  ]
  window_pads, starts = [], []
  for n, k, (_, _, shifts, per_phase) in zip(
    x.shape[1:3], (kh, kw), geometry, strict=True
  ):
    first = min(shifts)
    joint = per_phase + max(shifts) - first
    window_pads.append((-first, joint + k // stride - 1 - n + first))
    starts.append([shift - first for shift in shifts])
  (out_h, offsets_h, _, rows), (out_w, offsets_w, _, cols) = geometry
  phase_kernels = [
    kernel[dh::stride, dw::stride] for dh in offsets_h for dw in offsets_w
  ]
  joint_kernel = jnp.concatenate(phase_kernels, axis=-1)
  y = _valid_conv_lax(_pad_or_crop(x, window_pads), joint_kernel)
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


def _adjoint_pads(pads: Pads, kernel_size: Sequence[int]) -> Pads | None:
  """Pads of the strided conv that is the adjoint of a transposed conv.

  `lax.conv_transpose(x, W, s, (lo, hi))` is, as a function of x, the adjoint
  of the stride-s conv with kernel W flipped and in/out swapped and pads
  (k - 1 - lo, k - 1 - hi). None when those would be negative.
  """
  adjoint = tuple(
    (k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(pads, kernel_size, strict=True)
  )
  return adjoint if min(min(pair) for pair in adjoint) >= 0 else None


def _adjoint_kernel(kernel: jax.Array) -> jax.Array:
  """HWIO kernel flipped in space with input and output channels swapped."""
  return kernel[::-1, ::-1].transpose(0, 1, 3, 2)


def _with_gradient_forms(
  forward: Callable[[jax.Array, jax.Array], jax.Array],
  input_grad: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
  kernel_grad: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The bilinear `forward(x, kernel)` with its cotangents computed elsewhere.

  `input_grad(x, kernel, dy)` and `kernel_grad(x, kernel, dy)` must be the
  exact cotangents of `forward`, typically those of another form of the same
  function: each of the three products then runs in the form that XLA
  computes fastest.
  """

  @jax.custom_vjp
  def bilinear(x, kernel):
    return forward(x, kernel)

  def bilinear_fwd(x, kernel):
    return forward(x, kernel), (x, kernel)

  def bilinear_bwd(residuals, dy):
    x, kernel = residuals
    return input_grad(x, kernel, dy), kernel_grad(x, kernel, dy)

  bilinear.defvjp(bilinear_fwd, bilinear_bwd)
  return bilinear


def _input_grad_of(form: Callable[[jax.Array, jax.Array], jax.Array]):
  """(x, kernel, dy) -> d<form(x, kernel), dy>/dx: `form`'s transpose in x."""

  def input_grad(x, kernel, dy):
    transpose = jax.linear_transpose(lambda inputs: form(inputs, kernel), x)
    return transpose(dy)[0]

  return input_grad


def _kernel_grad_of(form: Callable[[jax.Array, jax.Array], jax.Array]):
  """(x, kernel, dy) -> d<form(x, kernel), dy>/dkernel: its transpose in kernel."""

  def kernel_grad(x, kernel, dy):
    transpose = jax.linear_transpose(lambda weights: form(x, weights), kernel)
    return transpose(dy)[0]

  return kernel_grad


def num_batch_chunks(batch_size: int, chunks_wanted: int) -> int:
  """The largest divisor of batch_size that is at most chunks_wanted (>= 1)."""
  bound = min(max(chunks_wanted, 1), batch_size)
  return max(k for k in range(1, bound + 1) if batch_size % k == 0)


def interleaved_chunks(array: jax.Array, count: int) -> jax.Array:
  """[B, ...] viewed as [B / count, count, ...]: [:, j] is chunk j.

  Chunk j holds samples j, j + count, j + 2 * count, ...: every chunk takes
  the same share of each device's part of a batch sharded over devices, so
  the batch stays where it is.
  """
  return array.reshape(array.shape[0] // count, count, *array.shape[1:])


def _kernel_grad_in_batch_chunks(
  kernel_grad: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
  inputs: jax.Array,
  kernel: jax.Array,
  cotangents: jax.Array,
) -> jax.Array:
  """sum over batch chunks of kernel_grad(inputs[chunk], kernel, cotangents[chunk]).

  A kernel gradient is a sum over the batch, so this is exact up to the order
  of the float sums. The chunks are `interleaved_chunks`. Unrolled, as XLA
  CPU runs convs inside loops slowly.
  """
  batch_size = inputs.shape[0]
  batch_bytes = inputs.size * inputs.dtype.itemsize
  count = num_batch_chunks(batch_size, batch_bytes // KERNEL_GRAD_CHUNK_BYTES)
  if count == 1:
    return kernel_grad(inputs, kernel, cotangents)

  input_chunks = interleaved_chunks(inputs, count)
  cotangent_chunks = interleaved_chunks(cotangents, count)
  return sum(
    kernel_grad(input_chunks[:, j], kernel, cotangent_chunks[:, j])
    for j in range(count)
  )


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
  out_h, out_w = _conv_out_map(x.shape[1:3], kernel.shape[:2], strides, pads)
  patch_bytes = x.shape[0] * out_h * out_w * kernel[..., 0].size * x.dtype.itemsize
  fits = patch_bytes <= IM2COL_MAX_BYTES
  valid_conv = _valid_conv_im2col if fits else _valid_conv_lax

  def plain(inputs, weights):
    return _conv_plain(inputs, weights, strides, pads)

  def space_to_depth_form(inputs, weights):
    return _conv_space_to_depth(inputs, weights, stride, pads, valid_conv)

  def kernel_grad(inputs, weights, dy):
    return _kernel_grad_in_batch_chunks(_kernel_grad_of(plain), inputs, weights, dy)

  small_map = out_h * out_w <= MATRIX_FORM_MAX_PIXELS
  forward = space_to_depth_form if fits and small_map else plain
  conv = _with_gradient_forms(forward, _input_grad_of(space_to_depth_form), kernel_grad)
  return conv(x, kernel)


def _conv_transpose_out_shape(
  x: jax.Array, kernel: jax.Array, stride: int, pads: Pads
) -> tuple[int, int, int, int]:
  """[B, H, W, O] of `lax.conv_transpose(x, kernel, stride, pads)`."""
  spatial = (
    _phase_geometry(n, k, stride, pad)[0]
    for n, k, pad in zip(x.shape[1:3], kernel.shape[:2], pads, strict=True)
  )
  return (x.shape[0], *spatial, kernel.shape[-1])


def _strided_conv_winograd(
  x: jax.Array, kernel: jax.Array, stride: int, pads: Pads
) -> jax.Array:
  """Strided conv with kernel size 2 * stride: space-to-depth + F(2x2, 2x2)."""
  z = _space_to_depth_input(x, kernel.shape[:2], stride, pads)
  return winograd.conv_2x2(z, _space_to_depth_kernel(kernel, stride))


def _conv_transpose_winograd(
  x: jax.Array, kernel: jax.Array, stride: int, pads: Pads, adjoint_pads: Pads
) -> jax.Array:
  """Transposed conv with kernel size 2 * stride: the transpose of its adjoint
  strided conv in `_strided_conv_winograd`'s form."""
  out = jax.ShapeDtypeStruct(
    _conv_transpose_out_shape(x, kernel, stride, pads), x.dtype
  )

  def adjoint_input(dy):
    return _space_to_depth_input(dy, kernel.shape[:2], stride, adjoint_pads)

  adjoint_kernel = _space_to_depth_kernel(_adjoint_kernel(kernel), stride)
  z = winograd.conv_2x2_transpose(x, adjoint_kernel)
  return jax.linear_transpose(adjoint_input, out)(z)[0]


def _winograd_applies(
  kernel_size: tuple[int, int],
  strides: tuple[int, int],
  small_map: Sequence[int],
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
  out_shape = _conv_transpose_out_shape(x, kernel, stride, pads)
  patch_bytes = math.prod(x.shape[:-1]) * kernel[..., 0, :].size * x.dtype.itemsize

  def adjoint(dy, weights):
    return _conv_plain(dy, _adjoint_kernel(weights), strides, adjoint_pads)

  def adjoint_fast(dy, weights):
    return _strided_conv_fast(dy, _adjoint_kernel(weights), stride, adjoint_pads)

  def col2im_form(inputs, weights):
    def adjoint_im2col(dy):
      return _conv_space_to_depth(
        dy, _adjoint_kernel(weights), stride, adjoint_pads, _valid_conv_im2col
      )

    out = jax.ShapeDtypeStruct(out_shape, inputs.dtype)
    return jax.linear_transpose(adjoint_im2col, out)(inputs)[0]

  def kernel_grad(inputs, weights, dy):
    # The adjoint conv maps dy to x: its input, the one chunked, is dy.
    return _kernel_grad_in_batch_chunks(_kernel_grad_of(adjoint), dy, weights, inputs)

  def sub_pixel_form(inputs, weights):
    return _conv_transpose_phases(inputs, weights, stride, pads)

  small_map = x.shape[1] * x.shape[2] <= MATRIX_FORM_MAX_PIXELS
  fits = patch_bytes <= IM2COL_MAX_BYTES
  forward = col2im_form if small_map and fits else sub_pixel_form
  conv_transpose = _with_gradient_forms(
    forward, lambda inputs, weights, dy: adjoint_fast(dy, weights), kernel_grad
  )
  return conv_transpose(x, kernel)


def conv2d(
  x: jax.Array,
  kernel: jax.Array,
  strides: tuple[int, int],
  pads: Pads,
  impl: ConvImpl = "fast",
) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, strides, pads)` in NHWC / HWIO."""
  if impl not in _IMPLS:
    raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}.")
  kh, kw = kernel.shape[:2]
  unpadded = all(p == (0, 0) for p in pads)
  if impl == "fast" and unpadded and x.shape[1:3] == (kh, kw):
    b = x.shape[0]
    y = x.reshape(b, -1) @ kernel.reshape(-1, kernel.shape[-1])
    return y.reshape(b, 1, 1, -1)
  stride = strides[0]
  out_map = _conv_out_map(x.shape[1:3], (kh, kw), strides, pads)
  if impl == "fast" and _winograd_applies((kh, kw), strides, out_map, x.shape[-1]):
    return _strided_conv_winograd(x, kernel, stride, pads)
  if (
    impl == "fast"
    and strides[1] == stride > 1
    and kh % stride == 0
    and kw % stride == 0
  ):
    return _strided_conv_fast(x, kernel, stride, pads)
  return _conv_plain(x, kernel, strides, pads)


def conv_transpose2d(
  x: jax.Array,
  kernel: jax.Array,
  strides: tuple[int, int],
  pads: Pads,
  impl: ConvImpl = "fast",
) -> jax.Array:
  """`lax.conv_transpose(x, kernel, strides, pads)` in NHWC / HWIO."""
  if impl not in _IMPLS:
    raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}.")
  kh, kw, c, out = kernel.shape
  if (
    impl == "fast" and x.shape[1:3] == (1, 1) and pads == ((kh - 1,) * 2, (kw - 1,) * 2)
  ):
    # One input pixel: output pixel (i, j) is x @ kernel[kh-1-i, kw-1-j].
    b = x.shape[0]
    flipped = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(c, kh * kw * out)
    return (x.reshape(b, c) @ flipped).reshape(b, kh, kw, out)
  stride = strides[0]
  adjoint_pads = _adjoint_pads(pads, (kh, kw))
  if (
    impl == "fast"
    and adjoint_pads is not None
    and _winograd_applies((kh, kw), strides, x.shape[1:3], out)
  ):
    return _conv_transpose_winograd(x, kernel, stride, pads, adjoint_pads)
  if (
    impl == "fast"
    and strides[1] == stride > 1
    and kh % stride == 0
    and kw % stride == 0
    and adjoint_pads is not None
  ):
    return _conv_transpose_fast(x, kernel, stride, pads, adjoint_pads)
  return _conv_transpose_plain(x, kernel, strides, pads)


class _ConvLayer(nn.Module):
  """Fields and parameters shared by `Conv2D` and `ConvTranspose2D`.

  Attributes:
    features: output channels.
    kernel_size: int or (kh, kw).
    strides: int or (sh, sw).
    padding: "SAME", "VALID", an int, or ((lo, hi), (lo, hi)).
    use_bias: add a bias.
    dtype: computation dtype (default: promoted from inputs and parameters).
    param_dtype: parameter dtype.
    kernel_init: kernel initializer (flax's default for both layers).
    bias_init: bias initializer (flax's default for both layers).
    impl: "plain" (`lax`, as flax does) or "fast" (see the module doc).
  """

  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: PaddingLike = "SAME"
  use_bias: bool = True
  dtype: jnp.dtype | None = None
  param_dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  impl: ConvImpl = "fast"

  def _promoted_params(
    self, inputs: jax.Array, kernel_size: tuple[int, int]
  ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Declares "kernel" (HWIO) and "bias" as flax does; promotes all three."""
    kernel = self.param(
      "kernel",
      self.kernel_init,
      (*kernel_size, inputs.shape[-1], self.features),
      self.param_dtype,
    )
    bias = (
      self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    return nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)


class Conv2D(_ConvLayer):
  """`nn.Conv` for NHWC inputs, with a choice of computation (`impl`)."""

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the convolution to [B, H, W, C] inputs."""
    kernel_size = _pair(self.kernel_size, "kernel_size")
    strides = _pair(self.strides, "strides")
    inputs, kernel, bias = self._promoted_params(inputs, kernel_size)
    pads = conv_pads(self.padding, inputs.shape[1:3], kernel_size, strides)
    y = conv2d(inputs, kernel, strides, pads, self.impl)
    return y if bias is None else y + bias


class ConvTranspose2D(_ConvLayer):
  """`nn.ConvTranspose` (transpose_kernel=False) for NHWC inputs.

  Padding follows `lax.conv_transpose`, not PyTorch: PyTorch's
  ConvTranspose2d(4, stride=2, padding=1) (output 2n) is padding ((2, 2),
  (2, 2)) or "SAME" here, with the kernel flipped; see `conv_transpose_pads`.
  """

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the transposed convolution to [B, H, W, C] inputs."""
    kernel_size = _pair(self.kernel_size, "kernel_size")
    strides = _pair(self.strides, "strides")
    inputs, kernel, bias = self._promoted_params(inputs, kernel_size)
    pads = conv_transpose_pads(self.padding, kernel_size, strides)
    y = conv_transpose2d(inputs, kernel, strides, pads, self.impl)
    return y if bias is None else y + bias


def batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  """BatchNorm as PyTorch's defaults (momentum 0.1, eps 1e-5), DCGAN init.

  No axis_name: under jit over a batch sharded on the mesh the statistics are
  already global.
  """
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=0.9,
    epsilon=1e-5,
    dtype=dtype,
    scale_init=initializers.batchnorm_scale_init,
    name=name,
  )
