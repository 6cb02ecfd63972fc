"""Evaluation over restored checkpoints, its outputs, the comparison, bad input."""

import csv
import dataclasses
import json
import logging
import math
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from mipae_jax import autoencoder, checkpointing, restore, train_lstm
from mipae_jax.datasets import prepared
from mipae_jax.evaluation import eval_outputs, evaluate, mig_scores, visualize
from mipae_jax.experiments import compare, reproduce

NUM_FUTURE = 3  # the tiny scale's eval.num_future
EVAL_OVERRIDES = {"lstm.num_train_steps": 2}


def _eval_config(data_dir, **overrides):
  return tiny_config(data_dir, **{**EVAL_OVERRIDES, **overrides})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, trained_workdir, dsprites_data_dir):
  """The shared trained main network, 2 pose-LSTM steps, then one evaluation."""
  workdir = tmp_path_factory.mktemp("evaluated")
  shutil.copytree(trained_workdir / "checkpoints", workdir / "checkpoints")
  config = _eval_config(dsprites_data_dir)
  train_lstm.train_and_evaluate(config, str(workdir))
  return workdir, evaluate.evaluate(config, str(workdir))


def _all_finite(values):
  return all(v is not None and math.isfinite(v) for v in values)


@pytest.mark.slow  # the whole evaluation (fixture `evaluated`)
def test_metrics_json_has_every_section_with_finite_numbers(evaluated):
  workdir, result = evaluated
  on_disk = json.loads((workdir / "eval" / "metrics.json").read_text())
  assert on_disk == result
  assert (result["method"], result["dataset"], result["builder_config"]) == (
    "mipae",
    "moving_dsprites",
    "rotating_small",
  )
  assert (result["main_step"], result["lstm_step"]) == (4, 2)
  assert result["run"] == workdir.name
  frame_metrics = result["frame_metrics"]
  assert frame_metrics["num_sequences"] == 8
  assert frame_metrics["frames"] == [1, 2, 3]
  assert frame_metrics["objects"] == ["sprite0", "sprite1"]
  assert set(frame_metrics["curves"]) == {
    "psnr",
    "ssim",
    "lpips_alex",
    *(
      f"{kind}object_error_{s}"
      for kind in ("", "recon_")
      for s in frame_metrics["objects"]
    ),
  }
  for name, curve in frame_metrics["curves"].items():
    assert len(curve["mean"]) == len(curve["ci95"]) == NUM_FUTURE, name
    assert _all_finite(curve["mean"] + curve["ci95"]), (name, curve)
    assert _all_finite([curve["horizon_mean"], curve["horizon_ci95"]]), name
    if "object_error" not in name:  # ratios of sums, not means
      assert np.isclose(curve["horizon_mean"], np.mean(curve["mean"]))
  assert all(-1 <= v <= 1 for v in frame_metrics["curves"]["ssim"]["mean"])
  assert all(v > 0 for v in frame_metrics["curves"]["lpips_alex"]["mean"])
  mig = result["mig"]
  assert _all_finite([mig[term] for term in eval_outputs.mig_tags(mig)])
  assert mig["objects"] == ["sprite0", "sprite1"] and mig["one_object_MIG"] < 0.6
  assert mig["H(f_c)"] > 0 and mig["H(f_p)"] > 0
  assert (mig["partial"], mig["num_frames"]) == (False, 200)
  assert mig["content_factor_names"][0] == "sprite0_shape"
  assert result["table_i"] == {
    "dataset": "moving_dsprites",
    "experiment": "mipae",
    **{term: mig[term] for term in eval_outputs.MIG_TAGS},
    "partial": False,
  }
  timing = result["timing"]
  for key in ("restore_s", "frame_metrics_s", "mig_estimate_s", "pictures_s"):
    assert 0 < timing[key] <= timing["total_s"], key
  assert timing["frames_per_s"] > 0


