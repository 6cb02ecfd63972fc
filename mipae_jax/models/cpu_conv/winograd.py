"""A 2x2 stride-1 VALID convolution by Winograd's minimal filtering F(2x2, 2x2).

In space-to-depth form (`geometry.space_to_depth_input`) every 4x4 stride-2
conv of the DCGAN networks is a 2x2 stride-1 VALID conv, and every 4x4
stride-2 transposed conv is the transpose (in its input) of one. F(2x2, 2x2)
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016)
computes each 2x2 block of outputs from the 3x3 input tile under it with 9
products instead of 16:

  Y = A^T [(G g G^T) * (B^T d B)] A,   B^T = [[1, -1, 0], [0, 1, 0], [0, -1, 1]],
  G = [[1, 0], [1, 1], [0, 1]],        A^T = [[1, 1, 0], [0, 1, 1]],

summed over input channels: for each of the 9 tile positions one matrix
product [tiles, C] @ [C, O]. The transforms only add and subtract, so the
result equals the direct conv up to float rounding, and so do both gradients,
which are the same three kinds of products (`conv_2x2` / `conv_2x2_transpose`
are `jax.custom_vjp`s that compute them explicitly). The 9 transformed
arrays stay separate: stacking them costs XLA CPU a copy.

Arrays are NHWC, kernels HWIO; the output map must have even height and width.
"""

import jax
import jax.numpy as jnp
from jax import lax

Tiles = list[list[jax.Array]]  # [3][3] arrays, one per tile position


