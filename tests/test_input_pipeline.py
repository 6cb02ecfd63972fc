"""Tests of the grain input pipeline: global batches, determinism, state, eval, MIG frames."""

import os
import time
import zlib

import grain.python as grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from mipae_jax import input_pipeline
from mipae_jax.datasets import moving_dsprites, prepared

SEQ_LEN = 10
NUM_TRAIN = 24
NUM_TEST = 10

tfds.disable_progress_bar()


def _dataset_config(data_dir, builder_config, prepare=True, num_frames=6):
  return ml_collections.ConfigDict(
    {
      "name": "moving_dsprites",
      "builder_config": builder_config,
      "data_dir": str(data_dir),
      "manual_dir": None,
      "prepare": prepare,
      "num_frames": num_frames,
    }
  )


@pytest.fixture(scope="module")
def dataset_config(tmp_path_factory):
  builder_config = moving_dsprites.MovingDspritesConfig(
    name="pipeline", seq_len=SEQ_LEN, num_train=NUM_TRAIN, num_test=NUM_TEST
  )
  config = _dataset_config(tmp_path_factory.mktemp("tfds"), builder_config)
  prepared.prepare_dataset(config)
  return config


def _sharding(num_devices=None):
  devices = np.array(jax.devices()[:num_devices])
  mesh = jax.sharding.Mesh(devices, ("data",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def _take(iterator, count):
  return [jax.tree.map(np.asarray, next(iterator)) for _ in range(count)]


def _assert_same_batches(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_dataset_info_describes_the_dataset(dataset_config):
  info = prepared.dataset_info(dataset_config)
  assert (info.seq_len, info.height, info.width, info.channels) == (SEQ_LEN, 64, 64, 3)
  assert (info.num_train, info.num_test) == (NUM_TRAIN, NUM_TEST)
  assert info.content_factor_names[:3] == (
    "sprite0_shape",
    "sprite0_scale",
    "sprite0_orientation",
  )
  assert info.pose_factor_names == ("sprite0_x", "sprite0_y", "sprite1_x", "sprite1_y")
  assert info.content_factor_sizes == (3, 6, 40, 3, 6, 40, 2)  # Last: depth order.
  assert info.content_is_partial is False


def test_train_iterator_yields_sharded_global_uint8_batches(dataset_config):
  sharding = _sharding()
  iterator = input_pipeline.create_train_iterator(
    dataset_config, global_batch_size=8, sharding=sharding, seed=0
  )
  batch = next(iterator)
  assert batch["video"].shape == (8, 6, 64, 64, 3)
  assert batch["video"].dtype == np.uint8
  assert batch["content_factors"].shape == (8, 7)
  assert batch["pose_factors"].shape == (8, 6, 4)
  assert batch["pose_factors"].dtype == np.int32
  for value in batch.values():
    assert value.sharding.is_equivalent_to(sharding, value.ndim)
    assert {shard.data.shape[0] for shard in value.addressable_shards} == {1}
  # The frames are the first frames of the stored videos, factors included.
  video = np.asarray(batch["video"])
  pose = np.asarray(batch["pose_factors"])
  content = np.asarray(batch["content_factors"])
  for row in range(8):
    rerendered = moving_dsprites.render_frames(
      dataset_config.builder_config, np.broadcast_to(content[row], (6, 7)), pose[row]
    )
    np.testing.assert_array_equal(rerendered, video[row])


def test_train_iterator_is_deterministic_given_seed_and_reshuffles_epochs(
  dataset_config,
):
  def batches(seed):
    iterator = input_pipeline.create_train_iterator(
      dataset_config, global_batch_size=8, sharding=_sharding(), seed=seed, num_frames=2
    )
    return _take(iterator, 6)  # Two epochs of 24 videos.

  first = batches(seed=1)
  _assert_same_batches(first, batches(seed=1))
  other = batches(seed=2)
  assert not np.array_equal(first[0]["video"], other[0]["video"])
  epoch = [
    np.concatenate([b["content_factors"] for b in first[i : i + 3]]) for i in (0, 3)
  ]
  # Each epoch holds every video once, in a different order.
  assert sorted(map(tuple, epoch[0].tolist())) == sorted(map(tuple, epoch[1].tolist()))
  assert not np.array_equal(epoch[0], epoch[1])


def test_restored_iterator_state_continues_with_identical_batches(dataset_config):
  def create():
    return input_pipeline.create_train_iterator(
      dataset_config, global_batch_size=4, sharding=_sharding(4), seed=0
    )

  uninterrupted = _take(create(), 8)
  interrupted = create()
  _assert_same_batches(_take(interrupted, 3), uninterrupted[:3])
  state = interrupted.get_state()
  assert isinstance(state, bytes)
  resumed = create()
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 5), uninterrupted[3:])


def test_grain_checkpoint_handler_saves_and_restores_the_iterator(
  dataset_config, tmp_path
):
  def create():
    return input_pipeline.create_train_iterator(
      dataset_config, global_batch_size=4, sharding=_sharding(4), seed=5
    )

  uninterrupted = _take(create(), 4)
  iterator = create()
  _take(iterator, 2)
  checkpointer = ocp.Checkpointer(grain.PyGrainCheckpointHandler())
  checkpointer.save(tmp_path / "iterator", args=grain.PyGrainCheckpointSave(iterator))
  restored = create()
  checkpointer.restore(
    tmp_path / "iterator", args=grain.PyGrainCheckpointRestore(restored)
  )
  _assert_same_batches(_take(restored, 2), uninterrupted[2:])


def test_eval_iterator_covers_sequences_in_order_and_masks_padding(dataset_config):
  source = tfds.builder_cls("moving_dsprites")(
    config=dataset_config.builder_config, data_dir=dataset_config.data_dir
  ).as_data_source("test")
  batches = _take(
    input_pipeline.create_eval_iterator(
      dataset_config,
      split="test",
      global_batch_size=8,
      sharding=_sharding(),
      num_frames=SEQ_LEN,
      num_sequences=9,
    ),
    2,
  )
  assert [b["mask"].tolist() for b in batches] == [[True] * 8, [True] + [False] * 7]
  for position in range(9):
    batch, row = batches[position // 8], position % 8
    expected = source[position]
    np.testing.assert_array_equal(batch["video"][row], expected["video"])
    np.testing.assert_array_equal(batch["pose_factors"][row], expected["pose_factors"])
  assert not batches[1]["video"][1:].any()
  whole = list(
    input_pipeline.create_eval_iterator(
      dataset_config,
      split="test",
      global_batch_size=8,
      sharding=_sharding(),
      num_frames=3,
    )
  )
  assert [int(np.sum(b["mask"])) for b in whole] == [8, 2]
  assert whole[0]["video"].shape == (8, 3, 64, 64, 3)


def test_load_frames_returns_frames_with_their_factors(dataset_config):
  frames = input_pipeline.load_frames(
    dataset_config, split="train", num_frames=50, seed=0
  )
  assert frames["frames"].shape == (50, 64, 64, 3)
  assert frames["frames"].dtype == np.uint8
  assert frames["content_factors"].shape == (50, 7)
  assert frames["pose_factors"].shape == (50, 4)
  rerendered = moving_dsprites.render_frames(
    dataset_config.builder_config, frames["content_factors"], frames["pose_factors"]
  )
  np.testing.assert_array_equal(rerendered, frames["frames"])
  again = input_pipeline.load_frames(
    dataset_config, split="train", num_frames=50, seed=0
  )
  np.testing.assert_array_equal(again["frames"], frames["frames"])
  other = input_pipeline.load_frames(
    dataset_config, split="train", num_frames=50, seed=1
  )
  assert not np.array_equal(other["pose_factors"], frames["pose_factors"])


def test_bad_requests_are_one_line_value_errors(dataset_config, monkeypatch):
  create = input_pipeline.create_train_iterator
  cases = [
    (dict(global_batch_size=6, sharding=_sharding(4)), "multiple of the 4 shards"),
    (
      dict(global_batch_size=8, sharding=_sharding(), num_frames=SEQ_LEN + 1),
      "num_frames=11",
    ),
  ]
  for kwargs, message in cases:
    with pytest.raises(ValueError, match=message) as error:
      create(dataset_config, seed=0, **kwargs)
    assert "\n" not in str(error.value)
  with pytest.raises(ValueError, match="num_sequences=11"):
    input_pipeline.create_eval_iterator(
      dataset_config,
      split="test",
      global_batch_size=8,
      sharding=_sharding(),
      num_frames=2,
      num_sequences=NUM_TEST + 1,
    )
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  with pytest.raises(ValueError, match="multiple of the 3 JAX processes"):
    create(dataset_config, global_batch_size=8, sharding=_sharding(), seed=0)


def test_unknown_or_unbuilt_datasets_say_how_to_fix_them(tmp_path):
  with pytest.raises(ValueError, match="Unknown dataset 'moving_cifar'"):
    unknown = _dataset_config(tmp_path, "fixed")
    unknown.name = "moving_cifar"
    prepared.get_builder(unknown)
  with pytest.raises(
    ValueError, match=r"no builder config 'spinning'.*'rotating_small'"
  ):
    prepared.get_builder(_dataset_config(tmp_path, "spinning"))
  unbuilt = _dataset_config(tmp_path, "rotating_small", prepare=False)
  with pytest.raises(
    FileNotFoundError, match="rotating_small version 2.0.0 is not built"
  ) as error:
    input_pipeline.create_train_iterator(
      unbuilt, global_batch_size=8, sharding=_sharding(), seed=0
    )
  assert "config.dataset.prepare=True" in str(error.value)
  assert not (tmp_path / "moving_dsprites").exists()


def test_data_of_an_older_builder_version_is_never_read(tmp_path, caplog):
  config = _dataset_config(
    tmp_path,
    moving_dsprites.MovingDspritesConfig(
      name="versions", seq_len=4, num_train=4, num_test=2
    ),
  )
  builder = prepared.prepare_dataset(config)
  current = builder.data_path
  old = current.parent / "1.1.0"
  current.rename(old)  # What an older release prepared.
  config.prepare = False
  with pytest.raises(FileNotFoundError) as error:
    prepared.prepare_dataset(config)
  message = str(error.value)
  assert "\n" not in message
  assert "version 2.0.0 is not built" in message
  assert "version 1.1.0 there is superseded and never read" in message
  config.prepare = True
  with caplog.at_level("WARNING"):
    rebuilt = prepared.prepare_dataset(config)
  assert rebuilt.is_prepared() and str(rebuilt.version) == "2.0.0"
  assert "building version 2.0.0 (version 1.1.0 there is superseded" in caplog.text
  assert prepared.dataset_info(config).version == "2.0.0"


def test_a_killed_prepares_folder_is_removed_by_the_next_prepare(
  tmp_path, caplog, monkeypatch
):
  config = _dataset_config(
    tmp_path,
    moving_dsprites.MovingDspritesConfig(
      name="killed", seq_len=4, num_train=4, num_test=2
    ),
  )
  config_dir = tmp_path / "moving_dsprites" / "killed"
  stale = config_dir / "incomplete.ABC123_2.0.0"
  (stale / "sub").mkdir(parents=True)
  (stale / "sub" / "shard").write_bytes(b"half a shard")
  live = config_dir / "incomplete.XYZ789_2.0.0"
  live.mkdir()
  (live / "shard").write_bytes(b"being written")
  old = time.time() - 2 * prepared.STALE_BUILD_S
  for path in (stale, stale / "sub", stale / "sub" / "shard"):
    os.utime(path, (old, old))
  with caplog.at_level("WARNING"):
    builder = prepared.prepare_dataset(config)
  assert builder.is_prepared()
  assert not stale.exists()
  assert live.exists()  # recent: another prepare may be writing it
  assert f"Removing {stale}, left by a prepare that was stopped." in caplog.text
  assert f"Leaving {live}" in caplog.text


def test_corrupted_video_records_are_clear_errors(dataset_config):
  decoder = input_pipeline.VideoPrefixDecoder(4)
  decoder.setup(feature=prepared.get_builder(dataset_config).info.features["video"])
  with pytest.raises(ValueError, match="Corrupted video record"):
    decoder.decode_example_np(b"not zlib data")
  with pytest.raises(ValueError, match="Corrupted video record: 5 bytes"):
    decoder.decode_example_np(zlib.compress(b"short"))


def test_video_decoder_sets_itself_up_when_another_thread_is_midway():
  """Grain's reader threads call setup at once: the base `_feature` may be set
  before the fields the decoder derives from it."""
  feature = tfds.features.Tensor(shape=(6, 2, 3, 1), dtype=np.uint8)
  decoder = input_pipeline.VideoPrefixDecoder(num_frames=4)
  tfds.decode.Decoder.setup(decoder, feature=feature)  # a thread midway
  decoder.setup(feature=feature)
  video = np.arange(36, dtype=np.uint8).reshape(6, 2, 3, 1)
  decoded = decoder.decode_example_np(video.tobytes())
  np.testing.assert_array_equal(decoded, video[:4])


def _fresh(dataset_config):
  config = ml_collections.ConfigDict(dataset_config.to_dict())
  config.fresh_train_videos = True
  return config


def test_fresh_videos_are_the_stored_ones_then_new_draws(dataset_config):
  builder = prepared.get_builder(dataset_config)
  fresh = input_pipeline.FreshVideos(builder, dataset_config, num_frames=6)
  assert len(fresh) == input_pipeline.FRESH_STREAM_LENGTH
  stored = builder.as_data_source("train")
  for row in range(NUM_TRAIN):
    example = stored[row]
    drawn = fresh[int(example["id"])]
    np.testing.assert_array_equal(drawn["video"], example["video"][:6])
    np.testing.assert_array_equal(drawn["pose_factors"], example["pose_factors"][:6])
    np.testing.assert_array_equal(drawn["content_factors"], example["content_factors"])
  new = fresh[10**9]
  rerendered = moving_dsprites.render_frames(
    dataset_config.builder_config,
    np.broadcast_to(new["content_factors"], (6, 7)),
    new["pose_factors"],
  )
  np.testing.assert_array_equal(rerendered, new["video"])


def test_fresh_train_iterator_never_repeats_a_video_and_resumes_exactly(
  dataset_config,
):
  def create(seed=0):
    return input_pipeline.create_train_iterator(
      _fresh(dataset_config), global_batch_size=8, sharding=_sharding(), seed=seed
    )

  uninterrupted = _take(create(), 8)  # 64 videos from a train split of 24.
  videos = np.concatenate([batch["video"] for batch in uninterrupted])
  assert len({video.tobytes() for video in videos}) == 8 * 8
  assert not np.array_equal(
    uninterrupted[0]["video"], _take(create(seed=1), 1)[0]["video"]
  )
  interrupted = create()
  _take(interrupted, 3)
  resumed = create()
  resumed.set_state(interrupted.get_state())
  _assert_same_batches(_take(resumed, 5), uninterrupted[3:])
