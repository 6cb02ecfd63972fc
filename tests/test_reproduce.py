"""The one-command MIPAE vs DRNET reproduction, end to end at the tiny scale."""

import json
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest
from absl import flags
from ml_collections import config_flags

from mipae_jax import config_fields, train, train_lstm
from mipae_jax.configs import base, mipae_dsprites
from mipae_jax.evaluation import evaluate
from mipae_jax.experiments import paper, report, reproduce, verdict

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, dsprites_data_dir):
  """Both methods reproduced once at the tiny scale: (workdir, report path)."""
  workdir = tmp_path_factory.mktemp("reproduce") / "run"
  report_path = reproduce.reproduce(
    "moving_dsprites", "tiny", str(workdir), data_dir=str(dsprites_data_dir)
  )
  return workdir, report_path


def _table_rows(report: str, heading: str) -> list[list[str]]:
  """Cells of the first Markdown table after `heading`, header excluded."""
  section = report.split(heading, 1)[1].splitlines()
  start = next(i for i, line in enumerate(section) if line.startswith("|"))
  lines = []
  for line in section[start:]:
    if not line.startswith("|"):
      break
    lines.append(line)
  return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def _metrics(workdir, method: str) -> dict:
  return json.loads((workdir / method / "eval" / "metrics.json").read_text())


def _record_stages(monkeypatch) -> list[str]:
  """Wraps every stage with a recorder; returns the list of stages called."""
  calls = []

  def recorder(name, function):
    def record(config, workdir):
      calls.append(f"{config.method}/{name}")
      return function(config, workdir)

    return record

  monkeypatch.setattr(
    train, "train_and_evaluate", recorder("main", train.train_and_evaluate)
  )
  monkeypatch.setattr(
    train_lstm, "train_and_evaluate", recorder("lstm", train_lstm.train_and_evaluate)
  )
  monkeypatch.setattr(evaluate, "evaluate", recorder("eval", evaluate.evaluate))
  return calls


@pytest.mark.slow
def test_report_table_i_holds_each_methods_measured_mig(reproduced):
  workdir, report_path = reproduced
  text = open(report_path).read()
  rows = {row[0]: row for row in _table_rows(text, "## Table I")}
  for method in ("mipae", "drnet"):
    mig = _metrics(workdir, method)["mig"]
    row = rows[f"{method.upper()} (this run, step 4)"]
    for column, term in enumerate(paper.TABLE_I_TERMS, start=1):
      mean, ci95 = row[column].split(" ± ")
      assert float(mean) == pytest.approx(mig[term], abs=6e-5)
      assert float(ci95) == pytest.approx(mig[f"{term}_ci95"], abs=6e-5)
    assert float(row[-2].split(" ± ")[0]) == pytest.approx(mig["oracle_MIG"], abs=6e-5)
    one_object = float(row[-1].split(" ± ")[0])
    assert one_object == pytest.approx(mig["one_object_MIG"], abs=6e-5)
    printed = rows[f"{method.upper()} (paper)"]
    assert float(printed[-3]) == paper.PAPER_TABLE_I["moving_dsprites"][method]["MIG"]
    assert printed[-2] == printed[-1] == "-"


@pytest.mark.slow
def test_report_frame_metrics_and_comparison_come_from_the_evaluations(reproduced):
  workdir, report_path = reproduced
  text = open(report_path).read()
  rows = {row[0]: row for row in _table_rows(text, "## Prediction quality")}
  assert set(rows) == {"mipae", "drnet"}
  for method in ("mipae", "drnet"):
    curves = _metrics(workdir, method)["frame_metrics"]["curves"]
    psnr = float(rows[method][3].split(" ± ")[0])
    assert psnr == pytest.approx(curves["psnr"]["mean"][0], abs=6e-3)
  mig = {m: _metrics(workdir, m)["mig"]["MIG"] for m in ("mipae", "drnet")}
  winner = "MIPAE" if mig["mipae"] > mig["drnet"] else "DRNET"
  match = re.search(r"- MIG: MIPAE (\S+), DRNET (\S+); (\w+) is better", text)
  assert match is not None
  assert float(match[1].rstrip(",")) == pytest.approx(mig["mipae"], rel=1e-3)
  assert float(match[2].rstrip(";")) == pytest.approx(mig["drnet"], rel=1e-3)
  assert match[3] == winner
  assert "LPIPS-alex at frame 3:" in text


@pytest.mark.slow
def test_report_images_exist_beside_it(reproduced):
  workdir, report_path = reproduced
  links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", open(report_path).read())
  names = {link.rsplit("/", 1)[-1] for link in links}
  assert {
    "mipae_swap_grid.png",
    "drnet_swap_grid.png",
    "mipae_predictions.png",
    "drnet_predictions.png",
  } <= names
  assert any(name.startswith("curves_lpips_alex") for name in names)
  for link in links:
    assert (workdir / link).read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_wall_time_of_every_stage_is_measured_and_stored(reproduced):
  workdir, report_path = reproduced
  timings = json.loads((workdir / reproduce.TIMINGS_FILE).read_text())
  for method in ("mipae", "drnet"):
    for stage in reproduce.STAGES:
      (segment,) = timings[method][stage]
      assert segment["seconds"] > 0
    assert timings[method]["main"][0]["to_step"] == 4
  rows = _table_rows(open(report_path).read(), "## Wall time")
  stage_rows = [row for row in rows if row[0] in ("mipae", "drnet")]
  assert len(stage_rows) == 6
  assert all(re.fullmatch(r"\d+:\d\d:\d\d", row[2]) for row in stage_rows)


