"""winograd.conv_2x2 / conv_2x2_transpose equal the direct conv and its transpose."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from mipae_jax.models.cpu_conv import winograd


def _direct(z, kernel):
  return lax.conv_general_dilated(
    z, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def _normal(shape, seed):
  return jnp.asarray(np.random.RandomState(seed).randn(*shape), jnp.float32)


def _close(actual, expected):
  scale = float(np.max(np.abs(expected)))
  np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)


def _grads(conv, cotangent):
  """Jitted (d/dinput, d/dkernel) of <conv(input, kernel), cotangent>."""
  return jax.jit(jax.grad(lambda a, k: jnp.vdot(conv(a, k), cotangent), (0, 1)))


def test_conv_2x2_equals_the_direct_conv_with_gradients():
  z, kernel = _normal((3, 7, 5, 6), 0), _normal((2, 2, 6, 4), 1)
  cotangent = _normal((3, 6, 4, 4), 2)
  _close(jax.jit(winograd.conv_2x2)(z, kernel), _direct(z, kernel))
  for ours, direct in zip(
    _grads(winograd.conv_2x2, cotangent)(z, kernel),
    _grads(_direct, cotangent)(z, kernel),
    strict=True,
  ):
    _close(ours, direct)


def test_conv_2x2_transpose_is_the_transpose_in_the_input():
  y, kernel = _normal((3, 4, 6, 4), 0), _normal((2, 2, 5, 4), 1)
  z_shape = jax.ShapeDtypeStruct((3, 5, 7, 5), jnp.float32)
  (expected,) = jax.linear_transpose(lambda z: _direct(z, kernel), z_shape)(y)
  _close(jax.jit(winograd.conv_2x2_transpose)(y, kernel), expected)
  cotangent = _normal(expected.shape, 2)

  def transposed(y, k):
    return jax.linear_transpose(lambda z: _direct(z, k), z_shape)(y)[0]

  for ours, direct in zip(
    _grads(winograd.conv_2x2_transpose, cotangent)(y, kernel),
    _grads(transposed, cotangent)(y, kernel),
    strict=True,
  ):
    _close(ours, direct)


def test_odd_output_map_is_rejected_with_its_shape():
  with pytest.raises(ValueError, match=r"even output map.*\(1, 6, 6, 2\)"):
    winograd.conv_2x2(jnp.zeros((1, 6, 6, 2)), jnp.zeros((2, 2, 2, 3)))
