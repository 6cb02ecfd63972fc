"""The paper's MIPAE vs DRNET comparison (Table I, Fig. 5) in one command.

  python -m mipae_jax.main --mode=reproduce --config=configs/mipae_dsprites.py:reduced
      --workdir=DIR [--methods=mipae,drnet] [--config.FIELD=VALUE ...]

(any method's config file of the dataset; its variant is the scale).

For each method, with the same data, seed and number of training frames, it
trains the main network (DIR/<method>), then the pose LSTM, evaluates both,
and writes DIR/report.md (mipae_jax/experiments/report.py) with its figures in
DIR/figures/ and the wall time of every stage in DIR/timings.json. Run the
same command again to resume: a stage whose checkpoints reached their final
step (or whose eval/metrics.json has the same steps and settings, and no
training stage of that method ran) is skipped; any other resumes from its
latest checkpoint.

Scales (`SCALES`) are the variants of the config files (configs/base.py):
  paper    configs/<method>_<dataset>.py as they are: batch 100, 240k steps
           per stage, 2,000 test sequences x 30 frames, 100k MIG frames,
           LPIPS alex and vgg.
  reduced  `--config=configs/<method>_<dataset>.py:reduced`: every
           architecture, loss, optimiser and dataset the same; batch 16, 6,000
           main and 1,200 LSTM steps, 500 test sequences, MIG on 20k frames,
           LPIPS alex only: both methods finish on a 2-core CPU in about 1.5
           hours (measured step times in paper.REDUCED_RATIONALE).
  smoke    `:smoke`, the quickstart: 600 main and 200 LSTM steps at batch 16
           on the small embedded dataset's fresh videos, a short evaluation;
           8.7 min for MIPAE, 17.5 min for both methods on an idle 2-core
           CPU, far enough for a decoder to draw sprites that follow the pose.
  tiny     `:tiny`, a few steps on the small embedded dataset, for tests.
"""

import datetime
import json
import os
import shlex
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import logging
from etils import epath

from mipae_jax import (
  checkpointing,
  commands,
  config_fields,
  registry,
  restore,
  sweeps,
  train,
  train_lstm,
)
from mipae_jax.datasets import prepared
from mipae_jax.evaluation import eval_outputs, evaluate
from mipae_jax.experiments import compare, report
from mipae_jax.registry import CONFIG_SUFFIXES, METHODS

SCALES = ("paper", "reduced", "smoke", "tiny")
TIMINGS_FILE = "timings.json"
STAGES = ("main", "lstm", "eval")
STAGE_NAMES = {
  "prepare": "dataset build",
  "main": "main network",
  "lstm": "pose LSTM",
  "eval": "evaluation",
}
MAIN_MODES = {"main": "train", "lstm": "train_lstm", "eval": "eval"}


def build_config(
  dataset: str,
  method: str,
  scale: str = "paper",
  data_dir: str | None = None,
  manual_dir: str | None = None,
  overrides: dict[str, Any] | None = None,
) -> ml_collections.ConfigDict:
  """The config of configs/{method}_{dataset}.py at `scale` (its variant, the
  file's own get_config(scale); "paper": none), with the data dirs and the
  dotted-field `overrides`."""
  if scale not in SCALES:
    raise ValueError(f"Unknown scale {scale!r}; expected one of {SCALES}.")
  module = registry.config_module(method, dataset)
  config = module.get_config() if scale == "paper" else module.get_config(scale)
  fields = {"dataset.data_dir": data_dir, "dataset.manual_dir": manual_dir}
  fields = {field: value for field, value in fields.items() if value is not None}
  for field, value in {**fields, **(overrides or {})}.items():
    config_fields.set_field(config, field, value)
  return config


def paper_config(dataset: str, method: str) -> ml_collections.ConfigDict:
  """The config of configs/{method}_{dataset}.py, the paper's settings."""
  return build_config(dataset, method)


