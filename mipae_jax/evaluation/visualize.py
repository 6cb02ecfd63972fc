"""Pictures: image tiles, the pose/content swap grid (Figs. 3, 4, 6),
ground-truth / prediction strips, and per-frame metric curves (Fig. 5).

Plots are drawn on matplotlib's Agg canvas directly (no pyplot, no global
backend change), so they work on machines without a display.
"""

import io
import os
from collections.abc import Sequence
from typing import Any

import matplotlib.figure
import numpy as np
import PIL.Image
from etils import epath
from matplotlib.backends import backend_agg

_GREEN = np.array([0.0, 0.8, 0.0])
_RED = np.array([0.9, 0.0, 0.0])


def as_rgb(frames: np.ndarray) -> np.ndarray:
  """Frames [..., H, W, C] (uint8 or [0, 1] floats, C in 1..3) as float RGB."""
  frames = np.asarray(frames)
  frames = frames / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float32)
  channels = frames.shape[-1]
  if channels == 1:
    return np.repeat(frames, 3, axis=-1)
  if channels == 2:
    return np.concatenate([frames, np.zeros_like(frames[..., :1])], axis=-1)
  if channels == 3:
    return frames
  raise ValueError(f"Cannot show frames with {channels} channels.")


def tile(images: np.ndarray, pad: int = 1) -> np.ndarray:
  """Images [R, C, H, W, ch] as one [R*(H+pad)-pad, C*(W+pad)-pad, 3] picture."""
  images = as_rgb(images)
  rows, cols, height, width, _ = images.shape
  out = np.ones(
    (rows * (height + pad) - pad, cols * (width + pad) - pad, 3), np.float32
  )
  for r in range(rows):
    for c in range(cols):
      y, x = r * (height + pad), c * (width + pad)
      out[y : y + height, x : x + width] = images[r, c]
  return out


def _framed(frames: np.ndarray, colour: np.ndarray, width: int = 2) -> np.ndarray:
  frames = as_rgb(frames).copy()
  frames[..., :width, :, :] = colour
  frames[..., -width:, :, :] = colour
  frames[..., :, :width, :] = colour
  frames[..., :, -width:, :] = colour
  return frames


def swap_grid_image(
  content_frames: np.ndarray, pose_frames: np.ndarray, grid: np.ndarray
) -> np.ndarray:
  """The swap grid as in Figs. 3, 4, 6 of the paper.

  Pose frames (green) along the top, content frames (red) down the side, and
  cell (r, m) = D(E_c(content_frames[r]), E_p(pose_frames[m])) from `grid`
  [R, M, H, W, C].
  """
  rows, cols = grid.shape[:2]
  if content_frames.shape[0] != rows or pose_frames.shape[0] != cols:
    raise ValueError(
      f"grid {grid.shape[:2]} does not match {content_frames.shape[0]} content "
      f"and {pose_frames.shape[0]} pose frames."
    )
  blank = np.ones_like(as_rgb(pose_frames[:1]))
  top = np.concatenate([blank, _framed(pose_frames, _GREEN)], axis=0)
  body = np.concatenate([_framed(content_frames, _RED)[:, None], as_rgb(grid)], axis=1)
  return tile(np.concatenate([top[None], body], axis=0))


def prediction_strips(
  truth: np.ndarray, predicted: np.ndarray, num_context: int
) -> np.ndarray:
  """Ground truth above prediction for each sequence (Figs. 3c, 4c).

  Args:
    truth: ground-truth videos [N, C + T, H, W, ch] (uint8 or [0, 1]).
    predicted: predicted frames [N, T, H, W, ch] in [0, 1].
    num_context: C, the context frames the prediction started from.

  Returns:
    One picture with two rows per sequence: the whole ground truth, then
    the context frames (framed green, they are the model's input) followed
    by the T predicted frames.
  """
  truth = as_rgb(truth)
  predicted = as_rgb(predicted)
  if truth.shape[1] != num_context + predicted.shape[1] or len(truth) != len(predicted):
    raise ValueError(
      f"truth {truth.shape[:2]} does not hold {num_context} context frames plus "
      f"the {predicted.shape[:2]} predicted ones."
    )
  context = _framed(truth[:, :num_context], _GREEN)
  prediction_rows = np.concatenate([context, predicted], axis=1)
  rows = np.stack([truth, prediction_rows], axis=1)
  return tile(rows.reshape(-1, *truth.shape[1:]))


SWAP_GRID_LABELS = (
  "pose: each column decodes the pose of the green frame on top",
  "content: each row the content of the red frame",
)
STRIP_LABELS = (
  "frames: green-framed context, then the predicted frames",
  "each sequence: ground truth, then prediction",
)


