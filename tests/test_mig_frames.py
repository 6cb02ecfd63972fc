"""The MIG protocol: static frames with known factors, and its calibration."""

import math

import numpy as np
import pytest
from conftest import tiny_config, write_tiny_mnist

from mipae_jax import config_validation
from mipae_jax.datasets import moving_dsprites, moving_mnist, moving_mpi3d
from mipae_jax.evaluation import disentanglement, mig_frames, mig_scores
from mipae_jax.experiments import reproduce

NUM_FRAMES = 2_000
# A synthetic MPI3D file of the real layout: 72 content combinations (24 of
# them test-only) x 8 x 8 arm angles, 57 MB. At 1,000 frames the supports
# are all 24 test contents and all 64 poses (joint_supports).
MPI3D_SIZES = (2, 3, 2, 2, 3, 8, 8)
MPI3D_FRAMES = 1_000


@pytest.fixture(scope="module")
def frames_and_factors(tmp_path_factory):
  """The joint protocol's frames of the tiny fixed Moving dSprites."""
  dataset = tiny_config(
    tmp_path_factory.mktemp("unused"), **{"dataset.builder_config": "fixed_small"}
  ).dataset
  return dataset, mig_frames.mig_frames(dataset, NUM_FRAMES, seed=0, protocol="joint")


@pytest.fixture(scope="module")
def per_object_frames(tmp_path_factory):
  """The per-object protocol's frame sets of the tiny fixed Moving dSprites."""
  dataset = tiny_config(
    tmp_path_factory.mktemp("unused"), **{"dataset.builder_config": "fixed_small"}
  ).dataset
  return dataset, mig_frames.mig_frame_sets(dataset, NUM_FRAMES, seeds=[0])


def _mpi3d_config(data_dir, manual_dir, **overrides):
  return reproduce.build_config(
    "moving_mpi3d",
    "mipae",
    "tiny",
    data_dir=str(data_dir),
    overrides={"dataset.manual_dir": str(manual_dir), **overrides},
  )


@pytest.fixture(scope="module")
def mpi3d_manual_dir(tmp_path_factory):
  """images [*MPI3D_SIZES, 64, 64, 3]: each photograph's first row names its
  7 factor indices, so no two are the same."""
  manual_dir = tmp_path_factory.mktemp("mpi3d")
  images = np.zeros((*MPI3D_SIZES, 64, 64, 3), np.uint8)
  flat = images.reshape(-1, 64, 64, 3)
  flat[:, 0, :7, 0] = np.stack(np.unravel_index(np.arange(len(flat)), MPI3D_SIZES), 1)
  np.savez(manual_dir / moving_mpi3d.MPI3D_FILE, images=images)
  return manual_dir


@pytest.fixture(scope="module")
def mpi3d_frames(tmp_path_factory, mpi3d_manual_dir):
  dataset = _mpi3d_config(tmp_path_factory.mktemp("unused"), mpi3d_manual_dir).dataset
  return dataset, mig_frames.mig_frames(dataset, MPI3D_FRAMES, seed=0)


def _labels(factors):
  return np.unique(factors, axis=0, return_inverse=True)[1].reshape(-1)


def _plug_in_mi(a, b):
  joint = np.zeros((a.max() + 1, b.max() + 1))
  np.add.at(joint, (a, b), 1.0)
  joint /= joint.sum()
  outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
  nonzero = joint > 0
  return float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])))


def test_frames_are_distinct_and_re_render_from_their_factors(frames_and_factors):
  dataset, (frames, content, pose) = frames_and_factors
  assert frames.shape == (NUM_FRAMES, 64, 64, 3) and frames.dtype == np.uint8
  assert len(np.unique(frames.reshape(NUM_FRAMES, -1), axis=0)) == NUM_FRAMES
  builder_config = mig_frames.prepared.get_builder(dataset).builder_config
  np.testing.assert_array_equal(
    moving_dsprites.render_frames(builder_config, content[:50], pose[:50]), frames[:50]
  )