class StageIncomplete(RuntimeError):
  """A training stage stopped before its final step (e.g. preempted by SIGTERM)."""


def final_step(config: ml_collections.ConfigDict, stage: str) -> int:
  """The last training step of `stage` ("main" or "lstm")."""
  return config.num_train_steps if stage == "main" else config.lstm.num_train_steps


class Timings:
  """Wall time of every stage, kept in DIR/timings.json across resumes.

  timings[method][stage] is a list of segments {seconds, from_step, to_step,
  finished}: one per invocation that made progress (for an evaluation,
  to_step is the main-network step evaluated). A segment that starts at or
  before an earlier one's start replaces it (that work was redone).
  """

  def __init__(self, path: epath.Path):
    self.path = path
    self.data: dict[str, dict[str, list[dict[str, Any]]]] = {}
    self.reload()

  def reload(self) -> None:
    """Reads the file again: another process (one per method) may have added."""
    if self.path.exists():
      self.data = json.loads(self.path.read_text())

  def add(
    self, method: str, stage: str, seconds: float, from_step: int, to_step: int
  ) -> None:
    self.reload()
    segments = self.data.setdefault(method, {}).setdefault(stage, [])
    segments[:] = [s for s in segments if s["from_step"] < from_step]
    segments.append(
      {
        "seconds": seconds,
        "from_step": from_step,
        "to_step": to_step,
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
      }
    )
    temporary = self.path.parent / f"{self.path.name}.tmp"
    temporary.write_text(json.dumps(self.data, indent=2) + "\n")
    temporary.replace(self.path)

  def segments(self, method: str, stage: str) -> list[dict[str, Any]]:
    return self.data.get(method, {}).get(stage, [])

  def seconds(self, method: str, stage: str) -> float | None:
    segments = self.segments(method, stage)
    return sum(s["seconds"] for s in segments) if segments else None

  def wall_times(
    self, configs: dict[str, ml_collections.ConfigDict]
  ) -> list[report.StageTime]:
    """The report's wall-time rows: the dataset build (once timed), then
    every stage of every method, as the file holds them now."""
    self.reload()
    rows = []
    prepare = self.seconds("data", "prepare")
    if prepare is not None:
      rows.append(report.StageTime("data", STAGE_NAMES["prepare"], prepare, None, None))
    for method, config in configs.items():
      for stage in STAGES:
        seconds = self.seconds(method, stage)
        steps = final = None
        if stage != "eval" and seconds is not None:
          steps = sum(
            s["to_step"] - s["from_step"] for s in self.segments(method, stage)
          )
          final = final_step(config, stage)
        rows.append(report.StageTime(method, STAGE_NAMES[stage], seconds, steps, final))
    return rows


def _latest_checkpoint(
  config: ml_collections.ConfigDict, workdir: str, info: Any, stage: str
) -> int:
  """Latest checkpoint step of the main network or the LSTM (0 when none)."""
  if stage == "main":
    checkpoints = checkpointing.Checkpointer(workdir, config, info)
  else:
    checkpoints = restore.lstm_checkpointer(config, workdir, info)
  with checkpoints:
    return checkpoints.latest_step() or 0


def run_training_stage(
  stage: str,
  config: ml_collections.ConfigDict,
  workdir: str,
  info: Any,
  timings: Timings,
) -> bool:
  """Trains `stage` ("main" or "lstm") to its final step; False when skipped.

  Raises:
    ValueError: the workdir holds a checkpoint past the final step (a run
      with other settings).
    StageIncomplete: training stopped early (SIGTERM); rerun to resume.
  """
  final = final_step(config, stage)
  start = _latest_checkpoint(config, workdir, info, stage)
  name = f"{config.method} {STAGE_NAMES[stage]}"
  if start > final:
    raise ValueError(
      f"{workdir} holds a {STAGE_NAMES[stage]} checkpoint of step {start}, past "
      f"this run's {final} steps: it is another run; use another --workdir."
    )
  if start == final:
    logging.info("%s: complete at step %d, skipped.", name, final)
    return False
  logging.info("%s: training from step %d to %d.", name, start, final)
  train_fn = (
    train.train_and_evaluate if stage == "main" else train_lstm.train_and_evaluate
  )
  started = time.monotonic()
  try:
    train_fn(config, workdir)
  finally:
    reached = _latest_checkpoint(config, workdir, info, stage)
    if reached > start:
      timings.add(config.method, stage, time.monotonic() - started, start, reached)
  if reached != final:
    raise StageIncomplete(
      f"{name} stopped at step {reached} of {final}; run the command again to resume."
    )
  return True