@pytest.mark.slow
def test_report_states_settings_and_commands(reproduced):
  workdir, report_path = reproduced
  text = open(report_path).read()
  settings = dict(row[:2] for row in _table_rows(text, "## Settings"))
  assert settings["main network: steps x batch"] == "4 x 8"
  assert settings["scale"] == "tiny"
  assert settings["training videos"] == "the 256 stored ones, reshuffled each epoch"
  assert "| `eval.lpips_nets` | ('alex', 'vgg') | ('alex',) |" in text
  assert (
    "python -m mipae_jax.main --mode=reproduce "
    f"--config=configs/mipae_dsprites.py:tiny --workdir={workdir} "
    "--config.dataset.data_dir="
  ) in text
  assert (
    f"python -m mipae_jax.main --mode=compare --workdirs={workdir}/mipae,"
    f"{workdir}/drnet"
  ) in text
  assert f"--workdir={workdir}/drnet --mode=train_lstm" in text


@pytest.mark.slow
def test_second_call_skips_every_stage(reproduced, dsprites_data_dir, monkeypatch):
  workdir, report_path = reproduced
  timings_before = (workdir / reproduce.TIMINGS_FILE).read_text()
  calls = _record_stages(monkeypatch)
  started = time.monotonic()
  again = reproduce.reproduce(
    "moving_dsprites", "tiny", str(workdir), data_dir=str(dsprites_data_dir)
  )
  assert calls == []
  assert time.monotonic() - started < 30
  assert again == report_path
  assert (workdir / reproduce.TIMINGS_FILE).read_text() == timings_before


@pytest.mark.slow
def test_interrupted_run_resumes_each_stage_where_it_stopped(
  reproduced, dsprites_data_dir, tmp_path, monkeypatch
):
  workdir, _ = reproduced
  resumed = tmp_path / "run"
  shutil.copytree(workdir, resumed)
  # DRNET's main network back at its step-2 checkpoint (its LSTM stays
  # complete so that the test stays short); its old evaluation is then stale.
  shutil.rmtree(resumed / "drnet" / "checkpoints" / "4")
  stale = (resumed / "drnet" / "eval" / "metrics.json").stat().st_mtime_ns
  (resumed / report.REPORT_FILE).unlink()
  calls = _record_stages(monkeypatch)
  report_path = reproduce.reproduce(
    "moving_dsprites", "tiny", str(resumed), data_dir=str(dsprites_data_dir)
  )
  assert calls == ["drnet/main", "drnet/eval"]
  timings = json.loads((resumed / reproduce.TIMINGS_FILE).read_text())
  last_main = timings["drnet"]["main"][-1]
  assert (last_main["from_step"], last_main["to_step"]) == (2, 4)
  assert len(timings["mipae"]["main"]) == 1
  assert (resumed / "drnet" / "eval" / "metrics.json").stat().st_mtime_ns > stale
  text = open(report_path).read()
  assert "Not evaluated yet" not in text
  assert "DRNET (this run, step 4)" in text


def test_comparison_sentences_follow_the_numbers():
  def run(mig, lpips_last):
    curve = {"mean": [0.5, lpips_last], "ci95": [0.01, 0.01], "horizon_mean": 0.5}
    return {
      "num_future": 2,
      "mig": {term: mig for term in paper.TABLE_I_TERMS} | {"partial": False},
      "frame_metrics": {"frames": [1, 2], "curves": {"lpips_alex": curve}},
    }

  better = verdict.comparison_sentences(
    "moving_dsprites", {"mipae": run(0.9, 0.1), "drnet": run(0.8, 0.3)}
  )
  worse = verdict.comparison_sentences(
    "moving_dsprites", {"mipae": run(0.7, 0.4), "drnet": run(0.8, 0.3)}
  )
  mig_better = next(s for s in better if s.startswith("MIG:"))
  assert "MIPAE is better" in mig_better and "agrees" in mig_better
  mig_worse = next(s for s in worse if s.startswith("MIG:"))
  assert "DRNET is better" in mig_worse and "does not agree" in mig_worse
  assert "intervals do not overlap" in next(
    s for s in better if s.startswith("LPIPS-alex at frame 2")
  )
  assert "MIPAE leads on 2 of 2" in better[-1]
  assert "matches the paper's claim" in better[-1]
  assert "Without an interval: MIG" in better[-1]
  assert "DRNET on 2" in worse[-1] and "does not match" in worse[-1]
  # MIPAE ahead everywhere, but LPIPS within the intervals: no claim of a match.
  close = verdict.comparison_sentences(
    "moving_dsprites", {"mipae": run(0.9, 0.29), "drnet": run(0.8, 0.3)}
  )
  assert "MIPAE leads on 2 of 2" in close[-1]
  assert "Within the 95 % intervals (noise): LPIPS-alex at frame 2" in close[-1]
  assert "consistent with the paper's claim, not evidence" in close[-1]

  # MIG with its interval: a lead within it is noise, one beyond it is clear.
  def with_ci(mig, ci95):
    result = run(mig, 0.1 if mig > 0.85 else 0.3)
    result["mig"] |= {f"{term}_ci95": ci95 for term in paper.TABLE_I_TERMS}
    return result

  noisy = verdict.comparison_sentences(
    "moving_dsprites", {"mipae": with_ci(0.9, 0.06), "drnet": with_ci(0.8, 0.06)}
  )
  assert "intervals overlap" in next(s for s in noisy if s.startswith("MIG:"))
  assert "Within the 95 % intervals (noise): MIG" in noisy[-1]
  clear = verdict.comparison_sentences(
    "moving_dsprites", {"mipae": with_ci(0.9, 0.01), "drnet": with_ci(0.8, 0.01)}
  )
  assert "do not overlap" in next(s for s in clear if s.startswith("MIG:"))
  assert "matches the paper's claim" in clear[-1]


