"""learning_curves: per-checkpoint scores, resumable, and the plot."""

import json
import shutil

import numpy as np
import pytest
from conftest import tiny_config

from mipae_jax import restore
from mipae_jax.evaluation import learning_curves


def test_reconstruction_errors_of_a_copy_and_of_black_frames():
  rng = np.random.default_rng(0)
  video = rng.integers(0, 256, size=(2, 3, 8, 8, 3), dtype=np.uint8)
  copy = learning_curves.reconstruction_errors(video / 255.0, video)
  assert copy["recon_mse"] < 1e-12 and copy["recon_mse_g"] < 1e-12
  black = learning_curves.reconstruction_errors(np.zeros(video.shape), video)
  for channel in ("r", "g", "b"):
    assert black[f"recon_mse_{channel}"] == pytest.approx(black[f"black_mse_{channel}"])
    assert black[f"black_mse_{channel}"] > 0.1


@pytest.mark.slow
def test_curves_score_every_checkpoint_once_and_plot(
  tmp_path, trained_workdir, dsprites_data_dir
):
  workdir = tmp_path / "run"
  shutil.copytree(trained_workdir, workdir)
  config = tiny_config(dsprites_data_dir)
  scores = learning_curves.score_checkpoints(
    config, str(workdir), num_videos=8, num_frames=3
  )
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
  assert [s["step"] for s in scores] == steps
  for row in scores:
    for key in ("MIG", "MIG_ci95", "oracle_MIG", "recon_mse", "black_mse_g"):
      assert np.isfinite(row[key]), key
    assert (workdir / "curves" / f"swap_grid_{row['step']:07d}.png").stat().st_size
  # Rerun: nothing new is scored, nothing is scored twice.
  again = learning_curves.score_checkpoints(
    config, str(workdir), num_videos=8, num_frames=3
  )
  assert again == scores
  lines = (workdir / "curves" / "scores.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == steps
  plot = learning_curves.plot_learning_curves([str(workdir)], str(tmp_path / "c.png"))
  assert (tmp_path / "c.png").stat().st_size > 10_000 and plot.endswith("c.png")


@pytest.mark.slow
def test_a_checkpoint_that_goes_while_curves_score_is_skipped(
  tmp_path, trained_workdir, dsprites_data_dir, monkeypatch, caplog
):
  """Curves beside a live run whose rotation deletes step 2 mid-scoring."""
  workdir = tmp_path / "run"
  shutil.copytree(trained_workdir, workdir)
  real_load = restore.load_main_network

  def rotating_load(config, workdir_, info, step):
    if step == 2:
      shutil.rmtree(workdir / "checkpoints" / "2")
    return real_load(config, workdir_, info, step=step)

  monkeypatch.setattr(restore, "load_main_network", rotating_load)
  with caplog.at_level("WARNING"):
    scores = learning_curves.score_checkpoints(
      tiny_config(dsprites_data_dir), str(workdir), num_videos=8, num_frames=3
    )
  assert [s["step"] for s in scores] == [4]
  assert "The checkpoint of step 2 went while it was being scored" in caplog.text
  assert "run --mode=curves again" in caplog.text
