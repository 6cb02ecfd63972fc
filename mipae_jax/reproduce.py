"""The paper's MIPAE vs DRNET comparison (Table I, Fig. 5) in one command.

  python -m mipae_jax.reproduce --dataset=moving_dsprites --scale=reduced --workdir=DIR

For each method, with the same data, seed and number of training frames, it
trains the main network (DIR/<method>), then the pose LSTM, evaluates both,
and writes DIR/report.md with its figures in DIR/figures/ and the wall time
of every stage in DIR/timings.json. Run the same command again to resume:
a stage whose checkpoints reached their final step (or whose
eval/metrics.json has the same steps and settings, and no training stage of
that method ran) is skipped; any other resumes from its latest checkpoint.

Scales (`SCALES`):
  paper    the configs as they are: batch 100, 240k steps per stage, 2,000
           test sequences x 30 frames, 100k MIG frames, LPIPS alex and vgg.
  reduced  every architecture, loss, optimiser and dataset the same; batch 16,
           6,000 main and 1,200 LSTM steps, 500 test sequences, MIG on 20k
           frames, LPIPS alex only: both methods finish on a 2-core CPU in
           about 1.5 hours (measured step times in `REDUCED_RATIONALE`).
  tiny     a few steps on the small embedded dataset, for tests.
"""

import ast
import datetime
import importlib
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import app, flags, logging
from etils import epath

from mipae_jax import (
  checkpointing,
  compare,
  evaluate,
  input_pipeline,
  train,
  train_lstm,
  visualize,
)

METHODS = ("mipae", "drnet")
SCALES = ("paper", "reduced", "tiny")
# Dataset name -> suffix of its configs/{method}_{suffix}.py.
CONFIG_SUFFIXES = {
  "moving_dsprites": "dsprites",
  "moving_mnist": "mnist",
  "moving_mpi3d": "mpi3d",
}
REPORT_FILE = "report.md"
TIMINGS_FILE = "timings.json"
FIGURES_DIR = "figures"
STAGES = ("main", "lstm", "eval")
STAGE_NAMES = {
  "prepare": "dataset build",
  "main": "main network",
  "lstm": "pose LSTM",
  "eval": "evaluation",
}
MAIN_MODES = {"main": "train", "lstm": "train_lstm", "eval": "eval"}
TABLE_I_TERMS = ("I(f_c,z_c)", "I(f_c,z_p)", "I(f_p,z_c)", "I(f_p,z_p)", "MIG")


def _table_i_row(values: tuple[float, ...]) -> dict[str, float]:
  return dict(zip(TABLE_I_TERMS, values, strict=True))


# Table I of the paper, as printed (MIPAE's I(f_p,z_c) on dSprites reads
# 0.725, likely 0.0725: it is copied unchanged).
PAPER_TABLE_I = {
  "moving_dsprites": {
    "drnet": _table_i_row((5.6476, 0.7483, 0.0748, 6.3434, 0.8574)),
    "mipae": _table_i_row((5.6992, 0.4660, 0.725, 6.4977, 0.8975)),
  },
  "moving_mpi3d": {
    "drnet": _table_i_row((8.1353, 0.0376, 0.0448, 6.2029, 0.5658)),
    "mipae": _table_i_row((8.3866, 0.0461, 0.0080, 7.1034, 0.6126)),
  },
}
# Which way is better for each Table I term and frame metric.
HIGHER_IS_BETTER = {
  "I(f_c,z_c)": True,
  "I(f_c,z_p)": False,
  "I(f_p,z_c)": False,
  "I(f_p,z_p)": True,
  "MIG": True,
  "psnr": True,
  "ssim": True,
  "lpips_alex": False,
  "lpips_vgg": False,
}

