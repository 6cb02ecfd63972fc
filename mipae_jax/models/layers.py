"""Layers shared by the architectures: the 2-D convolution factory and
BatchNorm.

`conv` / `conv_transpose` build a convolution by `impl`:

- "plain": flax's `nn.Conv` / `nn.ConvTranspose` (transpose_kernel=False).
- "fast": `cpu_conv.Conv2D` / `cpu_conv.ConvTranspose2D`, the same function
  in forms that XLA's CPU backend runs fastest (see `models/cpu_conv`).
  The package is imported here only, when "fast" is built: the models run
  "plain" without it.
- "auto": "fast" on the CPU backend of a single process, "plain" elsewhere
  (GPU, TPU, and CPU jobs of several processes, where "fast" is the known
  discrepancy of docs/scaling.md, "Multi-process CPU").

Both own the same parameters, "kernel" [kh, kw, in, out] and "bias", so a
checkpoint made with one restores into the other. Padding is explicit (low,
high) pads per spatial dim (or an int, "SAME", "VALID"), as `lax` applies
them; for the transposed conv PyTorch's ConvTranspose2d(k, s, p) is pads
(k - 1 - p, k - 1 - p) with the kernel flipped.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from mipae_jax.models import initializers
from mipae_jax.models.common import PaddingLike

IMPLS = ("auto", "fast", "plain")


def resolve_conv_impl(impl: str) -> str:
  """The form `impl` names, "fast" or "plain": "auto" is "fast" on the CPU
  backend of a single process only (module docstring)."""
  if impl not in IMPLS:
    raise ValueError(f"conv impl must be one of {IMPLS}, got {impl!r}.")
  if impl == "auto":
    single_cpu = jax.default_backend() == "cpu" and jax.process_count() == 1
    return "fast" if single_cpu else "plain"
  return impl


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
  """An int or a length-2 sequence as a pair of ints."""
  if isinstance(value, int):
    return (value, value)
  value = tuple(value)
  if len(value) != 2:
    raise ValueError(f"{name} must be an int or 2 ints, got {value}.")
  return value


def _settings(
  features: int,
  kernel_size: int | Sequence[int],
  strides: int | Sequence[int],
  padding: PaddingLike,
  dtype: Any,
  kernel_init: nn.initializers.Initializer,
  name: str | None,
) -> dict[str, Any]:
  """Keyword arguments common to the flax layers and the cpu_conv ones."""
  return dict(
    features=features,
    kernel_size=_pair(kernel_size, "kernel_size"),
    strides=_pair(strides, "strides"),
    padding=padding,
    dtype=dtype,
    kernel_init=kernel_init,
    name=name,
  )


def conv(
  features: int,
  kernel_size: int | Sequence[int],
  strides: int | Sequence[int] = 1,
  padding: PaddingLike = "SAME",
  *,
  impl: str = "auto",
  dtype: Any = None,
  kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init,
  name: str | None = None,
) -> nn.Module:
  """A 2-D conv of NHWC inputs: `nn.Conv` ("plain") or its CPU twin ("fast")."""
  settings = _settings(
    features, kernel_size, strides, padding, dtype, kernel_init, name
  )
  if resolve_conv_impl(impl) == "plain":
    return nn.Conv(**settings)
  from mipae_jax.models import cpu_conv

  return cpu_conv.Conv2D(**settings)


def conv_transpose(
  features: int,
  kernel_size: int | Sequence[int],
  strides: int | Sequence[int] = 1,
  padding: PaddingLike = "SAME",
  *,
  impl: str = "auto",
  dtype: Any = None,
  kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init,
  name: str | None = None,
) -> nn.Module:
  """A 2-D transposed conv of NHWC inputs (`lax.conv_transpose` pads, kernel
  not flipped): `nn.ConvTranspose` ("plain") or its CPU twin ("fast")."""
  settings = _settings(
    features, kernel_size, strides, padding, dtype, kernel_init, name
  )
  if resolve_conv_impl(impl) == "plain":
    return nn.ConvTranspose(**settings)
  from mipae_jax.models import cpu_conv

  return cpu_conv.ConvTranspose2D(**settings)


def batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  """BatchNorm as PyTorch's defaults (momentum 0.1, eps 1e-5), DCGAN init.

  No axis_name: under jit over a batch sharded on the mesh the statistics are
  already global.
  """
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=0.9,
    epsilon=1e-5,
    dtype=dtype,
    scale_init=initializers.batchnorm_scale_init,
    name=name,
  )
