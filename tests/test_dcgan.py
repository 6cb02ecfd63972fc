"""The DCGAN networks (Sec. IV-A): parameter counts and output shapes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mipae_jax.models import dcgan


def _count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def _conv(k, c_in, c_out):
  return k * k * c_in * c_out + c_out


def test_dcgan_encoder_parameter_count_and_shapes():
  enc = dcgan.DCGANEncoder(128)
  x = jnp.zeros((2, 64, 64, 3))
  variables = jax.jit(functools.partial(enc.init, train=False))(
    jax.random.PRNGKey(0), x
  )
  (code, skips), _ = jax.jit(
    functools.partial(enc.apply, train=True, mutable=["batch_stats"])
  )(variables, x)
  channels = [3, 64, 128, 256, 512]
  expected = sum(
    _conv(4, a, b) + 2 * b for a, b in zip(channels[:-1], channels[1:], strict=True)
  )
  expected += _conv(4, 512, 128) + 2 * 128
  assert _count(variables["params"]) == expected
  assert code.shape == (2, 128)
  assert [s.shape for s in skips] == [
    (2, 32, 32, 64),
    (2, 16, 16, 128),
    (2, 8, 8, 256),
    (2, 4, 4, 512),
  ]
  assert np.all(np.abs(code) <= 1)


@pytest.mark.parametrize("skip_connections", [False, True])
def test_dcgan_decoder_parameter_count_and_shapes(skip_connections):
  dec = dcgan.DCGANDecoder(3, skip_connections=skip_connections)
  skips = tuple(jnp.zeros((2, 64 // 2**i, 64 // 2**i, 32 * 2**i)) for i in range(1, 5))
  codes = jnp.zeros((2, 128)), jnp.zeros((2, 5))
  variables = jax.jit(functools.partial(dec.init, train=False))(
    jax.random.PRNGKey(0), *codes, skips
  )
  out = jax.jit(functools.partial(dec.apply, train=False))(variables, *codes, skips)
  m = 2 if skip_connections else 1
  expected = _conv(4, 133, 512) + 2 * 512
  expected += _conv(4, 512 * m, 256) + 2 * 256
  expected += _conv(4, 256 * m, 128) + 2 * 128
  expected += _conv(4, 128 * m, 64) + 2 * 64
  expected += _conv(4, 64 * m, 3)
  assert _count(variables["params"]) == expected
  assert out.shape == (2, 64, 64, 3)
  assert np.all((out >= 0) & (out <= 1))