REDUCED_RATIONALE = (
  "Step times were measured on this 2-core CPU (AMD EPYC, AVX-512), idle, "
  "with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 and "
  "benchmarks/train_throughput.py (median of 5 steps after 2 warm-up steps): a "
  "MIPAE main step took 0.19 s at batch 16 and 1.02 s at batch 100 (DRNET 0.16 "
  "s and 1.04 s), a pose-LSTM step (5 context + 10 future frames) 0.24 s at "
  "batch 16, and predicting 30 frames ran at 38 sequences/s. Batches 16 and "
  "100 see about the same number of videos per second (83 vs 98); batch 16 "
  "gives 6x more updates for the same videos, which matters far from "
  "convergence. 6,000 main steps x 16 videos (96,000 videos: about 5 epochs of "
  "the 20,000 training videos, 0.4 % of the paper's 24M) take about 20-30 "
  "minutes per method with logging and checkpoints, 1,200 LSTM steps about 5 "
  "minutes, the evaluation 2-8 minutes: about 1.5 hours for both methods. The "
  "evaluation keeps the paper's protocol (5 context, 30 predicted frames) on "
  "500 of the 2,000 test sequences, and estimates MIG on 20,000 frames instead "
  "of 100,000 (the k-NN estimator grows faster than linearly). LPIPS uses "
  "AlexNet only: LPIPS-vgg scored 12 frames/s against AlexNet's 355 (loaded "
  "machine), 21 minutes per method for the 15,000 predicted frames."
)


def _reduced_settings() -> dict[str, Any]:
  """Overrides of the `reduced` scale (see REDUCED_RATIONALE)."""
  return {
    "batch_size": 16,
    "num_train_steps": 6_000,
    "log_every_steps": 100,
    "image_every_steps": 3_000,
    "checkpoint_every_steps": 500,
    "lstm.batch_size": 16,
    "lstm.num_train_steps": 1_200,
    "lstm.log_every_steps": 100,
    "lstm.image_every_steps": 1_200,
    "lstm.checkpoint_every_steps": 300,
    "eval.batch_size": 50,
    "eval.num_sequences": 500,
    "eval.num_mig_frames": 20_000,
    "eval.lpips_nets": ("alex",),
  }


def _tiny_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Overrides of the `tiny` scale: seconds per stage, on the small dataset."""
  return {
    "dataset.builder_config": f"{config.dataset.builder_config}_small",
    "dataset.num_frames": 6,
    "batch_size": 8,
    "num_train_steps": 4,
    "log_every_steps": 2,
    "image_every_steps": 4,
    "checkpoint_every_steps": 2,
    "lstm.batch_size": 8,
    "lstm.num_context": 3,
    "lstm.num_future": 4,
    "lstm.num_train_steps": 4,
    "lstm.log_every_steps": 2,
    "lstm.image_every_steps": 4,
    "lstm.checkpoint_every_steps": 2,
    "eval.batch_size": 8,
    "eval.num_future": 3,
    "eval.num_sequences": 8,
    "eval.num_mig_frames": 200,
    "eval.lpips_nets": ("alex",),
  }


def scale_overrides(scale: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Dotted config field -> value that `scale` sets on a paper config."""
  if scale == "paper":
    return {}
  if scale == "reduced":
    return _reduced_settings()
  if scale == "tiny":
    return _tiny_settings(config)
  raise ValueError(f"Unknown scale {scale!r}; expected one of {SCALES}.")


