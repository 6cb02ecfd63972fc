"""The official dSprites images (the .npz DeepMind released): loading them and
looking frames up in them, for the "*_npz" Moving dSprites configs."""

import os

import numpy as np
from etils import epath

from mipae_jax.datasets import common
from mipae_jax.datasets import dsprites_shapes as shapes

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_URL = (
  f"https://github.com/deepmind/dsprites-dataset/raw/master/{DSPRITES_FILE}"
)
DSPRITES_IMAGES_SHAPE = (
  shapes.NUM_SHAPES
  * shapes.NUM_SCALES
  * shapes.NUM_ORIENTATIONS
  * shapes.NUM_POSITIONS
  * shapes.NUM_POSITIONS,
  shapes.CANVAS_SIZE,
  shapes.CANVAS_SIZE,
)
HOW_TO_OBTAIN = f"download it from {DSPRITES_URL}"


def load_official_images(path) -> np.ndarray:
  """Returns the official dSprites images, uint8 {0, 1} [737280, 64, 64]."""
  images = common.load_npz_array(path, "imgs")
  if images.shape != DSPRITES_IMAGES_SHAPE:
    raise ValueError(
      f"{path}: expected 'imgs' of shape {DSPRITES_IMAGES_SHAPE} (dSprites), "
      f"found {images.shape}."
    )
  return images


def official_frames(
  images: np.ndarray,
  content: np.ndarray,
  orientations: np.ndarray,
  xs: np.ndarray,
  ys: np.ndarray,
) -> np.ndarray:
  """Looks frames up in the official images; same contract as shapes.render_frames.

  dSprites orders its images by (shape, scale, orientation, posX, posY).
  """
  num_frames, num_sprites = xs.shape
  content = np.broadcast_to(content, (num_frames, num_sprites, 2))
  index = np.ravel_multi_index(
    (
      content[..., 0],
      content[..., 1],
      orientations,
      xs,
      ys,
    ),
    (
      shapes.NUM_SHAPES,
      shapes.NUM_SCALES,
      shapes.NUM_ORIENTATIONS,
      shapes.NUM_POSITIONS,
      shapes.NUM_POSITIONS,
    ),
  )
  frames = np.zeros((num_frames, shapes.CANVAS_SIZE, shapes.CANVAS_SIZE, 3), np.uint8)
  frames[..., :num_sprites] = np.moveaxis(images[index], 1, -1) * np.uint8(255)
  return frames


def images_in(manual_dir: epath.PathLike | None) -> np.ndarray:
  """Loads the official images from a manual dir, or a one-line error."""
  path = common.find_manual_file(manual_dir, DSPRITES_FILE, HOW_TO_OBTAIN)
  return load_official_images(os.fspath(path))