def labelled(image: np.ndarray, title: str, xlabel: str, ylabel: str) -> np.ndarray:
  """`image` [H, W, 3] drawn at twice its size under `title`, with axis
  labels, so the picture says what its rows and columns are. uint8."""
  scale, dpi = 2, 100
  left, right, bottom, top = 30, 10, 30, 40  # margins, pixels
  height, width = (scale * n for n in image.shape[:2])
  full_width, full_height = width + left + right, height + bottom + top
  figure = matplotlib.figure.Figure(
    figsize=(full_width / dpi, full_height / dpi), dpi=dpi
  )
  canvas = backend_agg.FigureCanvasAgg(figure)
  axis = figure.add_axes(
    (left / full_width, bottom / full_height, width / full_width, height / full_height)
  )
  axis.imshow(image if image.dtype == np.uint8 else np.clip(image, 0.0, 1.0))
  axis.set_xticks([])
  axis.set_yticks([])
  axis.set_xlabel(xlabel, fontsize=8)
  axis.set_ylabel(ylabel, fontsize=8)
  axis.set_title(title, fontsize=9)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def encode_png(image: np.ndarray) -> bytes:
  """An [H, W, 3] picture in [0, 1] (or uint8) as PNG bytes."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
  buffer = io.BytesIO()
  PIL.Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
  """PNG bytes as an [H, W, 3] uint8 picture."""
  return np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGB"))


# Axis labels of the frame metrics of Fig. 5, and whether lower is better.
METRIC_LABELS = {
  "psnr": ("PSNR (dB)", False),
  "ssim": ("SSIM", False),
  "lpips_alex": ("LPIPS, AlexNet-lin", True),
  "lpips_vgg": ("LPIPS, VGG-lin", True),
}


def run_label(run_metrics: dict[str, Any]) -> str:
  """Legend entry of one evaluated run: method, run name, main-network step."""
  return (
    f"{run_metrics['method'].upper()} {run_metrics['run']} "
    f"(step {run_metrics['main_step']})"
  )


def _finite(values: list[float | None]) -> np.ndarray:
  return np.array([np.nan if v is None else v for v in values], np.float64)


def plot_curves(
  metrics_list: Sequence[dict[str, Any]], out_dir: str | os.PathLike
) -> list[str]:
  """Per-frame metric curves of one or several runs, one PNG per metric (Fig. 5).

  Each run's mean over test sequences is drawn against the predicted-frame
  index with its 95 % confidence band; runs on the same dataset (name and
  builder config) share one axis per metric.

  Args:
    metrics_list: metrics.json contents written by `evaluate.evaluate`.
    out_dir: directory the PNGs are written to (created if needed; any
      etils.epath location).

  Returns:
    Paths of the written PNGs, named `curves_<metric>_<dataset>_<builder>.png`.
  """
  groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
  for run_metrics in metrics_list:
    key = (run_metrics["dataset"], run_metrics["builder_config"])
    groups.setdefault(key, []).append(run_metrics)
  out_dir = epath.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = []
  for (dataset, builder_config), runs in groups.items():
    names = [
      n for n in METRIC_LABELS if any(n in r["frame_metrics"]["curves"] for r in runs)
    ]
    for name in names:
      label, lower_is_better = METRIC_LABELS[name]
      figure = matplotlib.figure.Figure(figsize=(5.5, 3.8), layout="constrained")
      backend_agg.FigureCanvasAgg(figure)
      axis = figure.add_subplot()
      for run_metrics in runs:
        curves = run_metrics["frame_metrics"]
        if name not in curves["curves"]:
          continue
        frames = np.asarray(curves["frames"])
        mean = _finite(curves["curves"][name]["mean"])
        half_width = _finite(curves["curves"][name]["ci95"])
        (line,) = axis.plot(frames, mean, marker=".", label=run_label(run_metrics))
        axis.fill_between(
          frames,
          mean - half_width,
          mean + half_width,
          color=line.get_color(),
          alpha=0.2,
          linewidth=0,
        )
      better = "lower" if lower_is_better else "higher"
      axis.set_title(f"{dataset}/{builder_config}: {label} ({better} is better)")
      axis.set_xlabel("predicted frame (after the context frames)")
      axis.set_ylabel(label)
      axis.grid(alpha=0.3)
      axis.legend(fontsize="small")
      path = out_dir / f"curves_{name}_{dataset}_{builder_config}.png"
      buffer = io.BytesIO()
      figure.savefig(buffer, format="png", dpi=100)
      path.write_bytes(buffer.getvalue())
      paths.append(str(path))
    if any(r["frame_metrics"].get("objects") for r in runs):
      path = out_dir / f"curves_object_error_{dataset}_{builder_config}.png"
      path.write_bytes(_object_error_png(runs, f"{dataset}/{builder_config}"))
      paths.append(str(path))
  return paths


def _object_error_png(runs: Sequence[dict[str, Any]], title: str) -> bytes:
  """One curve per run and object: its channel's error over the all-black
  error, for the predictions (solid) and the true-pose reconstructions
  (dashed), with 95 % bands; 1 means the object is not drawn."""
  figure = matplotlib.figure.Figure(figsize=(6.5, 4.2), layout="constrained")
  backend_agg.FigureCanvasAgg(figure)
  axis = figure.add_subplot()
  for run_metrics in runs:
    curves = run_metrics["frame_metrics"]
    frames = np.asarray(curves["frames"])
    for name in curves.get("objects", []):
      colour = None
      for prefix, style in (("", "-"), ("recon_", "--")):
        curve = curves["curves"][f"{prefix}object_error_{name}"]
        mean, half_width = _finite(curve["mean"]), _finite(curve["ci95"])
        kind = "predicted" if not prefix else "true poses"
        (line,) = axis.plot(
          frames,
          mean,
          style,
          marker=".",
          color=colour,
          label=f"{run_label(run_metrics)} {name}, {kind}",
        )
        colour = line.get_color()
        axis.fill_between(
          frames, mean - half_width, mean + half_width, color=colour, alpha=0.15, lw=0
        )
  axis.axhline(1.0, color="grey", lw=0.8, ls=":")
  axis.set_title(f"{title}: per-object error / all-black error (lower is better)")
  axis.set_xlabel("predicted frame (after the context frames)")
  axis.set_ylabel("channel MSE / all-black MSE (1: not drawn)")
  axis.grid(alpha=0.3)
  axis.legend(fontsize="x-small")
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100)
  return buffer.getvalue()