def test_each_label_repeats_and_content_is_independent_of_pose(frames_and_factors):
  _, (_, content, pose) = frames_and_factors
  support = math.ceil(2 * math.sqrt(NUM_FRAMES))
  content_labels, pose_labels = _labels(content), _labels(pose)
  for labels in (content_labels, pose_labels):
    counts = np.bincount(labels)
    assert len(counts) == support and counts.min() >= 5
  # Plug-in MI is biased upward by the sparse L x L table; independent
  # draws of the same size set the level that "no dependence" reaches.
  rng = np.random.default_rng(1)
  independent = _plug_in_mi(
    rng.integers(0, support, NUM_FRAMES), rng.integers(0, support, NUM_FRAMES)
  )
  assert _plug_in_mi(content_labels, pose_labels) <= independent


def test_oracle_and_swapped_codes_reach_the_calibration_thresholds(frames_and_factors):
  """The ceiling and floor of the protocol at this size: a perfect encoder
  scores >= 0.9, one that swaps the two codes <= -0.9; noise codes ~0."""
  _, (_, content, pose) = frames_and_factors
  z_c, z_p = mig_frames.oracle_codes(content, pose, 128, 5)
  assert disentanglement.mig(content, pose, z_c, z_p)["MIG"] >= 0.9
  assert disentanglement.mig(content, pose, z_p, z_c)["MIG"] <= -0.9
  rng = np.random.default_rng(0)
  noise = disentanglement.mig(
    content, pose, rng.normal(size=(NUM_FRAMES, 128)), rng.normal(size=(NUM_FRAMES, 5))
  )
  assert abs(noise["MIG"]) < 0.05


def _one_object_codes(content, pose, objects, obj=0, seed=0):
  """A perfect encoder of object `obj` alone: its content in z_c, its pose in z_p."""
  return mig_frames.oracle_codes(
    content[:, list(objects.content_columns[obj])],
    pose[:, list(objects.pose_columns[obj])],
    128,
    5,
    seed=seed,
  )


def test_per_object_supports_cross_the_objects_independently(per_object_frames):
  """Each sprite has its own content and pose support; the joint labels are
  their products (and the depth order), and the sprites' labels are as
  independent as two independent draws of the same sizes."""
  _, frame_sets = per_object_frames
  frames, content, pose = frame_sets.sets[0]
  objects = frame_sets.objects
  assert objects.names == ("sprite0", "sprite1")
  assert objects.content_columns == ((0, 1, 2), (3, 4, 5))
  assert objects.pose_columns == ((0, 1), (2, 3))
  assert objects.scene_columns == (6,) and objects.num_scene == 2
  assert len(np.unique(frames.reshape(NUM_FRAMES, -1), axis=0)) == NUM_FRAMES
  num_c, num_p = mig_frames.per_object_supports(NUM_FRAMES, 2, 2, 220, 1024)
  assert (num_c, num_p) == (7, 9)
  blocks = {}
  for s in range(2):
    blocks[s] = (
      _labels(content[:, list(objects.content_columns[s])]),
      _labels(pose[:, list(objects.pose_columns[s])]),
    )
    assert len(np.unique(blocks[s][0])) == num_c
    assert len(np.unique(blocks[s][1])) == num_p
  assert len(np.unique(content, axis=0)) == num_c**2 * 2
  assert len(np.unique(pose, axis=0)) == num_p**2
  rng = np.random.default_rng(1)
  for index, size in ((0, num_c), (1, num_p)):
    independent = _plug_in_mi(
      rng.integers(0, size, NUM_FRAMES), rng.integers(0, size, NUM_FRAMES)
    )
    between_sprites = _plug_in_mi(blocks[0][index], blocks[1][index])
    assert between_sprites <= 1.5 * independent and between_sprites < 0.02


def test_per_object_protocol_scores_one_sprite_of_two_below_the_oracle(
  per_object_frames,
):
  """The calibration that matters: an encoder of one sprite of two scores
  <= 0.6 (about 0.46 here), the whole-scene oracle >= 0.9, swapped <= -0.9,
  and each object's captured shares say which sprite is encoded."""
  _, frame_sets = per_object_frames
  _, content, pose = frame_sets.sets[0]
  objects = frame_sets.objects
  z_c, z_p = mig_frames.oracle_codes(content, pose, 128, 5)
  terms = mig_scores.mig_with_ceiling(content, pose, z_c, z_p, objects)
  assert terms["MIG"] >= 0.9 and terms["oracle_MIG"] >= 0.9
  assert terms["swapped_MIG"] <= -0.9 and terms["one_object_MIG"] <= 0.6
  for s in ("sprite0", "sprite1"):
    for group in ("content", "pose"):
      assert terms[disentanglement.captured_term(group, s)] > 0.95
  one_c, one_p = _one_object_codes(content, pose, objects, obj=1)
  one = mig_scores.mig_with_ceiling(content, pose, one_c, one_p, objects)
  assert 0.3 <= one["MIG"] <= 0.6
  for group in ("content", "pose"):
    assert one[disentanglement.captured_term(group, "sprite1")] > 0.95
    assert one[disentanglement.captured_term(group, "sprite0")] < 0.1
  # The joint protocol cannot tell the two apart: its blind spot.
  dataset, _ = per_object_frames
  _, joint_content, joint_pose = mig_frames.mig_frames(
    dataset, NUM_FRAMES, protocol="joint"
  )
  one_c, one_p = _one_object_codes(joint_content, joint_pose, objects)
  assert disentanglement.mig(joint_content, joint_pose, one_c, one_p)["MIG"] > 0.85


