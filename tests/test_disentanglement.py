"""Tests for mipae_jax.evaluation.disentanglement: the k-NN MI estimator against
scikit-learn and closed forms, entropy, and MIG (eq. 8)."""

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from sklearn.feature_selection import mutual_info_classif

from mipae_jax.evaluation import disentanglement, knn_mi


def _labelled_1d_features(
  rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray]:
  """Labels with sizes n-3, 2 and 1 (exercising k adjustment and drops)."""
  labels = rng.integers(0, 4, n)
  labels[:3] = [4, 4, 5]
  features = labels + rng.normal(size=n)
  return labels, features


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
@pytest.mark.parametrize("estimator", ["jax", "sklearn"])
def test_mutual_information_equals_scikit_learn_on_1d_features(metric, estimator):
  # scikit-learn rescales the feature (MI is invariant to it) and adds noise of
  # relative size 1e-10, which cannot reorder continuous, tie-free distances.
  # In 1-D both metrics are |x - y|.
  labels, features = _labelled_1d_features(np.random.default_rng(5), 600)
  expected = mutual_info_classif(
    features[:, None], labels, discrete_features=False, n_neighbors=3, random_state=0
  )[0]
  assert expected > 0.1
  value = disentanglement.mutual_information(
    labels, features, k=3, metric=metric, estimator=estimator
  )
  assert value == pytest.approx(expected, abs=1e-12)


def test_mutual_information_equals_scikit_learn_on_tied_features_given_its_noise():
  # With ties the noise matters: add exactly what scikit-learn adds (unit-std
  # scaling, then 1e-10 * max(1, mean |x|) * N(0, 1) from RandomState(seed)).
  # Noise 1e-10 apart at distances ~0.1 is below float32 resolution, so this
  # takes the float64 reference; the float32 JAX estimator comes close.
  labels, features = _labelled_1d_features(np.random.default_rng(6), 600)
  tied = np.round(features, 1)
  expected = mutual_info_classif(
    tied[:, None], labels, discrete_features=False, n_neighbors=3, random_state=7
  )[0]
  scaled = tied / np.std(tied)
  noise = np.random.RandomState(7).standard_normal(size=(tied.size, 1))[:, 0]
  perturbed = scaled + 1e-10 * max(1.0, np.mean(np.abs(scaled))) * noise
  reference = disentanglement.mutual_information(
    labels, perturbed, k=3, estimator="sklearn"
  )
  assert reference == pytest.approx(expected, abs=1e-12)
  assert disentanglement.mutual_information(labels, perturbed, k=3) == pytest.approx(
    expected, abs=0.02
  )


def _labelled_codes(
  rng: np.random.Generator, n: int, num_labels: int, dims: int
) -> tuple[np.ndarray, np.ndarray]:
  """Labels (two points of a label of their own, one singleton) and codes that
  depend on them, continuous (no ties)."""
  labels = rng.integers(0, num_labels, n)
  labels[:3] = [num_labels, num_labels, num_labels + 1]
  directions = rng.normal(size=(num_labels + 2, dims))
  return labels, 0.7 * directions[labels] + rng.normal(size=(n, dims))


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
@pytest.mark.parametrize("k", [1, 3])
def test_jax_estimator_equals_the_kd_tree_reference(metric, k):
  rng = np.random.default_rng(20)
  for dims, num_labels, n in ((1, 3, 300), (4, 40, 500), (12, 7, 400)):
    labels, codes = _labelled_codes(rng, n, num_labels, dims)
    for values in (codes, codes.astype(np.float32)):
      expected = knn_mi.knn_mutual_information_reference(
        labels, values.astype(np.float64), k, metric
      )
      assert expected > 0.05
      value = disentanglement.mutual_information(labels, values, k=k, metric=metric)
      assert value == pytest.approx(expected, abs=1e-12), (dims, num_labels)


