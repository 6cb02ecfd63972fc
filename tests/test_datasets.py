"""Tests of the moving-video TFDS builders, their motion and the dSprites renderer."""

import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import write_tiny_mnist

import mipae_jax.datasets  # noqa: F401  (registers the builders)
from mipae_jax.datasets import (
  common,
  dsprites_official,
  dsprites_splits,
  motion,
  moving_dsprites,
  moving_mnist,
  moving_mpi3d,
)
from mipae_jax.datasets import dsprites_shapes as shapes

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared/data"
SHARED_MNIST = SHARED / "mnist"

SEQ_LEN = 12

tfds.disable_progress_bar()


def _build(builder_cls, config, data_dir, manual_dir=None):
  builder = builder_cls(config=config, data_dir=str(data_dir))
  builder.download_and_prepare(
    file_format="array_record",
    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
  )
  return builder


def _examples(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def _assert_bouncing(positions, velocities, max_position):
  """Positions in bounds, constant speed, velocity flips exactly at walls."""
  positions = positions.reshape(len(positions), -1)
  velocities = velocities.reshape(len(velocities), -1)
  upper = np.broadcast_to(max_position, positions.shape[1:])
  assert (positions >= 0).all() and (positions <= upper).all()
  assert (np.abs(velocities) == np.abs(velocities[:1])).all()
  moved = positions[:-1] + velocities[:-1]
  hit_wall = (moved < 0) | (moved > upper)
  np.testing.assert_array_equal(positions[1:], np.clip(moved, 0, upper))
  flipped = velocities[1:] == -velocities[:-1]
  moving = velocities[:-1] != 0
  np.testing.assert_array_equal(flipped & moving, hit_wall)
  at_wall = (positions[1:] == 0) | (positions[1:] == upper)
  assert at_wall[hit_wall].all()


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
  return write_tiny_mnist(tmp_path_factory.mktemp("mnist"))


def _write_mpi3d(path, factor_sizes):
  """Writes images whose pixels encode their own factor indices."""
  images = np.zeros((*factor_sizes, 64, 64, 3), np.uint8)
  for index in np.ndindex(*factor_sizes):
    images[index][0, : len(index), 0] = index
    images[index][8:, :, :] = (np.ravel_multi_index(index, factor_sizes) * 7) % 251
  np.savez(path, images=images)


# Motion.


def test_bounce_stays_in_bounds_and_reflects_exactly_at_walls():
  rng = np.random.default_rng(0)
  start = rng.integers(0, 32, (200, 2))
  velocity = motion.sample_velocities(rng, (200, 2), -4, 3)
  positions, velocities = motion.bounce(start, velocity, 60, 31)
  assert positions.shape == velocities.shape == (60, 200, 2)
  assert velocities.min() == -4 and velocities.max() == 4
  _assert_bouncing(positions, velocities, 31)


def test_bounce_clamps_to_the_wall_and_negates_velocity():
  positions, velocities = motion.bounce(np.array([29]), np.array([3]), 5, 31)
  np.testing.assert_array_equal(positions[:, 0], [29, 31, 28, 25, 22])
  np.testing.assert_array_equal(velocities[:, 0], [3, -3, -3, -3, -3])
  positions, velocities = motion.bounce(np.array([1]), np.array([-2]), 3, 31)
  np.testing.assert_array_equal(positions[:, 0], [1, 0, 2])
  np.testing.assert_array_equal(velocities[:, 0], [-2, 2, 2])


def test_bounce_rejects_start_outside_bounds():
  with pytest.raises(ValueError, match="start positions"):
    motion.bounce(np.array([32]), np.array([1]), 3, 31)


def _assert_reflected_before_drawing(positions, velocities, max_position):
  """The authors' rule: the next drawn position is the moved one clamped to
  [0, max_position], and the velocity flips where the move left [0, max)."""
  positions = positions.reshape(len(positions), -1)
  velocities = velocities.reshape(len(velocities), -1)
  assert (positions >= 0).all() and (positions <= max_position).all()
  assert (np.abs(velocities) == np.abs(velocities[:1])).all()
  moved = positions[:-1] + velocities[:-1]
  np.testing.assert_array_equal(positions[1:], np.clip(moved, 0, max_position))
  reflected = (moved < 0) | (moved >= max_position)
  np.testing.assert_array_equal(
    velocities[1:], np.where(reflected, -velocities[:-1], velocities[:-1])
  )


def test_reflect_before_drawing_follows_the_authors_hand_worked_trajectory():
  # x from 28 at +2: 28, 30, 32 -> 31 (turns), 29, 27. y from 1 at -2: 1,
  # -1 -> 0 (turns), 2, 4, 6. A start at 31 turns before its first frame.
  start, velocity = np.array([[28, 1], [31, 0]]), np.array([[2, -2], [1, 0]])
  positions, velocities = motion.reflect_before_drawing(start, velocity, 5, 31)
  np.testing.assert_array_equal(positions[:, 0, 0], [28, 30, 31, 29, 27])
  np.testing.assert_array_equal(velocities[:, 0, 0], [2, 2, -2, -2, -2])
  np.testing.assert_array_equal(positions[:, 0, 1], [1, 0, 2, 4, 6])
  np.testing.assert_array_equal(velocities[:, 0, 1], [-2, 2, 2, 2, 2])
  np.testing.assert_array_equal(positions[:, 1, 0], [31, 30, 29, 28, 27])
  np.testing.assert_array_equal(velocities[:, 1, 0], [-1, -1, -1, -1, -1])
  np.testing.assert_array_equal(positions[:, 1, 1], [0, 0, 0, 0, 0])
  # A sprite at 0 moving away rests there one more frame: 0 at -1 -> -1 -> 0.
  positions, _ = motion.reflect_before_drawing(np.array([0]), np.array([-1]), 4, 31)
  np.testing.assert_array_equal(positions[:, 0], [0, 0, 1, 2])
  rng = np.random.default_rng(0)
  start = rng.integers(0, 32, (300, 2))
  velocity = motion.sample_velocities(rng, (300, 2), -2, 2)
  _assert_reflected_before_drawing(
    *motion.reflect_before_drawing(start, velocity, 40, 31), 31
  )
  with pytest.raises(ValueError, match="start positions"):
    motion.reflect_before_drawing(np.array([32]), np.array([1]), 3, 31)


def test_rotate_wraps_orientation_mod_period():
  orientations = motion.rotate(np.array([38, 1]), np.array([2, -2]), 4, 40)
  np.testing.assert_array_equal(orientations, [[38, 1], [0, 39], [2, 37], [4, 35]])


# Moving MNIST.


@pytest.mark.parametrize("colour", [False, True])
def test_moving_mnist_shapes_factors_physics_and_rerender(tmp_path, tiny_mnist, colour):
  config = moving_mnist.MovingMnistConfig(
    name="tiny", colour=colour, seq_len=SEQ_LEN, num_train=6, num_test=4
  )
  builder = _build(moving_mnist.MovingMnist, config, tmp_path, tiny_mnist)
  assert builder.info.metadata["content_is_partial"] is True
  assert builder.info.metadata["pose_factor_names"] == [
    "digit0_x",
    "digit0_y",
    "digit1_x",
    "digit1_y",
  ]
  for split, num_videos, label_range in (("train", 6, (0, 4)), ("test", 4, (5, 9))):
    images, labels = moving_mnist.load_mnist(tiny_mnist, split)
    examples = _examples(builder, split)
    assert len(examples) == num_videos
    assert sorted(int(e["id"]) for e in examples) == list(range(num_videos))
    for example in examples:
      video, pose = example["video"], example["pose_factors"]
      assert video.shape == (SEQ_LEN, 64, 64, 3 if colour else 1)
      assert video.dtype == np.uint8 and pose.dtype == np.int32
      content = example["content_factors"]
      assert content.dtype == np.int32
      assert label_range[0] <= content.min() and content.max() <= label_range[1]
      np.testing.assert_array_equal(content, labels[example["digit_indices"]])
      _assert_bouncing(pose, example["velocities"], moving_mnist.MAX_POSITION)
      assert np.abs(example["velocities"]).max() <= 4
      digits = moving_mnist.resize_digits(images[example["digit_indices"]])
      rerendered = moving_mnist.render_video(
        digits, pose[:, 0::2], pose[:, 1::2], colour
      )
      np.testing.assert_array_equal(rerendered, video)
      # Independently: nothing is drawn outside the digits' 32x32 boxes.
      outside = np.ones(video.shape[:3], bool)
      for t in range(SEQ_LEN):
        for x, y in pose[t].reshape(-1, 2):
          outside[t, y : y + 32, x : x + 32] = False
      assert not video[outside].any()


def test_moving_mnist_digits_are_resized_to_32(tiny_mnist):
  images, _ = moving_mnist.load_mnist(tiny_mnist, "test")
  resized = moving_mnist.resize_digits(images[:2])
  assert resized.shape == (2, 32, 32) and resized.dtype == np.uint8
  constant = moving_mnist.resize_digits(np.full((1, 28, 28), 200, np.uint8))
  np.testing.assert_array_equal(constant, 200)


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="no shared MNIST copy")
def test_moving_mnist_builds_from_the_real_mnist_files(tmp_path):
  config = moving_mnist.MovingMnistConfig(
    name="real", seq_len=4, num_train=3, num_test=3
  )
  builder = _build(moving_mnist.MovingMnist, config, tmp_path, SHARED_MNIST)
  images, labels = moving_mnist.load_mnist(SHARED_MNIST, "test")
  assert images.shape == (10_000, 28, 28)
  for example in _examples(builder, "test"):
    np.testing.assert_array_equal(
      example["content_factors"], labels[example["digit_indices"]]
    )
    digits = moving_mnist.resize_digits(images[example["digit_indices"]])
    pose = example["pose_factors"]
    np.testing.assert_array_equal(
      moving_mnist.render_video(digits, pose[:, 0::2], pose[:, 1::2], False),
      example["video"],
    )


