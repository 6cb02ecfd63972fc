"""What `evaluate.evaluate` writes to DIR/eval: metrics.json, frame_metrics.csv,
the PNG pictures (swap grid, prediction strips, per-frame curves) and
TensorBoard events (`eval_` tags)."""

import csv
import io
import json
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from clu import metric_writers
from etils import epath

from mipae_jax.evaluation import disentanglement, visualize

EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
CSV_FILE = "frame_metrics.csv"
# Rows and columns of the swap grid, sequences in the prediction strips.
SWAP_CONTENT_ROWS = 6
SWAP_POSE_COLUMNS = 8
STRIP_SEQUENCES = 4
# TensorBoard tag of each Table I term.
MIG_TAGS = {
  **disentanglement.MIG_TERMS,
  "oracle_MIG": "oracle_MIG",
  "swapped_MIG": "swapped_MIG",
}


def mig_tags(mig: dict[str, Any]) -> dict[str, str]:
  """The TensorBoard tag of every MIG term an evaluation has: Table I's, the
  ceilings, and with several objects the one-object ceiling and each
  object's captured shares (content_captured_sprite0, ...)."""
  tags = dict(MIG_TAGS)
  if mig.get("objects"):
    tags["one_object_MIG"] = "one_object_MIG"
    for name in mig["objects"]:
      for group in ("content", "pose"):
        tags[disentanglement.captured_term(group, name)] = f"{group}_captured_{name}"
  return tags


def json_ready(value: Any) -> Any:
  """Non-finite floats as None (strict JSON), NumPy scalars as Python ones."""
  if isinstance(value, dict):
    return {key: json_ready(item) for key, item in value.items()}
  if isinstance(value, list | tuple):
    return [json_ready(item) for item in value]
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def frame_metrics_csv(result: dict[str, Any]) -> str:
  """One row per predicted frame: index, then mean and CI of each metric."""
  curves = result["frame_metrics"]["curves"]
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(
    ["frame", *(f"{name}_{part}" for name in curves for part in ("mean", "ci95"))]
  )
  for i, frame in enumerate(result["frame_metrics"]["frames"]):
    row = [frame]
    for curve in curves.values():
      row += [curve["mean"][i], curve["ci95"][i]]
    writer.writerow(["" if value is None else value for value in row])
  return buffer.getvalue()


def scalar_summaries(result: dict[str, Any]) -> dict[str, float]:
  """TensorBoard scalars: per-frame curves, horizon means, the MIG terms."""
  scalars = {}
  frames = result["frame_metrics"]["frames"]
  for name, curve in result["frame_metrics"]["curves"].items():
    for frame, mean in zip(frames, curve["mean"], strict=True):
      scalars[f"eval_{name}/frame_{frame:02d}"] = mean
    scalars[f"eval_{name}/horizon_mean"] = curve["horizon_mean"]
  if result["mig"]:
    group = "eval_mig_partial" if result["mig"]["partial"] else "eval_mig"
    for term, tag in mig_tags(result["mig"]).items():
      scalars[f"{group}/{tag}"] = result["mig"][term]
      scalars[f"{group}/{tag}_ci95"] = result["mig"][f"{term}_ci95"]
  return {k: v for k, v in scalars.items() if v is not None}


def pictures(
  swap_decode: Callable[[Any, Any, np.ndarray, np.ndarray], jax.Array],
  main: dict[str, Any],
  videos: np.ndarray,
  predicted: np.ndarray,
  num_context: int,
  title: str = "",
) -> dict[str, np.ndarray]:
  """The swap grid (Figs. 3, 4, 6) and the prediction strips, as labelled
  [H, W, 3] pictures whose titles start with `title` (run and step).

  Args:
    swap_decode: autoencoder.swap_decode of the networks, jitted once per
      evaluation: (params, batch_stats, content_frames, pose_frames) -> grid.
    main: the replicated main-network variables ("params", "batch_stats").
    videos: uint8 [n, C + T, H, W, ch], the first test videos; the first
      gives the poses, the others the contents.
    predicted: [m, T, H, W, ch] in [0, 1], the predictions of the first m.
    num_context: C, the context frames of each video.
  """
  pose_video = videos[0]
  columns = np.linspace(0, len(pose_video) - 1, min(len(pose_video), SWAP_POSE_COLUMNS))
  pose_frames = pose_video[np.round(columns).astype(int)]
  # Content from the last context frame (the one prediction uses) of the
  # other test videos; the pose video's own when it is the only one.
  content_frames = videos[1:, num_context - 1] if len(videos) > 1 else videos[:1, 0]
  # One device's copy of the replicated variables: process 0 renders alone.
  local = jax.tree.map(lambda x: x.addressable_data(0), main)
  grid = swap_decode(local["params"], local["batch_stats"], content_frames, pose_frames)
  grid_image = visualize.swap_grid_image(content_frames, pose_frames, np.asarray(grid))
  strips = visualize.prediction_strips(videos[: len(predicted)], predicted, num_context)
  return {
    "swap_grid": visualize.labelled(
      grid_image, f"{title}: swap grid", *visualize.SWAP_GRID_LABELS
    ),
    "predictions": visualize.labelled(
      strips,
      f"{title}: {num_context} context + {predicted.shape[1]} predicted frames",
      *visualize.STRIP_LABELS,
    ),
  }


