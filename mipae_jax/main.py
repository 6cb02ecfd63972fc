"""Command line of mipae-jax: flags only; the work is in library functions.

  python -m mipae_jax.main --config=configs/mipae_dsprites.py --workdir=DIR --mode=prepare
python -m mipae_jax.main --config=configs/mipae_dsprites.py --workdir=DIR
python -m mipae_jax.main --config=configs/mipae_dsprites.py --workdir=DIR --mode=train_lstm
python -m mipae_jax.main --config=configs/mipae_dsprites.py --workdir=DIR --mode=eval
python -m mipae_jax.main --config=configs/mipae_dsprites.py --workdir=DIR --mode=curves
"""

import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from mipae_jax import config_validation, sharding

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Experiment config file (configs/*.py[:variant]).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs.")
flags.DEFINE_enum(
  "mode",
  "train",
  ["prepare", "train", "train_lstm", "eval", "curves"],
  "prepare: build the dataset; train: main network; train_lstm: stage 2; eval; "
  "curves: score every checkpoint of the main network and plot learning curves.",
)
flags.DEFINE_list(
  "plot_with", [], "curves: other scored workdirs drawn on the same plot."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> int | None:
  """Runs --mode; the exit status of a training run stopped by SIGTERM is
  checkpointing.PREEMPTED_EXIT_CODE (143)."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  if config.distributed:
    sharding.initialize_distributed()
  logging.info(
    "Process %d/%d, %d local / %d global devices (%s).",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices()[0].platform,
  )
  if FLAGS.mode == "prepare":
    from mipae_jax import input_pipeline

    input_pipeline.prepare_dataset(config.dataset)
  elif FLAGS.mode == "train":
    from mipae_jax import checkpointing, train

    state = train.train_and_evaluate(config, FLAGS.workdir)
    return checkpointing.exit_code(int(state.step), config.num_train_steps)
  elif FLAGS.mode == "train_lstm":
    from mipae_jax import checkpointing, train_lstm

    state = train_lstm.train_and_evaluate(config, FLAGS.workdir)
    return checkpointing.exit_code(int(state.step), config.lstm.num_train_steps)
  elif FLAGS.mode == "curves":
    from mipae_jax import learning_curves

    logging.info(
      "Learning curves: %s",
      learning_curves.learning_curves(config, FLAGS.workdir, FLAGS.plot_with),
    )
  else:
    from mipae_jax import evaluate

    evaluate.evaluate(config, FLAGS.workdir)


def _one_line_errors(argv: list[str]) -> int | None:
  """main(argv), but an error of ours (bad config, corrupt data or checkpoint,
  unwritable workdir) ends the output as its one line: printed after every
  log line, then the process exits 1 at once, before Orbax's and
  tensorstore's background threads can print their own failures after it.
  Open checkpoint managers were already closed by main's finally blocks."""
  from mipae_jax import checkpointing, input_pipeline

  try:
    return main(argv)
  except (
    checkpointing.CheckpointError,
    config_validation.ConfigError,
    input_pipeline.CorruptDataError,
    PermissionError,
    FloatingPointError,
  ) as error:
    logging.flush()
    sys.stdout.flush()
    name = f"{type(error).__module__}.{type(error).__qualname__}"
    name = name.removeprefix("builtins.")
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    print(f"{name}: {first}", file=sys.stderr, flush=True)
    os._exit(1)


if __name__ == "__main__":
  jax.config.config_with_absl()
  app.run(_one_line_errors, flags_parser=config_validation.parse_flags)