def eval_is_current(config: ml_collections.ConfigDict, workdir: str, info: Any) -> bool:
  """Whether workdir/eval/metrics.json evaluates these steps with these settings."""
  path = epath.Path(workdir) / eval_outputs.EVAL_DIR / eval_outputs.METRICS_FILE
  if not path.exists():
    return False
  result = json.loads(path.read_text())
  num_sequences = config.eval.num_sequences
  wanted_curves = {"psnr", "ssim", *(f"lpips_{n}" for n in config.eval.lpips_nets)}
  return (
    result.get("main_step") == config.num_train_steps
    and result.get("lstm_step") == config.lstm.num_train_steps
    and result.get("num_context") == config.eval.num_context
    and result.get("num_future") == config.eval.num_future
    and result["frame_metrics"]["num_sequences"]
    == (info.num_test if num_sequences == -1 else num_sequences)
    and {c for c in result["frame_metrics"]["curves"] if "object_error" not in c}
    == wanted_curves
    and (result.get("mig") is not None) == bool(config.eval.num_mig_frames)
  )


def run_eval_stage(
  config: ml_collections.ConfigDict,
  workdir: str,
  info: Any,
  timings: Timings,
  force: bool = False,
) -> bool:
  """Evaluates the workdir unless its metrics.json is current; False when skipped.

  `force` evaluates anyway (a training stage ran, so the networks changed).
  """
  if not force and eval_is_current(config, workdir, info):
    logging.info("%s evaluation: metrics.json is current, skipped.", config.method)
    return False
  logging.info("%s evaluation: running.", config.method)
  started = time.monotonic()
  evaluate.evaluate(config, workdir)
  timings.add(
    config.method, "eval", time.monotonic() - started, 0, config.num_train_steps
  )
  return True


def _flag(name: str, value: Any) -> str:
  """`--name=value`, the value double-quoted for the shell when it needs it."""
  text = sweeps.format_value(value)
  if shlex.quote(text) != text and not any(c in text for c in '"$`\\'):
    text = f'"{text}"'
  else:
    text = shlex.quote(text)
  return f"--{name}={text}"


def reproduce_command(
  dataset: str,
  scale: str,
  workdir: str,
  methods: Sequence[str],
  data_dir: str | None,
  manual_dir: str | None,
  overrides: dict[str, Any] | None,
) -> str:
  """The `python -m mipae_jax.main --mode=reproduce` command line of these
  arguments (the config file of the first method, its variant the scale)."""
  config_file = f"configs/{methods[0]}_{CONFIG_SUFFIXES[dataset]}.py"
  if scale != "paper":
    config_file = f"{config_file}:{scale}"
  args = [
    "python -m mipae_jax.main",
    "--mode=reproduce",
    _flag("config", config_file),
    _flag("workdir", workdir),
  ]
  if tuple(methods) != METHODS:
    args.append(_flag("methods", ",".join(methods)))
  if data_dir is not None:
    args.append(_flag("config.dataset.data_dir", data_dir))
  if manual_dir is not None:
    args.append(_flag("config.dataset.manual_dir", manual_dir))
  for field, value in (overrides or {}).items():
    args.append(_flag(f"config.{field}", value))
  return " ".join(args)


