"""layers.conv / conv_transpose: "plain" is flax's nn.Conv / nn.ConvTranspose,
"fast" (cpu_conv) owns the same parameters and computes the same function."""

import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mipae_jax.models import cpu_conv, dcgan, layers, networks
from mipae_jax.models.cpu_conv import forms, geometry, gradients

_STRIDED = dict(kernel_size=(4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))
_VALID = dict(kernel_size=(4, 4), padding="VALID")
_UP_STRIDED = dict(kernel_size=(4, 4), strides=(2, 2), padding=((2, 2), (2, 2)))

# (factory, flax twin, input shape, features, settings): every conv of the
# DCGAN 64x64 encoder / decoder, with 1- and 3-channel images and the
# decoder's U-Net inputs (skips double the input channels).
_DCGAN_LAYERS = {
  "enc1_gray": (layers.conv, nn.Conv, (2, 64, 64, 1), 64, _STRIDED),
  "enc1_rgb": (layers.conv, nn.Conv, (2, 64, 64, 3), 64, _STRIDED),
  "enc2": (layers.conv, nn.Conv, (2, 32, 32, 64), 128, _STRIDED),
  "enc3": (layers.conv, nn.Conv, (2, 16, 16, 128), 256, _STRIDED),
  "enc4": (layers.conv, nn.Conv, (2, 8, 8, 256), 512, _STRIDED),
  "enc5": (layers.conv, nn.Conv, (2, 4, 4, 512), 128, _VALID),
  "dec1": (layers.conv_transpose, nn.ConvTranspose, (2, 1, 1, 133), 512, _VALID),
  "dec2": (layers.conv_transpose, nn.ConvTranspose, (2, 4, 4, 512), 256, _UP_STRIDED),
  "dec3": (layers.conv_transpose, nn.ConvTranspose, (2, 8, 8, 256), 128, _UP_STRIDED),
  "dec4": (layers.conv_transpose, nn.ConvTranspose, (2, 16, 16, 128), 64, _UP_STRIDED),
  "dec5_gray": (
    layers.conv_transpose,
    nn.ConvTranspose,
    (2, 32, 32, 64),
    1,
    _UP_STRIDED,
  ),
  "dec5_rgb_skip": (
    layers.conv_transpose,
    nn.ConvTranspose,
    (2, 32, 32, 128),
    3,
    _UP_STRIDED,
  ),
}


def _normal(shape, seed, dtype=jnp.float32):
  return jnp.asarray(np.random.RandomState(seed).randn(*shape), dtype)


def _assert_close(actual, expected, rtol):
  """Max abs error within rtol times the expected array's largest entry."""
  actual = np.asarray(actual, np.float32)
  expected = np.asarray(expected, np.float32)
  assert actual.shape == expected.shape
  scale = max(float(np.max(np.abs(expected))), 1e-30)
  np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def _output_and_grads(module, variables, x, cotangent):
  """Output and d<output, cotangent> w.r.t. params and input, jitted."""

  def inner(params, x):
    y = module.apply({"params": params}, x)
    return jnp.vdot(y.astype(jnp.float32), cotangent), y

  (_, y), grads = jax.jit(jax.value_and_grad(inner, argnums=(0, 1), has_aux=True))(
    variables["params"], x
  )
  return y, grads


@pytest.mark.parametrize("name", sorted(_DCGAN_LAYERS))
def test_params_are_those_of_the_flax_layer(name):
  ours, twin, shape, features, settings = _DCGAN_LAYERS[name]
  x = jnp.zeros(shape)
  expected = jax.jit(twin(features, **settings).init)(jax.random.key(3), x)
  for impl in ("plain", "fast"):
    got = jax.jit(ours(features, impl=impl, **settings).init)(jax.random.key(3), x)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    jax.tree.map(np.testing.assert_array_equal, got, expected)