def test_reference_protocol_repeats_almost_no_label(frames_and_factors):
  """Why it is not the default: with two sprites, i.i.d. factors make nearly
  every joint label unique at this size."""
  dataset, _ = frames_and_factors
  _, content, pose = mig_frames.mig_frames(dataset, 500, protocol="reference")
  assert len(np.unique(content, axis=0)) > 0.95 * 500
  assert len(np.unique(pose, axis=0)) > 0.95 * 500


@pytest.mark.parametrize(
  "dataset", ["fixed_small", "rotating_small", "moving_mnist", "moving_mpi3d"]
)
@pytest.mark.parametrize(
  "codes, low, high",
  [("oracle", 0.9, 1.01), ("swapped", -1.01, -0.9), ("one_object", 0.3, 0.6)],
)
def test_the_evaluation_path_scores_oracle_codes_at_the_ceiling(
  tmp_path, monkeypatch, mpi3d_manual_dir, dataset, codes, low, high
):
  """evaluate_mig itself under the default (per-object) protocol, its encoder
  replaced by a perfect, a swapped, or a one-object one: at 2 x 1,000 frames
  each reaches its threshold with a tight interval. MPI3D has one object,
  so its one-object encoder is the whole-scene one."""
  fields = {"eval.num_mig_frames": 2_000, "eval.mig_folds": 2}
  if dataset == "moving_mpi3d":
    config = _mpi3d_config(tmp_path, mpi3d_manual_dir, **fields)
    if codes == "one_object":
      low, high = 0.9, 1.01
  elif dataset == "moving_mnist":
    config, _ = _tiny_mnist(tmp_path, **fields)
  else:
    config = tiny_config(tmp_path, **fields, **{"dataset.builder_config": dataset})
  assert config.eval.mig_protocol == "per_object"
  config_validation.validate_eval(config)
  table = {}

  def oracle_encoder(encode_fn, main, frames, batch_size, mesh):
    content, pose, objects = table[frames.tobytes()[:4096], len(frames)]
    if codes == "one_object" and objects is not None:
      return _one_object_codes(content, pose, objects, seed=7)
    z_c, z_p = mig_frames.oracle_codes(content, pose, 128, 5, seed=7)
    return (z_p, z_c) if codes == "swapped" else (z_c, z_p)

  real_frame_sets = mig_frames.mig_frame_sets

  def remembering(*args, **kwargs):
    frame_sets = real_frame_sets(*args, **kwargs)
    for frames, content, pose in frame_sets.sets:
      table[frames.tobytes()[:4096], len(frames)] = (content, pose, frame_sets.objects)
    return frame_sets

  monkeypatch.setattr(mig_scores, "encode_frames", oracle_encoder)
  monkeypatch.setattr(mig_frames, "mig_frame_sets", remembering)
  info = type(
    "Info",
    (),
    {
      "content_is_partial": False,
      "content_factor_names": ("c",),
      "pose_factor_names": ("p",),
    },
  )
  result, _ = mig_scores.evaluate_mig(config, info, None, None, None)
  assert low <= result["MIG"] <= high
  assert result["partial"] is False  # static frames: the whole content
  assert result["content_factor_names"][0] == {
    "moving_mpi3d": "object_color",
    "moving_mnist": "digit0_image",
  }.get(dataset, "sprite0_shape")
  assert result["num_frame_sets"] == 2 and result["num_frames"] == 2_000
  assert result["oracle_MIG"] >= 0.9 and result["swapped_MIG"] <= -0.9
  assert result["MIG_ci95"] < 0.05
  if dataset == "moving_mpi3d":
    assert result["objects"] == [] and "one_object_MIG" not in result
  else:
    assert len(result["objects"]) == 2
    assert 0.3 <= result["one_object_MIG"] <= 0.6


