"""The embedded dSprites renderer against the official data: prints a table.

1. Video statistics (datasets/dsprites_statistics.py) of the authors'
   released Moving dSprites test videos beside ours (test split, 15 frames,
   fixed and rotating), with the relative difference of each compared one.
2. With --gif (dSprites' published animation, dsprites.gif of the dSprites
   repository; not shipped here), the IoU of each distinct official frame
   with the best sprite the renderer can draw at any shape, scale,
   orientation and grid position near the frame's centroid: the fit the
   renderer's constants came from.

  python benchmarks/dsprites_geometry.py \\
    --reference=../shared/data/dsprites_reference/authors_test_videos.npz \\
    [--gif=PATH/dsprites.gif] [--num_videos=300]
"""

import argparse
import dataclasses

import numpy as np

from mipae_jax.datasets import dsprites_shapes as shapes
from mipae_jax.datasets import dsprites_splits, dsprites_statistics, moving_dsprites


def our_videos(name: str, num_videos: int) -> np.ndarray:
  """The first test videos (15 frames) of the builder config `name`."""
  config = next(
    c for c in moving_dsprites.MovingDsprites.BUILDER_CONFIGS if c.name == name
  )
  config = dataclasses.replace(config, seq_len=15)
  contents = dsprites_splits.split_contents(config.rotating)["test"]
  videos = []
  for index in range(num_videos):
    sample = moving_dsprites.sample_video(config, "test", index, contents)
    content, pose = moving_dsprites.pose_and_content(config, sample)
    videos.append(
      moving_dsprites.render_frames(
        config, np.broadcast_to(content, (15, len(content))), pose
      )
    )
  return np.stack(videos)


def best_iou(frame: np.ndarray, reach: int = 3) -> float:
  """The best IoU of bool [64, 64] with any sprite centred within `reach`
  grid steps of the frame's centroid."""
  rows, cols = np.nonzero(frame)
  centre = np.array([rows.mean(), cols.mean()]) + 0.5
  index = np.round((centre - shapes.POSITION_ORIGIN) / shapes.POSITION_STEP).astype(int)
  near = [
    range(max(i - reach, 0), min(i + reach + 1, shapes.NUM_POSITIONS)) for i in index
  ]
  grid = np.stack(
    np.meshgrid(
      range(shapes.NUM_SCALES),
      range(shapes.NUM_ORIENTATIONS),
      near[0],
      near[1],
      indexing="ij",
    ),
    -1,
  ).reshape(-1, 4)
  best = 0.0
  for shape in range(shapes.NUM_SHAPES):
    for chunk in np.array_split(grid, 8):
      scale, orientation, y, x = chunk.T
      masks, tops, lefts = shapes.sprite_masks(
        np.full(len(chunk), shape), scale, orientation, x, y
      )
      window = masks.shape[-1]
      padded = np.pad(frame, window)
      crops = np.stack(
        [
          padded[t + window : t + 2 * window, s + window : s + 2 * window]
          for t, s in zip(tops, lefts, strict=True)
        ]
      )
      inside = crops.sum((1, 2))
      union = (masks | crops).sum((1, 2)) + (frame.sum() - inside)
      best = max(best, float(((masks & crops).sum((1, 2)) / union).max()))
  return best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reference", required=True, help="authors_test_videos.npz")
  parser.add_argument("--gif", help="dSprites' published animation (optional)")
  parser.add_argument("--num_videos", type=int, default=300)
  args = parser.parse_args()

  reference = dsprites_statistics.video_statistics(
    dsprites_statistics.load_reference_videos(args.reference)
  )
  ours = {
    name: dsprites_statistics.video_statistics(our_videos(name, args.num_videos))
    for name in ("fixed", "rotating")
  }
  print(
    f"{'statistic':16s} {'authors':>9s} {'fixed':>9s} {'diff':>6s} {'rotating':>9s}"
  )
  for key, value in reference.items():
    fixed, rotating = ours["fixed"][key], ours["rotating"][key]
    compared = key in dsprites_statistics.COMPARED
    diff = f"{abs(fixed - value) / value:6.1%}" if compared else "     -"
    print(f"{key:16s} {value:9.4f} {fixed:9.4f} {diff} {rotating:9.4f}")
  if args.gif:
    from PIL import Image, ImageSequence

    with Image.open(args.gif) as gif:
      frames = np.stack(
        [np.asarray(f.convert("L")) > 127 for f in ImageSequence.Iterator(gif)]
      )
    distinct = np.unique(frames.reshape(len(frames), -1), axis=0).reshape(-1, 64, 64)
    ious = np.array([best_iou(f) for f in distinct])
    print(
      f"official animation: {len(distinct)} distinct frames, IoU median "
      f"{np.median(ious):.3f}, 10th percentile {np.percentile(ious, 10):.3f}, "
      f"min {ious.min():.3f}, {(ious < 0.8).sum()} below 0.8"
    )


if __name__ == "__main__":
  main()
