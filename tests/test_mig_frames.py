"""The MIG protocol: static frames with known factors, and its calibration."""

import math

import numpy as np
import pytest
from conftest import tiny_config

from mipae_jax import metrics, mig_frames
from mipae_jax.datasets import moving_dsprites

NUM_FRAMES = 2_000


@pytest.fixture(scope="module")
def frames_and_factors(tmp_path_factory):
  dataset = tiny_config(tmp_path_factory.mktemp("unused")).dataset
  return dataset, mig_frames.mig_frames(dataset, NUM_FRAMES, seed=0)


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
  builder_config = mig_frames.input_pipeline.get_builder(dataset).builder_config
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
  assert metrics.mig(content, pose, z_c, z_p)["MIG"] >= 0.9
  assert metrics.mig(content, pose, z_p, z_c)["MIG"] <= -0.9
  rng = np.random.default_rng(0)
  noise = metrics.mig(
    content, pose, rng.normal(size=(NUM_FRAMES, 128)), rng.normal(size=(NUM_FRAMES, 5))
  )
  assert abs(noise["MIG"]) < 0.05


def test_reference_protocol_repeats_almost_no_label(frames_and_factors):
  """Why it is not the default: with two sprites, i.i.d. factors make nearly
  every joint label unique at this size."""
  dataset, _ = frames_and_factors
  _, content, pose = mig_frames.mig_frames(dataset, 500, protocol="reference")
  assert len(np.unique(content, axis=0)) > 0.95 * 500
  assert len(np.unique(pose, axis=0)) > 0.95 * 500


@pytest.mark.parametrize(
  "codes, low, high", [("oracle", 0.9, 1.01), ("swapped", -1.01, -0.9)]
)
def test_the_evaluation_path_scores_oracle_codes_at_the_ceiling(
  tmp_path, monkeypatch, codes, low, high
):
  """evaluate_mig itself, its encoder replaced by a perfect (or swapped) one:
  at 2 x 1,000 frames it must reach the thresholds, with a tight interval."""
  from mipae_jax import evaluate

  config = tiny_config(tmp_path, **{"eval.num_mig_frames": 2_000, "eval.mig_folds": 2})
  table = {}

  def oracle_encoder(networks, main, frames, batch_size, mesh):
    content, pose = table[frames.tobytes()[:4096], len(frames)]
    z_c, z_p = mig_frames.oracle_codes(content, pose, 128, 5, seed=7)
    return (z_c, z_p) if codes == "oracle" else (z_p, z_c)

  real_frames = mig_frames.mig_frames

  def remembering(*args, **kwargs):
    frames, content, pose = real_frames(*args, **kwargs)
    table[frames.tobytes()[:4096], len(frames)] = (content, pose)
    return frames, content, pose

  monkeypatch.setattr(evaluate, "encode_frames", oracle_encoder)
  monkeypatch.setattr(mig_frames, "mig_frames", remembering)
  info = type(
    "Info",
    (),
    {
      "content_is_partial": False,
      "content_factor_names": ("c",),
      "pose_factor_names": ("p",),
    },
  )
  result, _ = evaluate.evaluate_mig(config, info, None, None, None)
  assert low <= result["MIG"] <= high
  assert result["num_frame_sets"] == 2 and result["num_frames"] == 2_000
  assert result["oracle_MIG"] >= 0.9 and result["swapped_MIG"] <= -0.9
  assert result["MIG_ci95"] < 0.05