# Moving dSprites.


def _occluded_by_hand(raw, order):
  """The authors' occlusion, generalised: a sprite is zeroed where any sprite
  listed before it in `order` (front to back) is lit in the unoccluded frames."""
  expected = raw.copy()
  for rank, sprite in enumerate(order):
    for front in order[:rank]:
      expected[..., sprite][raw[..., front] > 0] = 0
  return expected


@pytest.mark.parametrize("rotating, num_sprites", [(False, 2), (True, 2), (False, 3)])
def test_moving_dsprites_shapes_factors_physics_and_rerender(
  tmp_path, rotating, num_sprites
):
  config = moving_dsprites.MovingDspritesConfig(
    name="tiny",
    rotating=rotating,
    num_sprites=num_sprites,
    seq_len=SEQ_LEN,
    num_train=8,
    num_test=6,
  )
  builder = _build(moving_dsprites.MovingDsprites, config, tmp_path)
  metadata = builder.info.metadata
  per_sprite = 2 if rotating else 3
  content_sizes, pose_sizes = moving_dsprites.factor_sizes(config)
  assert metadata["content_factor_names"] == list(config.content_factor_names)
  assert len(metadata["content_factor_names"]) == num_sprites * per_sprite + 1
  assert metadata["content_factor_names"][-1] == "depth_order"
  assert metadata["pose_factor_names"] == list(config.pose_factor_names)
  assert len(metadata["pose_factor_names"]) == num_sprites * (5 - per_sprite)
  assert metadata["content_factor_sizes"] == list(content_sizes)
  assert metadata["pose_factor_sizes"] == list(pose_sizes)
  assert (
    content_sizes[-1] == len(metadata["depth_orders"]) == (2 if num_sprites == 2 else 6)
  )
  orders = np.array(metadata["depth_orders"])
  centres = shapes.position_centres()
  for split in ("train", "test"):
    allowed = {tuple(c) for c in metadata[f"{split}_contents"]}
    for example in _examples(builder, split):
      video = example["video"]
      assert video.shape == (SEQ_LEN, 64, 64, 3) and video.dtype == np.uint8
      factors, pose_factors = example["content_factors"], example["pose_factors"]
      assert (factors < content_sizes).all() and (pose_factors < pose_sizes).all()
      content = factors[:-1].reshape(num_sprites, per_sprite)
      order = orders[factors[-1]]
      pose = pose_factors.reshape(SEQ_LEN, num_sprites, 5 - per_sprite)
      assert {tuple(c) for c in content.tolist()} <= allowed
      _assert_reflected_before_drawing(
        pose[..., :2], example["velocities"], moving_dsprites.MAX_POSITION
      )
      assert np.abs(example["velocities"]).max() <= 2
      if rotating:
        steps = example["rotation_steps"]
        assert np.abs(steps).max() <= 2
        np.testing.assert_array_equal(
          pose[..., 2], (pose[0, :, 2] + np.arange(SEQ_LEN)[:, None] * steps) % 40
        )
        orientations = pose[..., 2]
      else:
        orientations = np.broadcast_to(content[:, 2], (SEQ_LEN, num_sprites))
      raw = shapes.render_frames(
        content[:, :2], orientations, pose[..., 0], pose[..., 1]
      )
      np.testing.assert_array_equal(video, _occluded_by_hand(raw, order))
      # Every frame re-renders from its own row of factors.
      rerendered = moving_dsprites.render_frames(
        config, np.broadcast_to(factors, (SEQ_LEN, len(factors))), pose_factors
      )
      np.testing.assert_array_equal(rerendered, video)
      if num_sprites == 2:
        assert not video[..., 2].any()  # Two sprites, two channels.
      # Independently: each sprite's box around its position centre.
      for t in (0, SEQ_LEN - 1):
        for s in range(num_sprites):
          rows, cols = np.nonzero(raw[t, :, :, s])
          assert abs(cols.mean() + 0.5 - centres[pose[t, s, 0]]) < 3
          assert abs(rows.mean() + 0.5 - centres[pose[t, s, 1]]) < 3


