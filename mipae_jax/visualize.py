"""Pictures: image tiles and the pose/content swap grid (Figs. 3, 4, 6)."""

import numpy as np

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
