"""Dotted config fields ("lstm.batch_size"): reading, setting, flattening and
comparing ml_collections configs by them, and naming a field a config lacks."""

import difflib
from typing import Any

import ml_collections


def _parent(config: ml_collections.ConfigDict, field: str) -> tuple[Any, str]:
  """(the ConfigDict holding dotted `field`, its last name).

  Raises:
    ValueError: `config` has no such field.
  """
  *parents, leaf = field.split(".")
  node = config
  for name in parents:
    node = node.get(name) if isinstance(node, ml_collections.ConfigDict) else None
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise ValueError(f"Unknown config field {field!r}.")
  return node, leaf


def get_field(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of the dotted `field` of `config`; ValueError when it has none."""
  node, leaf = _parent(config, field)
  return node[leaf]


def set_field(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
  """Sets the dotted `field` of `config`, which must exist (else ValueError)."""
  node, leaf = _parent(config, field)
  node[leaf] = value


def flatten(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Dotted field -> value of every leaf of `config`."""
  flat = {}

  def visit(node: dict[str, Any], prefix: str) -> None:
    for key, value in node.items():
      if isinstance(value, dict):
        visit(value, f"{prefix}{key}.")
      else:
        flat[f"{prefix}{key}"] = value

  visit(config.to_dict(), "")
  return flat


def changed_fields(
  config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict
) -> dict[str, tuple[Any, Any]]:
  """Field -> (reference value, config value) where the two differ."""
  ours, theirs = flatten(config), flatten(reference)
  return {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config flattened to dotted keys of scalars, for TensorBoard hparams."""
  flat = {}

  def visit(prefix: str, node: Any) -> None:
    if isinstance(node, ml_collections.ConfigDict):
      for key, value in node.items():
        visit(f"{prefix}.{key}" if prefix else key, value)
    elif isinstance(node, bool | int | float | str):
      flat[prefix] = node
    elif node is not None:
      flat[prefix] = str(node)

  visit("", config)
  return flat


def field_names(config: ml_collections.ConfigDict) -> list[str]:
  """Every dotted field of `config`, nested ConfigDicts included."""
  names = []
  for key, value in config.items():
    names.append(key)
    if isinstance(value, ml_collections.ConfigDict):
      names.extend(f"{key}.{name}" for name in field_names(value))
  return names


def unknown_field(config: ml_collections.ConfigDict, field: str) -> str | None:
  """The one-line error of a dotted `field` that `config` lacks ("unknown
  config field 'x' (did you mean ...?)"), else None."""
  node = config
  for part in field.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      close = difflib.get_close_matches(field, field_names(config), n=3, cutoff=0.6)
      if not close:
        return f"unknown config field {field!r} (none is close; see configs/base.py)"
      guess = ", ".join(repr(name) for name in close)
      return f"unknown config field {field!r} (did you mean {guess}?)"
    node = node[part]
  return None