def _check_fast_equals_plain(name):
  """Plain == flax's layer; fast == plain in output and all gradients."""
  ours, twin, shape, features, settings = _DCGAN_LAYERS[name]
  x = _normal(shape, seed=0)
  variables = twin(features, **settings).init(jax.random.key(1), x)
  # A non-zero bias, so its gradient path is exercised too.
  variables = jax.tree.map(lambda v: v + 0.1, variables)
  flax_y = twin(features, **settings).apply(variables, x)
  cotangent = _normal(flax_y.shape, seed=1)
  plain = ours(features, impl="plain", **settings)
  assert type(plain) is twin
  plain_y, plain_grads = _output_and_grads(plain, variables, x, cotangent)
  fast_y, fast_grads = _output_and_grads(
    ours(features, impl="fast", **settings), variables, x, cotangent
  )
  np.testing.assert_array_equal(plain_y, flax_y)
  _assert_close(fast_y, plain_y, rtol=1e-5)
  jax.tree.map(lambda a, b: _assert_close(a, b, rtol=1e-5), fast_grads, plain_grads)


@pytest.mark.parametrize("name", sorted(_DCGAN_LAYERS))
def test_fast_equals_plain_in_output_and_gradients(name):
  _check_fast_equals_plain(name)


def _without_winograd(monkeypatch):
  """The fast forms that layers too thin for Winograd's (or odd maps) take."""
  monkeypatch.setattr(forms, "WINOGRAD_MIN_CHANNELS", 10**9)


@pytest.mark.parametrize("name", ["enc2", "enc3", "enc4", "dec2", "dec4", "dec5_gray"])
def test_fast_equals_plain_in_its_large_batch_forms(name, monkeypatch):
  """Input gradient as a `lax` conv, kernel gradient summed over batch chunks."""
  _without_winograd(monkeypatch)
  monkeypatch.setattr(forms, "IM2COL_MAX_BYTES", 0)
  monkeypatch.setattr(gradients, "KERNEL_GRAD_CHUNK_BYTES", 1)  # one sample a chunk
  _check_fast_equals_plain(name)


@pytest.mark.parametrize("name", sorted(_DCGAN_LAYERS))
def test_fast_equals_plain_in_its_matrix_forms(name, monkeypatch):
  """Every strided layer with the im2col / col2im forward of small maps."""
  _without_winograd(monkeypatch)
  monkeypatch.setattr(forms, "MATRIX_FORM_MAX_PIXELS", 10**9)
  _check_fast_equals_plain(name)


def _forward_convolutions(impl, name):
  """Convolution ops in the compiled forward of a DCGAN layer."""
  ours, _, shape, features, settings = _DCGAN_LAYERS[name]
  module = ours(features, impl=impl, **settings)
  x = jnp.zeros(shape)
  variables = module.init(jax.random.key(0), x)
  hlo = jax.jit(module.apply).lower(variables, x).compile().as_text()
  return [line for line in hlo.splitlines() if "convolution(" in line]


@pytest.mark.parametrize("name", ["enc4", "dec2"])
def test_small_maps_run_forward_as_one_matrix_product(name, monkeypatch):
  _without_winograd(monkeypatch)
  assert _forward_convolutions("plain", name)  # the check can fail
  assert not _forward_convolutions("fast", name)


def _compiled_gradient_lines(module, x):
  """Lines of the compiled forward + both gradients of sum(module(x) ** 2)."""
  variables = module.init(jax.random.key(0), x)

  def loss(params, x):
    return jnp.sum(module.apply({"params": params}, x) ** 2)

  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(variables["params"], x)
  return hlo.compile().as_text().splitlines()


def _convolutions_and_dots(module, x):
  """(convolution ops, dot ops) in the compiled forward + both gradients."""
  lines = _compiled_gradient_lines(module, x)
  return (
    [line for line in lines if "convolution(" in line],
    [line for line in lines if " dot(" in line],
  )


@pytest.mark.parametrize("name", ["enc2", "enc3", "enc4", "dec2", "dec3", "dec4"])
def test_strided_layers_run_as_winograd_tile_products(name):
  """9 products for each of output, input and kernel gradient; no conv."""
  ours, _, shape, features, settings = _DCGAN_LAYERS[name]
  x = jnp.zeros(shape)
  convolutions, _ = _convolutions_and_dots(ours(features, impl="plain", **settings), x)
  assert convolutions  # the check can fail
  convolutions, dots = _convolutions_and_dots(
    ours(features, impl="fast", **settings), x
  )
  assert not convolutions
  assert len(dots) == 27