def test_moving_dsprites_draws_every_depth_order():
  config = moving_dsprites.MovingDspritesConfig(name="orders", num_sprites=3)
  contents = dsprites_splits.split_contents(config.rotating)["train"]
  drawn = [
    int(moving_dsprites.sample_video(config, "train", i, contents)["depth_order"])
    for i in range(120)
  ]
  assert set(drawn) == set(range(6))
  np.testing.assert_array_equal(
    moving_dsprites.depth_orders(2), [[0, 1], [1, 0]]
  )  # With two sprites the factor is the front sprite.
  assert moving_dsprites.factor_sizes(
    moving_dsprites.MovingDspritesConfig(name="one", num_sprites=1)
  ) == ((3, 6, 40), (32, 32))


def _overlapping_factors(num_sprites, depth_order):
  """Square, ellipse, heart at scale 5, centred at grid positions (15, 16),
  (19, 14), (23, 12): each overlaps the next, none covers another."""
  content = [[shape, 5, 3] for shape in range(num_sprites)]
  content = np.array([sum(content, []) + [depth_order]])
  pose = np.array([sum(([15 + 4 * s, 16 - 2 * s] for s in range(num_sprites)), [])])
  return content, pose


def test_front_sprite_hides_the_back_one_where_they_overlap():
  config = moving_dsprites.MovingDspritesConfig(name="occlusion")
  for front in (0, 1):
    content, pose = _overlapping_factors(2, depth_order=front)
    frame = moving_dsprites.render_frames(config, content, pose)[0]
    raw = shapes.render_frames(
      np.array([[0, 5], [1, 5]]), np.array([[3, 3]]), pose[:, 0::2], pose[:, 1::2]
    )[0]
    back = 1 - front
    overlap = (raw[..., front] > 0) & (raw[..., back] > 0)
    assert overlap.sum() > 50  # Without occlusion both are lit there.
    assert not frame[..., back][raw[..., front] > 0].any()
    np.testing.assert_array_equal(frame[..., front], raw[..., front])
    visible_back = (raw[..., back] > 0) & (raw[..., front] == 0)
    np.testing.assert_array_equal(frame[..., back] > 0, visible_back)


