"""Restoring trained networks from a workdir: the main network's checkpoints
and the pose LSTM's (workdir/lstm_checkpoints), with the fingerprints that
keep one experiment's checkpoints out of another's. Evaluation and stage 2
read weights through here, never through a training loop."""

import functools
from typing import Any

import ml_collections

from mipae_jax import checkpointing, commands
from mipae_jax.models.networks import Networks, build_networks
from mipae_jax.models.pose_lstm import PoseLSTM
from mipae_jax.train_state import (
  Variables,
  build_pose_lstm,
  create_lstm_state,
  create_train_state,
)

LSTM_SUBDIR = "lstm_checkpoints"


def load_main_network(
  config: ml_collections.ConfigDict,
  workdir: str,
  info: Any,
  step: int = -1,
  step_flag: str = "eval.step",
) -> tuple[Networks, Variables, int]:
  """Restores the main network of `workdir` (latest step, or `step`).

  Returns the networks, {"params", "batch_stats"} on the host's default
  device layout, and the restored step. Fails before any compile with a
  CheckpointError when there is no checkpoint, it belongs to another
  experiment, or it is corrupt (naming `step_flag`, the config field that
  picks another step).
  """
  networks = build_networks(config, info.channels)
  init_fn = functools.partial(
    create_train_state,
    networks,
    config,
    image_shape=(info.height, info.width, info.channels),
  )
  with checkpointing.Checkpointer(
    workdir, config, info, step_flag=step_flag
  ) as checkpoints:
    state, step = checkpoints.restore_trained(
      init_fn,
      step,
      f"Train it first: {commands.command(config, workdir, 'train')}",
    )
  return networks, {"params": state.params, "batch_stats": state.batch_stats}, step


def lstm_fingerprint(
  config: ml_collections.ConfigDict, info: Any, main_step: int | None = None
) -> dict[str, Any]:
  """Main-network fingerprint, the LSTM's shape-defining fields and, when
  given, the main-network step the LSTM was trained on."""
  fingerprint = checkpointing.experiment_fingerprint(config, info)
  fingerprint.update(
    lstm_hidden_size=config.lstm.hidden_size, lstm_num_layers=config.lstm.num_layers
  )
  if main_step is not None:
    fingerprint["main_step"] = main_step
  return fingerprint


def lstm_checkpointer(
  config: ml_collections.ConfigDict,
  workdir: str,
  info: Any,
  main_step: int | None = None,
  **kwargs: Any,
) -> checkpointing.Checkpointer:
  """The Checkpointer of workdir/lstm_checkpoints (`kwargs`: restore_step,
  writable, ...); with `main_step`, checkpoints of an LSTM trained on another
  main-network step are refused."""
  return checkpointing.Checkpointer(
    workdir,
    config,
    info,
    subdir=LSTM_SUBDIR,
    fingerprint=lstm_fingerprint(config, info, main_step),
    step_flag="lstm.restore_step",
    **kwargs,
  )


def load_pose_lstm(
  config: ml_collections.ConfigDict,
  workdir: str,
  info: Any,
  step: int = -1,
  main_step: int | None = None,
) -> tuple[PoseLSTM, Variables, int]:
  """Restores the pose LSTM of `workdir` (latest step or `step`).

  With `main_step`, an LSTM trained on another main-network step is refused.
  """
  pose_lstm = build_pose_lstm(config)
  with lstm_checkpointer(config, workdir, info, main_step) as checkpoints:
    state, step = checkpoints.restore_trained(
      functools.partial(create_lstm_state, pose_lstm, config),
      step,
      "Run stage 2 first: " + commands.command(config, workdir, "train_lstm"),
    )
  return pose_lstm, state.params, step