@pytest.mark.parametrize("name", ["enc1_rgb", "dec5_rgb_skip"])
def test_image_layers_do_not_take_the_winograd_form(name):
  ours, _, shape, features, settings = _DCGAN_LAYERS[name]
  module = ours(features, impl="fast", **settings)
  _, dots = _convolutions_and_dots(module, jnp.zeros(shape))
  assert len(dots) < 27


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize(
  "kernel_size, strides, padding, conv_map, transposed_map",
  [
    ((6, 6), (3, 3), ((2, 2), (2, 2)), (12, 6), (2, 4)),
    ((4, 4), (2, 2), ((0, 3), (2, 1)), (7, 11), (4, 6)),
  ],
)
def test_winograd_form_equals_flax_beyond_the_dcgan_settings(
  kernel_size, strides, padding, conv_map, transposed_map, transposed
):
  """Stride 3, uneven pads, non-square maps: 8 channels on the wide side."""
  ours, twin, shape, features = (
    (layers.conv_transpose, nn.ConvTranspose, (2, *transposed_map, 5), 8)
    if transposed
    else (layers.conv, nn.Conv, (2, *conv_map, 8), 5)
  )
  settings = dict(kernel_size=kernel_size, strides=strides, padding=padding)
  module = ours(features, impl="fast", **settings)
  x = _normal(shape, seed=0)
  convolutions, _ = _convolutions_and_dots(module, x)
  assert not convolutions  # the Winograd form applies
  variables = twin(features, **settings).init(jax.random.key(1), x)
  expected = twin(features, **settings).apply(variables, x)
  cotangent = _normal(expected.shape, seed=1)
  fast_y, fast_grads = _output_and_grads(module, variables, x, cotangent)
  _, plain_grads = _output_and_grads(
    ours(features, impl="plain", **settings), variables, x, cotangent
  )
  _assert_close(fast_y, expected, rtol=1e-5)
  jax.tree.map(lambda a, b: _assert_close(a, b, rtol=1e-5), fast_grads, plain_grads)


@pytest.mark.parametrize("name", ["enc2", "enc5", "dec1", "dec3", "dec5_rgb_skip"])
def test_fast_equals_plain_in_bfloat16(name):
  ours, _, shape, features, settings = _DCGAN_LAYERS[name]
  x = _normal(shape, seed=0, dtype=jnp.bfloat16)
  outputs = {}
  for impl in ("plain", "fast"):
    module = ours(features, impl=impl, dtype=jnp.bfloat16, **settings)
    variables = module.init(jax.random.key(1), x)
    y = jax.jit(module.apply)(variables, x)
    assert y.dtype == jnp.bfloat16
    outputs[impl] = y
  # bfloat16 keeps 8 bits of mantissa; sums of hundreds of terms differ in
  # rounding order between the two forms.
  _assert_close(outputs["fast"], outputs["plain"], rtol=3e-2)


@pytest.mark.parametrize(
  "kernel_size, strides, padding, spatial",
  [
    ((4, 4), (2, 2), "SAME", 9),
    ((6, 4), (3, 2), ((2, 1), (0, 3)), 7),
    ((2, 2), (2, 2), ((0, 0), (1, 1)), 5),
    ((3, 3), (1, 1), "SAME", 5),
    ((5, 5), (5, 5), "VALID", 5),
  ],
)
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("matrix_forms", [False, True])
def test_fast_equals_flax_beyond_the_dcgan_settings(
  kernel_size, strides, padding, spatial, transposed, matrix_forms, monkeypatch
):
  if matrix_forms:
    monkeypatch.setattr(forms, "MATRIX_FORM_MAX_PIXELS", 10**9)
  ours, twin = (
    (layers.conv_transpose, nn.ConvTranspose) if transposed else (layers.conv, nn.Conv)
  )
  settings = dict(kernel_size=kernel_size, strides=strides, padding=padding)
  x = _normal((2, spatial, spatial + 1, 3), seed=0)
  variables = twin(4, **settings).init(jax.random.key(1), x)
  expected = twin(4, **settings).apply(variables, x)
  cotangent = _normal(expected.shape, seed=1)
  fast_y, fast_grads = _output_and_grads(
    ours(4, impl="fast", **settings), variables, x, cotangent
  )
  _, plain_grads = _output_and_grads(
    ours(4, impl="plain", **settings), variables, x, cotangent
  )
  _assert_close(fast_y, expected, rtol=1e-5)
  jax.tree.map(lambda a, b: _assert_close(a, b, rtol=1e-5), fast_grads, plain_grads)


