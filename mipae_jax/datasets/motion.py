"""Bouncing trajectories shared by the moving-video builders.

Objects move on an integer grid [0, max_position] with a constant integer
velocity; when a step would leave the grid, the position is clamped to the
wall it crossed and that velocity component is negated (mirror reflection, as
in DRNET's Moving MNIST). Speeds therefore never change, and a velocity
component changes sign exactly at the steps that hit a wall (`bounce`,
Moving MNIST and MPI3D). Moving dSprites follows the authors' loader instead:
clamp and reflect before each frame is drawn (`reflect_before_drawing`).
"""

import numpy as np


def sample_velocities(
  rng: np.random.Generator, shape: tuple[int, ...], low: int, high: int
) -> np.ndarray:
  """Returns int32 velocities drawn uniformly from [low, high], inclusive."""
  return rng.integers(low, high, size=shape, endpoint=True).astype(np.int32)


def bounce(
  start: np.ndarray, velocity: np.ndarray, num_steps: int, max_position
) -> tuple[np.ndarray, np.ndarray]:
  """Returns positions and velocities of objects bouncing on [0, max_position].

  Args:
    start: int positions at the first frame, any shape [..., D], each in
      [0, max_position].
    velocity: int velocities at the first frame, same shape as `start`.
    num_steps: number of frames T.
    max_position: the largest position, a scalar or an array broadcastable to
      `start` (e.g. one bound per axis).

  Returns:
    (positions, velocities), both int32 of shape [T, ...start.shape], with
    positions[t + 1] = clip(positions[t] + velocities[t], 0, max_position)
    and velocities[t + 1] = -velocities[t] exactly where that step left the
    grid (else velocities[t + 1] = velocities[t]).
  """
  position = np.asarray(start, np.int32)
  speed = np.asarray(velocity, np.int32)
  upper = np.broadcast_to(np.asarray(max_position, np.int32), position.shape)
  if np.any(position < 0) or np.any(position > upper):
    raise ValueError(f"start positions must lie in [0, {max_position}].")
  positions = np.empty((num_steps, *position.shape), np.int32)
  velocities = np.empty((num_steps, *position.shape), np.int32)
  for t in range(num_steps):
    positions[t] = position
    velocities[t] = speed
    moved = position + speed
    hit_wall = (moved < 0) | (moved > upper)
    position = np.clip(moved, 0, upper)
    speed = np.where(hit_wall, -speed, speed)
  return positions, velocities


def rotate(
  start: np.ndarray, step: np.ndarray, num_steps: int, period: int
) -> np.ndarray:
  """Returns int32 [T, ...] orientation indices start + t * step, wrapped mod period."""
  frames = np.arange(num_steps, dtype=np.int64).reshape(
    (num_steps,) + (1,) * np.ndim(start)
  )
  return np.mod(np.asarray(start) + frames * np.asarray(step), period).astype(np.int32)


def reflect_before_drawing(
  start: np.ndarray, velocity: np.ndarray, num_steps: int, max_position: int
) -> tuple[np.ndarray, np.ndarray]:
  """Returns positions and velocities under the authors' Moving dSprites rule.

  At every frame, before the object is drawn, each coordinate below 0 is set
  to 0 and one at or above `max_position` is set to `max_position`, and in
  both cases that velocity component is negated; the object is then drawn and
  the velocity added. (So an object rests a frame at a wall it overshot, and
  a start at `max_position` turns back at once.)

  Args:
    start: int positions at the first frame, any shape [..., D], each in
      [0, max_position].
    velocity: int velocities at the first frame, same shape as `start`.
    num_steps: number of frames T.
    max_position: the largest position.

  Returns:
    (positions, velocities), both int32 [T, ...start.shape]: the drawn
    positions and the velocity added after each frame.
  """
  position = np.asarray(start, np.int32)
  speed = np.asarray(velocity, np.int32)
  if np.any(position < 0) or np.any(position > max_position):
    raise ValueError(f"start positions must lie in [0, {max_position}].")
  positions = np.empty((num_steps, *position.shape), np.int32)
  velocities = np.empty((num_steps, *position.shape), np.int32)
  for t in range(num_steps):
    low, high = position < 0, position >= max_position
    position = np.clip(position, 0, max_position)
    speed = np.where(low | high, -speed, speed)
    positions[t] = position
    velocities[t] = speed
    position = position + speed
  return positions, velocities