def test_three_sprites_are_hidden_by_every_sprite_in_front():
  config = moving_dsprites.MovingDspritesConfig(name="occlusion", num_sprites=3)
  frames = []
  for index, (front, middle, back) in enumerate(moving_dsprites.depth_orders(3)):
    content, pose = _overlapping_factors(3, depth_order=index)
    frame = moving_dsprites.render_frames(config, content, pose)[0]
    raw = shapes.render_frames(
      np.array([[0, 5], [1, 5], [2, 5]]),
      np.full((1, 3), 3),
      pose[:, 0::2],
      pose[:, 1::2],
    )[0]
    lit = raw > 0
    np.testing.assert_array_equal(frame, _occluded_by_hand(raw, (front, middle, back)))
    np.testing.assert_array_equal(frame[..., front], raw[..., front])
    np.testing.assert_array_equal(
      frame[..., middle] > 0, lit[..., middle] & ~lit[..., front]
    )
    np.testing.assert_array_equal(
      frame[..., back] > 0, lit[..., back] & ~lit[..., front] & ~lit[..., middle]
    )
    frames.append(frame)
  assert len({f.tobytes() for f in frames}) == 6


def test_render_frames_rejects_factors_outside_their_sizes(tmp_path):
  config = moving_dsprites.MovingDspritesConfig(name="bad")
  content, pose = _overlapping_factors(2, depth_order=1)
  with pytest.raises(ValueError, match=r"content must be \[N, 7\]"):
    moving_dsprites.render_frames(config, content[:, :-1], pose)
  bad = content.copy()
  bad[0, -1] = 2
  with pytest.raises(ValueError, match="outside"):
    moving_dsprites.render_frames(config, bad, pose)
  with pytest.raises(ValueError, match="outside"):
    moving_dsprites.render_frames(config, content, pose + 17)
  npz = moving_dsprites.MovingDspritesConfig(name="bad_npz", source="npz")
  with pytest.raises(FileNotFoundError, match=dsprites_official.DSPRITES_FILE):
    moving_dsprites.render_frames(npz, content, pose, manual_dir=tmp_path)


