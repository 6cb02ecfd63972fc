"""Tests of the MPI3D networks (Sec. IV-A): VGG E_c and D, ResNet-18 E_p."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mipae_jax.models import resnet, vgg

BATCH = 2
CHANNELS = 3
CONTENT_DIM = 128
POSE_DIM = 10
# rbg keys: the init of these networks compiles about 2x faster than with
# threefry on CPU, and the models do not depend on the generator.
INIT_KEY = jax.random.key(2, impl="rbg")


def conv_bn_params(kernel: int, in_channels: int, out_channels: int) -> int:
  """Conv kernel and bias, then BatchNorm scale and bias."""
  return kernel * kernel * in_channels * out_channels + out_channels + 2 * out_channels


def num_params(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def init_shapes(module, *args):
  """Variable shapes of `module.init(key, *args, train=False)`, no compute."""
  return jax.eval_shape(
    lambda *a: module.init(jax.random.key(0), *a, train=False), *args
  )


@pytest.fixture(scope="module")
def frames():
  content_key, pose_key = jax.random.split(jax.random.key(1))
  shape = (BATCH, 64, 64, CHANNELS)
  return jax.random.uniform(content_key, shape), jax.random.uniform(pose_key, shape)


@pytest.fixture(scope="module")
def networks():
  return {
    "content": vgg.VGGContentEncoder(CONTENT_DIM),
    "pose": resnet.ResNetPoseEncoder(POSE_DIM),
    "decoder": vgg.VGGDecoder(CHANNELS, skip_connections=True),
  }


@pytest.fixture(scope="module")
def variables(networks, frames):
  x, _ = frames
  key_content, key_pose, key_decoder = jax.random.split(INIT_KEY, 3)
  content = jax.jit(functools.partial(networks["content"].init, train=False))(
    key_content, x
  )
  pose = jax.jit(functools.partial(networks["pose"].init, train=False))(key_pose, x)
  skips = jax.eval_shape(
    functools.partial(networks["content"].apply, train=False), content, x
  )[1]
  skips = tuple(jnp.zeros(s.shape, s.dtype) for s in skips)
  decoder = jax.jit(functools.partial(networks["decoder"].init, train=False))(
    key_decoder,
    jnp.zeros((BATCH, CONTENT_DIM)),
    jnp.zeros((BATCH, POSE_DIM)),
    skips,
  )
  return {"content": content, "pose": pose, "decoder": decoder}


def reconstruction_loss(networks, params, batch_stats, x_content, x_pose):
  """Decodes E_c(x_content) with E_p(x_pose), compared to x_pose (train mode)."""

  def apply(name, *args):
    return networks[name].apply(
      {"params": params[name], "batch_stats": batch_stats[name]},
      *args,
      train=True,
      mutable=["batch_stats"],
    )

  (content_code, skips), content_updates = apply("content", x_content)
  pose_code, pose_updates = apply("pose", x_pose)
  image, decoder_updates = apply("decoder", content_code, pose_code, skips)
  loss = jnp.mean((image - x_pose) ** 2)
  new_stats = {
    "content": content_updates["batch_stats"],
    "pose": pose_updates["batch_stats"],
    "decoder": decoder_updates["batch_stats"],
  }
  return loss, (new_stats, content_code, skips, pose_code, image)


@pytest.fixture(scope="module")
def train_step(networks):
  return jax.jit(
    jax.value_and_grad(functools.partial(reconstruction_loss, networks), has_aux=True)
  )


@pytest.fixture(scope="module")
def first_step(train_step, variables, frames):
  params = {name: v["params"] for name, v in variables.items()}
  stats = {name: v["batch_stats"] for name, v in variables.items()}
  return params, stats, train_step(params, stats, *frames)


def test_content_encoder_gives_tanh_code_and_stage_skips(first_step):
  _, _, ((_, (_, content_code, skips, _, _)), _) = first_step
  assert content_code.shape == (BATCH, CONTENT_DIM)
  assert float(jnp.max(jnp.abs(content_code))) <= 1.0
  assert [s.shape for s in skips] == [
    (BATCH, 64, 64, 64),
    (BATCH, 32, 32, 128),
    (BATCH, 16, 16, 256),
    (BATCH, 8, 8, 512),
  ]


def test_pose_encoder_gives_tanh_code(first_step):
  _, _, ((_, (_, _, _, pose_code, _)), _) = first_step
  assert pose_code.shape == (BATCH, POSE_DIM)
  assert float(jnp.max(jnp.abs(pose_code))) <= 1.0
  assert float(jnp.std(pose_code)) > 0.0


def test_decoder_gives_sigmoid_image_of_frame_size(first_step):
  _, _, ((_, (_, _, _, _, image)), _) = first_step
  assert image.shape == (BATCH, 64, 64, CHANNELS)
  assert image.dtype == jnp.float32
  assert float(jnp.min(image)) >= 0.0 and float(jnp.max(image)) <= 1.0


def test_content_encoder_parameter_count_matches_architecture(networks, frames):
  shapes = init_shapes(networks["content"], frames[0])
  expected = (
    conv_bn_params(3, CHANNELS, 64)
    + conv_bn_params(3, 64, 64)
    + conv_bn_params(3, 64, 128)
    + conv_bn_params(3, 128, 128)
    + conv_bn_params(3, 128, 256)
    + 2 * conv_bn_params(3, 256, 256)
    + conv_bn_params(3, 256, 512)
    + 2 * conv_bn_params(3, 512, 512)
    + conv_bn_params(4, 512, CONTENT_DIM)  # Head on the 4x4 map.
  )
  assert num_params(shapes["params"]) == expected == 8_689_600


def test_decoder_parameter_count_matches_architecture(variables):
  code_dim = CONTENT_DIM + POSE_DIM
  expected = (
    conv_bn_params(4, code_dim, 512)  # 1x1 -> 4x4 transposed conv.
    + conv_bn_params(3, 512 + 512, 512)  # 8x8, with the 512-channel skip.
    + conv_bn_params(3, 512, 512)
    + conv_bn_params(3, 512, 256)
    + conv_bn_params(3, 256 + 256, 256)  # 16x16.
    + conv_bn_params(3, 256, 256)
    + conv_bn_params(3, 256, 128)
    + conv_bn_params(3, 128 + 128, 128)  # 32x32.
    + conv_bn_params(3, 128, 64)
    + conv_bn_params(3, 64 + 64, 64)  # 64x64.
    + 3 * 3 * 64 * CHANNELS
    + CHANNELS  # Output conv, no BatchNorm.
  )
  assert num_params(variables["decoder"]["params"]) == expected == 11_904_579


def test_pose_encoder_parameter_count_matches_architecture(networks, frames):
  shapes = init_shapes(networks["pose"], frames[0])

  def basic_block(in_channels, out_channels):
    projection = 0
    if in_channels != out_channels:
      projection = conv_bn_params(1, in_channels, out_channels)
    return (
      conv_bn_params(3, in_channels, out_channels)
      + conv_bn_params(3, out_channels, out_channels)
      + projection
    )

  stages = sum(
    basic_block(in_channels, out_channels) + basic_block(out_channels, out_channels)
    for in_channels, out_channels in [(64, 64), (64, 128), (128, 256), (256, 512)]
  )
  expected = (
    conv_bn_params(5, CHANNELS, 64)  # Stem.
    + stages
    + conv_bn_params(3, 512, POSE_DIM)  # Head over the final 3x3 map.
  )
  assert num_params(shapes["params"]) == expected == 11_222_814


def test_skip_connections_widen_first_conv_of_each_decoder_stage(
  variables, networks, frames
):
  no_skips = vgg.VGGDecoder(CHANNELS, skip_connections=False)
  codes = (jnp.zeros((BATCH, CONTENT_DIM)), jnp.zeros((BATCH, POSE_DIM)))
  shapes = init_shapes(no_skips, *codes, None)
  with_skips = variables["decoder"]["params"]
  skip_widths = (512, 256, 128, 64)
  for stage, width in enumerate(skip_widths, start=1):
    name = f"stage{stage}_block1"
    assert with_skips[name]["conv"]["kernel"].shape[2] == 2 * width
    assert shapes["params"][name]["conv"]["kernel"].shape[2] == width
  first_conv_widths = (512, 256, 128, 64)
  skip_params = sum(
    3 * 3 * skip * out for skip, out in zip(skip_widths, first_conv_widths, strict=True)
  )
  assert num_params(with_skips) - num_params(shapes["params"]) == skip_params
  image = jax.eval_shape(lambda v: no_skips.apply(v, *codes, None, train=False), shapes)
  assert image.shape == (BATCH, 64, 64, CHANNELS)
  with pytest.raises(ValueError, match="skips"):
    networks["decoder"].apply(variables["decoder"], *codes, None, train=False)


def test_batch_stats_change_in_train_mode_only(networks, variables, frames, first_step):
  _, stats, ((_, (new_stats, _, _, _, _)), _) = first_step
  for name in ("content", "pose", "decoder"):
    changed = jax.tree.map(
      lambda old, new: bool(np.any(np.asarray(old) != np.asarray(new))),
      stats[name],
      new_stats[name],
    )
    assert all(jax.tree.leaves(changed)), name
  pose_apply = jax.jit(
    functools.partial(networks["pose"].apply, mutable=["batch_stats"]),
    static_argnames="train",
  )
  x, other = frames
  # Same first frame, different second one: only batch statistics can make
  # the first code differ.
  first_twice = jnp.stack([x[0], x[0]])
  first_and_other = jnp.stack([x[0], other[0]])
  eval_code, eval_updates = pose_apply(variables["pose"], first_twice, train=False)
  unchanged = jax.tree.map(
    lambda old, new: bool(np.all(np.asarray(old) == np.asarray(new))),
    variables["pose"]["batch_stats"],
    eval_updates["batch_stats"],
  )
  assert all(jax.tree.leaves(unchanged))
  eval_mixed, _ = pose_apply(variables["pose"], first_and_other, train=False)
  np.testing.assert_allclose(eval_mixed[0], eval_code[0], atol=1e-5)
  train_code, _ = pose_apply(variables["pose"], first_twice, train=True)
  train_mixed, _ = pose_apply(variables["pose"], first_and_other, train=True)
  assert not np.allclose(train_mixed[0], train_code[0], atol=1e-3)


def test_jitted_gradient_step_lowers_reconstruction_loss(
  train_step, first_step, frames
):
  params, stats, ((loss, _), grads) = first_step
  for name in ("content", "pose", "decoder"):
    leaves = [np.asarray(g) for g in jax.tree.leaves(grads[name])]
    assert all(np.isfinite(g).all() for g in leaves), name
    assert sum(float(np.sum(g**2)) for g in leaves) > 0.0, name
  sgd_update = jax.jit(lambda p, g: jax.tree.map(lambda w, dw: w - 0.05 * dw, p, g))
  (new_loss, _), _ = train_step(sgd_update(params, grads), stats, *frames)
  assert float(new_loss) < float(loss)


def test_initialisation_follows_dcgan(variables):
  leaves = {
    jax.tree_util.keystr(path): np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
  }
  kernel = leaves["['content']['params']['stage4_block2']['conv']['kernel']"]
  assert abs(float(np.std(kernel)) - 0.02) < 2e-4
  assert abs(float(np.mean(kernel))) < 2e-4
  scales = np.concatenate([v for k, v in leaves.items() if k.endswith("['scale']")])
  assert abs(float(np.mean(scales)) - 1.0) < 2e-3
  assert abs(float(np.std(scales)) - 0.02) < 2e-3
  biases = [v for k, v in leaves.items() if k.endswith("['bias']")]
  # Conv and BatchNorm biases: E_c 11 + 11, D 11 + 10 (no BN on the output
  # conv), E_p 21 + 21 (stem, 16 block convs, 3 projections, head).
  assert len(biases) == (11 + 11) + (11 + 10) + (21 + 21)
  assert all((b == 0).all() for b in biases)


def test_bfloat16_activations_keep_float32_params(frames):
  x, _ = frames
  for module in (
    vgg.VGGContentEncoder(CONTENT_DIM, dtype=jnp.bfloat16),
    resnet.ResNetPoseEncoder(POSE_DIM, dtype=jnp.bfloat16),
  ):
    shapes = init_shapes(module, x)
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype("float32")}
    out = jax.eval_shape(lambda v, m=module: m.apply(v, x, train=False), shapes)
    code = out[0] if isinstance(out, tuple) else out
    assert code.dtype == jnp.bfloat16


@pytest.mark.parametrize("module", [vgg.VGGContentEncoder, resnet.ResNetPoseEncoder])
def test_encoders_reject_frames_that_are_not_64x64(module):
  with pytest.raises(ValueError, match="64, 64"):
    init_shapes(module(8), jnp.zeros((BATCH, 32, 32, CHANNELS)))


def _network(name, conv_impl):
  return {
    "content": lambda: vgg.VGGContentEncoder(CONTENT_DIM, conv_impl=conv_impl),
    "pose": lambda: resnet.ResNetPoseEncoder(POSE_DIM, conv_impl=conv_impl),
    "decoder": lambda: vgg.VGGDecoder(
      CHANNELS, skip_connections=True, conv_impl=conv_impl
    ),
  }[name]()


@pytest.mark.parametrize("name", ["content", "pose", "decoder"])
def test_conv_impl_changes_the_head_form_not_the_params_or_outputs(
  name, variables, frames
):
  """Both conv_impls build the same variables and, from them, the same
  outputs; under "fast" the head conv (VGG decoder: its input transposed conv,
  between a 1x1 and a 4x4 map) is a matrix product, one convolution fewer."""
  rng = np.random.RandomState(0)
  if name == "decoder":
    skip_shapes = [(64, 64, 64), (32, 32, 128), (16, 16, 256), (8, 8, 512)]
    inputs = (
      jnp.asarray(rng.randn(BATCH, CONTENT_DIM), jnp.float32),
      jnp.asarray(rng.randn(BATCH, POSE_DIM), jnp.float32),
      tuple(jnp.asarray(rng.rand(BATCH, *s), jnp.float32) for s in skip_shapes),
    )
  else:
    inputs = (frames[0],)
  outputs, convolutions = {}, {}
  for conv_impl in ("plain", "fast"):
    module = _network(name, conv_impl)
    assert jax.tree.map(jnp.shape, init_shapes(module, *inputs)) == jax.tree.map(
      jnp.shape, variables[name]
    )
    apply = jax.jit(functools.partial(module.apply, train=False))
    convolutions[conv_impl] = (
      apply.lower(variables[name], *inputs).as_text().count("stablehlo.convolution")
    )
    outputs[conv_impl] = apply(variables[name], *inputs)
  assert convolutions["fast"] == convolutions["plain"] - 1
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
    outputs["fast"],
    outputs["plain"],
  )
