"""Embedded renderer of the dSprites shapes, so Moving dSprites needs no download.

It follows the factor grid of dSprites (Matthey et al., 2017): 3 shapes
(square, ellipse, heart), 6 scales linearly spaced in [0.5, 1], 40 orientations
2*pi*k/40 and 32 positions per axis, drawn as binary sprites on a 64x64 canvas,
with the official geometry (docs/datasets.md, "Sprite geometry"):

- position index i puts the sprite centre 16 + 32 i / 31 pixels from the top /
  left edge (pixel k spans [k, k + 1)), so centres run from 16 to 48;
- at scale 1 the square has a half-side of 9.55 px, the ellipse semi-axes of
  12.8 px (horizontal) and 7.2 px (vertical), and the heart
  (x^2 + y^2 - 1)^3 <= x^2 y^3 is stretched by 8.4 px horizontally and 7.2 px
  vertically, its lobes up; every length scales linearly with the scale;
- orientation k turns the shape counter-clockwise on screen by 2 pi k / 40
  about the sprite centre;
- a pixel is lit when its centre lies inside the turned shape.

These constants were fitted to the official images (every distinct frame of
dSprites' published animation: the square matches exactly, the median IoU is
in docs/datasets.md), and the videos they make match the authors' released
Moving dSprites test videos in lit area, sprite size, centre range, motion and
overlap (benchmarks/dsprites_geometry.py, tests/test_datasets.py).
"""

import numpy as np

SHAPE_NAMES = ("square", "ellipse", "heart")
NUM_SHAPES = len(SHAPE_NAMES)
NUM_SCALES = 6
NUM_ORIENTATIONS = 40
NUM_POSITIONS = 32
CANVAS_SIZE = 64
SCALES = np.linspace(0.5, 1.0, NUM_SCALES)
ORIENTATIONS = 2 * np.pi * np.arange(NUM_ORIENTATIONS) / NUM_ORIENTATIONS

POSITION_ORIGIN = 16.0
POSITION_STEP = 32.0 / 31.0

# Shape sizes at scale 1, in pixels.
SQUARE_HALF_SIDE = 9.55
ELLIPSE_SEMI_AXES = (12.8, 7.2)
HEART_UNITS = (8.4, 7.2)
# Every sprite lies within this many pixels of its centre (the square's
# half-diagonal, 13.5, is the largest); sprites are drawn in windows of
# 2 * _WINDOW_HALF pixels about the pixel that holds the centre.
_WINDOW_HALF = 15


def position_centres() -> np.ndarray:
  """Returns the pixel coordinate of the sprite centre of each position index."""
  return POSITION_ORIGIN + POSITION_STEP * np.arange(NUM_POSITIONS)


def inside_shape(shape, u, v, xp=np):
  """Whether points (u right, v down, pixels at scale 1) lie in the unturned shape.

  `shape` is an int (array) broadcastable to u and v; `xp` is numpy or
  jax.numpy, so a device renderer can evaluate the same formulas.
  """
  if isinstance(shape, (int, np.integer)):
    return _SHAPES[shape](u, v, xp)
  return xp.where(
    shape == 0,
    _square(u, v, xp),
    xp.where(shape == 1, _ellipse(u, v, xp), _heart(u, v, xp)),
  )


def _square(u, v, xp):
  return xp.maximum(xp.abs(u), xp.abs(v)) <= SQUARE_HALF_SIDE


def _ellipse(u, v, xp):
  return (u / ELLIPSE_SEMI_AXES[0]) ** 2 + (v / ELLIPSE_SEMI_AXES[1]) ** 2 <= 1.0


def _heart(u, v, xp):
  x = u / HEART_UNITS[0]
  y = -v / HEART_UNITS[1]  # Heart coordinates point up.
  return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0


_SHAPES = (_square, _ellipse, _heart)


def sprite_masks(
  shape: np.ndarray,
  scale: np.ndarray,
  orientation: np.ndarray,
  x: np.ndarray,
  y: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Draws N sprites in windows about their centres.

  Args:
    shape, scale, orientation, x, y: int [N] factor indices.

  Returns:
    (masks bool [N, W, W], tops int [N], lefts int [N]): window pixel (i, j)
    of sprite n is canvas pixel (tops[n] + i, lefts[n] + j). Windows may
    reach past the canvas; no lit pixel does.
  """
  shape, scale, orientation, x, y = (
    np.asarray(a).reshape(-1, 1, 1) for a in (shape, scale, orientation, x, y)
  )
  centres = position_centres()
  centre_y, centre_x = centres[y], centres[x]
  tops = np.floor(centre_y).astype(int) - _WINDOW_HALF
  lefts = np.floor(centre_x).astype(int) - _WINDOW_HALF
  pixels = np.arange(2 * _WINDOW_HALF) + 0.5
  dy = tops + pixels[:, None] - centre_y
  dx = lefts + pixels[None, :] - centre_x
  # Undo a counter-clockwise turn on screen (y points down), then the scale.
  angle = ORIENTATIONS[orientation]
  size = SCALES[scale]
  cos, sin = np.cos(angle) / size, np.sin(angle) / size
  u = cos * dx - sin * dy
  v = sin * dx + cos * dy
  masks = np.empty(u.shape, bool)
  for value in np.unique(shape):  # Each sprite's own shape only.
    rows = shape[:, 0, 0] == value
    masks[rows] = inside_shape(value, u[rows], v[rows])
  return masks, tops[:, 0, 0], lefts[:, 0, 0]


def render_frames(
  content: np.ndarray, orientations: np.ndarray, xs: np.ndarray, ys: np.ndarray
) -> np.ndarray:
  """Renders T frames of S sprites, sprite s in colour channel s (no occlusion).

  Args:
    content: int [S, 2] (shape, scale) of each sprite, the same in every
      frame, or [T, S, 2], one per frame.
    orientations, xs, ys: int [T, S] orientation and position indices.

  Returns:
    uint8 [T, 64, 64, 3] frames with values in {0, 255}.
  """
  num_frames, num_sprites = np.shape(xs)
  content = np.broadcast_to(content, (num_frames, num_sprites, 2))
  masks, tops, lefts = sprite_masks(
    content[..., 0], content[..., 1], orientations, xs, ys
  )
  # Paste the windows into a padded canvas, then crop.
  pad, width = _WINDOW_HALF, 2 * _WINDOW_HALF
  canvas = np.zeros((len(masks), CANVAS_SIZE + 2 * pad, CANVAS_SIZE + 2 * pad), bool)
  for n, (top, left) in enumerate(zip(tops + pad, lefts + pad, strict=True)):
    canvas[n, top : top + width, left : left + width] = masks[n]
  canvas = canvas[:, pad : pad + CANVAS_SIZE, pad : pad + CANVAS_SIZE]
  frames = np.zeros((num_frames, CANVAS_SIZE, CANVAS_SIZE, 3), np.uint8)
  frames[..., :num_sprites] = np.moveaxis(
    canvas.reshape(num_frames, num_sprites, CANVAS_SIZE, CANVAS_SIZE), 1, -1
  ) * np.uint8(255)
  return frames