@pytest.mark.slow  # the whole evaluation (fixture `evaluated`)
def test_csv_has_one_row_per_predicted_frame(evaluated):
  workdir, result = evaluated
  with open(workdir / "eval" / eval_outputs.CSV_FILE) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == NUM_FUTURE
  curves = ["psnr", "ssim", "lpips_alex"]
  curves += [f"{k}object_error_sprite{s}" for s in (0, 1) for k in ("", "recon_")]
  assert sorted(rows[0]) == sorted(
    ["frame", *(f"{c}_{part}" for c in curves for part in ("mean", "ci95"))]
  )
  assert [int(row["frame"]) for row in rows] == [1, 2, 3]
  np.testing.assert_allclose(
    [float(row["ssim_mean"]) for row in rows],
    result["frame_metrics"]["curves"]["ssim"]["mean"],
  )


@pytest.mark.slow  # the whole evaluation (fixture `evaluated`)
def test_pictures_are_written_as_png_and_to_tensorboard(evaluated):
  workdir, result = evaluated
  eval_dir = workdir / "eval"
  swap = visualize.decode_png((eval_dir / "swap_grid.png").read_bytes())
  # 7 test videos in the first batch: one gives the pose (8 frames along the
  # top), the other 6 the content (down the side); 64x64 frames, 1 px gaps;
  # drawn at twice that size with a title and labels around them.
  assert swap.shape[0] > 2 * (7 * 65 - 1) and swap.shape[1] > 2 * (9 * 65 - 1)
  strips = visualize.decode_png((eval_dir / "predictions.png").read_bytes())
  assert strips.shape[0] > 2 * (2 * 4 * 65 - 1)
  assert strips.shape[1] > 2 * (8 * 65 - 1)
  curves = sorted(path.name for path in eval_dir.glob("curves_*.png"))
  assert curves == [
    f"curves_{name}_moving_dsprites_rotating_small.png"
    for name in ("lpips_alex", "object_error", "psnr", "ssim")
  ]
  assert sorted(result["files"]["curves"]) == sorted(
    str(eval_dir / name) for name in curves
  )

  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util

  (events,) = eval_dir.glob("events.out.tfevents.*")
  accumulator = event_accumulator.EventAccumulator(
    str(events), size_guidance={"tensors": 0}
  )
  accumulator.Reload()
  tags = set(accumulator.Tags()["tensors"])
  assert {
    "eval_psnr/frame_01",
    "eval_lpips_alex/frame_03",
    "eval_ssim/horizon_mean",
    "eval_mig/MIG",
    "eval_mig/I_fc_zc",
    "eval_swap_grid",
    "eval_predictions",
    "eval_curves_psnr_moving_dsprites_rotating_small",
    "eval_mig/one_object_MIG",
    "eval_mig/content_captured_sprite0",
    "eval_object_error_sprite1/frame_03",
  } <= tags
  (mig_event,) = accumulator.Tensors("eval_mig/MIG")
  assert mig_event.step == 4
  assert np.isclose(
    tensor_util.make_ndarray(mig_event.tensor_proto), result["mig"]["MIG"]
  )


def test_frame_scores_compare_each_prediction_with_its_own_frame(caplog):
  # Frame t of every video is a flat image of value t / 255; the "prediction"
  # repeats the last context frame, so the error grows with the frame index.
  num_context, num_future, height = 2, 3, 16
  values = np.arange(num_context + num_future, dtype=np.uint8)
  video = np.broadcast_to(
    values[None, :, None, None, None], (4, len(values), height, height, 1)
  ).copy()
  mask = np.array([True, True, True, False])

  def copy_last_frame(params, context):
    return jnp.repeat(context[:, -1:].astype(jnp.float32) / 255.0, num_future, axis=1)

  with caplog.at_level(logging.INFO, logger="absl"):
    result = evaluate.evaluate_frames(
      copy_last_frame,
      {},
      iter([{"video": jnp.asarray(video), "mask": jnp.asarray(mask)}]),
      num_sequences=3,
      num_context=num_context,
      lpips_nets=(),
    )
  assert "Frame metrics: 3/3 sequences (9 frames)" in caplog.text
  assert "ETA 00:00:00" in caplog.text
  assert result.scores["psnr"].shape == (3, num_future)
  errors = np.arange(1, num_future + 1) / 255.0
  np.testing.assert_allclose(
    result.scores["psnr"],
    np.broadcast_to(-20 * np.log10(errors), (3, num_future)),
    rtol=1e-5,
  )
  assert result.videos.shape[0] == 3 and result.predicted.shape[:2] == (3, num_future)
  summary = evaluate.summarize_scores(result.scores)
  np.testing.assert_allclose(summary["psnr"]["ci95"], 0.0, atol=1e-6)


