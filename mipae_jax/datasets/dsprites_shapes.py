"""Embedded renderer of the dSprites shapes, so Moving dSprites needs no download.

It follows the factor grid of dSprites (Matthey et al., 2017): 3 shapes
(square, ellipse, heart), 6 scales linearly spaced in [0.5, 1], 40 orientations
2*pi*k/40 and 32 positions per axis, drawn as binary sprites on a 64x64 canvas.
Geometry (our choice; the official images may differ by a pixel or two):
position index i puts the sprite centre at 8.75 + 1.5 * i pixels from the
top / left edge (pixel k spans [k, k + 1)), and a sprite at scale 1 fits in a
circle of radius 8.5 pixels, so every sprite stays whole on the canvas. A
pixel is on when its centre lies inside the shape rotated counter-clockwise by
the orientation about the sprite centre.
"""

import functools

import numpy as np

SHAPE_NAMES = ("square", "ellipse", "heart")
NUM_SHAPES = len(SHAPE_NAMES)
NUM_SCALES = 6
NUM_ORIENTATIONS = 40
NUM_POSITIONS = 32
CANVAS_SIZE = 64
SCALES = np.linspace(0.5, 1.0, NUM_SCALES)
ORIENTATIONS = 2 * np.pi * np.arange(NUM_ORIENTATIONS) / NUM_ORIENTATIONS

POSITION_ORIGIN = 8.75
POSITION_STEP = 1.5
# Half-side of the square patches a sprite is drawn in: offsets from the
# centre span [-10.25, 10.25], more than the 8.5 pixel radius of any sprite.
_PATCH_HALF = 10
PATCH_SIZE = 2 * _PATCH_HALF + 1

# Shape sizes at scale 1, in pixels.
_SQUARE_HALF_SIDE = 6.0
_ELLIPSE_SEMI_AXES = (8.0, 4.0)
# The heart (x^2 + y^2 - 1)^3 <= x^2 y^3 spans y in [-0.99, 1.24] and fits in a
# circle of radius 1.334 about (0, 0.121); scaled to a radius of 8.5 pixels.
_HEART_CENTRE_Y = 0.121
_HEART_UNIT = 8.5 / 1.334


def position_centres() -> np.ndarray:
  """Returns the pixel coordinate of the sprite centre of each position index."""
  return POSITION_ORIGIN + POSITION_STEP * np.arange(NUM_POSITIONS)


def _inside_shape(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Whether points (u right, v down, pixels at scale 1) lie in the unrotated shape."""
  if shape == 0:
    return np.maximum(np.abs(u), np.abs(v)) <= _SQUARE_HALF_SIDE
  if shape == 1:
    semi_u, semi_v = _ELLIPSE_SEMI_AXES
    return (u / semi_u) ** 2 + (v / semi_v) ** 2 <= 1.0
  x = u / _HEART_UNIT
  y = _HEART_CENTRE_Y - v / _HEART_UNIT  # Heart coordinates point up.
  return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0


@functools.cache
def sprite_patches() -> np.ndarray:
  """Returns every sprite as bool [shape, scale, orientation, phase_y, phase_x, P, P].

  Position index i lands the sprite centre at a fractional pixel offset that
  depends only on i % 2 (its phase); patch pixel j sits j - 10 pixels from the
  pixel that contains the centre.
  """
  patches = np.zeros(
    (NUM_SHAPES, NUM_SCALES, NUM_ORIENTATIONS, 2, 2, PATCH_SIZE, PATCH_SIZE), bool
  )
  fractions = np.mod(position_centres()[:2], 1.0)
  grid = np.arange(PATCH_SIZE) - _PATCH_HALF + 0.5
  for phase_y, fraction_y in enumerate(fractions):
    for phase_x, fraction_x in enumerate(fractions):
      dy, dx = np.meshgrid(grid - fraction_y, grid - fraction_x, indexing="ij")
      for orientation, angle in enumerate(ORIENTATIONS):
        # Undo a counter-clockwise turn on screen (y points down).
        cos, sin = np.cos(angle), np.sin(angle)
        u = cos * dx - sin * dy
        v = sin * dx + cos * dy
        for scale_index, scale in enumerate(SCALES):
          for shape in range(NUM_SHAPES):
            patches[shape, scale_index, orientation, phase_y, phase_x] = _inside_shape(
              shape, u / scale, v / scale
            )
  return patches


def draw_sprite(
  canvas: np.ndarray, shape: int, scale: int, orientation: int, x: int, y: int
) -> None:
  """Sets the pixels of one sprite to 255 in a uint8 [64, 64] canvas, in place.

  Args:
    canvas: uint8 [64, 64] image (or one channel of one).
    shape, scale, orientation: factor indices (see module docstring).
    x, y: position indices in [0, 32) of the sprite centre (column, row).
  """
  patch = sprite_patches()[shape, scale, orientation, y % 2, x % 2]
  centres = np.floor(position_centres()).astype(int)
  top = centres[y] - _PATCH_HALF
  left = centres[x] - _PATCH_HALF
  rows = slice(max(top, 0), min(top + PATCH_SIZE, CANVAS_SIZE))
  cols = slice(max(left, 0), min(left + PATCH_SIZE, CANVAS_SIZE))
  visible = patch[
    rows.start - top : rows.stop - top, cols.start - left : cols.stop - left
  ]
  canvas[rows, cols][visible] = 255


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
  num_frames, num_sprites = xs.shape
  content = np.broadcast_to(content, (num_frames, num_sprites, 2))
  frames = np.zeros((num_frames, CANVAS_SIZE, CANVAS_SIZE, 3), np.uint8)
  for t in range(num_frames):
    for s in range(num_sprites):
      draw_sprite(
        frames[t, :, :, s],
        int(content[t, s, 0]),
        int(content[t, s, 1]),
        int(orientations[t, s]),
        int(xs[t, s]),
        int(ys[t, s]),
      )
  return frames