def test_rotating_dsprites_frames_are_distinct_and_reach_the_ceiling(tmp_path):
  """Rotating, joint protocol: only 72 test content rows (6 per sprite, 2
  depth orders), so the content support is all of them; frames that only the invisible depth
  order tells apart are replaced, so all 2,000 differ."""
  dataset = tiny_config(
    tmp_path, **{"dataset.builder_config": "rotating_small"}
  ).dataset
  frames, content, pose = mig_frames.mig_frames(dataset, NUM_FRAMES, protocol="joint")
  assert len(np.unique(frames.reshape(NUM_FRAMES, -1), axis=0)) == NUM_FRAMES
  assert (len(np.unique(content, axis=0)), len(np.unique(pose, axis=0))) == (72, 90)
  builder_config = mig_frames.prepared.get_builder(dataset).builder_config
  np.testing.assert_array_equal(
    moving_dsprites.render_frames(builder_config, content[:50], pose[:50]), frames[:50]
  )
  z_c, z_p = mig_frames.oracle_codes(content, pose, 128, 5)
  assert disentanglement.mig(content, pose, z_c, z_p)["MIG"] >= 0.9
  assert disentanglement.mig(content, pose, z_p, z_c)["MIG"] <= -0.9


def test_mpi3d_frames_are_distinct_test_contents_and_re_render(
  mpi3d_frames, mpi3d_manual_dir
):
  dataset, (frames, content, pose) = mpi3d_frames
  assert frames.shape == (MPI3D_FRAMES, 64, 64, 3) and frames.dtype == np.uint8
  assert len(np.unique(frames.reshape(MPI3D_FRAMES, -1), axis=0)) == MPI3D_FRAMES
  # Each photograph names the factors it was gathered from.
  np.testing.assert_array_equal(frames[:, 0, :7, 0], np.concatenate([content, pose], 1))
  images = moving_mpi3d.load_images(mpi3d_manual_dir / moving_mpi3d.MPI3D_FILE)
  builder_config = mig_frames.prepared.get_builder(dataset).builder_config
  np.testing.assert_array_equal(
    moving_mpi3d.render_frames(builder_config, content, pose, images), frames
  )
  split = moving_mpi3d.split_contents(builder_config, MPI3D_SIZES[:5])
  test_contents = {tuple(c) for c in split["test"].tolist()}
  assert {tuple(c) for c in content.tolist()} == test_contents
  _, reference_content, _ = mig_frames.mig_frames(dataset, 200, protocol="reference")
  assert {tuple(c) for c in reference_content.tolist()} <= test_contents


def test_mpi3d_labels_repeat_and_content_is_independent_of_pose(mpi3d_frames):
  _, (_, content, pose) = mpi3d_frames
  supports = mig_frames.joint_supports(MPI3D_FRAMES, 24, 64)
  assert supports == (24, 64)
  content_labels, pose_labels = _labels(content), _labels(pose)
  for labels, support in zip((content_labels, pose_labels), supports, strict=True):
    counts = np.bincount(labels)
    assert len(counts) == support and counts.min() >= 5
  rng = np.random.default_rng(1)
  independent = _plug_in_mi(
    rng.integers(0, supports[0], MPI3D_FRAMES),
    rng.integers(0, supports[1], MPI3D_FRAMES),
  )
  assert _plug_in_mi(content_labels, pose_labels) <= independent


def test_mpi3d_oracle_and_swapped_codes_reach_the_calibration_thresholds(mpi3d_frames):
  _, (_, content, pose) = mpi3d_frames
  z_c, z_p = mig_frames.oracle_codes(content, pose, 128, 10)
  assert disentanglement.mig(content, pose, z_c, z_p)["MIG"] >= 0.9
  assert disentanglement.mig(content, pose, z_p, z_c)["MIG"] <= -0.9
  rng = np.random.default_rng(0)
  noise = disentanglement.mig(
    content,
    pose,
    rng.normal(size=(MPI3D_FRAMES, 128)),
    rng.normal(size=(MPI3D_FRAMES, 10)),
  )
  assert abs(noise["MIG"]) < 0.05


