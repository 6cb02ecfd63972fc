"""What `models.layers` and its `cpu_conv` plug-in share, so that the plug-in
never imports the factory that loads it: the padding type and batch chunking."""

from collections.abc import Sequence

import jax

PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]


def num_batch_chunks(batch_size: int, chunks_wanted: int) -> int:
  """The largest divisor of batch_size that is at most chunks_wanted (>= 1)."""
  bound = min(max(chunks_wanted, 1), batch_size)
  return max(k for k in range(1, bound + 1) if batch_size % k == 0)


def interleaved_chunks(array: jax.Array, count: int) -> jax.Array:
  """[B, ...] viewed as [B / count, count, ...]: [:, j] is chunk j.

  Chunk j holds samples j, j + count, j + 2 * count, ...: every chunk takes
  the same share of each device's part of a batch sharded over devices, so
  the batch stays where it is.
  """
  return array.reshape(array.shape[0] // count, count, *array.shape[1:])
