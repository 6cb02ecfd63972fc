"""Hyper-parameter sweeps over config fields, in the ml-collections idiom.

A config file may define `get_sweep()` beside `get_config()`; it returns a
list of runs, each a dict {dotted config field: value} of overrides:

  from mipae_jax import sweeps

  def get_sweep():
    return sweeps.product(
        sweeps.sweep("loss.mi_weight", [1e-5, 1e-4, 1e-3]),
        sweeps.zipit(
            sweeps.sweep("seed", [0, 1]),
            sweeps.sweep("model.dtype", ["float32", "bfloat16"]),
        ),
    )

Lists of runs concatenate with `+`. `launch/sweep.py` turns each run into
`--config.FIELD=VALUE` flags of `python -m mipae_jax.main` and names its
workdir with `run_names`.
"""

import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

# One run of a sweep: {dotted config field: value}.
Overrides = dict[str, Any]

_FIELD_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# Characters kept from values in run names; any other run of them becomes "_".
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")
# Longer names are cut and end with a hash of the run's overrides.
_MAX_NAME_LENGTH = 120


def sweep(field: str, values: Iterable[Any]) -> list[Overrides]:
  """One run per value of `field`, a dotted config path like "loss.mi_weight"."""
  if not _FIELD_PATTERN.fullmatch(field):
    raise ValueError(f"Sweep field {field!r} is not a dotted config path.")
  values = list(values)
  if not values:
    raise ValueError(f"Sweep over {field!r} has no values.")
  return [{field: value} for value in values]


def _merge(runs: Sequence[Overrides], combinator: str) -> Overrides:
  merged: Overrides = {}
  for run in runs:
    for field, value in run.items():
      if field in merged:
        raise ValueError(
          f"Field {field!r} is set by more than one sweep of a {combinator}."
        )
      merged[field] = value
  return merged


def product(*sweeps: Sequence[Overrides]) -> list[Overrides]:
  """Every combination of the sweeps' runs; the last sweep varies fastest."""
  if not sweeps:
    raise ValueError("product() needs at least one sweep.")
  return [_merge(runs, "product") for runs in itertools.product(*sweeps)]


def zipit(*sweeps: Sequence[Overrides]) -> list[Overrides]:
  """The i-th runs of all sweeps merged into one run; lengths must match."""
  if not sweeps:
    raise ValueError("zipit() needs at least one sweep.")
  lengths = [len(runs) for runs in sweeps]
  if len(set(lengths)) != 1:
    raise ValueError(f"zipit() needs sweeps of equal length, got lengths {lengths}.")
  return [_merge(runs, "zipit") for runs in zip(*sweeps, strict=True)]


def format_value(value: Any) -> str:
  """`value` as ml_collections' config flags parse it back (bools as True)."""
  if isinstance(value, str):
    return value
  if isinstance(value, list | tuple):
    return repr(tuple(value))
  return repr(value)


def override_flags(overrides: Overrides) -> list[str]:
  """The `--config.FIELD=VALUE` flags of one run, in the run's field order."""
  return [
    f"--config.{field}={format_value(value)}" for field, value in overrides.items()
  ]


def _short_labels(fields: Sequence[str]) -> dict[str, str]:
  """Each field's shortest dotted suffix that no other field ends with."""
  split = {field: field.split(".") for field in fields}
  labels = {}
  for field, parts in split.items():
    for depth in range(1, len(parts) + 1):
      suffix = parts[-depth:]
      clashes = any(
        other != field and other_parts[-depth:] == suffix
        for other, other_parts in split.items()
      )
      if not clashes:
        break
    labels[field] = ".".join(suffix)
  return labels


def _digest(overrides: Overrides) -> str:
  canonical = json.dumps(overrides, sort_keys=True, default=repr)
  return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def run_names(runs: Sequence[Overrides]) -> list[str]:
  """Stable, unique, filesystem-safe names like "mi_weight=0.0001,seed=1".

  Each field is named by its shortest dotted suffix that tells it apart from
  the sweep's other fields. Names that clash after sanitising, or that are too
  long, end with a hash of the run's overrides. A run without overrides is
  named "default".

  Raises:
    ValueError: when two runs have the same overrides.
  """
  digests = [_digest(run) for run in runs]
  for index, digest in enumerate(digests):
    if digest in digests[:index]:
      raise ValueError(f"The sweep holds the run {runs[index]} twice.")
  labels = _short_labels(list(dict.fromkeys(f for run in runs for f in run)))
  names = []
  for run, digest in zip(runs, digests, strict=True):
    name = ",".join(
      f"{labels[field]}={_UNSAFE_NAME_CHARS.sub('_', format_value(value))}"
      for field, value in run.items()
    )
    if not name:
      name = "default"
    if len(name) > _MAX_NAME_LENGTH:
      name = f"{name[: _MAX_NAME_LENGTH - 9]}-{digest}"
    names.append(name)
  counts = {name: names.count(name) for name in names}
  return [
    f"{name}-{digest}" if counts[name] > 1 else name
    for name, digest in zip(names, digests, strict=True)
  ]