def test_mpi3d_missing_file_or_too_many_frames_are_clear_errors(
  tmp_path, mpi3d_manual_dir
):
  empty = tmp_path / "manual"
  empty.mkdir()
  with pytest.raises(FileNotFoundError) as error:
    mig_frames.mig_frames(_mpi3d_config(tmp_path, empty).dataset, 10)
  message = str(error.value)
  assert moving_mpi3d.MPI3D_FILE in message and str(empty) in message
  assert "\n" not in message
  dataset = _mpi3d_config(tmp_path, mpi3d_manual_dir).dataset
  with pytest.raises(ValueError, match=r"num_frames=1537 exceeds the 24 x 64 = 1536"):
    mig_frames.mig_frames(dataset, 24 * 64 + 1)


def test_mpi3d_configs_score_calibrated_static_frames():
  for method in reproduce.METHODS:
    config = reproduce.paper_config("moving_mpi3d", method)
    assert config.eval.mig_protocol == "per_object"
    config_validation.validate_eval(config)


def _tiny_mnist(tmp_path, **overrides):
  """The tiny Moving MNIST config on 10 test digits, and their idx dir."""
  manual_dir = write_tiny_mnist(tmp_path / "mnist")
  config = reproduce.build_config(
    "moving_mnist",
    "mipae",
    "tiny",
    data_dir=str(tmp_path / "tfds"),
    overrides={"dataset.manual_dir": str(manual_dir), **overrides},
  )
  return config, manual_dir


def test_mnist_frames_are_distinct_test_digits_and_reach_the_ceiling(tmp_path):
  """Moving MNIST: content is each digit's index among the test images
  (10 tiny test digits: 100 ordered pairs, so the support is 90 of them);
  frames that only the order of two grey digits tells apart are replaced."""
  config, manual_dir = _tiny_mnist(tmp_path)
  frames, content, pose = mig_frames.mig_frames(
    config.dataset, NUM_FRAMES, protocol="joint"
  )
  assert frames.shape == (NUM_FRAMES, 64, 64, 1) and frames.dtype == np.uint8
  assert len(np.unique(frames.reshape(NUM_FRAMES, -1), axis=0)) == NUM_FRAMES
  assert content.min() >= 0 and content.max() < 10
  images, _ = moving_mnist.load_mnist(manual_dir, "test")
  digits = moving_mnist.resize_digits(images)
  for i in range(5):
    corners = pose[i].reshape(1, 2, 2)
    np.testing.assert_array_equal(
      moving_mnist.render_video(
        digits[content[i]], corners[..., 0], corners[..., 1], False
      )[0],
      frames[i],
    )
  z_c, z_p = mig_frames.oracle_codes(content, pose, 128, 5)
  assert disentanglement.mig(content, pose, z_c, z_p)["MIG"] >= 0.9
  assert disentanglement.mig(content, pose, z_p, z_c)["MIG"] <= -0.9
  # Its static frames name their content column by column.
  frame_sets = mig_frames.mig_frame_sets(config.dataset, 100, seeds=[0, 1])
  assert frame_sets.content_factor_names == ("digit0_image", "digit1_image")
  assert not frame_sets.content_is_partial


def test_frame_sets_read_the_source_once_and_equal_one_set_per_seed(
  tmp_path, monkeypatch
):
  """mig_frame_sets loads MNIST's idx files once for all its seeds, and each
  of its sets is the one mig_frames draws alone with that seed."""
  config, _ = _tiny_mnist(tmp_path)
  loads = []
  real_load = moving_mnist.load_mnist
  monkeypatch.setattr(
    moving_mnist, "load_mnist", lambda *a: loads.append(a) or real_load(*a)
  )
  frame_sets = mig_frames.mig_frame_sets(config.dataset, 200, seeds=[3, 4, 5])
  assert len(loads) == 1 and len(frame_sets.sets) == 3
  for seed, (frames, content, pose) in zip([3, 4, 5], frame_sets.sets, strict=True):
    alone = mig_frames.mig_frames(config.dataset, 200, seed=seed)
    for a, b in zip(alone, (frames, content, pose), strict=True):
      np.testing.assert_array_equal(a, b)
  assert not np.array_equal(frame_sets.sets[0][1], frame_sets.sets[1][1])
