"""Pads, reshapes and index arithmetic shared by the fast convolution forms.

Arrays are NHWC with one batch axis; kernels are HWIO, as in flax.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from mipae_jax.models.common import PaddingLike

Pads = tuple[tuple[int, int], tuple[int, int]]


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


def pad_or_crop(x: jax.Array, pads: Sequence[tuple[int, int]]) -> jax.Array:
  """Zero-pads H and W by (low, high); negative amounts crop."""
  zero = jnp.zeros((), x.dtype)
  return lax.pad(x, zero, ((0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)))


def conv_out_map(
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


def space_to_depth_input(
  x: jax.Array, kernel_size: tuple[int, int], stride: int, pads: Pads
) -> jax.Array:
  """x padded (or cropped) to the rows and columns a stride-s conv reads, then
  space-to-depth: a stride-1 conv of the result with `space_to_depth_kernel`
  is the stride-s conv.

  Output pixel m reads padded rows s*m + s*a + p for kernel row s*a + p: row
  block m + a of the space-to-depth input at depth offset p.
  """
  out_map = conv_out_map(x.shape[1:3], kernel_size, (stride, stride), pads)
  sizes = [
    (lo, stride * (out_size - 1) + k - n - lo)
    for n, (lo, _), k, out_size in zip(
      x.shape[1:3], pads, kernel_size, out_map, strict=True
    )
  ]
  return space_to_depth(pad_or_crop(x, sizes), stride)


def space_to_depth_kernel(kernel: jax.Array, stride: int) -> jax.Array:
  """[kh, kw, C, O] -> [kh/s, kw/s, s*s*C, O], input channels (p, q, c)."""
  kh, kw, c, out = kernel.shape
  taps_h, taps_w = kh // stride, kw // stride
  kernel = kernel.reshape(taps_h, stride, taps_w, stride, c, out)
  kernel = kernel.transpose(0, 2, 1, 3, 4, 5)
  return kernel.reshape(taps_h, taps_w, stride * stride * c, out)


def phase_geometry(
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


def conv_transpose_out_shape(
  x: jax.Array, kernel: jax.Array, stride: int, pads: Pads
) -> tuple[int, int, int, int]:
  """[B, H, W, O] of `lax.conv_transpose(x, kernel, stride, pads)`."""
  spatial = (
    phase_geometry(n, k, stride, pad)[0]
    for n, k, pad in zip(x.shape[1:3], kernel.shape[:2], pads, strict=True)
  )
  return (x.shape[0], *spatial, kernel.shape[-1])


def adjoint_pads(pads: Pads, kernel_size: Sequence[int]) -> Pads | None:
  """Pads of the strided conv that is the adjoint of a transposed conv.

  `lax.conv_transpose(x, W, s, (lo, hi))` is, as a function of x, the adjoint
  of the stride-s conv with kernel W flipped and in/out swapped and pads
  (k - 1 - lo, k - 1 - hi). None when those would be negative.
  """
  adjoint = tuple(
    (k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(pads, kernel_size, strict=True)
  )
  return adjoint if min(min(pair) for pair in adjoint) >= 0 else None


def adjoint_kernel(kernel: jax.Array) -> jax.Array:
  """HWIO kernel flipped in space with input and output channels swapped."""
  return kernel[::-1, ::-1].transpose(0, 1, 3, 2)
