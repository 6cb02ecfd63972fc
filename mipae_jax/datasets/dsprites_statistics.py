"""Geometry statistics of two-sprite videos, to hold the renderer to the official data.

`video_statistics` measures what a decoder sees of the sprites: how much of
each channel is lit, how large an unobstructed sprite is, where sprite
centres go, how far they move per frame and how often the two sprites touch.
`load_reference_videos` reads the authors' released Moving dSprites test
videos (shared/data/dsprites_reference/), the measure the renderer matches
(benchmarks/dsprites_geometry.py prints both side by side).
"""

import os

import numpy as np

REFERENCE_FILE = "authors_test_videos.npz"

# Statistics compared with the reference, each within 10 %.
COMPARED = (
  "lit_fraction_0",
  "lit_fraction_1",
  "area_median",
  "area_p90",
  "centre_low",
  "centre_high",
  "motion",
  "touch_rate",
)


def load_reference_videos(path: os.PathLike | str) -> np.ndarray:
  """Returns the authors' test videos, bool [100, 15, 64, 64, 3] (sprite s in channel s)."""
  with np.load(path) as data:
    shape = tuple(int(n) for n in data["shape"])
    return np.unpackbits(data["videos"], axis=-1, count=shape[-1]).astype(bool)


def _dilate(mask: np.ndarray) -> np.ndarray:
  """8-neighbour dilation of bool [..., H, W]."""
  height, width = mask.shape[-2:]
  padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)])
  out = np.zeros_like(mask)
  for dy in range(3):
    for dx in range(3):
      out |= padded[..., dy : dy + height, dx : dx + width]
  return out


def video_statistics(videos: np.ndarray) -> dict[str, float]:
  """Measures two-sprite videos [N, T, 64, 64, C >= 2] (sprite s lit in channel s).

  Returns:
    lit_fraction_{0,1}: mean fraction of lit pixels in channel 0 / 1;
    area_median, area_p90, area_max: lit pixels of a sprite in frames where
      the two sprites do not touch (so neither is occluded);
    centre_low, centre_high: 1st and 99th percentile of those sprites'
      centroids (pixel coordinates, both axes pooled);
    motion: mean absolute per-axis centroid change between consecutive
      untouched frames, in pixels;
    touch_rate: fraction of frames where the sprites overlap or touch
      (8-neighbour).
  """
  lit = np.asarray(videos)[..., :2] > 0
  first, second = lit[..., 0], lit[..., 1]
  touch = (_dilate(first) & second).any(axis=(-1, -2))
  coordinates = np.arange(lit.shape[-2]) + 0.5
  areas, centres, moves = [], [], []
  for mask in (first, second):
    area = mask.sum(axis=(-1, -2))
    whole = ~touch & (area > 0)
    safe_area = np.maximum(area, 1)
    centroid = np.stack(
      [
        (mask.sum(-1) * coordinates).sum(-1) / safe_area,
        (mask.sum(-2) * coordinates).sum(-1) / safe_area,
      ],
      -1,
    )
    areas.append(area[whole])
    centres.append(centroid[whole].reshape(-1))
    both = whole[:, 1:] & whole[:, :-1]
    moves.append(np.abs(np.diff(centroid, axis=1))[both].reshape(-1))
  area, centre, move = (np.concatenate(a) for a in (areas, centres, moves))
  return {
    "lit_fraction_0": float(first.mean()),
    "lit_fraction_1": float(second.mean()),
    "area_median": float(np.median(area)),
    "area_p90": float(np.percentile(area, 90)),
    "area_max": float(area.max()),
    "centre_low": float(np.percentile(centre, 1)),
    "centre_high": float(np.percentile(centre, 99)),
    "motion": float(move.mean()) if move.size else float("nan"),
    "touch_rate": float(touch.mean()),
  }


def relative_differences(
  ours: dict[str, float], reference: dict[str, float]
) -> dict[str, float]:
  """|ours - reference| / reference for each COMPARED statistic."""
  return {k: abs(ours[k] - reference[k]) / abs(reference[k]) for k in COMPARED}
