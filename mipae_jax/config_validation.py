"""Checks of a config before anything is built or compiled, each failing with
one line that names the field and the allowed values."""

import os
import tempfile
from typing import Any

import jax
import ml_collections

from mipae_jax.models import layers
from mipae_jax.registry import DATASETS, METHODS

ARCHITECTURES = ("dcgan", "vgg_resnet")
RECON_TARGETS = ("offset", "same")
MARGINAL_PAIRS = ("permutation", "derangement")
CONV_IMPLS = layers.IMPLS
DTYPES = ("float32", "bfloat16")
# Where training batches are read: mipae_jax/device_data.py.
PLACEMENTS = ("host", "device")
LPIPS_NETS = ("alex", "vgg")
# MIG's frames (evaluation/mig_frames.py): the static protocols, then frames
# of test videos.
STATIC_MIG_PROTOCOLS = ("per_object", "joint", "reference")
MIG_PROTOCOLS = (*STATIC_MIG_PROTOCOLS, "video_frames")


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
  _data_placement(config)
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


def _data_placement(config: ml_collections.ConfigDict) -> None:
  """Steps per call and the placement of the training data."""
  _positive(config, "steps_per_call")
  _require(
    config.checkpoint_every_steps % config.steps_per_call == 0,
    f"config.steps_per_call={config.steps_per_call} must divide "
    f"config.checkpoint_every_steps={config.checkpoint_every_steps} (calls end "
    "on checkpoints, so that a resumed run repeats the same calls).",
  )
  _choice(config, "dataset.placement", PLACEMENTS)
  fraction = config.dataset.device_memory_fraction
  _require(
    0 < fraction <= 1,
    f"config.dataset.device_memory_fraction={fraction!r} must be in (0, 1].",
  )
  _require(
    config.dataset.placement == "host" or not config.dataset.fresh_train_videos,
    "config.dataset.placement='device' stores the train split's videos on the "
    "devices; it needs config.dataset.fresh_train_videos=False.",
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


def check_batch_size(batch_size: int, mesh: Any, name: str = "batch_size") -> None:
  """The global batch `config.<name>` splits evenly over the mesh's devices
  and over the processes (checked before anything compiles)."""
  num_devices, num_processes = mesh.devices.size, jax.process_count()
  _require(
    batch_size % num_devices == 0 and batch_size % num_processes == 0,
    f"config.{name}={batch_size} must be divisible by the number of devices "
    f"({num_devices}) and of processes ({num_processes}).",
  )


def validate_eval(config: ml_collections.ConfigDict) -> None:
  """Checks the `config.eval` fields, each failure naming the field."""
  ev = config.eval

  for field in ("num_context", "num_future", "batch_size"):
    value = ev[field]
    _require(
      isinstance(value, int) and value > 0,
      f"config.eval.{field}={value!r} must be a positive integer.",
    )
  _require(
    ev.num_sequences == -1 or ev.num_sequences > 0,
    f"config.eval.num_sequences={ev.num_sequences} must be -1 (all) or positive.",
  )
  _require(
    ev.num_mig_frames >= 0,
    f"config.eval.num_mig_frames={ev.num_mig_frames} must be >= 0 (0 skips MIG).",
  )
  _require(
    isinstance(ev.mig_folds, int)
    and ev.mig_folds >= 1
    and (not ev.num_mig_frames or ev.num_mig_frames // ev.mig_folds >= 16),
    f"config.eval.mig_folds={ev.mig_folds!r} must be an integer >= 1 with at "
    f"least 16 of the {ev.num_mig_frames} MIG frames per set.",
  )
  protocols = MIG_PROTOCOLS
  _require(
    ev.mig_protocol in protocols,
    f"config.eval.mig_protocol={ev.mig_protocol!r}; expected one of {protocols}.",
  )
  _require(
    not ev.num_mig_frames
    or ev.mig_protocol == "video_frames"
    or config.dataset.name in DATASETS,
    f"config.eval.mig_protocol={ev.mig_protocol!r} renders static frames of "
    f"{DATASETS} only; use 'video_frames' for {config.dataset.name}.",
  )
  unknown = [net for net in ev.lpips_nets if net not in LPIPS_NETS]
  _require(
    not unknown, f"config.eval.lpips_nets has {unknown}; expected some of {LPIPS_NETS}."
  )
  _require(
    ev.step == -1 or ev.step >= 0,
    f"config.eval.step={ev.step} must be -1 (latest) or a checkpoint step.",
  )


def check_eval_data(config: ml_collections.ConfigDict, info: Any) -> int:
  """Checks the test split against config.eval; returns the sequences to score."""
  horizon = config.eval.num_context + config.eval.num_future
  builder_config = getattr(
    config.dataset.builder_config, "name", config.dataset.builder_config
  )
  name = f"{config.dataset.name}/{builder_config}"
  if horizon > info.seq_len:
    raise ConfigError(
      f"Bad config: eval.num_context + eval.num_future = {horizon} frames, but the "
      f"test videos of {name} have {info.seq_len}; lower eval.num_future."
    )
  if info.num_test < 1:
    raise ValueError(f"The test split of {name} is empty: nothing to evaluate.")
  if config.eval.num_sequences > info.num_test:
    raise ConfigError(
      f"Bad config: eval.num_sequences={config.eval.num_sequences} exceeds the "
      f"{info.num_test} test videos of {name}; use -1 for all of them."
    )
  if config.eval.num_mig_frames and not (
    info.content_factor_names and info.pose_factor_names
  ):
    raise ValueError(
      f"{name} has no known content and pose factors, so MIG (eq. 8) cannot be "
      "computed; set config.eval.num_mig_frames=0 to skip it."
    )
  return info.num_test if config.eval.num_sequences == -1 else config.eval.num_sequences


def check_lstm_frames(config: ml_collections.ConfigDict, info: Any) -> None:
  """Stage 2's context and future frames fit the dataset's videos."""
  num_frames = config.lstm.num_context + config.lstm.num_future
  _require(
    num_frames <= info.seq_len,
    f"lstm.num_context + lstm.num_future = {num_frames} exceeds the "
    f"{info.seq_len} frames per video of {config.dataset.name}.",
  )
