"""Pictures: swap grid, prediction strips, PNG round trip, metric curves."""

import numpy as np
import pytest

from mipae_jax.evaluation import visualize


def _run_metrics(method="mipae", run="run", num_future=3, dataset="moving_dsprites"):
  frames = list(range(1, num_future + 1))
  return {
    "method": method,
    "run": run,
    "dataset": dataset,
    "builder_config": "fixed_small",
    "main_step": 4,
    "lstm_step": 2,
    "frame_metrics": {
      "num_sequences": 8,
      "frames": frames,
      "curves": {
        "psnr": {"mean": [20.0 - f for f in frames], "ci95": [0.5] * num_future},
        "ssim": {"mean": [0.9 - 0.1 * f for f in frames], "ci95": [None] * num_future},
        "lpips_alex": {"mean": [0.1 * f for f in frames], "ci95": [0.01] * num_future},
      },
    },
  }


def test_swap_grid_puts_pose_on_top_and_content_down_the_side():
  content = np.full((2, 8, 8, 1), 0.25, np.float32)
  pose = np.full((3, 8, 8, 1), 0.5, np.float32)
  grid = np.full((2, 3, 8, 8, 1), 0.75, np.float32)
  image = visualize.swap_grid_image(content, pose, grid)
  assert image.shape == (3 * 9 - 1, 4 * 9 - 1, 3)
  # Cell centres: pose frames along the top (green border), content frames
  # down the side (red border), decoded cells elsewhere; the corner is blank.
  assert np.allclose(image[4, 9 + 4], 0.5)
  assert np.allclose(image[0, 9 + 4], visualize._GREEN)
  assert np.allclose(image[9 + 4, 4], 0.25)
  assert np.allclose(image[9, 4], visualize._RED)
  assert np.allclose(image[9 + 4, 9 + 4], 0.75)
  assert np.allclose(image[18 + 4, 27 + 4], 0.75)
  assert np.allclose(image[4, 4], 1.0)
  with pytest.raises(ValueError, match="does not match"):
    visualize.swap_grid_image(content[:1], pose, grid)


def test_prediction_strips_alternate_truth_and_prediction():
  truth = np.zeros((2, 5, 8, 8, 1), np.uint8)
  predicted = np.ones((2, 3, 8, 8, 1), np.float32)
  image = visualize.prediction_strips(truth, predicted, num_context=2)
  assert image.shape == (4 * 9 - 1, 5 * 9 - 1, 3)
  for sequence in range(2):
    truth_row, predicted_row = 18 * sequence + 4, 18 * sequence + 9 + 4
    # Ground truth (black) all along; below it the two context frames
    # (black, green border) and then the predicted frames (white).
    assert np.allclose(image[truth_row, 4::9], 0.0)
    assert np.allclose(image[predicted_row, [4, 13]], 0.0)
    assert np.allclose(image[predicted_row - 4, [4, 13]], visualize._GREEN)
    assert np.allclose(image[predicted_row, [22, 31, 40]], 1.0)
  with pytest.raises(ValueError, match="context frames"):
    visualize.prediction_strips(truth, predicted, num_context=3)


def test_png_round_trip_keeps_the_picture():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
  np.testing.assert_array_equal(
    visualize.decode_png(visualize.encode_png(image)), image
  )
  floats = visualize.decode_png(visualize.encode_png(np.full((2, 2, 3), 2.0)))
  assert np.all(floats == 255)


def test_plot_curves_writes_one_png_per_metric_and_dataset(tmp_path):
  runs = [
    _run_metrics("mipae", "a"),
    _run_metrics("drnet", "b", num_future=5),
    _run_metrics("mipae", "c", dataset="moving_mnist"),
  ]
  paths = visualize.plot_curves(runs, tmp_path / "plots")
  names = sorted(p.rsplit("/", 1)[-1] for p in paths)
  assert names == sorted(
    f"curves_{metric}_{dataset}_fixed_small.png"
    for metric in ("psnr", "ssim", "lpips_alex")
    for dataset in ("moving_dsprites", "moving_mnist")
  )
  image = visualize.decode_png((tmp_path / "plots" / names[0]).read_bytes())
  assert image.shape[0] > 200 and image.shape[1] > 300
  # Not a blank canvas: the curves and labels are drawn.
  assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10


def test_labelled_pictures_hold_the_image_under_a_title_and_labels():
  image = np.zeros((20, 30, 3), np.float32)
  image[..., 0] = 1.0  # all red
  out = visualize.labelled(image, "MIPAE run, step 4: swap grid", "columns", "rows")
  assert out.dtype == np.uint8 and out.shape[0] > 40 and out.shape[1] > 60
  red = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] < 60)
  # The image, at twice its size, and white margins that hold the text.
  assert 0.8 * 40 * 60 <= red.sum() <= 1.1 * 40 * 60
  assert (out[:10] > 200).all(axis=-1).mean() > 0.5
  dark = (out[:40] < 100).all(axis=-1)
  assert dark.any()  # the title's glyphs above the image