def test_reduced_scale_keeps_architecture_loss_and_data():
  reduced = reproduce.build_config("moving_dsprites", "mipae", "reduced")
  reference = reproduce.paper_config("moving_dsprites", "mipae")
  changed = config_fields.changed_fields(reduced, reference)
  assert changed["num_train_steps"][1] < reference.num_train_steps
  for field in changed:
    assert not field.startswith(("model.", "loss.", "dataset.", "seed"))
    assert field not in ("learning_rate", "adam_b1", "adam_b2", "method")
  drnet = reproduce.build_config("moving_dsprites", "drnet", "reduced")
  assert config_fields.changed_fields(drnet, reduced) == {"method": ("mipae", "drnet")}


def _main_config(spec: str):
  """The config `python -m mipae_jax.main --config=SPEC` runs, loaded by the
  same config_flags flag from the repository root."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values, lock_config=True)
  flag_values(["main", f"--config={spec}"])
  return flag_values.config


@pytest.mark.parametrize("method", ["mipae", "drnet"])
@pytest.mark.parametrize("scale", ["reduced", "tiny"])
def test_main_config_variant_is_the_scale_reproduce_trains(method, scale, monkeypatch):
  monkeypatch.chdir(REPO_ROOT)
  # configs/ is the root's link to mipae_jax/configs.
  config = _main_config(f"configs/{method}_dsprites.py:{scale}")
  assert config_fields.flatten(config) == config_fields.flatten(
    reproduce.build_config("moving_dsprites", method, scale)
  )
  paper_settings = _main_config(f"configs/{method}_dsprites.py")
  assert config_fields.flatten(paper_settings) == config_fields.flatten(
    reproduce.paper_config("moving_dsprites", method)
  )


def test_smoke_and_tiny_are_different_variants():
  smoke = mipae_dsprites.get_config("smoke")
  tiny = mipae_dsprites.get_config("tiny")
  changed = config_fields.changed_fields(tiny, smoke)
  assert {"dataset.num_frames", "num_train_steps", "lstm.num_context"} <= set(changed)
  assert smoke.dataset.builder_config == tiny.dataset.builder_config == "rotating_small"


def test_unknown_variant_names_the_valid_ones(monkeypatch):
  monkeypatch.chdir(REPO_ROOT)
  valid = (
    "expected one of reduced, smoke, tiny, long_cpu, accelerator, device_check, "
    "device_check_smoke or none"
  )
  with pytest.raises(ValueError, match=f"Unknown config variant 'huge'; {valid}"):
    base.apply_variant(base.get_base_config(), "huge")
  with pytest.raises(flags.IllegalFlagValueError, match=valid):
    _main_config("configs/mipae_mnist.py:huge")


@pytest.mark.slow
def test_the_quickstart_command_leaves_a_report_and_names_it(
  tmp_path, dsprites_data_dir
):
  """README's one command, at the tiny scale, from a fresh process: both
  methods trained, evaluated and reported; it prints where the report and
  the pictures are."""
  workdir = tmp_path / "quick"
  done = subprocess.run(
    [
      sys.executable,
      "-m",
      "mipae_jax.main",
      "--mode=reproduce",
      "--config=configs/mipae_dsprites.py:tiny",
      f"--workdir={workdir}",
      f"--config.dataset.data_dir={dsprites_data_dir}",
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=1800,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  report_path = workdir / report.REPORT_FILE
  assert f"Report: {report_path}" in done.stdout
  assert f"Pictures: {workdir / report.FIGURES_DIR}" in done.stdout
  assert "## Comparison" in report_path.read_text()
  assert any((workdir / report.FIGURES_DIR).glob("*.png"))
