"""Checks of a config before anything is built or compiled, each failing with
one line that names the field and the allowed values; the command-line
parser that names an unknown `--config.*` field; and the commands that the
hints of other errors print."""

import csv
import difflib
import importlib.util
import io
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from mipae_jax.models import layers

METHODS = ("mipae", "drnet")
ARCHITECTURES = ("dcgan", "vgg_resnet")
RECON_TARGETS = ("offset", "same")
MARGINAL_PAIRS = ("permutation", "derangement")
CONV_IMPLS = layers.IMPLS
DTYPES = ("float32", "bfloat16")
DATASETS = ("moving_mnist", "moving_dsprites", "moving_mpi3d")
# Dataset name -> suffix of its configs/{method}_{suffix}.py.
CONFIG_SUFFIXES = {
  "moving_dsprites": "dsprites",
  "moving_mnist": "mnist",
  "moving_mpi3d": "mpi3d",
}


class ConfigError(ValueError):
  """A config value that cannot run, named in one line."""


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(f"Bad config: {message}")


def _choice(
  config: ml_collections.ConfigDict, field: str, allowed: tuple[str, ...]
) -> None:
  value = config
  for part in field.split("."):
    value = value[part]
  _require(value in allowed, f"config.{field}={value!r}; expected one of {allowed}.")


def _positive(config: ml_collections.ConfigDict, *fields: str) -> None:
  for field in fields:
    value = config
    for part in field.split("."):
      value = value[part]
    _require(
      isinstance(value, int) and value > 0,
      f"config.{field}={value!r} must be a positive integer.",
    )


def _restore_step(config: ml_collections.ConfigDict, field: str) -> None:
  value = config
  for part in field.split("."):
    value = value[part]
  _require(
    isinstance(value, int) and value >= -1,
    f"config.{field}={value!r} must be -1 (the latest) or a checkpoint step.",
  )


def validate(config: ml_collections.ConfigDict) -> None:
  """Validates the main-network fields of an experiment config."""
  _choice(config, "method", METHODS)
  _choice(config, "dataset.name", DATASETS)
  _choice(config, "model.arch", ARCHITECTURES)
  _choice(config, "model.conv_impl", CONV_IMPLS)
  _choice(config, "model.dtype", DTYPES)
  _choice(config, "loss.recon_target", RECON_TARGETS)
  _choice(config, "loss.marginal_pairs", MARGINAL_PAIRS)
  frames_per_call = config.model.inference_frames_per_call
  _require(
    frames_per_call == "auto"
    or (isinstance(frames_per_call, int) and frames_per_call >= 0),
    f"config.model.inference_frames_per_call={frames_per_call!r} must be 'auto' "
    "or an integer >= 0 (0: all frames in one call).",
  )
  _positive(
    config,
    "batch_size",
    "num_train_steps",
    "log_every_steps",
    "image_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "model.content_dim",
    "model.pose_dim",
    "model.critic_hidden",
    "model.scene_discriminator_hidden",
  )
  _require(
    isinstance(config.seed, int) and 0 <= config.seed < 2**32 - 1,
    f"config.seed={config.seed!r} must be an integer in [0, 2^32 - 1) (grain's "
    "seed range; stage 2 uses seed + 1).",
  )
  _restore_step(config, "restore_step")
  _require(
    config.batch_size >= 2,
    f"config.batch_size={config.batch_size}: marginal pairs need >= 2.",
  )
  _require(
    config.dataset.num_frames >= 2,
    f"config.dataset.num_frames={config.dataset.num_frames}: x^t and x^(t+k) need >= 2.",
  )
  _require(
    config.learning_rate > 0,
    f"config.learning_rate={config.learning_rate} must be > 0.",
  )
  for field in ("sim_weight", "mi_weight", "adversarial_weight"):
    _require(
      config.loss[field] >= 0, f"config.loss.{field}={config.loss[field]} must be >= 0."
    )


def validate_lstm(config: ml_collections.ConfigDict) -> None:
  """Validates the stage-2 (pose LSTM) fields."""
  _positive(
    config,
    "lstm.hidden_size",
    "lstm.num_layers",
    "lstm.num_context",
    "lstm.num_future",
    "lstm.batch_size",
    "lstm.num_train_steps",
    "lstm.log_every_steps",
    "lstm.image_every_steps",
    "lstm.checkpoint_every_steps",
  )
  _require(config.lstm.learning_rate > 0, "config.lstm.learning_rate must be > 0.")
  _restore_step(config, "lstm.restore_step")


def unwritable(path: str) -> OSError | None:
  """Creates `path` if needed; the OSError that writing a file there raises,
  or None when it can be written to."""
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    return e
  return None


