"""Tests of the embedded dSprites renderer: the official geometry and the
statistics of its videos against the authors' released test videos."""

import dataclasses
import pathlib

import numpy as np
import pytest
import scipy.ndimage

from mipae_jax.datasets import dsprites_shapes as shapes
from mipae_jax.datasets import dsprites_splits, dsprites_statistics, moving_dsprites

REFERENCE = (
  pathlib.Path(__file__).resolve().parents[2]
  / "shared/data/dsprites_reference"
  / dsprites_statistics.REFERENCE_FILE
)


def _canvas(shape, scale, orientation, x, y):
  """One sprite drawn alone, bool [64, 64]."""
  frames = shapes.render_frames(
    np.array([[shape, scale]]),
    np.array([[orientation]]),
    np.array([[x]]),
    np.array([[y]]),
  )
  return frames[0, :, :, 0] > 0


def _iou(a, b):
  return (a & b).sum() / (a | b).sum()


def test_upright_squares_have_the_official_side_at_every_scale():
  # dSprites' squares at scales 0.5 .. 1 are 10, 12, ..., 20 pixels wide,
  # centred on pixel corner (16, 16) at position (0, 0).
  for scale in range(shapes.NUM_SCALES):
    side = 10 + 2 * scale
    expected = np.zeros((64, 64), bool)
    expected[16 - side // 2 : 16 + side // 2, 16 - side // 2 : 16 + side // 2] = True
    np.testing.assert_array_equal(_canvas(0, scale, 0, 0, 0), expected)


def test_position_grid_spans_16_to_48_pixels():
  centres = shapes.position_centres()
  assert centres[0] == 16.0 and centres[-1] == pytest.approx(48.0)
  np.testing.assert_allclose(np.diff(centres), 32 / 31)
  for x, y in ((0, 0), (7, 20), (31, 12)):
    rows, cols = np.nonzero(_canvas(1, 3, 0, x, y))  # An ellipse: centroid = centre.
    assert abs(cols.mean() + 0.5 - centres[x]) < 0.3
    assert abs(rows.mean() + 0.5 - centres[y]) < 0.3


def test_sprite_areas_scale_with_square_of_scale():
  areas = np.array(
    [
      [
        np.mean([_canvas(shape, scale, o, 9, 9).sum() for o in range(0, 40, 4)])
        for scale in range(shapes.NUM_SCALES)
      ]
      for shape in range(shapes.NUM_SHAPES)
    ]
  )
  ratios = areas / areas[:, -1:]
  expected = (shapes.SCALES / shapes.SCALES[-1]) ** 2
  np.testing.assert_allclose(ratios, np.broadcast_to(expected, ratios.shape), rtol=0.06)
  assert (np.diff(areas, axis=1) > 0).all()


def _turn_back(canvas, angle, centre):
  """Turns a canvas clockwise by `angle` about pixel coordinate `centre`."""
  centre = np.full(2, centre - 0.5)  # Array index of the centre point.
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  turned = scipy.ndimage.affine_transform(
    canvas.astype(float), rotation, offset=centre - rotation @ centre, order=1
  )
  return turned > 0.5


def test_orientation_turns_the_sprite_counter_clockwise():
  centre = shapes.position_centres()[15]
  for shape in range(shapes.NUM_SHAPES):
    upright = _canvas(shape, 5, 0, 15, 15)
    ious = []
    for orientation in range(1, shapes.NUM_ORIENTATIONS):
      angle = shapes.ORIENTATIONS[orientation]
      turned = _canvas(shape, 5, orientation, 15, 15)
      ious.append(_iou(_turn_back(turned, angle, centre), upright))
      if shape == 2 and orientation != 20:  # The heart has no symmetry.
        wrong_way = _turn_back(turned, -angle, centre)
        assert _iou(wrong_way, upright) < ious[-1] - 0.03
    assert min(ious) > 0.75 and np.mean(ious) > 0.9, (shape, ious)
  # The heart's lobes are up at orientation 0, to the left a quarter turn on.
  rows, cols = np.nonzero(_canvas(2, 5, 0, 15, 15))
  assert rows.mean() + 0.5 < centre - 1
  rows, cols = np.nonzero(_canvas(2, 5, 10, 15, 15))
  assert cols.mean() + 0.5 < centre - 1


def test_sprites_stay_whole_on_canvas_at_extreme_positions():
  for x, y in ((0, 0), (31, 31), (0, 31), (31, 0)):
    for shape in range(shapes.NUM_SHAPES):
      for orientation in (0, 5, 13):
        masks, _, _ = shapes.sprite_masks(
          np.array([shape]), np.array([5]), np.array([orientation]), x, y
        )
        drawn = _canvas(shape, 5, orientation, x, y).sum()
        assert drawn == masks.sum() > 0


def _videos(name, split, num_videos):
  config = next(
    c for c in moving_dsprites.MovingDsprites.BUILDER_CONFIGS if c.name == name
  )
  config = dataclasses.replace(config, seq_len=15)
  contents = dsprites_splits.split_contents(config.rotating)[split]
  videos = []
  for index in range(num_videos):
    sample = moving_dsprites.sample_video(config, split, index, contents)
    content, pose = moving_dsprites.pose_and_content(config, sample)
    videos.append(
      moving_dsprites.render_frames(
        config, np.broadcast_to(content, (15, len(content))), pose
      )
    )
  return np.stack(videos)


@pytest.mark.skipif(not REFERENCE.exists(), reason="no shared reference videos")
def test_videos_match_the_authors_released_test_videos():
  # Their released videos are non-rotating test videos (their test_lstm.py
  # default), so they are compared with ours of the same split.
  reference = dsprites_statistics.video_statistics(
    dsprites_statistics.load_reference_videos(REFERENCE)
  )
  ours = dsprites_statistics.video_statistics(_videos("fixed", "test", 300))
  differences = dsprites_statistics.relative_differences(ours, reference)
  assert max(differences.values()) <= 0.10, differences


def test_video_statistics_measure_known_frames():
  videos = np.zeros((1, 2, 64, 64, 3), np.uint8)
  videos[0, 0, 10:20, 10:20, 0] = 255  # A 10x10 square, centre (15, 15).
  videos[0, 1, 12:22, 11:21, 0] = 255  # Moved by (2, 1).
  videos[0, :, 40:44, 40:44, 1] = 255  # 4x4, far away, still.
  stats = dsprites_statistics.video_statistics(videos)
  assert stats["lit_fraction_0"] == pytest.approx(100 / 4096)
  assert stats["lit_fraction_1"] == pytest.approx(16 / 4096)
  assert stats["area_max"] == 100 and stats["touch_rate"] == 0.0
  assert stats["motion"] == pytest.approx((2 + 1 + 0 + 0) / 4)
  videos[0, 1, 22, 21, 1] = 255  # Diagonal neighbour of sprite 0's corner.
  assert dsprites_statistics.video_statistics(videos)["touch_rate"] == 0.5