def test_object_errors_are_one_for_a_blank_prediction_and_zero_for_the_target():
  rng = np.random.default_rng(0)
  truth = np.zeros((5, 3, 8, 8, 3), np.float32)
  truth[..., 0] = rng.random((5, 3, 8, 8)) > 0.7  # sprite0 in red
  truth[..., 1] = rng.random((5, 3, 8, 8)) > 0.8  # sprite1 in green
  objects = ("sprite0", "sprite1")
  half = truth.copy()
  half[..., 1] = 0.0  # draws sprite0 exactly, not sprite1
  errors = {}
  for prefix, frames in (("", np.zeros_like(truth)), ("recon_", half)):
    for name, value in evaluate.channel_errors(
      jnp.asarray(frames), jnp.asarray(truth), objects
    ).items():
      errors[prefix + name if name.startswith("mse_") else name] = np.asarray(value)
  assert errors["mse_sprite0"].shape == (5, 3)
  curves = evaluate.object_error_curves(errors, objects)
  for name in objects:  # the blank prediction: 1 in every frame
    np.testing.assert_allclose(curves[f"object_error_{name}"]["mean"], 1.0)
    np.testing.assert_allclose(curves[f"object_error_{name}"]["ci95"], 0.0, atol=1e-12)
  np.testing.assert_allclose(curves["recon_object_error_sprite0"]["mean"], 0.0)
  np.testing.assert_allclose(curves["recon_object_error_sprite1"]["mean"], 1.0)
  assert curves["recon_object_error_sprite0"]["horizon_mean"] == 0.0


def test_grey_mnist_has_no_channel_per_digit(tmp_path):
  config = tiny_config(tmp_path)
  assert evaluate.object_channels(config) == (("sprite0", "sprite1"), "")
  config = reproduce.build_config(
    "moving_mnist", "mipae", "tiny", data_dir=str(tmp_path)
  )
  objects, reason = evaluate.object_channels(config)
  assert objects == () and "grey Moving MNIST" in reason


@pytest.mark.slow  # the whole evaluation (fixture `evaluated`)
def test_encoded_frames_equal_unbatched_encoding(evaluated, dsprites_data_dir):
  workdir, _ = evaluated
  config = _eval_config(dsprites_data_dir)
  info = prepared.dataset_info(config.dataset)
  networks, main, _ = restore.load_main_network(config, str(workdir), info)
  frames = np.random.default_rng(0).integers(0, 256, (11, 64, 64, 3), np.uint8)
  mesh = evaluate.sharding.create_mesh()
  encode_fn = mig_scores.make_encode_fn(networks, mesh)
  z_c, z_p = mig_scores.encode_frames(encode_fn, main, frames, 8, mesh)
  content, _ = autoencoder.encode_content(
    networks, main["params"], main["batch_stats"], frames
  )
  pose = autoencoder.encode_pose(networks, main["params"], main["batch_stats"], frames)
  np.testing.assert_allclose(z_c, content, atol=1e-5)
  np.testing.assert_allclose(z_p, pose, atol=1e-5)