def set_field(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
  """Sets the dotted `field` of `config`, which must exist."""
  *parents, leaf = field.split(".")
  node = config
  for parent in parents:
    if parent not in node:
      raise ValueError(f"Unknown config field {field!r}.")
    node = node[parent]
  if leaf not in node:
    raise ValueError(f"Unknown config field {field!r}.")
  node[leaf] = value


def paper_config(dataset: str, method: str) -> ml_collections.ConfigDict:
  """The config of configs/{method}_{dataset}.py, the paper's settings."""
  if dataset not in CONFIG_SUFFIXES:
    raise ValueError(
      f"Unknown dataset {dataset!r}; expected one of {sorted(CONFIG_SUFFIXES)}."
    )
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; expected some of {METHODS}.")
  module = importlib.import_module(f"configs.{method}_{CONFIG_SUFFIXES[dataset]}")
  return module.get_config()


def build_config(
  dataset: str,
  method: str,
  scale: str,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  overrides: dict[str, Any] | None = None,
) -> ml_collections.ConfigDict:
  """The config of one method at `scale`, with the data dirs and `overrides`."""
  config = paper_config(dataset, method)
  fields = dict(scale_overrides(scale, config))
  if data_dir is not None:
    fields["dataset.data_dir"] = data_dir
  if manual_dir is not None:
    fields["dataset.manual_dir"] = manual_dir
  fields.update(overrides or {})
  for field, value in fields.items():
    set_field(config, field, value)
  return config


def flatten(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Dotted field -> value of every leaf of `config`."""
  flat = {}

  def visit(node: dict[str, Any], prefix: str) -> None:
    for key, value in node.items():
      if isinstance(value, dict):
        visit(value, f"{prefix}{key}.")
      else:
        flat[f"{prefix}{key}"] = value

  visit(config.to_dict(), "")
  return flat


def changed_fields(
  config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict
) -> dict[str, tuple[Any, Any]]:
  """Field -> (reference value, config value) where the two differ."""
  ours, theirs = flatten(config), flatten(reference)
  return {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}


class StageIncomplete(RuntimeError):
  """A training stage stopped before its final step (e.g. preempted by SIGTERM)."""


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


def _latest_checkpoint(
  config: ml_collections.ConfigDict, workdir: str, info: Any, stage: str
) -> int:
  """Latest checkpoint step of the main network or the LSTM (0 when none)."""
  if stage == "main":
    checkpoints = checkpointing.Checkpointer(workdir, config, info)
  else:
    checkpoints = checkpointing.Checkpointer(
      workdir,
      config,
      info,
      subdir="lstm_checkpoints",
      fingerprint=train_lstm.lstm_fingerprint(config, info),
    )
  step = checkpoints.latest_step()
  checkpoints.close()
  return step or 0


def _final_step(config: ml_collections.ConfigDict, stage: str) -> int:
  return config.num_train_steps if stage == "main" else config.lstm.num_train_steps


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
  final = _final_step(config, stage)
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
  path = epath.Path(workdir) / evaluate.EVAL_DIR / evaluate.METRICS_FILE
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
    and set(result["frame_metrics"]["curves"]) == wanted_curves
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


def _format_value(value: Any) -> str:
  """A config value as the text a flag takes: strings bare, the rest as literals."""
  return value if isinstance(value, str) else repr(value)


def _flag(name: str, value: Any) -> str:
  """`--name=value`, the value double-quoted for the shell when it needs it."""
  text = _format_value(value)
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
  """The `python -m mipae_jax.reproduce` command line of these arguments."""
  args = [
    "python -m mipae_jax.reproduce",
    _flag("dataset", dataset),
    _flag("scale", scale),
    _flag("workdir", workdir),
  ]
  if tuple(methods) != METHODS:
    args.append(_flag("methods", ",".join(methods)))
  if data_dir is not None:
    args.append(_flag("data_dir", data_dir))
  if manual_dir is not None:
    args.append(_flag("manual_dir", manual_dir))
  for field, value in (overrides or {}).items():
    args.append(_flag("override", f"{field}={_format_value(value)}"))
  return " ".join(args)


def stage_commands(
  configs: dict[str, ml_collections.ConfigDict],
  dataset: str,
  workdir: str,
  changed: dict[str, tuple[Any, Any]],
) -> list[str]:
  """Bash lines running the same stages with `python -m mipae_jax.main`.

  `dataset.data_dir` goes through TFDS_DATA_DIR and `dataset.manual_dir` is
  left out (the data is built before any stage runs): main.py cannot
  override config fields whose default is None.
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
  runs = " ".join(shlex.quote(os.path.join(workdir, m)) for m in configs)
  lines.append(f"python -m mipae_jax.evaluate --compare {runs}")
  return lines


# ---------------------------------------------------------------- report --


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  def line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

  separator = "|" + "|".join("---" for _ in header) + "|"
  return "\n".join([line(header), separator, *(line(row) for row in rows)])


def _duration(seconds: float | None) -> str:
  if seconds is None:
    return "-"
  minutes, secs = divmod(round(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}"


def _settings_section(
  scale: str,
  config: ml_collections.ConfigDict,
  changed: dict[str, tuple[Any, Any]],
  info: Any,
) -> str:
  lstm_frames = config.lstm.num_context + config.lstm.num_future
  num_sequences = (
    info.num_test if config.eval.num_sequences == -1 else config.eval.num_sequences
  )
  rows = [
    ["scale", scale],
    ["dataset", f"{config.dataset.name}/{config.dataset.builder_config}"],
    ["seed", str(config.seed)],
    ["main network: steps x batch", f"{config.num_train_steps} x {config.batch_size}"],
    [
      "main network: videos seen (2 frames sampled from each)",
      f"{config.num_train_steps * config.batch_size:,} "
      f"({2 * config.num_train_steps * config.batch_size:,} frames)",
    ],
    [
      "pose LSTM: steps x batch",
      f"{config.lstm.num_train_steps} x {config.lstm.batch_size}",
    ],
    [
      f"pose LSTM: sequences seen ({lstm_frames} frames each)",
      f"{config.lstm.num_train_steps * config.lstm.batch_size:,} "
      f"({lstm_frames * config.lstm.num_train_steps * config.lstm.batch_size:,} "
      "frames)",
    ],
    [
      "evaluation: test sequences, context + predicted frames",
      f"{num_sequences}, {config.eval.num_context} + {config.eval.num_future}",
    ],
    ["evaluation: MIG frames", f"{config.eval.num_mig_frames:,}"],
    ["evaluation: LPIPS nets", ", ".join(config.eval.lpips_nets)],
  ]
  parts = [
    "## Settings",
    "",
    "Both methods use the same data, seed, architecture, optimiser and number "
    "of training frames; they differ only in `method`.",
    "",
    _markdown_table(["Setting", "Value"], rows),
    "",
  ]
  if changed:
    parts += [
      "Fields changed from the paper configs (`configs/<method>_"
      f"{CONFIG_SUFFIXES[config.dataset.name]}.py`):",
      "",
      _markdown_table(
        ["Field", "Paper", "This run"],
        [
          [f"`{k}`", _format_value(a), _format_value(b)]
          for k, (a, b) in changed.items()
        ],
      ),
      "",
    ]
  else:
    parts += ["No field differs from the paper configs.", ""]
  if scale == "reduced":
    parts += [
      "Why these reduced settings: " + REDUCED_RATIONALE,
      "",
    ]
  return "\n".join(parts)


def _table_i_section(dataset: str, metrics: dict[str, dict[str, Any]]) -> str:
  paper = PAPER_TABLE_I.get(dataset, {})
  rows = []
  for method in METHODS:
    if method in paper:
      rows.append(
        [
          f"{method.upper()} (paper)",
          *(compare.number(paper[method][t], 4) for t in TABLE_I_TERMS),
          "-",
        ]
      )
    if method in metrics:
      mig = metrics[method]["mig"] or {}
      label = f"{method.upper()} (this run, step {metrics[method]['main_step']})"
      values = [compare.mig_cell(mig, t) for t in TABLE_I_TERMS]
      if mig.get("partial"):
        values[-1] += " (partial)"
      rows.append([label, *values, compare.mig_cell(mig, "oracle_MIG")])
  parts = [
    "## Table I: disentanglement (MIG, eq. 8)",
    "",
    _markdown_table(["Experiment", *TABLE_I_TERMS, "Oracle MIG"], rows),
    "",
    "Higher is better for I(f_c,z_c), I(f_p,z_p) and MIG; lower for the "
    "leakage terms I(f_c,z_p) and I(f_p,z_c). Mutual informations in nats, "
    "each the mean ± 95 % interval over the MIG frame sets. Oracle MIG is the "
    "ceiling of the protocol: a perfect encoder's codes scored on the same "
    "frames; a model's MIG is read against it.",
  ]
  if paper:
    num_frames = {m["mig"]["num_frames"] for m in metrics.values() if m["mig"]}
    parts.append(
      "The paper's rows are copied as printed (MIPAE's I(f_p,z_c) on dSprites "
      "reads 0.725, likely 0.0725); the paper estimates them on 100,000 frames, "
      f"this run on {', '.join(f'{n:,}' for n in sorted(num_frames)) or '-'}."
    )
  else:
    parts.append(f"The paper reports no Table I row for {dataset}.")
  return "\n".join(parts) + "\n"


def _frame_section(metrics: dict[str, dict[str, Any]]) -> str:
  header, rows = compare.comparison_table(list(metrics.values()))
  keep = [i for i, h in enumerate(header) if h in ("Method", "Main step", "LSTM step")]
  keep += [i for i, h in enumerate(header) if "@" in h]
  horizon = next(iter(metrics.values()))["num_future"]
  return "\n".join(
    [
      "## Prediction quality (Fig. 5)",
      "",
      f"Mean ± 95 % confidence half-width over test sequences at predicted "
      f"frames {', '.join(str(f) for f in compare.TABLE_FRAMES if f <= horizon)} "
      f"(of {horizon}).",
      "",
      _markdown_table([header[i] for i in keep], [[r[i] for i in keep] for r in rows]),
      "",
    ]
  )


def _figures_section(workdir: epath.Path, metrics: dict[str, dict[str, Any]]) -> str:
  figures = workdir / FIGURES_DIR
  figures.mkdir(parents=True, exist_ok=True)
  curve_paths = visualize.plot_curves(list(metrics.values()), figures)
  parts = ["## Figures", "", "Per-frame curves of both methods (Fig. 5):", ""]
  for path in curve_paths:
    name = os.path.basename(path)
    parts.append(f"![{name}]({FIGURES_DIR}/{name})")
  parts.append("")
  for method in metrics:
    eval_dir = workdir / method / evaluate.EVAL_DIR
    for picture, caption in (
      ("swap_grid", "swap grid (pose from the top row, content from the left column)"),
      ("predictions", "ground truth above prediction (context framed green)"),
    ):
      source = eval_dir / f"{picture}.png"
      if not source.exists():
        continue
      name = f"{method}_{picture}.png"
      shutil.copyfile(source, figures / name)
      parts += [
        f"{method.upper()} {caption}:",
        "",
        f"![{name}]({FIGURES_DIR}/{name})",
        "",
      ]
  return "\n".join(parts)


def _timings_section(
  timings: Timings, methods: Sequence[str], configs: dict[str, Any]
) -> str:
  timings.reload()
  rows = []
  prepare = timings.seconds("data", "prepare")
  if prepare is not None:
    rows.append(["data", STAGE_NAMES["prepare"], _duration(prepare), "-", "-"])
  total = prepare or 0.0
  for method in methods:
    for stage in STAGES:
      seconds = timings.seconds(method, stage)
      total += seconds or 0.0
      if stage == "eval" or seconds is None:
        steps, per_step = "-", "-"
      else:
        run = sum(
          s["to_step"] - s["from_step"] for s in timings.segments(method, stage)
        )
        steps = f"{run} of {_final_step(configs[method], stage)}"
        per_step = f"{seconds / run:.3f}"
      rows.append([method, STAGE_NAMES[stage], _duration(seconds), steps, per_step])
  return "\n".join(
    [
      "## Wall time",
      "",
      f"Measured per stage and kept in `{TIMINGS_FILE}` across resumes (the "
      "time of a stage killed without a clean stop counts up to its last "
      "checkpoint; steps redone after it are counted again). Total: "
      f"{_duration(total)}.",
      "",
      _markdown_table(["Method", "Stage", "Wall time", "Steps timed", "s/step"], rows),
      "",
    ]
  )


def _commands_section(
  command: str,
  configs: dict[str, ml_collections.ConfigDict],
  dataset: str,
  workdir: str,
  changed: dict[str, tuple[Any, Any]],
) -> str:
  return "\n".join(
    [
      "## Commands",
      "",
      "This report (run it again to resume or to rewrite the report):",
      "",
      "```bash",
      command,
      "```",
      "",
      "The same stages one by one, from the repository root:",
      "",
      "```bash",
      *stage_commands(configs, dataset, workdir, changed),
      "```",
      "",
    ]
  )


def _which(
  name: str, mipae: float, drnet: float, higher_is_better: bool
) -> tuple[str, str]:
  """(sentence comparing the two values, winner: "MIPAE", "DRNET" or "neither")."""
  if mipae == drnet:
    return f"{name}: MIPAE and DRNET are equal ({mipae:.4g}).", "neither"
  better = "MIPAE" if (mipae > drnet) == higher_is_better else "DRNET"
  word = "higher" if higher_is_better else "lower"
  return (
    f"{name}: MIPAE {mipae:.4g}, DRNET {drnet:.4g}; {better} is better by "
    f"{abs(mipae - drnet):.3g} ({word} is better).",
    better,
  )


def _intervals(
  a: float, a_ci: float | None, b: float, b_ci: float | None
) -> tuple[bool | None, str]:
  """(whether the 95 % intervals are disjoint, the sentence saying so);
  (None, "") when either number has no interval."""
  if a_ci is None or b_ci is None:
    return None, ""
  if abs(a - b) > a_ci + b_ci:
    return True, " The 95 % intervals do not overlap."
  return False, " The 95 % intervals overlap: the difference is within noise."


def _frame_value(run_metrics: dict[str, Any], name: str, frame: int):
  curves = run_metrics["frame_metrics"]
  index = curves["frames"].index(frame)
  curve = curves["curves"][name]
  return curve["mean"][index], curve["ci95"][index]


def _summary(wins: dict[str, tuple[str | None, bool | None]]) -> str:
  """One sentence: who leads on the headline numbers, and beyond noise or not.

  `wins` maps a headline number to (winner, clear): clear is whether the 95 %
  intervals are disjoint, None where the number has no interval.
  """

  mipae = [key for key, (winner, _) in wins.items() if winner == "MIPAE"]
  drnet = [key for key, (winner, _) in wins.items() if winner == "DRNET"]
  summary = (
    f"Summary: MIPAE leads on {len(mipae)} of {len(wins)} headline numbers"
    f" ({', '.join(mipae) or 'none'}), DRNET on {len(drnet)}"
    f" ({', '.join(drnet) or 'none'})."
  )
  if not wins:
    return summary
  led = mipae + drnet
  within_noise = [key for key in led if wins[key][1] is False]
  no_interval = [key for key in led if wins[key][1] is None]
  if within_noise:
    summary += f" Within the 95 % intervals (noise): {', '.join(within_noise)}."
  if no_interval:
    summary += f" Without an interval: {', '.join(no_interval)}."
  if len(mipae) < len(wins):
    return summary + (
      " This does not match the paper's claim that MIPAE is better on all of them."
    )
  if not set(mipae) & set(within_noise):
    return summary + (
      " This matches the paper's claim (Table I, Fig. 5): MIPAE disentangles "
      "better and predicts better at long range."
    )
  return summary + (
    " MIPAE leads on all of them, as in the paper, but not all leads are beyond "
    "noise: this run is consistent with the paper's claim, not evidence for it."
  )


def comparison_sentences(dataset: str, metrics: dict[str, dict[str, Any]]) -> list[str]:
  """The plain-language MIPAE vs DRNET comparison, computed from the numbers."""
  if not {"mipae", "drnet"} <= metrics.keys():
    return [
      "Only "
      + ", ".join(m.upper() for m in metrics)
      + " was evaluated: there is nothing to compare it with."
    ]
  mipae, drnet = metrics["mipae"], metrics["drnet"]
  sentences, wins = [], {}
  paper = PAPER_TABLE_I.get(dataset)
  if mipae["mig"] and drnet["mig"]:
    partial = " (partial: content factors are the digit labels only)" * bool(
      mipae["mig"].get("partial")
    )
    for term in TABLE_I_TERMS:
      sentence, winner = _which(
        term + partial * (term == "MIG"),
        mipae["mig"][term],
        drnet["mig"][term],
        HIGHER_IS_BETTER[term],
      )
      clear, note = _intervals(
        mipae["mig"][term],
        mipae["mig"].get(f"{term}_ci95"),
        drnet["mig"][term],
        drnet["mig"].get(f"{term}_ci95"),
      )
      sentence += note
      if term == "MIG":
        wins["MIG"] = (winner, clear)
        if paper:
          paper_winner = (
            "MIPAE" if paper["mipae"]["MIG"] > paper["drnet"]["MIG"] else "DRNET"
          )
          agrees = "agrees" if winner == paper_winner else "does not agree"
          sentence += (
            f" The paper has MIPAE {paper['mipae']['MIG']:.4f} vs DRNET "
            f"{paper['drnet']['MIG']:.4f}: this run {agrees} with the paper's "
            "ordering."
          )
      sentences.append(sentence)
  horizon = mipae["num_future"]
  for name in mipae["frame_metrics"]["curves"]:
    if name not in drnet["frame_metrics"]["curves"]:
      continue
    label = compare.FRAME_METRICS[name][0]
    for frame in sorted({1, horizon}):
      (a, a_ci), (b, b_ci) = (
        _frame_value(mipae, name, frame),
        _frame_value(drnet, name, frame),
      )
      sentence, winner = _which(
        f"{label} at frame {frame}", a, b, HIGHER_IS_BETTER[name]
      )
      clear, note = _intervals(a, a_ci, b, b_ci)
      sentence += note
      if frame == horizon:
        wins[f"{label} at frame {frame}"] = (winner, clear)
      sentences.append(sentence)
    a = mipae["frame_metrics"]["curves"][name]["horizon_mean"]
    b = drnet["frame_metrics"]["curves"][name]["horizon_mean"]
    sentences.append(
      _which(
        f"{label} averaged over the {horizon} frames", a, b, HIGHER_IS_BETTER[name]
      )[0]
    )
  sentences.append(_summary(wins))
  return sentences


def _comparison_section(
  dataset: str,
  metrics: dict[str, dict[str, Any]],
  config: ml_collections.ConfigDict,
  reference: ml_collections.ConfigDict,
) -> str:
  fraction = (config.num_train_steps * config.batch_size) / (
    reference.num_train_steps * reference.batch_size
  )
  parts = ["## Comparison", ""]
  parts += [f"- {sentence}" for sentence in comparison_sentences(dataset, metrics)]
  parts += [
    "",
    f"Each main network saw {100 * fraction:.3g} % of the paper's training videos "
    f"({config.num_train_steps * config.batch_size:,} of "
    f"{reference.num_train_steps * reference.batch_size:,}).",
  ]
  if fraction < 1:
    parts.append(
      "The numbers therefore describe networks early in training, not the "
      "converged ones of the paper; training longer (toward the paper's steps "
      "and batch 100) is the first thing to change to test its claim."
    )
  return "\n".join(parts) + "\n"


def write_report(
  workdir: str,
  dataset: str,
  scale: str,
  configs: dict[str, ml_collections.ConfigDict],
  info: Any,
  timings: Timings,
  command: str,
) -> str:
  """Writes DIR/report.md (and DIR/figures/) from the evaluated methods."""
  root = epath.Path(workdir)
  first = next(iter(configs.values()))
  reference = paper_config(dataset, first.method)
  changed = changed_fields(first, reference)
  metrics = {
    method: compare.load_metrics(root / method)
    for method in configs
    if eval_is_current(configs[method], str(root / method), info)
  }
  pending = [m.upper() for m in configs if m not in metrics]
  parts = [
    f"# MIPAE vs DRNET on {dataset} ({scale} scale)",
    "",
    f"Written by `mipae_jax.reproduce` on "
    f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.",
    "",
  ]
  if pending:
    parts += [f"**Not evaluated yet:** {', '.join(pending)}. Rerun the command.", ""]
  parts.append(_settings_section(scale, first, changed, info))
  if metrics:
    parts += [
      _table_i_section(dataset, metrics),
      _frame_section(metrics),
      _comparison_section(dataset, metrics, first, reference),
      _figures_section(root, metrics),
    ]
  parts += [
    _timings_section(timings, list(configs), configs),
    _commands_section(command, configs, dataset, workdir, changed),
  ]
  path = root / REPORT_FILE
  path.write_text("\n".join(parts))
  return str(path)


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
  if scale not in SCALES:
    raise ValueError(f"Unknown scale {scale!r}; expected one of {SCALES}.")
  if not methods or len(set(methods)) != len(methods):
    raise ValueError(f"methods={methods!r} must name each method at most once.")
  configs = {
    method: build_config(dataset, method, scale, data_dir, manual_dir, overrides)
    for method in methods
  }
  root = epath.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  timings = Timings(root / TIMINGS_FILE)
  command = reproduce_command(
    dataset, scale, workdir, methods, data_dir, manual_dir, overrides
  )
  dataset_config = configs[methods[0]].dataset
  if not input_pipeline.get_builder(dataset_config).is_prepared():
    started = time.monotonic()
    input_pipeline.prepare_dataset(dataset_config)
    timings.add("data", "prepare", time.monotonic() - started, 0, 0)
  info = input_pipeline.dataset_info(dataset_config)

  def report() -> str:
    return write_report(workdir, dataset, scale, configs, info, timings, command)

  for method, config in configs.items():
    method_dir = str(root / method)
    trained = run_training_stage("main", config, method_dir, info, timings)
    trained = run_training_stage("lstm", config, method_dir, info, timings) or trained
    if run_eval_stage(config, method_dir, info, timings, force=trained):
      report()
  path = report()
  logging.info("Report: %s", path)
  return path


def parse_override(text: str) -> tuple[str, Any]:
  """`field=value`: the value as a Python literal, else as a plain string."""
  field, sep, value = text.partition("=")
  if not sep or not field:
    raise ValueError(f"--override={text!r} must be FIELD=VALUE.")
  try:
    return field, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return field, value


FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, list(CONFIG_SUFFIXES), "Dataset to compare on.")
flags.DEFINE_enum("scale", "reduced", list(SCALES), "paper, reduced or tiny.")
flags.DEFINE_string("workdir", None, "Directory of both runs and the report.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS's).")
flags.DEFINE_string("manual_dir", None, "Directory of the dataset's source files.")
flags.DEFINE_list("methods", list(METHODS), "Methods to run, in order.")
flags.DEFINE_multi_string(
  "override", [], "FIELD=VALUE set on every method's config after the scale's."
)
flags.mark_flags_as_required(["dataset", "workdir"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  overrides = dict(parse_override(text) for text in FLAGS.override)
  try:
    path = reproduce(
      FLAGS.dataset,
      FLAGS.scale,
      FLAGS.workdir,
      tuple(FLAGS.methods),
      FLAGS.data_dir,
      FLAGS.manual_dir,
      overrides or None,
    )
  except StageIncomplete as error:
    logging.warning("%s", error)
    sys.exit(checkpointing.PREEMPTED_EXIT_CODE)
  print(f"Report: {path}")


if __name__ == "__main__":
  app.run(main)