def stage_commands(
  configs: dict[str, ml_collections.ConfigDict],
  dataset: str,
  workdir: str,
  changed: dict[str, tuple[Any, Any]],
) -> list[str]:
  """Bash lines running the same stages with `python -m mipae_jax.main`.

  `dataset.data_dir` goes through TFDS_DATA_DIR and `dataset.manual_dir` is
  left out: the data is built before any stage runs.
  """
  overrides = [
    _flag(f"config.{field}", value)
    for field, (_, value) in changed.items()
    if field not in ("dataset.data_dir", "dataset.manual_dir")
  ]
  lines = []
  data_dir = next(iter(configs.values())).dataset.data_dir
  if data_dir is not None:
    lines.append(f"export TFDS_DATA_DIR={shlex.quote(data_dir)}")
  lines.append("OVERRIDES=(" + " ".join(overrides) + ")")
  for method in configs:
    config_file = f"configs/{method}_{CONFIG_SUFFIXES[dataset]}.py"
    method_dir = shlex.quote(os.path.join(workdir, method))
    for stage in STAGES:
      lines.append(
        f"python -m mipae_jax.main --config={config_file} --workdir={method_dir} "
        f'--mode={MAIN_MODES[stage]} "${{OVERRIDES[@]}}"'
      )
  runs = commands.list_value([os.path.join(workdir, m) for m in configs])
  lines.append(f"python -m mipae_jax.main --mode=compare {_flag('workdirs', runs)}")
  return lines


def reproduce(
  dataset: str,
  scale: str,
  workdir: str,
  methods: Sequence[str] = METHODS,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  overrides: dict[str, Any] | None = None,
) -> str:
  """Trains, evaluates and compares `methods` on `dataset`; returns report.md's path.

  Every stage already complete in `workdir` is skipped, every other resumes
  from its checkpoints; the report is rewritten after each method's
  evaluation.

  Raises:
    ValueError: an unknown dataset, scale, method or config field, or a
      workdir holding another run.
    StageIncomplete: a training stage stopped early (SIGTERM).
  """
  if not methods or len(set(methods)) != len(methods):
    raise ValueError(f"methods={methods!r} must name each method at most once.")
  configs = {
    method: build_config(dataset, method, scale, data_dir, manual_dir, overrides)
    for method in methods
  }
  root = epath.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  timings = Timings(root / TIMINGS_FILE)
  dataset_config = configs[methods[0]].dataset
  if not prepared.get_builder(dataset_config).is_prepared():
    started = time.monotonic()
    prepared.prepare_dataset(dataset_config)
    timings.add("data", "prepare", time.monotonic() - started, 0, 0)
  info = prepared.dataset_info(dataset_config)
  reference = paper_config(dataset, methods[0])
  changed = config_fields.changed_fields(configs[methods[0]], reference)
  run = report.Reproduction(
    workdir=workdir,
    dataset=dataset,
    scale=scale,
    configs=configs,
    reference=reference,
    changed=changed,
    info=info,
    command=reproduce_command(
      dataset, scale, workdir, methods, data_dir, manual_dir, overrides
    ),
    stage_commands=stage_commands(configs, dataset, workdir, changed),
    timings_file=TIMINGS_FILE,
  )

  def write_report() -> str:
    metrics = {
      method: compare.load_metrics(root / method)
      for method, config in configs.items()
      if eval_is_current(config, str(root / method), info)
    }
    return report.write_report(run, metrics, timings.wall_times(configs))

  for method, config in configs.items():
    method_dir = str(root / method)
    trained = run_training_stage("main", config, method_dir, info, timings)
    trained = run_training_stage("lstm", config, method_dir, info, timings) or trained
    if run_eval_stage(config, method_dir, info, timings, force=trained):
      write_report()
  path = write_report()
  logging.info("Report: %s", path)
  return path