def _taps(a: jax.Array, axis: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The three rows of every 3-tile at stride 2 along `axis` (length 2t+1)."""
  t = (a.shape[axis] - 1) // 2
  return tuple(lax.slice_in_dim(a, r, r + 2 * t - 1, 2, axis) for r in range(3))


def _input_transform(d0, d1, d2):
  """B^T d."""
  return d0 - d1, d1, d2 - d1


def _input_transform_transpose(w0, w1, w2):
  """B w: each tile row's share of the input gradient."""
  return w0, w1 - w0 - w2, w2


def _output_transform(m0, m1, m2):
  """A^T m."""
  return m0 + m1, m1 + m2


def _output_transform_transpose(y0, y1):
  """A y."""
  return y0, y0 + y1, y1


def _interleave(y0: jax.Array, y1: jax.Array, axis: int) -> jax.Array:
  """Rows 2i from y0, 2i + 1 from y1."""
  rows = jnp.stack([y0, y1], axis=axis + 1)
  shape = list(y0.shape)
  shape[axis] *= 2
  return rows.reshape(shape)


def _overlap_add(c0: jax.Array, c1: jax.Array, c2: jax.Array, axis: int) -> jax.Array:
  """Transpose of `_taps`: rows 2i + l gather c_l[i]; length 2t+1 on `axis`."""

  def pad(a, low, high):
    config = [(0, 0)] * a.ndim
    config[axis] = (low, high)
    return jnp.pad(a, config)

  even = pad(c0, 0, 1) + pad(c2, 1, 0)  # rows 2i: tile i's row 0, tile i-1's row 2
  rows = _interleave(even, pad(c1, 0, 1), axis)
  return lax.slice_in_dim(rows, 0, rows.shape[axis] - 1, axis=axis)


def _deinterleave(y: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
  """Inverse (and transpose) of `_interleave`."""
  n = y.shape[axis]
  return tuple(lax.slice_in_dim(y, r, n, 2, axis) for r in range(2))


def _flat(a: jax.Array) -> jax.Array:
  """[B, t, u, C] -> [B t u, C]."""
  return a.reshape(-1, a.shape[-1])


def input_tiles(z: jax.Array) -> Tiles:
  """B^T d B of every 3x3 tile of z [B, 2t+1, 2u+1, C]: [3][3] x [B t u, C]."""
  return [
    [_flat(u) for u in _input_transform(*_taps(rows, 2))]
    for rows in _input_transform(*_taps(z, 1))
  ]


def input_tiles_transpose(tiles: Tiles, spatial: tuple[int, int]) -> jax.Array:
  """Transpose of `input_tiles`: [3][3] x [B t u, C] -> [B, 2t+1, 2u+1, C]."""
  t, u = (spatial[0] - 1) // 2, (spatial[1] - 1) // 2
  rows = [
    _overlap_add(
      *_input_transform_transpose(*(w.reshape(-1, t, u, w.shape[-1]) for w in row)),
      axis=2,
    )
    for row in tiles
  ]
  return _overlap_add(*_input_transform_transpose(*rows), axis=1)


def output_from_tiles(products: Tiles, batch: int, t: int, u: int) -> jax.Array:
  """A^T m A of every tile: [3][3] x [B t u, O] -> [B, 2t, 2u, O]."""
  rows = [
    _interleave(
      *_output_transform(*(m.reshape(batch, t, u, m.shape[-1]) for m in row)), axis=2
    )
    for row in products
  ]
  return _interleave(*_output_transform(*rows), axis=1)


def output_from_tiles_transpose(y: jax.Array) -> Tiles:
  """Transpose of `output_from_tiles`: [B, 2t, 2u, O] -> [3][3] x [B t u, O]."""
  return [
    [_flat(m) for m in _output_transform_transpose(*_deinterleave(rows, 2))]
    for rows in _output_transform_transpose(*_deinterleave(y, 1))
  ]


def kernel_tiles(kernel: jax.Array) -> Tiles:
  """G g G^T of a [2, 2, C, O] kernel: [3][3] x [C, O]."""

  def g(k0, k1):
    return k0, k0 + k1, k1

  return [list(g(row[0], row[1])) for row in g(kernel[0], kernel[1])]


def kernel_tiles_transpose(tiles: Tiles) -> jax.Array:
  """Transpose of `kernel_tiles`: [3][3] x [C, O] -> [2, 2, C, O]."""

  def g_transpose(v0, v1, v2):
    return jnp.stack([v0 + v1, v1 + v2])

  return g_transpose(*(g_transpose(*row) for row in tiles))


def _products(a: Tiles, b: Tiles, dimension_numbers) -> Tiles:
  """One matrix product per tile position."""
  return [
    [
      lax.dot_general(x, w, (dimension_numbers, ((), ())))
      for x, w in zip(row_a, row_b, strict=True)
    ]
    for row_a, row_b in zip(a, b, strict=True)
  ]


def _output(tiles: Tiles, kernels: Tiles, batch: int, t: int, u: int) -> jax.Array:
  """The conv of the input behind `tiles`: [B, 2t, 2u, O]."""
  return output_from_tiles(_products(tiles, kernels, ((1,), (0,))), batch, t, u)


def _input_transpose(
  grads: Tiles, kernels: Tiles, spatial: tuple[int, int]
) -> jax.Array:
  """The conv's transpose in its input, of the array behind `grads`."""
  return input_tiles_transpose(_products(grads, kernels, ((1,), (1,))), spatial)


def _kernel_gradient(tiles: Tiles, grads: Tiles) -> jax.Array:
  """d<conv(z, kernel), dy>/dkernel from z's and dy's tiles: [2, 2, C, O]."""
  return kernel_tiles_transpose(_products(tiles, grads, ((0,), (0,))))


def _check(
  small_map: tuple[int, int], kernel: jax.Array, shape: tuple[int, ...]
) -> None:
  """A 2x2 kernel and an even, non-empty output map (the transpose's input)."""
  if kernel.shape[:2] != (2, 2) or any(n < 2 or n % 2 for n in small_map):
    raise ValueError(
      f"F(2x2, 2x2) needs a 2x2 kernel and an even output map, got array "
      f"{shape} and kernel {kernel.shape}."
    )


def _conv(z, kernel):
  b, h, w, _ = z.shape
  _check((h - 1, w - 1), kernel, z.shape)
  t, u = (h - 1) // 2, (w - 1) // 2
  tiles = input_tiles(z)
  kernels = kernel_tiles(kernel)
  return _output(tiles, kernels, b, t, u), (tiles, kernels)


def _conv_transpose(y, kernel):
  _, h, w, _ = y.shape
  _check((h, w), kernel, y.shape)
  grads = output_from_tiles_transpose(y)
  kernels = kernel_tiles(kernel)
  return _input_transpose(grads, kernels, (h + 1, w + 1)), (grads, kernels)


@jax.custom_vjp
def conv_2x2(z: jax.Array, kernel: jax.Array) -> jax.Array:
  """`lax.conv_general_dilated(z, kernel, (1, 1), "VALID")`, F(2x2, 2x2).

  z: [B, 2t+1, 2u+1, C]; kernel: [2, 2, C, O]; returns [B, 2t, 2u, O].
  """
  return _conv(z, kernel)[0]


def _conv_2x2_fwd(z, kernel):
  y, residuals = _conv(z, kernel)
  return y, (z.shape[1:3], residuals)


def _conv_2x2_bwd(saved, dy):
  spatial, (tiles, kernels) = saved
  grads = output_from_tiles_transpose(dy)
  return _input_transpose(grads, kernels, spatial), _kernel_gradient(tiles, grads)


conv_2x2.defvjp(_conv_2x2_fwd, _conv_2x2_bwd)


@jax.custom_vjp
def conv_2x2_transpose(y: jax.Array, kernel: jax.Array) -> jax.Array:
  """The transpose of `conv_2x2` in its input, applied to y [B, 2t, 2u, O].

  Returns [B, 2t+1, 2u+1, C] for a [2, 2, C, O] kernel.
  """
  return _conv_transpose(y, kernel)[0]


def _conv_2x2_transpose_fwd(y, kernel):
  z, residuals = _conv_transpose(y, kernel)
  return z, (y.shape[1:3], residuals)


def _conv_2x2_transpose_bwd(saved, dz):
  (h, w), (grads, kernels) = saved
  tiles = input_tiles(dz)
  dy = _output(tiles, kernels, dz.shape[0], h // 2, w // 2)
  return dy, _kernel_gradient(tiles, grads)


conv_2x2_transpose.defvjp(_conv_2x2_transpose_fwd, _conv_2x2_transpose_bwd)
