"""Bilinear functions whose cotangents are computed in other forms (custom VJP)."""

from collections.abc import Callable

import jax

from mipae_jax.models import common

Bilinear = Callable[[jax.Array, jax.Array], jax.Array]
Cotangent = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

# Kernel gradients of big-batch convs are summed over batch chunks whose
# input is about this size (cache-sized pieces run 1.3-1.7x faster on XLA CPU).
KERNEL_GRAD_CHUNK_BYTES = 2 * 2**20


def with_gradient_forms(
  forward: Bilinear, input_grad: Cotangent, kernel_grad: Cotangent
) -> Bilinear:
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


def input_grad_of(form: Bilinear) -> Cotangent:
  """(x, kernel, dy) -> d<form(x, kernel), dy>/dx: `form`'s transpose in x."""

  def input_grad(x, kernel, dy):
    transpose = jax.linear_transpose(lambda inputs: form(inputs, kernel), x)
    return transpose(dy)[0]

  return input_grad


def kernel_grad_of(form: Bilinear) -> Cotangent:
  """(x, kernel, dy) -> d<form(x, kernel), dy>/dkernel: its transpose in kernel."""

  def kernel_grad(x, kernel, dy):
    transpose = jax.linear_transpose(lambda weights: form(x, weights), kernel)
    return transpose(dy)[0]

  return kernel_grad


def kernel_grad_in_batch_chunks(
  kernel_grad: Cotangent,
  inputs: jax.Array,
  kernel: jax.Array,
  cotangents: jax.Array,
) -> jax.Array:
  """sum over batch chunks of kernel_grad(inputs[chunk], kernel, cotangents[chunk]).

  A kernel gradient is a sum over the batch, so this is exact up to the order
  of the float sums. The chunks are `common.interleaved_chunks`. Unrolled, as
  XLA CPU runs convs inside loops slowly.
  """
  batch_size = inputs.shape[0]
  batch_bytes = inputs.size * inputs.dtype.itemsize
  count = common.num_batch_chunks(batch_size, batch_bytes // KERNEL_GRAD_CHUNK_BYTES)
  if count == 1:
    return kernel_grad(inputs, kernel, cotangents)

  input_chunks = common.interleaved_chunks(inputs, count)
  cotangent_chunks = common.interleaved_chunks(cotangents, count)
  return sum(
    kernel_grad(input_chunks[:, j], kernel, cotangent_chunks[:, j])
    for j in range(count)
  )
