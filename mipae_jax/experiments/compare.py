"""Comparison of evaluated runs: one table and overlaid per-frame curves.

Each run is a workdir evaluated by `evaluate.evaluate` (DIR/eval/metrics.json).
The table has one row per run, as Table I of the paper: method, run, dataset,
steps, the four mutual informations, both entropies and MIG (eq. 8), each
"mean ± 95 % CI" over the MIG frame sets, beside the protocol's ceiling and
floor on the same frames (oracle and swapped codes) and, with several
objects, the one-object ceiling (an oracle of one object only) and each
object's captured shares I(f^s; z) / H(f^s) of its content and pose; then
PSNR / SSIM / LPIPS and each object's channel error over the all-black error
(mean ± 95 % CI) at predicted frames 1, 10 and 30 where the runs have them
(Fig. 5). MIG on Moving MNIST uses only the digit labels
as content factors and is marked "partial". Command line:

  python -m mipae_jax.main --mode=compare --workdirs=DIR1,DIR2,... [--workdir=OUT]
"""

import json
import os
from collections.abc import Sequence
from typing import Any

from etils import epath

from mipae_jax.evaluation import disentanglement, visualize
from mipae_jax.experiments import paper

TABLE_FRAMES = (1, 10, 30)
FRAME_METRICS = {
  "psnr": ("PSNR", 2),
  "ssim": ("SSIM", 4),
  "lpips_alex": ("LPIPS-alex", 4),
  "lpips_vgg": ("LPIPS-vgg", 4),
}
MARKDOWN_FILE = "comparison.md"
_MISSING = "-"


def load_metrics(workdir: str | os.PathLike) -> dict[str, Any]:
  """The metrics.json of an evaluated workdir, or a FileNotFoundError saying how."""
  path = epath.Path(workdir) / "eval" / "metrics.json"
  if not path.exists():
    raise FileNotFoundError(
      f"{path} does not exist: evaluate the run first with "
      f"`python -m mipae_jax.main --mode=eval --config=... --workdir={workdir}`."
    )
  return json.loads(path.read_text())


def number(value: float | None, digits: int, ci95: float | None = None) -> str:
  """`value` to `digits` decimals, "value ± ci95" when it has an interval."""
  if value is None:
    return _MISSING
  if ci95 is None:
    return f"{value:.{digits}f}"
  return f"{value:.{digits}f} ± {ci95:.{digits}f}"


def mig_cell(mig: dict[str, Any], term: str, digits: int = 4) -> str:
  """One MIG term of an evaluation's "mig" entry, with its interval; MIG
  itself marked "(partial)" when only some factors were scored."""
  cell = number(mig.get(term), digits, mig.get(f"{term}_ci95"))
  return cell + " (partial)" * (term == "MIG" and bool(mig.get("partial")))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A GitHub Markdown table of text cells (a "|" in a cell escaped)."""

  def line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

  separator = "|" + "|".join("---" for _ in header) + "|"
  return "\n".join([line(header), separator, *(line(row) for row in rows)])


def _frame_value(run_metrics: dict[str, Any], name: str, frame: int) -> str:
  frame_metrics = run_metrics["frame_metrics"]
  curve = frame_metrics["curves"].get(name)
  if curve is None or frame not in frame_metrics["frames"]:
    return _MISSING
  digits = FRAME_METRICS[name][1] if name in FRAME_METRICS else 3
  index = frame_metrics["frames"].index(frame)
  return number(curve["mean"][index], digits, curve["ci95"][index])


def comparison_table(
  metrics_list: Sequence[dict[str, Any]],
) -> tuple[list[str], list[list[str]]]:
  """(header, rows) of the comparison: one row per run, cells as text."""
  frames = [
    f
    for f in TABLE_FRAMES
    if any(f in m["frame_metrics"]["frames"] for m in metrics_list)
  ]
  names = [
    n
    for n in FRAME_METRICS
    if any(n in m["frame_metrics"]["curves"] for m in metrics_list)
  ]
  objects = list(
    dict.fromkeys(o for m in metrics_list for o in (m["mig"] or {}).get("objects", []))
  )
  captured = [
    disentanglement.captured_term(group, o)
    for o in objects
    for group in ("content", "pose")
  ]
  drawn = list(
    dict.fromkeys(
      o for m in metrics_list for o in m["frame_metrics"].get("objects", [])
    )
  )
  errors = [f"object_error_{o}" for o in drawn]
  header = [
    "Method",
    "Run",
    "Dataset",
    "Main step",
    "LSTM step",
    *paper.MIG_TERMS,
    "Oracle MIG",
    "Swapped MIG",
    *(["One-object MIG"] if objects else []),
    *captured,
    "MIG factors",
    *(f"{FRAME_METRICS[n][0]} @{f}" for n in names for f in frames),
    *(f"{o} error @{f}" for o in drawn for f in frames),
  ]
  rows = []
  for m in metrics_list:
    mig = m["mig"] or {}
    partial = mig.get("partial")
    factors = _MISSING if partial is None else "partial" if partial else "full"
    rows.append(
      [
        m["method"],
        m["run"],
        f"{m['dataset']}/{m['builder_config']}",
        str(m["main_step"]),
        str(m["lstm_step"]),
        *(mig_cell(mig, term) for term in paper.MIG_TERMS),
        mig_cell(mig, "oracle_MIG"),
        mig_cell(mig, "swapped_MIG"),
        *([mig_cell(mig, "one_object_MIG")] if objects else []),
        *(mig_cell(mig, term, 3) for term in captured),
        factors,
        *(_frame_value(m, n, f) for n in names for f in frames),
        *(_frame_value(m, e, f) for e in errors for f in frames),
      ]
    )
  return header, rows


def comparison_table_markdown(metrics_list: Sequence[dict[str, Any]]) -> str:
  """The comparison table in GitHub Markdown."""
  return markdown_table(*comparison_table(metrics_list)) + "\n"


def comparison_table_text(metrics_list: Sequence[dict[str, Any]]) -> str:
  """The comparison table as aligned plain-text columns, for a terminal."""
  header, rows = comparison_table(metrics_list)
  widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

  def line(cells: list[str]) -> str:
    padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
    return "  ".join(padded).rstrip()

  rule = "  ".join("-" * width for width in widths)
  return "\n".join([line(header), rule, *(line(row) for row in rows)]) + "\n"


def default_output_dir(workdirs: Sequence[str]) -> str:
  """COMMON_PARENT/comparison: beside the runs of a sweep, in the run for one."""
  return os.path.join(
    os.path.commonpath([os.path.abspath(w) for w in workdirs]), "comparison"
  )


def compare(workdirs: Sequence[str], output_dir: str | None = None) -> str:
  """Writes comparison.md and the overlaid curves; returns the text to print."""
  if not workdirs:
    raise ValueError("Give at least one evaluated workdir to compare.")
  metrics_list = [load_metrics(workdir) for workdir in workdirs]
  out_dir = epath.Path(output_dir or default_output_dir(workdirs))
  out_dir.mkdir(parents=True, exist_ok=True)
  markdown_path = out_dir / MARKDOWN_FILE
  markdown_path.write_text(comparison_table_markdown(metrics_list))
  plots = visualize.plot_curves(metrics_list, out_dir)
  return "\n".join(
    [
      comparison_table_text(metrics_list),
      f"Markdown table: {markdown_path}",
      *(f"Plot: {path}" for path in plots),
    ]
  )
