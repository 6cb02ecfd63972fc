"""The datasets MIG's static frames are drawn from: for each, i.i.d. factor
rows of a split, the number of distinct rows of each group, the names of
the content columns, each object's column blocks and the renderer of the
dataset's videos (`SOURCES`, by dataset name)."""

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from mipae_jax.datasets import (
  dsprites_splits,
  moving_dsprites,
  moving_mnist,
  moving_mpi3d,
)

Draw = Callable[[np.random.Generator, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Objects:
  """How a scene's factor columns split into objects: object i's content
  block is content[:, content_columns[i]], its pose block
  pose[:, pose_columns[i]]; scene_columns (dSprites' depth order, with
  num_scene values) belong to no object."""

  names: tuple[str, ...]
  content_columns: tuple[tuple[int, ...], ...]
  pose_columns: tuple[tuple[int, ...], ...]
  scene_columns: tuple[int, ...] = ()
  num_scene: int = 1


@dataclasses.dataclass(frozen=True)
class Source:
  """i.i.d. factor rows of one split (draw(rng, n)), how many distinct rows
  each group has, the names of the content columns and the renderer of the
  dataset's videos. Multi-object scenes also draw one object's blocks
  (draw_object_content, draw_object_pose: every object draws from the same
  rows) and say how many distinct rows those have."""

  draw_content: Draw
  draw_pose: Draw
  num_contents: int
  num_poses: int
  content_names: tuple[str, ...]
  render: Callable[[np.ndarray, np.ndarray], np.ndarray]
  objects: Objects | None = None
  draw_object_content: Draw | None = None
  draw_object_pose: Draw | None = None
  num_object_contents: int = 0
  num_object_poses: int = 0


def _uniform_columns(sizes) -> Draw:
  return lambda rng, n: np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


def _dsprites_source(dataset_config, config, split: str) -> Source:
  """Content rows: each sprite's block from `split`'s contents, any depth
  order; pose rows: every column uniform."""
  allowed = dsprites_splits.split_contents(config.rotating)[split]
  content_sizes, pose_sizes = moving_dsprites.factor_sizes(config)
  num_orders = content_sizes[-1] if config.num_sprites >= 2 else 1

  def draw_content(rng: np.random.Generator, n: int) -> np.ndarray:
    blocks = [
      allowed[rng.integers(0, len(allowed), n)] for _ in range(config.num_sprites)
    ]
    if config.num_sprites >= 2:
      blocks.append(rng.integers(0, num_orders, (n, 1)))
    return np.concatenate(blocks, axis=1)

  block_c = len(config.sprite_content_factor_names)
  block_p = len(config.sprite_pose_factor_names)
  sprites = range(config.num_sprites)
  return Source(
    draw_content,
    _uniform_columns(pose_sizes),
    num_contents=len(allowed) ** config.num_sprites * num_orders,
    num_poses=math.prod(pose_sizes),
    content_names=tuple(config.content_factor_names),
    render=lambda content, pose: moving_dsprites.render_frames(
      config, content, pose, manual_dir=dataset_config.manual_dir
    ),
    objects=Objects(
      names=tuple(f"sprite{s}" for s in sprites),
      content_columns=tuple(
        tuple(range(s * block_c, (s + 1) * block_c)) for s in sprites
      ),
      pose_columns=tuple(tuple(range(s * block_p, (s + 1) * block_p)) for s in sprites),
      scene_columns=(len(content_sizes) - 1,) if config.num_sprites >= 2 else (),
      num_scene=num_orders,
    ),
    draw_object_content=lambda rng, n: allowed[rng.integers(0, len(allowed), n)],
    draw_object_pose=_uniform_columns(pose_sizes[:block_p]),
    num_object_contents=len(allowed),
    num_object_poses=math.prod(pose_sizes[:block_p]),
  )


def _mpi3d_source(dataset_config, config, split: str) -> Source:
  """Content rows: `split`'s content combinations (as the builder splits
  the file's factor sizes); pose rows: both degrees of freedom uniform."""
  images = moving_mpi3d.images_in(dataset_config.manual_dir)
  content_sizes, pose_sizes = moving_mpi3d.factor_sizes(config, images)
  allowed = moving_mpi3d.split_contents(config, content_sizes)[split]
  return Source(
    lambda rng, n: allowed[rng.integers(0, len(allowed), n)],
    _uniform_columns(pose_sizes),
    num_contents=len(allowed),
    num_poses=math.prod(pose_sizes),
    content_names=tuple(moving_mpi3d.CONTENT_FACTOR_NAMES),
    render=lambda content, pose: moving_mpi3d.render_frames(
      config, content, pose, images
    ),
  )


def _mnist_source(dataset_config, config, split: str) -> Source:
  """Content rows: the MNIST image index of each digit in `split`'s images
  (`digitD_image`: the whole content, where the videos' `digitD_label` is a
  function of it); pose rows: every corner coordinate uniform. Reads the idx
  files from the manual dir, as the builder does."""
  images, _ = moving_mnist.load_mnist_in(dataset_config.manual_dir, split)
  pose_sizes = [moving_mnist.MAX_POSITION + 1] * (2 * config.num_digits)

  def render(content: np.ndarray, pose: np.ndarray) -> np.ndarray:
    used, rows = np.unique(content, return_inverse=True)
    digits = moving_mnist.resize_digits(images[used])[rows.reshape(content.shape)]
    corners = pose.reshape(len(pose), config.num_digits, 2)
    return np.concatenate(
      [
        moving_mnist.render_video(
          digits[i], corners[i : i + 1, :, 0], corners[i : i + 1, :, 1], config.colour
        )
        for i in range(len(content))
      ]
    )

  digits = range(config.num_digits)
  return Source(
    _uniform_columns([len(images)] * config.num_digits),
    _uniform_columns(pose_sizes),
    num_contents=len(images) ** config.num_digits,
    num_poses=math.prod(pose_sizes),
    content_names=tuple(f"digit{d}_image" for d in digits),
    render=render,
    objects=Objects(
      names=tuple(f"digit{d}" for d in digits),
      content_columns=tuple((d,) for d in digits),
      pose_columns=tuple((2 * d, 2 * d + 1) for d in digits),
    ),
    draw_object_content=_uniform_columns([len(images)]),
    draw_object_pose=_uniform_columns(pose_sizes[:2]),
    num_object_contents=len(images),
    num_object_poses=math.prod(pose_sizes[:2]),
  )


SOURCES = {
  "moving_dsprites": _dsprites_source,
  "moving_mnist": _mnist_source,
  "moving_mpi3d": _mpi3d_source,
}
# The datasets mig_frames renders static frames of.
DATASETS = tuple(SOURCES)