def test_moving_dsprites_same_seed_gives_identical_bytes(tmp_path):
  def record_bytes(data_dir, seed):
    config = moving_dsprites.MovingDspritesConfig(
      name="tiny", seq_len=6, num_train=5, num_test=3, seed=seed
    )
    builder = _build(moving_dsprites.MovingDsprites, config, data_dir)
    files = sorted(pathlib.Path(builder.data_dir).glob("*.array_record*"))
    assert len(files) == 2
    return [f.read_bytes() for f in files]

  first = record_bytes(tmp_path / "a", seed=3)
  assert record_bytes(tmp_path / "b", seed=3) == first
  assert record_bytes(tmp_path / "c", seed=4) != first


# Moving MPI3D.


def test_moving_mpi3d_reads_factor_sizes_from_the_file(tmp_path):
  factor_sizes = (2, 3, 1, 2, 1, 6, 5)
  _write_mpi3d(tmp_path / moving_mpi3d.MPI3D_FILE, factor_sizes)
  config = moving_mpi3d.MovingMpi3dConfig(
    name="tiny", seq_len=SEQ_LEN, num_train=6, num_test=3
  )
  builder = _build(moving_mpi3d.MovingMpi3d, config, tmp_path / "data", tmp_path)
  reloaded = moving_mpi3d.MovingMpi3d(config=config, data_dir=str(tmp_path / "data"))
  for info in (builder.info, reloaded.info):
    assert info.metadata["content_factor_sizes"] == list(factor_sizes[:5])
    assert info.metadata["pose_factor_sizes"] == list(factor_sizes[5:])
  images = moving_mpi3d.load_images(tmp_path / moving_mpi3d.MPI3D_FILE)
  assert moving_mpi3d.factor_sizes(config, images) == (
    factor_sizes[:5],
    factor_sizes[5:],
  )
  for split, num_videos in (("train", 6), ("test", 3)):
    allowed = {tuple(c) for c in builder.info.metadata[f"{split}_contents"]}
    examples = _examples(builder, split)
    assert len(examples) == num_videos
    for example in examples:
      video, content, pose = (
        example["video"],
        example["content_factors"],
        example["pose_factors"],
      )
      assert video.shape == (SEQ_LEN, 64, 64, 3) and video.dtype == np.uint8
      assert content.shape == (5,) and pose.shape == (SEQ_LEN, 2)
      assert tuple(content.tolist()) in allowed
      rerendered = moving_mpi3d.render_frames(
        config, np.broadcast_to(content, (SEQ_LEN, 5)), pose, images
      )
      np.testing.assert_array_equal(rerendered, video)
      _assert_bouncing(pose, example["velocities"], np.array(factor_sizes[5:]) - 1)
      assert np.abs(example["velocities"]).max() <= 4
      # Each frame's pixels name the factors it was photographed with.
      encoded = video[:, 0, :7, 0]
      np.testing.assert_array_equal(
        encoded[:, :5], np.broadcast_to(content, (SEQ_LEN, 5))
      )
      np.testing.assert_array_equal(encoded[:, 5:], pose)


def test_moving_mpi3d_train_and_test_contents_are_disjoint(tmp_path):
  factor_sizes = (2, 3, 1, 2, 1, 6, 5)
  _write_mpi3d(tmp_path / moving_mpi3d.MPI3D_FILE, factor_sizes)
  config = moving_mpi3d.MovingMpi3dConfig(
    name="split", seq_len=4, num_train=40, num_test=20
  )
  builder = _build(moving_mpi3d.MovingMpi3d, config, tmp_path / "data", tmp_path)
  metadata = moving_mpi3d.MovingMpi3d(
    config=config, data_dir=str(tmp_path / "data")
  ).info.metadata
  train = {tuple(c) for c in metadata["train_contents"]}
  test = {tuple(c) for c in metadata["test_contents"]}
  assert not train & test
  assert train | test == set(np.ndindex(*factor_sizes[:5]))
  assert len(test) == 4  # A third of the 12 combinations.
  for axis, size in enumerate(factor_sizes[:5]):
    assert {c[axis] for c in train} == set(range(size))
  for split, allowed in (("train", train), ("test", test)):
    seen = {tuple(e["content_factors"].tolist()) for e in _examples(builder, split)}
    assert seen <= allowed and len(seen) > 1


