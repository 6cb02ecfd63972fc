"""Disentanglement metrics (eq. 8, Table I) of discrete factors and continuous
codes given as NumPy-compatible arrays: `mutual_information` (Ross 2014 k-NN
estimator, Euclidean by default, an exact search in JAX pruned by k-means
cells, with scikit-learn's KD-tree as the reference: `knn_mi`), `entropy` (Grassberger
2003 estimator) and `mig`.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import scipy.special
import scipy.stats

from mipae_jax.evaluation import knn_mi

# Every term of eq. 8 that `mig` returns, in the order of the tables'
# columns -> its ASCII name (TensorBoard tag).
MIG_TERMS = {
  "I(f_c,z_c)": "I_fc_zc",
  "I(f_c,z_p)": "I_fc_zp",
  "I(f_p,z_c)": "I_fp_zc",
  "I(f_p,z_p)": "I_fp_zp",
  "H(f_c)": "H_fc",
  "H(f_p)": "H_fp",
  "MIG": "MIG",
}


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


_METRICS = ("euclidean", "chebyshev")
_ESTIMATORS = ("jax", "sklearn")


def _check_estimator_options(k: int, metric: str, estimator: str) -> None:
  if k < 1:
    raise ValueError(f"k must be at least 1, got {k}.")
  if metric not in _METRICS:
    raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}.")
  if estimator not in _ESTIMATORS:
    raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {estimator!r}.")


def _mutual_informations(
  labelings: list[np.ndarray], codes: np.ndarray, k: int, metric: str, estimator: str
) -> list[float]:
  """I(labels; codes) for each labeling of the same codes."""
  if estimator == "sklearn":
    return [
      knn_mi.knn_mutual_information_reference(labels, codes, k, metric)
      for labels in labelings
    ]
  return knn_mi.knn_mutual_informations(labelings, codes, k, metric)


def mutual_information(
  factors: Any,
  codes: Any,
  k: int = 3,
  metric: Literal["euclidean", "chebyshev"] = "euclidean",
  estimator: Literal["jax", "sklearn"] = "jax",
) -> float:
  """I(f; z) in nats between a discrete factor group and continuous codes.

  The k-nearest-neighbour estimator of Ross (2014), as in scikit-learn's
  `mutual_info_classif`, applied to the whole code vector:

    I = psi(N) + <psi(k_i)> - <psi(N_{x_i})> - <psi(m_i)>,

  where N_{x_i} is the number of points sharing point i's label, k_i =
  min(k, N_{x_i} - 1), d_i the distance to its k_i-th nearest same-label
  neighbour, and m_i the number of points of any label (itself included) at a
  distance strictly below d_i. Points whose label occurs once are left out
  and N counts the rest. Negative estimates are clipped to 0.

  The distance is Euclidean by default, as in the paper authors' code
  (scikit-learn's `NearestNeighbors` default); "chebyshev" gives the max-norm
  of Kraskov et al. (2004) and scikit-learn's `mutual_info_classif`.

  Codes are used as given (no per-dimension rescaling and no added noise): the
  estimate is unchanged by a common rescaling of all code dimensions, but not
  by rescaling a single one. On 1-D codes without ties (where both metrics
  agree) it equals `mutual_info_classif(codes[:, None], labels, n_neighbors=k)`.

  estimator="jax" (the default) is an exact search in float64 on the default
  JAX device, pruned by k-means cells (knn_mi): distances from matrix
  products on locally centred codes where their error bound is below 1e-3 of
  the squared radius, else from coordinate differences. It gives the float64
  reference's counts except for distances that differ from d_i by less than
  that bound (ties other than exact duplicates, which are handled as the
  reference does). Chebyshev distances always take the (slower) difference
  form. estimator="sklearn" is the float64 KD-tree reference, slow for many
  high-dimensional codes (minutes per term for 100,000 128-d codes).

  Args:
    factors: integer (or other discrete) array [N] or [N, F]; each row is
      taken as one joint label.
    codes: float array [N, D] (or [N] for D = 1).
    k: number of neighbours.
    metric: "euclidean" or "chebyshev".
    estimator: "jax" or "sklearn".

  Returns:
    The estimate in nats.
  """
  labels = _joint_labels(factors, "factors")
  values = _continuous_codes(codes, "codes")
  if labels.shape[0] != values.shape[0]:
    raise ValueError(
      f"factors has {labels.shape[0]} rows but codes has {values.shape[0]}."
    )
  _check_estimator_options(k, metric, estimator)
  return _mutual_informations([labels], values, k, metric, estimator)[0]


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


def captured_term(group: str, name: str) -> str:
  """The name of I(f^name; z) / H(f^name): the share of object `name`'s
  `group` ("content" or "pose") factors that its own code holds."""
  return f"{group}_captured[{name}]"


def mig(
  content_factors: Any,
  pose_factors: Any,
  z_c: Any,
  z_p: Any,
  k: int = 3,
  metric: Literal["euclidean", "chebyshev"] = "euclidean",
  estimator: Literal["jax", "sklearn"] = "jax",
  objects: Mapping[str, tuple[Sequence[int], Sequence[int]]] | None = None,
) -> dict[str, float]:
  """Adapted mutual information gap of eq. 8, with its Table I terms.

    MIG = 0.5 / H(f_c) (I(f_c, z_c) - I(f_c, z_p))
        + 0.5 / H(f_p) (I(f_p, z_p) - I(f_p, z_c)),

  I by `mutual_information` (Ross 2014, k neighbours, `metric` distance) and
  H by `entropy` (Grassberger 2003), all in nats. Both labelings of a code
  set are served by one pass over its distances. MIG is near 1 when each code holds its
  own factor group and nothing of the other, and near -1 when they swap.

  Args:
    content_factors: [N] or [N, F_c] discrete content factors f_c (rows are
      joint labels).
    pose_factors: [N] or [N, F_p] discrete pose factors f_p.
    z_c: [N, D_c] content codes of the same N frames.
    z_p: [N, D_p] pose codes of the same N frames.
    k: neighbours of the MI estimator.
    metric: "euclidean" (the default, as the authors' code) or "chebyshev".
    estimator: "jax" (blocked brute force, the default) or "sklearn" (the
      KD-tree reference); see `mutual_information`.
    objects: name -> (content columns, pose columns) of each object of the
      scene; adds, per object, I(f_c^s; z_c) / H(f_c^s) and
      I(f_p^s; z_p) / H(f_p^s) (captured_term), from the same passes.

  Returns:
    Dict with float values for "I(f_c,z_c)", "I(f_c,z_p)", "I(f_p,z_c)",
    "I(f_p,z_p)", "H(f_c)", "H(f_p)" and "MIG", and the objects' terms.
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
  _check_estimator_options(k, metric, estimator)

  objects = dict(objects or {})
  content_rows = np.asarray(content_factors).reshape(len(content_labels), -1)
  pose_rows = np.asarray(pose_factors).reshape(len(pose_labels), -1)
  object_content = [
    _joint_labels(content_rows[:, list(c)], "content block")
    for c, _ in objects.values()
  ]
  object_pose = [
    _joint_labels(pose_rows[:, list(p)], "pose block") for _, p in objects.values()
  ]
  labelings = [content_labels, pose_labels]
  i_fc_zc, i_fp_zc, *object_zc = _mutual_informations(
    labelings + object_content, content_codes, k, metric, estimator
  )
  i_fc_zp, i_fp_zp, *object_zp = _mutual_informations(
    labelings + object_pose, pose_codes, k, metric, estimator
  )
  terms = {
    "I(f_c,z_c)": i_fc_zc,
    "I(f_c,z_p)": i_fc_zp,
    "I(f_p,z_c)": i_fp_zc,
    "I(f_p,z_p)": i_fp_zp,
    "H(f_c)": _grassberger_entropy(content_labels),
    "H(f_p)": _grassberger_entropy(pose_labels),
  }
  terms["MIG"] = 0.5 / terms["H(f_c)"] * (
    terms["I(f_c,z_c)"] - terms["I(f_c,z_p)"]
  ) + 0.5 / terms["H(f_p)"] * (terms["I(f_p,z_p)"] - terms["I(f_p,z_c)"])
  for name, c, p, i_c, i_p in zip(
    objects, object_content, object_pose, object_zc, object_zp, strict=True
  ):
    terms[captured_term("content", name)] = i_c / _grassberger_entropy(c)
    terms[captured_term("pose", name)] = i_p / _grassberger_entropy(p)
  return terms