def _input_dilated_convolutions(impl, name):
  """Convolution ops over a zero-dilated input in the compiled fwd + bwd."""
  ours, _, shape, features, settings = _DCGAN_LAYERS[name]
  module = ours(features, impl=impl, **settings)
  return [
    line
    for line in _compiled_gradient_lines(module, jnp.zeros(shape))
    if "convolution(" in line and "lhs_dilate" in line
  ]


@pytest.mark.parametrize(
  "name", ["enc1_rgb", "enc2", "enc4", "dec2", "dec4", "dec5_gray"]
)
def test_fast_form_has_no_input_dilated_convolution(name):
  """XLA CPU's slow case, a conv over a zero-dilated input, is gone."""
  assert _input_dilated_convolutions("plain", name)  # the check can fail
  assert not _input_dilated_convolutions("fast", name)


def test_conv_transpose_pads_give_pytorch_output_size():
  assert geometry.conv_transpose_pads("SAME", (4, 4), (2, 2)) == ((2, 2), (2, 2))
  assert geometry.conv_transpose_pads("VALID", (4, 4), (1, 1)) == ((3, 3), (3, 3))
  x = jnp.zeros((1, 8, 8, 2))
  for impl in ("plain", "fast"):
    module = layers.conv_transpose(5, impl=impl, **_UP_STRIDED)
    y = module.apply(module.init(jax.random.key(0), x), x)
    assert y.shape == (1, 16, 16, 5)


def test_space_to_depth_inverts_depth_to_space():
  x = _normal((2, 6, 4, 3), seed=0)
  z = geometry.space_to_depth(x, 2)
  assert z.shape == (2, 3, 2, 12)
  np.testing.assert_array_equal(z[0, 1, 1, 3:6], x[0, 2, 3])
  np.testing.assert_array_equal(geometry.depth_to_space(z, 2), x)


def test_unknown_impl_is_rejected():
  with pytest.raises(ValueError, match="impl"):
    layers.conv(4, kernel_size=(3, 3), impl="fastest")


@pytest.mark.parametrize(
  "factory, plain, fast",
  [
    (layers.conv, nn.Conv, cpu_conv.Conv2D),
    (layers.conv_transpose, nn.ConvTranspose, cpu_conv.ConvTranspose2D),
  ],
)
def test_plain_is_the_flax_layer_and_auto_is_fast_on_one_cpu_process_only(
  factory, plain, fast, monkeypatch
):
  assert type(factory(4, 3, impl="plain")) is plain
  assert type(factory(4, 3, impl="fast")) is fast
  for backend, impl in (("cpu", "fast"), ("gpu", "plain"), ("tpu", "plain")):
    monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
    assert layers.resolve_conv_impl("auto") == impl
    assert type(factory(4, 3)) is (fast if impl == "fast" else plain)
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  assert layers.resolve_conv_impl("auto") == "plain"  # docs/scaling.md
  assert type(factory(4, 3)) is plain


def test_plain_transposed_conv_does_not_flip_its_kernel():
  assert layers.conv_transpose(4, 3, impl="plain").transpose_kernel is False


def test_inference_frames_per_call_auto_is_16_on_cpu_else_one_call(monkeypatch):
  resolve = networks.resolve_inference_frames_per_call
  assert resolve(0) == 0 and resolve(5) == 5
  for backend, frames in (("cpu", 16), ("gpu", 0), ("tpu", 0)):
    monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
    assert resolve("auto") == frames