@pytest.mark.slow  # the whole evaluation (fixture `evaluated`)
def test_compare_prints_one_table_over_two_runs(evaluated, tmp_path):
  workdir, result = evaluated
  other = tmp_path / "drnet_run"
  (other / "eval").mkdir(parents=True)
  (other / "eval" / "metrics.json").write_text(
    json.dumps({**result, "method": "drnet", "run": "drnet_run"})
  )
  text = compare.compare([str(workdir), str(other)], str(tmp_path / "cmp"))
  header, rule, *rows = text.split("\n\n")[0].splitlines()
  assert "MIG" in header and "PSNR @1" in header and "LPIPS-alex @1" in header
  # Only 3 predicted frames: no column for frames 10 and 30.
  assert "@10" not in header and "@30" not in header
  assert [row.split()[0] for row in rows] == ["mipae", "drnet"]
  assert f"{result['mig']['MIG']:.4f}" in rows[0]
  markdown = (tmp_path / "cmp" / compare.MARKDOWN_FILE).read_text().splitlines()
  assert len(markdown) == 4 and markdown[2].startswith("| mipae | ")
  assert sorted(p.name for p in (tmp_path / "cmp").glob("*.png")) == [
    f"curves_{name}_moving_dsprites_rotating_small.png"
    for name in ("lpips_alex", "object_error", "psnr", "ssim")
  ]
  assert "One-object MIG" in header and "sprite1 error @1" in header


def test_comparison_marks_partial_and_missing_mig():
  base = {
    "method": "mipae",
    "run": "r",
    "dataset": "moving_mnist",
    "builder_config": "grey",
    "main_step": 10,
    "lstm_step": 5,
    "frame_metrics": {
      "frames": list(range(1, 31)),
      "curves": {
        "psnr": {
          "mean": [20.0] * 30,
          "ci95": [None] * 30,
          "horizon_mean": 20.0,
          "horizon_ci95": None,
        }
      },
    },
  }
  terms = {term: 0.5 for term in eval_outputs.MIG_TAGS}
  terms.update({f"{term}_ci95": 0.01 for term in eval_outputs.MIG_TAGS})
  partial = {**base, "mig": {**terms, "partial": True}}
  skipped = {**base, "run": "s", "mig": None}
  markdown = compare.comparison_table_markdown([partial, skipped])
  header, _, partial_row, skipped_row = markdown.splitlines()
  assert "PSNR @10" in header and "PSNR @30" in header
  assert (
    "| 0.5000 ± 0.0100 (partial) | 0.5000 ± 0.0100 | 0.5000 ± 0.0100 | partial |"
    in partial_row
  )
  assert "| Oracle MIG | Swapped MIG |" in header
  assert "| 20.00 | 20.00 | 20.00 |" in partial_row
  assert "| - | - | - | - | - | - | - | - |" in skipped_row
  scalars = eval_outputs.scalar_summaries(partial)
  assert "eval_mig_partial/MIG" in scalars and "eval_mig/MIG" not in scalars
  assert scalars["eval_mig_partial/MIG_ci95"] == 0.01
  assert "eval_mig_partial/oracle_MIG" in scalars


def test_compare_of_an_unevaluated_workdir_says_how_to_evaluate(tmp_path):
  with pytest.raises(FileNotFoundError, match="--mode=eval"):
    compare.compare([str(tmp_path)])


def test_missing_checkpoints_are_checkpoint_errors(
  tmp_path, trained_workdir, dsprites_data_dir
):
  config = _eval_config(dsprites_data_dir)
  with pytest.raises(
    checkpointing.CheckpointError, match="No checkpoint.*Train it first"
  ):
    evaluate.evaluate(config, str(tmp_path / "empty"))
  main_only = tmp_path / "main_only"
  shutil.copytree(trained_workdir / "checkpoints", main_only / "checkpoints")
  with pytest.raises(checkpointing.CheckpointError, match="Run stage 2 first"):
    evaluate.evaluate(config, str(main_only))
  config.eval.step = 3
  with pytest.raises(checkpointing.CheckpointError, match="No checkpoint of step 3"):
    evaluate.evaluate(config, str(main_only))