def test_moving_mpi3d_release_split_holds_out_a_third_of_contents():
  config = moving_mpi3d.MovingMpi3dConfig(name="split")
  contents = moving_mpi3d.split_contents(config)
  train = {tuple(c) for c in contents["train"].tolist()}
  test = {tuple(c) for c in contents["test"].tolist()}
  assert (len(train), len(test)) == (432, 216) and not train & test
  assert train | test == set(np.ndindex(*moving_mpi3d.RELEASED_FACTOR_SIZES[:5]))
  for axis, size in enumerate(moving_mpi3d.RELEASED_FACTOR_SIZES[:5]):
    assert set(contents["train"][:, axis]) == set(range(size))
  assert moving_mpi3d.factor_sizes(config) == ((6, 6, 2, 3, 3), (40, 40))
  other_seed = moving_mpi3d.split_contents(
    moving_mpi3d.MovingMpi3dConfig(name="split", seed=1)
  )
  assert not np.array_equal(other_seed["test"], contents["test"])
  with pytest.raises(ValueError, match="no combination can be held out"):
    moving_mpi3d.split_contents(config, (2, 1, 1, 1, 1))


def test_moving_mpi3d_render_frames_gathers_the_named_photographs(tmp_path):
  factor_sizes = (2, 3, 1, 2, 1, 6, 5)
  _write_mpi3d(tmp_path / moving_mpi3d.MPI3D_FILE, factor_sizes)
  images = moving_mpi3d.load_images(tmp_path / moving_mpi3d.MPI3D_FILE)
  config = moving_mpi3d.MovingMpi3dConfig(name="frames")
  content = np.array([[1, 2, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
  pose = np.array([[5, 4], [0, 0], [3, 1]])
  frames = moving_mpi3d.render_frames(config, content, pose, images)
  assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(frames[:, 0, :7, 0], np.concatenate([content, pose], 1))
  with pytest.raises(ValueError, match="outside"):
    moving_mpi3d.render_frames(config, content, pose + 1, images)


def test_load_npz_array_memory_maps_uncompressed_members(tmp_path):
  array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
  np.savez(tmp_path / "stored.npz", images=array, other=np.zeros(3))
  np.savez_compressed(tmp_path / "deflated.npz", images=array)
  stored = common.load_npz_array(tmp_path / "stored.npz", "images")
  assert isinstance(stored, np.memmap)
  np.testing.assert_array_equal(stored, array)
  np.testing.assert_array_equal(
    common.load_npz_array(tmp_path / "deflated.npz", "images"), array
  )
  with pytest.raises(ValueError, match="no array 'imgs'"):
    common.load_npz_array(tmp_path / "stored.npz", "imgs")


# Registration and bad input.


def test_builders_are_registered_with_their_configs():
  expected = {
    "moving_mnist": {"grey", "colour", "grey_small", "colour_small"},
    "moving_dsprites": {"fixed", "rotating", "fixed_small", "rotating_small"},
    "moving_mpi3d": {"default", "default_small"},
  }
  for name, configs in expected.items():
    builder_cls = tfds.builder_cls(name)
    assert configs <= {c.name for c in builder_cls.BUILDER_CONFIGS}
    for config in builder_cls.BUILDER_CONFIGS:
      assert config.seq_len == 35
      if config.name.endswith("_small"):
        assert (config.num_train, config.num_test) == (256, 64)
  assert tfds.builder("moving_dsprites").builder_config.name == "fixed"


@pytest.mark.parametrize(
  "make_config, message",
  [
    (
      lambda: moving_dsprites.MovingDspritesConfig(name="x", num_sprites=4),
      "num_sprites=4",
    ),
    (
      lambda: moving_mnist.MovingMnistConfig(name="x", colour=True, num_digits=4),
      "4 digits",
    ),
    (lambda: moving_mnist.MovingMnistConfig(name="x", seq_len=1), "seq_len=1"),
    (lambda: moving_mpi3d.MovingMpi3dConfig(name="x", num_test=0), "num_test=0"),
    (
      lambda: moving_mpi3d.MovingMpi3dConfig(name="x", test_content_fraction=1.0),
      "test_content_fraction=1.0",
    ),
    (
      lambda: moving_dsprites.MovingDspritesConfig(name="x", source="web"),
      "source='web'",
    ),
  ],
)
def test_impossible_configs_are_one_line_value_errors(make_config, message):
  with pytest.raises(ValueError, match=message) as error:
    make_config()
  assert "\n" not in str(error.value)


@pytest.mark.parametrize(
  "builder_cls, config, filename, url",
  [
    (
      moving_mnist.MovingMnist,
      moving_mnist.MovingMnistConfig(name="m", num_train=2, num_test=2),
      "train-images-idx3-ubyte.gz",
      moving_mnist.MNIST_URL,
    ),
    (
      moving_dsprites.MovingDsprites,
      moving_dsprites.MovingDspritesConfig(
        name="d", source="npz", num_train=2, num_test=2
      ),
      dsprites_official.DSPRITES_FILE,
      dsprites_official.DSPRITES_URL,
    ),
    (
      moving_mpi3d.MovingMpi3d,
      moving_mpi3d.MovingMpi3dConfig(name="p", num_train=2, num_test=2),
      moving_mpi3d.MPI3D_FILE,
      moving_mpi3d.MPI3D_URL,
    ),
  ],
)
def test_missing_source_names_file_directory_and_download(
  tmp_path, builder_cls, config, filename, url
):
  manual_dir = tmp_path / "manual"
  manual_dir.mkdir()
  with pytest.raises(FileNotFoundError) as error:
    _build(builder_cls, config, tmp_path / "data", manual_dir)
  message = str(error.value)
  assert filename in message and str(manual_dir) in message and url in message
  assert "\n" not in message


def test_corrupted_or_wrong_sources_are_clear_errors(tmp_path, tiny_mnist):
  bad_mnist = tmp_path / "mnist"
  bad_mnist.mkdir()
  for name in moving_mnist.ALL_MNIST_FILES:
    (bad_mnist / name).write_bytes((tiny_mnist / name).read_bytes())
  (bad_mnist / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not gzip")
  config = moving_mnist.MovingMnistConfig(name="m", num_train=2, num_test=2)
  with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz is corrupted"):
    _build(moving_mnist.MovingMnist, config, tmp_path / "data", bad_mnist)

  mpi3d_dir = tmp_path / "mpi3d"
  mpi3d_dir.mkdir()
  config = moving_mpi3d.MovingMpi3dConfig(name="p", num_train=2, num_test=2)
  (mpi3d_dir / moving_mpi3d.MPI3D_FILE).write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(ValueError, match="corrupted or not an .npz"):
    _build(moving_mpi3d.MovingMpi3d, config, tmp_path / "data", mpi3d_dir)
  np.savez(mpi3d_dir / moving_mpi3d.MPI3D_FILE, images=np.zeros((10, 64, 64), np.uint8))
  with pytest.raises(
    ValueError, match=r"expected uint8 'images'.*found uint8 \(10, 64, 64\)"
  ):
    _build(moving_mpi3d.MovingMpi3d, config, tmp_path / "data", mpi3d_dir)

  dsprites_dir = tmp_path / "dsprites"
  dsprites_dir.mkdir()
  np.savez_compressed(
    dsprites_dir / dsprites_official.DSPRITES_FILE, imgs=np.zeros((3, 64, 64), np.uint8)
  )
  config = moving_dsprites.MovingDspritesConfig(
    name="d", source="npz", num_train=2, num_test=2
  )
  with pytest.raises(ValueError, match=r"expected 'imgs' of shape \(737280, 64, 64\)"):
    _build(moving_dsprites.MovingDsprites, config, tmp_path / "data", dsprites_dir)


def test_failed_build_leaves_built_data_intact(tmp_path, tiny_mnist):
  good = moving_mnist.MovingMnistConfig(name="good", seq_len=4, num_train=3, num_test=2)
  builder = _build(moving_mnist.MovingMnist, good, tmp_path, tiny_mnist)
  before = {p: p.read_bytes() for p in pathlib.Path(builder.data_dir).iterdir()}
  broken = tmp_path / "broken"
  broken.mkdir()
  for name in moving_mnist.ALL_MNIST_FILES:
    (broken / name).write_bytes(b"garbage")
  for config in (
    good,
    moving_mnist.MovingMnistConfig(name="other", seq_len=4, num_train=3, num_test=2),
  ):
    rebuilt = moving_mnist.MovingMnist(config=config, data_dir=str(tmp_path))
    if config is good:
      rebuilt.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=broken),
      )
    else:
      with pytest.raises(ValueError, match="corrupted"):
        _build(moving_mnist.MovingMnist, config, tmp_path, broken)
      assert not rebuilt.is_prepared()
  after = {p: p.read_bytes() for p in pathlib.Path(builder.data_dir).iterdir()}
  assert after == before
  assert len(_examples(builder, "train")) == 3


class _IndexBitImages:
  """Stands in for the 737280 official images: image i shows i's bits."""

  shape = dsprites_official.DSPRITES_IMAGES_SHAPE

  def __getitem__(self, index):
    bits = (index[..., None] >> np.arange(20)) & 1
    images = np.zeros((*index.shape, 64, 64), np.uint8)
    images[..., 0, :20] = bits
    return images


def test_official_frames_are_read_at_the_authors_index():
  # The authors' loader: y + 32 x + 32*32 orientation + 32*32*40 scale +
  # 32*32*40*6 shape, the order of dSprites' images.
  content = np.array([[2, 5], [1, 0]])
  orientations = np.array([[39, 0], [7, 3]])
  xs = np.array([[31, 4], [0, 9]])
  ys = np.array([[30, 1], [2, 31]])
  frames = dsprites_official.official_frames(
    _IndexBitImages(), content, orientations, xs, ys
  )
  assert frames.shape == (2, 64, 64, 3) and not frames[..., 2].any()
  decoded = (frames[:, 0, :20, :2].astype(int) // 255 << np.arange(20)[:, None]).sum(1)
  for t in range(2):
    for s in range(2):
      shape, scale = content[s]
      expected = (
        ys[t, s]
        + 32 * xs[t, s]
        + 32 * 32 * orientations[t, s]
        + 32 * 32 * 40 * scale
        + 32 * 32 * 40 * 6 * shape
      )
      assert decoded[t, s] == expected


def test_npz_videos_are_occluded_and_rerender_from_their_factors(tmp_path):
  config = moving_dsprites.MovingDspritesConfig(
    name="npz", source="npz", seq_len=4, num_train=6, num_test=2
  )
  builder = moving_dsprites.MovingDsprites(config=config, data_dir=str(tmp_path))
  images = _IndexBitImages()
  orders = moving_dsprites.depth_orders(2)
  occluded = 0
  make = builder.example_fn("train", images=images)
  for example in map(make, range(config.num_train)):
    factors, pose = example["content_factors"], example["pose_factors"]
    content = factors[:-1].reshape(2, 3)
    raw = dsprites_official.official_frames(
      images,
      content[:, :2],
      np.broadcast_to(content[:, 2], (4, 2)),
      pose[:, 0::2],
      pose[:, 1::2],
    )
    np.testing.assert_array_equal(
      example["video"], _occluded_by_hand(raw, orders[factors[-1]])
    )
    rerendered = moving_dsprites.render_frames(
      config, np.broadcast_to(factors, (4, 7)), pose, images=images
    )
    np.testing.assert_array_equal(rerendered, example["video"])
    occluded += not np.array_equal(raw, example["video"])
  assert occluded > 0


@pytest.mark.parametrize("dataset", ["mnist", "dsprites", "mpi3d"])
def test_example_fn_continues_the_stored_stream_with_fresh_videos(
  tmp_path, tiny_mnist, dataset
):
  if dataset == "mnist":
    builder_cls, manual_dir = moving_mnist.MovingMnist, tiny_mnist
    config = moving_mnist.MovingMnistConfig(
      name="f", colour=True, seq_len=SEQ_LEN, num_train=5, num_test=2
    )
  elif dataset == "dsprites":
    builder_cls, manual_dir = moving_dsprites.MovingDsprites, None
    config = moving_dsprites.MovingDspritesConfig(
      name="f", rotating=True, seq_len=SEQ_LEN, num_train=5, num_test=2
    )
  else:
    builder_cls, manual_dir = moving_mpi3d.MovingMpi3d, tmp_path
    _write_mpi3d(tmp_path / moving_mpi3d.MPI3D_FILE, (2, 3, 1, 2, 1, 6, 5))
    config = moving_mpi3d.MovingMpi3dConfig(
      name="f", seq_len=SEQ_LEN, num_train=5, num_test=2
    )
  builder = _build(builder_cls, config, tmp_path / "data", manual_dir)
  short = builder.example_fn("train", manual_dir, seq_len=4)
  full = builder.example_fn("train", manual_dir)
  stored = _examples(builder, "train")
  keys = ("video", "content_factors", "pose_factors")
  # The first videos of the stream are the stored ones (by id, the stream
  # index); seq_len cuts them.
  assert sorted(int(example["id"]) for example in stored) == list(range(5))
  for example in stored:
    index = int(example["id"])
    for key in keys:
      np.testing.assert_array_equal(full(index)[key], example[key])
    np.testing.assert_array_equal(short(index)["video"], example["video"][:4])
    np.testing.assert_array_equal(
      short(index)["pose_factors"], example["pose_factors"][:4]
    )
  # Past the split's size come new videos, of the train split's contents.
  fresh = [full(index) for index in range(5, 25)]
  stored_videos = {example["video"].tobytes() for example in stored}
  assert not stored_videos & {example["video"].tobytes() for example in fresh}
  assert len({example["video"].tobytes() for example in fresh}) == len(fresh)
  if dataset != "mnist":
    train_contents = {tuple(c) for c in builder.info.metadata["train_contents"]}
    for example in fresh:
      content = example["content_factors"]
      if dataset == "dsprites":
        rows = content[:-1].reshape(config.num_sprites, -1)
        assert all(tuple(row) in train_contents for row in rows.tolist())
      else:
        assert tuple(content.tolist()) in train_contents