@pytest.mark.parametrize("num_cells", [1, 7, 60])
def test_pruned_search_equals_the_reference_for_any_number_of_cells(
  num_cells, monkeypatch
):
  # One cell is brute force; more cells prune by the triangle inequality.
  # Labels over 100 points take the cell-bounded radius search, smaller ones
  # are searched whole.
  monkeypatch.setattr(knn_mi, "_SMALL_LABEL", 100)
  rng = np.random.default_rng(21)
  labels, codes = _labelled_codes(rng, 1500, 9, 6)
  big_labels = (labels > 4).astype(int)
  expected = [
    knn_mi.knn_mutual_information_reference(labeling, codes, 3)
    for labeling in (labels, big_labels)
  ]
  assert np.bincount(labels).max() > 100 and np.bincount(labels).min() < 100
  values = knn_mi.knn_mutual_informations(
    [labels, big_labels], codes, 3, "euclidean", num_cells=num_cells
  )
  np.testing.assert_allclose(values, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
def test_dense_pass_for_codes_that_do_not_prune_equals_the_reference(
  metric, monkeypatch
):
  # Every block takes the pass over all rows (as for codes without structure).
  monkeypatch.setattr(knn_mi, "_TILE_COST", 10**9)
  rng = np.random.default_rng(24)
  labels, codes = _labelled_codes(rng, 600, 7, 5)
  expected = knn_mi.knn_mutual_information_reference(labels, codes, 3, metric)
  (value,) = knn_mi.knn_mutual_informations([labels], codes, 3, metric, num_cells=9)
  assert value == pytest.approx(expected, abs=1e-12)


def _oracle_codes(rng, content, pose, noise):
  """Injective embeddings of each factor group plus small noise (as a perfect
  encoder's): within-label distances ~noise, norms ~10."""
  z_c = _factor_embedding(rng, content, 16, noise)
  z_p = _factor_embedding(rng, pose, 5, noise)
  return z_c.astype(np.float32), z_p.astype(np.float32)


def test_jax_estimator_keeps_tiny_radii_exact_on_oracle_codes():
  # Every (content, pose) pair occurs more than k times, so all radii, the
  # cross terms' too, are ~1e-3: within a cluster, next to norms ~10. (A
  # radius reaching into another tight cluster, 1e-3 wide at distance ~15,
  # would tie below float32 resolution, which no float32 route can order.)
  rng = np.random.default_rng(22)
  content, pose = rng.integers(0, 4, 600), rng.integers(0, 5, 600)
  assert np.bincount(5 * content + pose).min() > 3
  z_c, z_p = _oracle_codes(rng, content, pose, 1e-3)
  expected = disentanglement.mig(content, pose, z_c, z_p, estimator="sklearn")
  row = disentanglement.mig(content, pose, z_c, z_p)
  for term, value in expected.items():
    assert row[term] == pytest.approx(value, abs=1e-12), term
  assert row["MIG"] > 0.9


def test_jax_estimator_counts_exact_duplicates_as_the_reference():
  # Duplicated codes (identical frames) lie at one distance: zero radii, and
  # several points exactly on a radius, some sharing no label.
  rng = np.random.default_rng(23)
  labels, codes = _labelled_codes(rng, 300, 6, 3)
  copies = rng.integers(0, 300, 150)
  strays = rng.integers(0, 300, 30)
  labels = np.concatenate([labels, labels[copies], rng.integers(0, 6, 30)])
  codes = np.concatenate([codes, codes[copies], codes[strays]])
  for metric in ("euclidean", "chebyshev"):
    expected = knn_mi.knn_mutual_information_reference(labels, codes, 3, metric)
    value = disentanglement.mutual_information(labels, codes, metric=metric)
    assert value == pytest.approx(expected, abs=1e-12), metric
  # With a second labeling in the same pass, a point whose radius is zero in
  # one labeling is still counted in the other.
  coarse = labels % 2
  expected = [
    knn_mi.knn_mutual_information_reference(labeling, codes, 3)
    for labeling in (labels, coarse)
  ]
  values = knn_mi.knn_mutual_informations([labels, coarse], codes, 3, "euclidean")
  np.testing.assert_allclose(values, expected, rtol=0, atol=1e-12)


def _gaussian_mixture_mutual_information(mu: float) -> float:
  """I(f; z) for f uniform on {0, 1} and z | f ~ N(+-mu, 1), by quadrature."""

  def mixture_density(z: float) -> float:
    return 0.5 * (scipy.stats.norm.pdf(z, mu) + scipy.stats.norm.pdf(z, -mu))

  def integrand(z: float) -> float:
    density = mixture_density(z)
    return -density * np.log(density)

  entropy_z, _ = scipy.integrate.quad(integrand, -mu - 12.0, mu + 12.0, limit=200)
  return entropy_z - 0.5 * np.log(2.0 * np.pi * np.e)


def test_mutual_information_approaches_gaussian_mixture_value():
  rng = np.random.default_rng(8)
  n, mu = 20000, 1.0
  labels = rng.integers(0, 2, n)
  codes = (2 * labels - 1) * mu + rng.normal(size=n)
  analytic = _gaussian_mixture_mutual_information(mu)
  assert 0.2 < analytic < np.log(2.0)
  assert disentanglement.mutual_information(labels, codes) == pytest.approx(
    analytic, abs=0.02
  )


def test_mutual_information_of_well_separated_vectors_is_log_2():
  rng = np.random.default_rng(9)
  n, dims = 4000, 8
  labels = rng.integers(0, 2, n)
  codes = 20.0 * labels[:, None] + rng.normal(size=(n, dims))
  assert disentanglement.mutual_information(labels, codes) == pytest.approx(
    np.log(2.0), abs=0.01
  )


def test_mutual_information_of_independent_codes_is_near_zero():
  rng = np.random.default_rng(10)
  labels = rng.integers(0, 5, (3000, 2))
  codes = rng.normal(size=(3000, 6))
  assert disentanglement.mutual_information(labels, codes) < 0.03


def test_entropy_approaches_plug_in_entropy_on_large_samples():
  rng = np.random.default_rng(11)
  probabilities = np.array([0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
  true_entropy = -np.sum(probabilities * np.log(probabilities))
  labels = rng.choice(probabilities.size, size=200_000, p=probabilities)
  frequencies = np.bincount(labels) / labels.size
  plug_in = -np.sum(frequencies * np.log(frequencies))
  assert disentanglement.entropy(labels) == pytest.approx(plug_in, abs=1e-4)
  assert disentanglement.entropy(labels) == pytest.approx(true_entropy, abs=5e-3)


def test_entropy_corrects_plug_in_bias_on_small_samples():
  rng = np.random.default_rng(12)
  num_labels, n = 50, 100
  true_entropy = np.log(num_labels)
  grassberger_errors, plug_in_errors = [], []
  for _ in range(20):
    labels = rng.integers(0, num_labels, n)
    frequencies = np.bincount(labels)[np.bincount(labels) > 0] / n
    plug_in_errors.append(
      abs(-np.sum(frequencies * np.log(frequencies)) - true_entropy)
    )
    grassberger_errors.append(abs(disentanglement.entropy(labels) - true_entropy))
  assert np.mean(grassberger_errors) < 0.5 * np.mean(plug_in_errors)


def test_entropy_matches_grassberger_closed_form_on_counts_two_and_one():
  # n = (2, 1): G(2) = 2 - gamma - log 2 and G(1) = -gamma - log 2, so
  # H = log 3 - (2 G(2) + G(1)) / 3 = log 3 - 4/3 + gamma + log 2.
  expected = np.log(3.0) - 4.0 / 3.0 + np.euler_gamma + np.log(2.0)
  assert disentanglement.entropy([7, 7, 3]) == pytest.approx(expected, abs=1e-12)


def test_entropy_takes_rows_as_joint_labels():
  rng = np.random.default_rng(13)
  factors = np.stack([rng.integers(0, 4, 100_000), rng.integers(0, 5, 100_000)], 1)
  assert disentanglement.entropy(factors) == pytest.approx(np.log(20.0), abs=2e-3)


def _factor_embedding(
  rng: np.random.Generator, labels: np.ndarray, dims: int, noise: float
) -> np.ndarray:
  centres = 3.0 * rng.normal(size=(labels.max() + 1, dims))
  return centres[labels] + noise * rng.normal(size=(labels.size, dims))


def _synthetic_factors_and_codes(n: int = 4000):
  rng = np.random.default_rng(14)
  content = np.stack([rng.integers(0, 3, n), rng.integers(0, 4, n)], 1)
  pose = rng.integers(0, 10, n)
  content_labels = 4 * content[:, 0] + content[:, 1]
  z_c = _factor_embedding(rng, content_labels, 16, 0.1)
  z_p = _factor_embedding(rng, pose, 5, 0.1)
  return content, pose, z_c, z_p


def test_mig_is_near_one_for_a_disentangled_representation():
  content, pose, z_c, z_p = _synthetic_factors_and_codes()
  row = disentanglement.mig(content, pose, z_c, z_p)
  assert set(row) == {
    "I(f_c,z_c)",
    "I(f_c,z_p)",
    "I(f_p,z_c)",
    "I(f_p,z_p)",
    "H(f_c)",
    "H(f_p)",
    "MIG",
  }
  assert row["H(f_c)"] == pytest.approx(np.log(12.0), abs=0.02)
  assert row["I(f_c,z_c)"] == pytest.approx(row["H(f_c)"], abs=0.05)
  assert row["I(f_c,z_p)"] < 0.05 and row["I(f_p,z_c)"] < 0.05
  assert row["MIG"] > 0.95


def test_mig_jax_estimator_equals_the_reference():
  content, pose, z_c, z_p = _synthetic_factors_and_codes(2000)
  expected = disentanglement.mig(content, pose, z_c, z_p, estimator="sklearn")
  row = disentanglement.mig(content, pose, z_c, z_p)
  for term, value in expected.items():
    assert row[term] == pytest.approx(value, abs=1e-12), term


def test_mig_is_negative_when_codes_are_swapped():
  content, pose, z_c, z_p = _synthetic_factors_and_codes()
  row = disentanglement.mig(content, pose, z_p, z_c)
  assert row["MIG"] < -0.9


def test_mig_rejects_bad_input():
  content, pose, z_c, z_p = _synthetic_factors_and_codes(200)
  with pytest.raises(ValueError, match="number of frames"):
    disentanglement.mig(content, pose[:-1], z_c, z_p)
  with pytest.raises(ValueError, match="empty"):
    disentanglement.mig(content[:0], pose[:0], z_c[:0], z_p[:0])
  nan_codes = z_c.copy()
  nan_codes[5, 2] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    disentanglement.mig(content, pose, nan_codes, z_p)
  with pytest.raises(ValueError, match="single label"):
    disentanglement.mig(content, np.zeros_like(pose), z_c, z_p)
  with pytest.raises(ValueError, match="rows"):
    disentanglement.mutual_information(pose[:-1], z_p)
  with pytest.raises(ValueError, match="occurs once"):
    disentanglement.mutual_information(np.arange(10), np.arange(10.0))
  with pytest.raises(ValueError, match="occurs once"):
    disentanglement.mutual_information(
      np.arange(10), np.arange(10.0), estimator="sklearn"
    )
  with pytest.raises(ValueError, match="metric"):
    disentanglement.mig(content, pose, z_c, z_p, metric="cosine")
  with pytest.raises(ValueError, match="estimator"):
    disentanglement.mutual_information(pose, z_p, estimator="faiss")
