"""The `python -m mipae_jax.main` commands that hints print, built from the
config and the workdir alone: the method's config file, the variant that
leaves the fewest overrides, and a `--config.FIELD=VALUE` for each field
that still differs."""

import csv
import io
import shlex
from collections.abc import Sequence

import ml_collections

from mipae_jax import config_fields, registry
from mipae_jax.configs import base


def _format(value) -> str:
  if isinstance(value, tuple | list):
    return ",".join(str(v) for v in value)
  return str(value)


def config_argument(config: ml_collections.ConfigDict) -> str:
  """The --config arguments that rebuild `config`: its method's file, at the
  variant (none or one of base.VARIANTS) closest to it, and an override
  for every field that still differs (sorted)."""
  method, dataset = config.method, config.dataset.name
  path = registry.config_file(method, dataset)
  try:
    module = registry.config_module(method, dataset)
  except ValueError:
    return f"--config={path}"
  best = None
  for variant in ("", *base.VARIANTS):
    reference = module.get_config(variant) if variant else module.get_config()
    changed = config_fields.changed_fields(config, reference)
    if best is None or len(changed) < len(best[1]):
      best = (variant, changed)
  variant, changed = best
  spec = f"{path}:{variant}" if variant else path
  overrides = [
    f"--config.{field}={shlex.quote(_format(value))}"
    for field, (_, value) in sorted(changed.items())
    if value is not None
  ]
  return " ".join([f"--config={spec}", *overrides])


def command(config: ml_collections.ConfigDict, workdir: str, mode: str) -> str:
  """The full `python -m mipae_jax.main` command of `mode` for this run."""
  return (
    f"python -m mipae_jax.main {config_argument(config)} --workdir={workdir} "
    f"--mode={mode}"
  )


def prepare_command(dataset_config: ml_collections.ConfigDict) -> str:
  """The `--mode=prepare` command that builds `dataset_config`'s dataset:
  the dataset's MIPAE config with its dataset fields."""
  fields = [f"--config={registry.config_file('mipae', dataset_config.name)}"]
  for field in ("builder_config", "data_dir", "manual_dir"):
    value = getattr(dataset_config.get(field), "name", dataset_config.get(field))
    if value is not None:
      fields.append(f"--config.dataset.{field}={shlex.quote(str(value))}")
  return f"python -m mipae_jax.main {' '.join(fields)} --workdir=DIR --mode=prepare"


def list_value(values: Sequence[str]) -> str:
  """`values` as the value of an absl list flag (main's --workdirs), which
  splits it as CSV: comma-separated, a value holding a comma or a double
  quote in double quotes."""
  text = io.StringIO()
  csv.writer(text, lineterminator="").writerow(values)
  return text.getvalue()
