"""The reproduction's report: DIR/report.md with its figures in DIR/figures/.

`write_report` turns what `mipae_jax.reproduce` ran (the configs, the
evaluations' metrics.json, the wall time of every stage, the commands) into
Markdown sections: the settings, Table I beside the paper's, the prediction
quality of Fig. 5, a plain-language MIPAE vs DRNET comparison computed from
the numbers (`verdict.comparison_sentences`), the figures, the wall times and the
commands that reproduce it.
"""

import dataclasses
import datetime
import os
import shutil
from collections.abc import Sequence
from typing import Any, NamedTuple

import ml_collections
from etils import epath

from mipae_jax import registry, sweeps
from mipae_jax.evaluation import eval_outputs, visualize
from mipae_jax.experiments import compare, paper, verdict

REPORT_FILE = "report.md"
FIGURES_DIR = "figures"


class StageTime(NamedTuple):
  """One row of the wall-time table."""

  run: str  # the method, or "data" for the dataset build
  stage: str  # e.g. "main network"
  seconds: float | None  # None: not run yet
  steps_timed: int | None  # None for a stage without training steps
  final_step: int | None


@dataclasses.dataclass(frozen=True)
class Reproduction:
  """What a report describes: one `reproduce()` call's settings and commands."""

  workdir: str
  dataset: str
  scale: str
  configs: dict[str, ml_collections.ConfigDict]  # method -> its config
  reference: ml_collections.ConfigDict  # the paper config of the first method
  changed: dict[str, tuple[Any, Any]]  # field -> (paper value, this run's)
  info: Any  # the dataset's prepared.dataset_info
  command: str  # the `python -m mipae_jax.main --mode=reproduce` command line
  stage_commands: list[str]  # the same stages with `python -m mipae_jax.main`
  timings_file: str  # where the wall times are kept


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
    [
      "training videos",
      "rendered fresh, never repeated"
      if config.dataset.fresh_train_videos
      else f"the {info.num_train:,} stored ones, reshuffled each epoch",
    ],
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
    compare.markdown_table(["Setting", "Value"], rows),
    "",
  ]
  if changed:
    parts += [
      "Fields changed from the paper configs (`configs/<method>_"
      f"{registry.CONFIG_SUFFIXES[config.dataset.name]}.py`):",
      "",
      compare.markdown_table(
        ["Field", "Paper", "This run"],
        [
          [f"`{k}`", sweeps.format_value(a), sweeps.format_value(b)]
          for k, (a, b) in changed.items()
        ],
      ),
      "",
    ]
  else:
    parts += ["No field differs from the paper configs.", ""]
  if scale == "reduced":
    parts += [
      "Why these reduced settings: " + paper.REDUCED_RATIONALE,
      "",
    ]
  return "\n".join(parts)


def _table_i_section(dataset: str, metrics: dict[str, dict[str, Any]]) -> str:
  printed = paper.PAPER_TABLE_I.get(dataset, {})
  rows = []
  for method in paper.METHODS:
    if method in printed:
      rows.append(
        [
          f"{method.upper()} (paper)",
          *(compare.number(printed[method][t], 4) for t in paper.TABLE_I_TERMS),
          "-",
          "-",
        ]
      )
    if method in metrics:
      mig = metrics[method]["mig"] or {}
      label = f"{method.upper()} (this run, step {metrics[method]['main_step']})"
      values = [
        compare.mig_cell(mig, t)
        for t in (*paper.TABLE_I_TERMS, "oracle_MIG", "one_object_MIG")
      ]
      rows.append([label, *values])
  parts = [
    "## Table I: disentanglement (MIG, eq. 8)",
    "",
    compare.markdown_table(
      ["Experiment", *paper.TABLE_I_TERMS, "Oracle MIG", "One-object MIG"], rows
    ),
    "",
    "Higher is better for I(f_c,z_c), I(f_p,z_p) and MIG; lower for the "
    "leakage terms I(f_c,z_p) and I(f_p,z_c). Mutual informations in nats, "
    "each the mean ± 95 % interval over the MIG frame sets. Oracle MIG is the "
    "ceiling of the protocol: a perfect encoder's codes scored on the same "
    "frames; a model's MIG is read against it. One-object MIG is what a "
    "perfect encoder of the first object alone scores on the same frames (a "
    "model that draws one object of two sits near it); the comparison table "
    "below gives each object's captured shares.",
  ]
  if printed:
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
      compare.markdown_table(
        [header[i] for i in keep], [[r[i] for i in keep] for r in rows]
      ),
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
    eval_dir = workdir / method / eval_outputs.EVAL_DIR
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


def _timings_section(wall_times: Sequence[StageTime], timings_file: str) -> str:
  rows = []
  for time in wall_times:
    steps, per_step = "-", "-"
    if time.steps_timed is not None:
      steps = f"{time.steps_timed} of {time.final_step}"
      per_step = f"{time.seconds / time.steps_timed:.3f}"
    rows.append([time.run, time.stage, _duration(time.seconds), steps, per_step])
  total = sum(time.seconds or 0.0 for time in wall_times)
  return "\n".join(
    [
      "## Wall time",
      "",
      f"Measured per stage and kept in `{timings_file}` across resumes (the "
      "time of a stage killed without a clean stop counts up to its last "
      "checkpoint; steps redone after it are counted again). Total: "
      f"{_duration(total)}.",
      "",
      compare.markdown_table(
        ["Method", "Stage", "Wall time", "Steps timed", "s/step"], rows
      ),
      "",
    ]
  )


def _commands_section(command: str, stage_commands: Sequence[str]) -> str:
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
      *stage_commands,
      "```",
      "",
    ]
  )


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
  parts += [
    f"- {sentence}" for sentence in verdict.comparison_sentences(dataset, metrics)
  ]
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
  run: Reproduction,
  metrics: dict[str, dict[str, Any]],
  wall_times: Sequence[StageTime],
) -> str:
  """Writes DIR/report.md (and DIR/figures/) from the evaluated methods'
  `metrics` (method -> its metrics.json); returns the report's path."""
  root = epath.Path(run.workdir)
  first = next(iter(run.configs.values()))
  pending = [m.upper() for m in run.configs if m not in metrics]
  parts = [
    f"# MIPAE vs DRNET on {run.dataset} ({run.scale} scale)",
    "",
    f"Written by `mipae_jax.reproduce` on "
    f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.",
    "",
  ]
  if pending:
    parts += [f"**Not evaluated yet:** {', '.join(pending)}. Rerun the command.", ""]
  parts.append(_settings_section(run.scale, first, run.changed, run.info))
  if metrics:
    parts += [
      _table_i_section(run.dataset, metrics),
      _frame_section(metrics),
      _comparison_section(run.dataset, metrics, first, run.reference),
      _figures_section(root, metrics),
    ]
  parts += [
    _timings_section(wall_times, run.timings_file),
    _commands_section(run.command, run.stage_commands),
  ]
  path = root / REPORT_FILE
  path.write_text("\n".join(parts))
  return str(path)