def test_auto_is_fast_on_this_cpu_backend():
  assert jax.default_backend() == "cpu"
  assert layers.resolve_conv_impl("auto") == "fast"
  assert isinstance(layers.conv(4, 3), cpu_conv.Conv2D)


def _network_output_and_grads(module, variables, inputs, call):
  """Outputs and gradients (params, inputs) of sum(y * (1 + y)) over every
  output y, BatchNorm with its running statistics (an affine map: in training
  mode the statistics of a small batch make conv biases' gradients zero and
  amplify rounding)."""

  def loss(params, inputs):
    out = module.apply({**variables, "params": params}, *inputs, **call, train=False)
    return sum(jnp.sum(y * (1.0 + y)) for y in jax.tree.leaves(out)), out

  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
    variables["params"], inputs
  )
  return out, grads


@pytest.mark.parametrize("network", ["encoder", "decoder"])
def test_dcgan_networks_plain_equal_fast_with_the_same_params(network):
  """Variables made by "plain" load into "fast": same outputs and gradients."""
  if network == "encoder":
    make = lambda impl: dcgan.DCGANEncoder(16, conv_impl=impl)  # noqa: E731
    inputs = (jnp.asarray(np.random.RandomState(0).rand(4, 64, 64, 3), jnp.float32),)
    call = {}
  else:
    make = lambda impl: dcgan.DCGANDecoder(3, conv_impl=impl)  # noqa: E731
    inputs = (_normal((4, 16), seed=1), _normal((4, 5), seed=2))
    call = dict(skips=None)
  variables = make("plain").init(jax.random.key(0), *inputs, **call, train=False)
  # Non-zero biases, so their gradient paths are exercised too.
  variables = {
    **variables,
    "params": jax.tree.map(lambda v: v + 0.01, variables["params"]),
  }
  fast_shapes = jax.eval_shape(
    lambda key: make("fast").init(key, *inputs, **call, train=False),
    jax.random.key(0),
  )
  assert jax.tree.map(jnp.shape, fast_shapes) == jax.tree.map(jnp.shape, variables)
  plain_out, plain_grads = _network_output_and_grads(
    make("plain"), variables, inputs, call
  )
  fast_out, fast_grads = _network_output_and_grads(
    make("fast"), variables, inputs, call
  )
  jax.tree.map(lambda a, b: _assert_close(a, b, rtol=1e-5), fast_out, plain_out)
  jax.tree.map(lambda a, b: _assert_close(a, b, rtol=1e-5), fast_grads, plain_grads)


_WITHOUT_CPU_CONV = """
import sys

sys.modules["mipae_jax.models.cpu_conv"] = None  # its import now fails
import jax
import jax.numpy as jnp

from mipae_jax.models import dcgan, layers, resnet, vgg

x = jnp.zeros((1, 64, 64, 3))
codes = (jnp.zeros((1, 8)), jnp.zeros((1, 5)))
for module, inputs in (
  (dcgan.DCGANEncoder(8, conv_impl="plain"), (x,)),
  (dcgan.DCGANDecoder(3, conv_impl="plain"), (*codes, None)),
):
  module.apply(module.init(jax.random.key(0), *inputs, train=False), *inputs, train=False)
for module in (
  vgg.VGGContentEncoder(8, conv_impl="plain"),
  resnet.ResNetPoseEncoder(8, conv_impl="plain"),
):
  jax.eval_shape(lambda m=module: m.init_with_output(jax.random.key(0), x, train=False))
assert [name for name in sys.modules if "cpu_conv" in name] == [
  "mipae_jax.models.cpu_conv"  # the None above
]
try:
  layers.conv(4, 3, impl="fast")
except ImportError:
  print("fast needs cpu_conv")
"""


@pytest.mark.slow  # a fresh interpreter initialising every network: about 30 s
def test_models_run_plain_without_the_cpu_conv_package():
  result = subprocess.run(
    [sys.executable, "-c", _WITHOUT_CPU_CONV],
    capture_output=True,
    text=True,
    cwd=pathlib.Path(__file__).resolve().parents[1],
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "fast needs cpu_conv"