@pytest.mark.slow  # the whole evaluation (fixture `evaluated`)
def test_incompatible_checkpoint_is_a_checkpoint_error(evaluated, dsprites_data_dir):
  workdir, _ = evaluated
  config = _eval_config(dsprites_data_dir, **{"model.pose_dim": 4})
  with pytest.raises(
    checkpointing.CheckpointError, match="another experiment.*pose_dim"
  ):
    evaluate.evaluate(config, str(workdir))


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"eval.num_future": 40}, "test videos of moving_dsprites/rotating_small have 35"),
    ({"eval.num_sequences": 65}, "exceeds the 64 test videos"),
    ({"eval.lpips_nets": ("squeeze",)}, "lpips_nets has \\['squeeze'\\]"),
    ({"eval.num_future": 0}, "eval.num_future=0"),
    ({"eval.batch_size": 12}, "eval.batch_size=12 must be divisible"),
    ({"eval.mig_protocol": "iid"}, "eval.mig_protocol='iid'; expected one of"),
    ({"eval.mig_folds": 0}, "eval.mig_folds=0 must be an integer >= 1"),
  ],
)
def test_bad_eval_config_fails_before_restoring(
  tmp_path, dsprites_data_dir, overrides, message
):
  with pytest.raises(ValueError, match=message):
    evaluate.evaluate(_eval_config(dsprites_data_dir, **overrides), str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
  "info_changes, message",
  [
    ({"num_test": 0}, "test split of moving_dsprites/rotating_small is empty"),
    (
      {"content_factor_names": ()},
      "no known content and pose factors.*num_mig_frames=0",
    ),
  ],
)
def test_bad_dataset_fails_before_restoring(
  tmp_path, dsprites_data_dir, monkeypatch, info_changes, message
):
  real_info = prepared.dataset_info
  monkeypatch.setattr(
    prepared,
    "dataset_info",
    lambda dataset_config: dataclasses.replace(
      real_info(dataset_config), **info_changes
    ),
  )
  with pytest.raises(ValueError, match=message):
    evaluate.evaluate(_eval_config(dsprites_data_dir), str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


def test_eval_console_summary_lists_mig_its_ceilings_and_the_last_frame():
  def curve(values):
    return {"mean": values, "ci95": [0.0] * len(values)}

  result = {
    "method": "mipae",
    "run": "run_a",
    "main_step": 600,
    "lstm_step": 200,
    "frame_metrics": {
      "num_sequences": 32,
      "frames": [1, 2],
      "objects": ["sprite0"],
      "curves": {
        "psnr": curve([21.5, 19.25]),
        "ssim": curve([0.8, 0.7]),
        "object_error_sprite0": curve([0.2, 0.4]),
        "recon_object_error_sprite0": curve([0.1, 0.15]),
      },
    },
    "mig": {
      "MIG": 0.5123,
      "MIG_ci95": 0.011,
      "protocol": "per_object",
      "oracle_MIG": 1.0,
      "swapped_MIG": -1.0,
      "one_object_MIG": 0.46,
      "objects": ["sprite0"],
      "content_captured[sprite0]": 0.91,
      "pose_captured[sprite0]": 0.88,
    },
    "files": {"csv": "/w/eval/frame_metrics.csv"},
  }
  lines = eval_outputs.console_summary(result).splitlines()
  assert lines[1] == (
    "MIG 0.5123 ± 0.0110 (per_object; oracle 1.000, swapped -1.000, one object 0.460)"
  )
  assert "content 0.91, pose 0.88" in lines[2]
  assert lines[3] == "At predicted frame 2: psnr 19.2500, ssim 0.7000"
  assert "0.400 predicted, 0.150 with true poses" in lines[4]
  assert lines[-1].startswith("Files: /w/eval (metrics.json")