def write_outputs(
  result: dict[str, Any],
  images: dict[str, np.ndarray],
  workdir: str,
) -> dict[str, Any]:
  """The PNGs of `images` and of the per-frame curves, the CSV and the
  TensorBoard events of `result` in workdir/eval (process 0 only); returns
  their paths: image name, "curves" (a list) and "csv"."""
  out_dir = epath.Path(workdir) / EVAL_DIR
  out_dir.mkdir(parents=True, exist_ok=True)
  files: dict[str, Any] = {}
  for name, image in images.items():
    path = out_dir / f"{name}.png"
    path.write_bytes(visualize.encode_png(image))
    files[name] = str(path)
  ready = json_ready(result)
  curve_paths = visualize.plot_curves([ready], out_dir)
  files["curves"] = curve_paths
  csv_path = out_dir / CSV_FILE
  csv_path.write_text(frame_metrics_csv(ready))
  files["csv"] = str(csv_path)

  writer = metric_writers.create_default_writer(workdir, collection=EVAL_DIR)
  step = result["main_step"]
  writer.write_scalars(step, scalar_summaries(ready))
  summaries = {f"eval_{name}": image[None] for name, image in images.items()}
  for path in curve_paths:
    name = os.path.basename(path).removesuffix(".png")
    curve = visualize.decode_png(epath.Path(path).read_bytes())
    summaries[f"eval_{name}"] = curve[None]
  writer.write_images(step, summaries)
  writer.flush()
  writer.close()
  return files


def console_summary(result: dict[str, Any]) -> str:
  """The few lines `--mode=eval` ends with: MIG beside its ceilings, each
  object's captured shares and channel error, PSNR / SSIM / LPIPS at the
  last predicted frame, and where the files are."""
  frame_metrics = result["frame_metrics"]
  last = frame_metrics["frames"][-1]
  lines = [
    f"{result['method'].upper()} {result['run']}: main network step "
    f"{result['main_step']}, pose LSTM step {result['lstm_step']}, "
    f"{frame_metrics['num_sequences']} test sequences."
  ]
  mig = result.get("mig")
  if mig:
    ceilings = f"oracle {mig['oracle_MIG']:.3f}, swapped {mig['swapped_MIG']:.3f}"
    if mig.get("one_object_MIG") is not None:
      ceilings += f", one object {mig['one_object_MIG']:.3f}"
    lines.append(
      f"MIG {mig['MIG']:.4f} ± {mig['MIG_ci95'] or 0:.4f} ({mig['protocol']}; "
      f"{ceilings})"
    )
    for name in mig.get("objects", []):
      shares = [
        f"{group} {mig[disentanglement.captured_term(group, name)]:.2f}"
        for group in ("content", "pose")
      ]
      lines.append(f"  {name}: captured share of its {', '.join(shares)}")
  curves = frame_metrics["curves"]
  scores = [
    f"{name} {curves[name]['mean'][-1]:.4f}"
    for name in ("psnr", "ssim", "lpips_alex", "lpips_vgg")
    if name in curves
  ]
  lines.append(f"At predicted frame {last}: {', '.join(scores)}")
  for name in frame_metrics.get("objects", []):
    predicted = curves[f"object_error_{name}"]["mean"][-1]
    reconstructed = curves[f"recon_object_error_{name}"]["mean"][-1]
    lines.append(
      f"  {name} error / all-black: {predicted:.3f} predicted, "
      f"{reconstructed:.3f} with true poses (1: not drawn)"
    )
  files = result.get("files") or {}
  if files:
    lines.append(
      f"Files: {os.path.dirname(files['csv'])} (metrics.json, "
      "frame_metrics.csv, swap_grid.png, predictions.png, curves_*.png)"
    )
  return "\n".join(lines)


def write_metrics(result: dict[str, Any], workdir: str) -> None:
  """workdir/eval/metrics.json: `result`, already json_ready, indented."""
  (epath.Path(workdir) / EVAL_DIR / METRICS_FILE).write_text(
    json.dumps(result, indent=2) + "\n"
  )