def check_dataset(config: ml_collections.ConfigDict, info: Any) -> None:
  """The model's input contract against what the dataset stores."""
  _require(
    (info.height, info.width) == (64, 64),
    f"the {config.model.arch} networks take 64x64 frames; "
    f"{config.dataset.name} has {info.height}x{info.width}.",
  )
  _require(
    1 <= info.channels <= 3,
    f"{config.dataset.name} has {info.channels} channels; expected 1-3.",
  )
  _require(
    config.dataset.num_frames <= info.seq_len,
    f"config.dataset.num_frames={config.dataset.num_frames} exceeds the "
    f"{info.seq_len} frames per video of {config.dataset.name}/{config.dataset.builder_config}.",
  )


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


def _load_config_file(spec: str) -> ml_collections.ConfigDict:
  """The config of a --config value "path.py[:variant]", as config_flags
  loads it."""
  path, _, variant = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_config_file", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def _config_overrides(argv: list[str]) -> tuple[str | None, list[str]]:
  """(the --config value, the dotted fields of its --config.* overrides)."""
  spec, fields = None, []
  for i, arg in enumerate(argv):
    name, has_value, value = arg.lstrip("-").partition("=")
    if not arg.startswith("-"):
      continue
    if name == "config":
      spec = value if has_value else (argv[i + 1] if i + 1 < len(argv) else None)
    elif name.startswith("config."):
      fields.append(name.removeprefix("config."))
  return spec, fields


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parser (app.run's `flags_parser`), but an unknown
  --config.* field exits with one line naming it and the closest fields
  instead of config_flags' bare AttributeError."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as error:
    spec, fields = _config_overrides(argv[1:])
    if spec is None:
      raise
    config = _load_config_file(spec)
    for field in fields:
      message = unknown_field(config, field)
      if message:
        print(f"FATAL Flags parsing error: {message}", file=sys.stderr)
        sys.exit(1)
    raise error


def config_argument(config: ml_collections.ConfigDict) -> str:
  """The --config arguments of this run: those of mipae_jax.main's command
  line (file and overrides) once it is parsed, else the standard config
  file of the method and dataset. Under --mode=reproduce, whose --config is
  one method's file, another method's run gets its own file, beside that
  one, with the same variant and overrides."""
  flag = flags.FLAGS["config"] if "config" in flags.FLAGS else None
  suffix = CONFIG_SUFFIXES.get(config.dataset.name, config.dataset.name)
  if flags.FLAGS.is_parsed() and hasattr(flag, "config_filename"):
    spec = config_flags.get_config_filename(flag)
    if flag.value is not None and flag.value.get("method") != config.method:
      path, colon, variant = spec.partition(":")
      path = os.path.join(os.path.dirname(path), f"{config.method}_{suffix}.py")
      spec = f"{path}{colon}{variant}"
    overrides = [
      f"--config.{field}={shlex.quote(str(value))}"
      for field, value in config_flags.get_override_values(flag).items()
    ]
    return " ".join([f"--config={spec}", *overrides])
  return f"--config=configs/{config.method}_{suffix}.py"


def list_value(values: Sequence[str]) -> str:
  """`values` as the value of an absl list flag (mipae_jax.main's
  --workdirs), which splits it as CSV: comma-separated, a value holding a
  comma or a double quote in double quotes."""
  text = io.StringIO()
  csv.writer(text, lineterminator="").writerow(values)
  return text.getvalue()


def command(config: ml_collections.ConfigDict, workdir: str, mode: str) -> str:
  """The full `python -m mipae_jax.main` command of `mode` for this run."""
  return (
    f"python -m mipae_jax.main {config_argument(config)} --workdir={workdir} "
    f"--mode={mode}"
  )


def prepare_command(dataset_config: ml_collections.ConfigDict) -> str:
  """The `--mode=prepare` command that builds `dataset_config`'s dataset:
  this run's --config arguments once mipae_jax.main parsed them, else the
  dataset's MIPAE config with its dataset fields."""
  flag = flags.FLAGS["config"] if "config" in flags.FLAGS else None
  if flags.FLAGS.is_parsed() and hasattr(flag, "config_filename"):
    workdir = flags.FLAGS["workdir"].value if "workdir" in flags.FLAGS else "DIR"
    return command(flag.value, workdir, "prepare")
  suffix = CONFIG_SUFFIXES.get(dataset_config.name, dataset_config.name)
  fields = [f"--config=configs/mipae_{suffix}.py"]
  for field in ("builder_config", "data_dir", "manual_dir"):
    value = getattr(dataset_config.get(field), "name", dataset_config.get(field))
    if value is not None:
      fields.append(f"--config.dataset.{field}={shlex.quote(str(value))}")
  return f"python -m mipae_jax.main {' '.join(fields)} --workdir=DIR --mode=prepare"
