"""Tests for mipae_jax.evaluation.metrics: PSNR, SSIM, LPIPS and the 95 % intervals."""

import socket

import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from mipae_jax.evaluation import metrics


def _smooth_images(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
  """Images in [0, 1] with spatial structure (blurred noise plus a gradient)."""
  noise = rng.uniform(size=shape)
  blurred = (
    noise
    + np.roll(noise, 1, axis=-3)
    + np.roll(noise, 1, axis=-2)
    + np.roll(noise, (1, 1), axis=(-3, -2))
  ) / 4.0
  gradient = np.linspace(0.0, 1.0, shape[-2])[:, None]
  return np.clip(0.5 * blurred + 0.5 * gradient, 0.0, 1.0).astype(np.float32)


def _noisy(images: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
  noisy = images + std * rng.normal(size=images.shape)
  return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def test_psnr_is_inf_for_identical_images_and_falls_with_noise():
  rng = np.random.default_rng(0)
  images = _smooth_images(rng, (2, 16, 16, 3))
  assert np.all(np.isinf(np.asarray(metrics.psnr(images, images))))
  values = [
    float(np.mean(metrics.psnr(images, _noisy(images, rng, std))))
    for std in (0.01, 0.05, 0.2)
  ]
  assert values[0] > values[1] > values[2]


def test_psnr_matches_its_formula_and_keeps_leading_axes():
  a = np.zeros((2, 3, 8, 8, 3), np.float32)
  b = np.full_like(a, 0.1)
  values = np.asarray(metrics.psnr(a, b))
  assert values.shape == (2, 3)
  np.testing.assert_allclose(values, 20.0, rtol=1e-5)  # 10 log10(1 / 0.01)
  np.testing.assert_allclose(
    np.asarray(metrics.psnr(a, b, max_val=2.0)), 26.0206, rtol=1e-5
  )


def test_ssim_agrees_with_scikit_image():
  skimage_metrics = pytest.importorskip("skimage.metrics")
  rng = np.random.default_rng(1)
  references = _smooth_images(rng, (4, 32, 40, 3))
  others = np.concatenate(
    [
      _noisy(references[:2], rng, 0.1),
      _smooth_images(rng, (2, 32, 40, 3)),
    ]
  )
  ours = np.asarray(metrics.ssim(references, others))
  expected = [
    skimage_metrics.structural_similarity(
      reference.astype(np.float64),
      other.astype(np.float64),
      gaussian_weights=True,
      sigma=1.5,
      use_sample_covariance=False,
      data_range=1.0,
      channel_axis=-1,
    )
    for reference, other in zip(references, others, strict=True)
  ]
  np.testing.assert_allclose(ours, expected, atol=1e-4)
  assert np.ptp(expected) > 0.1  # the pairs span a real range of SSIM


def test_ssim_is_one_for_identical_images_and_keeps_leading_axes():
  images = _smooth_images(np.random.default_rng(2), (2, 3, 16, 16, 3))
  values = np.asarray(metrics.ssim(images, images))
  assert values.shape == (2, 3)
  np.testing.assert_allclose(values, 1.0, atol=1e-5)
  with pytest.raises(ValueError, match="11x11"):
    metrics.ssim(images[..., :10, :, :], images[..., :10, :, :])


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_is_zero_for_identical_images_symmetric_and_grows_with_noise(net):
  rng = np.random.default_rng(3)
  images = _smooth_images(rng, (2, 64, 64, 3))
  noise_levels = (0.02, 0.1, 0.4)
  others = np.concatenate([_noisy(images, rng, std) for std in noise_levels])
  repeated = np.concatenate([images] * len(noise_levels))
  batch = np.concatenate([images, repeated])
  forward = np.asarray(metrics.lpips(batch, np.concatenate([images, others]), net=net))
  backward = np.asarray(
    metrics.lpips(np.concatenate([images, others]), batch, net=net, batch_size=3)
  )
  assert forward.shape == (8,)
  np.testing.assert_allclose(forward[:2], 0.0, atol=1e-6)
  np.testing.assert_allclose(forward, backward, rtol=1e-5, atol=1e-6)
  by_noise = forward[2:].reshape(len(noise_levels), 2)
  assert np.all(by_noise[0] > 0.0)
  assert np.all(np.diff(by_noise, axis=0) > 0.0)


def test_lpips_weights_load_without_network(monkeypatch):
  def refuse(*args, **kwargs):
    raise OSError("network access attempted")

  monkeypatch.setattr(socket, "socket", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)
  metrics._lpips_model.cache_clear()
  rng = np.random.default_rng(4)
  images = _smooth_images(rng, (1, 32, 32, 3))
  value = np.asarray(metrics.lpips(images, _noisy(images, rng, 0.2), net="alex"))
  assert value.shape == (1,) and np.isfinite(value).all() and value[0] > 0.0


def test_lpips_rejects_unknown_net_and_non_rgb_images():
  images = np.zeros((1, 32, 32, 3), np.float32)
  with pytest.raises(ValueError, match="net must be"):
    metrics.lpips(images, images, net="squeeze")
  with pytest.raises(ValueError, match="RGB"):
    metrics.lpips(images[..., :1], images[..., :1])


def test_mean_and_ci95_matches_student_t_interval():
  rng = np.random.default_rng(15)
  values = rng.normal(loc=2.0, size=(40, 3))
  mean, half_width = metrics.mean_and_ci95(values, axis=0)
  assert mean.shape == half_width.shape == (3,)
  low, high = scipy.stats.t.interval(
    0.95, df=39, loc=values.mean(0), scale=scipy.stats.sem(values, axis=0)
  )
  np.testing.assert_allclose(mean - half_width, low)
  np.testing.assert_allclose(mean + half_width, high)
  single_mean, single_half_width = metrics.mean_and_ci95([3.0])
  assert single_mean == 3.0 and np.isnan(single_half_width)


def test_ratio_and_ci95_is_the_ratio_of_sums_with_a_delta_method_interval():
  rng = np.random.default_rng(0)
  denominators = rng.uniform(1.0, 2.0, size=(4000, 2))
  numerators = 0.3 * denominators + rng.normal(0.0, 0.05, size=(4000, 2))
  ratio, half_width = metrics.ratio_and_ci95(numerators, denominators)
  np.testing.assert_allclose(ratio, numerators.sum(0) / denominators.sum(0))
  np.testing.assert_allclose(ratio, 0.3, atol=3e-3)
  # The residuals' spread over sqrt(n) mean(b): 0.05 / (sqrt(4000) 1.5).
  np.testing.assert_allclose(half_width, 1.96 * 0.05 / (63.25 * 1.5), rtol=0.1)
  assert np.isnan(metrics.ratio_and_ci95([1.0], [2.0])[1])
  with pytest.raises(ValueError, match="differ"):
    metrics.ratio_and_ci95(np.ones(3), np.ones(4))
