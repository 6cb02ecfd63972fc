"""Dotted config fields ("lstm.batch_size"): reading, setting, flattening and
comparing ml_collections configs by them."""

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
