"""The command line of mipae-jax: every flag is defined here; the work is in
library functions.

  python -m mipae_jax.main --mode=prepare --config=configs/mipae_dsprites.py --workdir=DIR
  python -m mipae_jax.main --mode=train --config=configs/mipae_dsprites.py --workdir=DIR
  python -m mipae_jax.main --mode=train_lstm --config=configs/mipae_dsprites.py --workdir=DIR
  python -m mipae_jax.main --mode=eval --config=configs/mipae_dsprites.py --workdir=DIR
  python -m mipae_jax.main --mode=curves --config=configs/mipae_dsprites.py --workdir=DIR
      [--workdirs=OTHER,...]
  python -m mipae_jax.main --mode=compare --workdirs=DIR1,DIR2,... [--workdir=OUT]
  python -m mipae_jax.main --mode=reproduce --config=configs/mipae_dsprites.py:reduced
      --workdir=DIR [--methods=mipae,drnet]

--mode=train is the default. Any mode but compare takes --config.FIELD=VALUE
overrides; reproduce applies them to the config of every method. This is the
one command line: no library module imports it.
"""

import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from mipae_jax import config_fields, config_validation, registry, sharding

MODES = ("prepare", "train", "train_lstm", "eval", "curves", "compare", "reproduce")
# Modes that read --workdirs / --methods.
WORKDIRS_MODES = ("curves", "compare")
METHODS_MODES = ("reproduce",)
# The config variants --mode=reproduce runs: its scales (none is "paper").
REPRODUCE_VARIANTS = {
  "": "paper",
  "reduced": "reduced",
  "smoke": "smoke",
  "tiny": "tiny",
}

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config",
  None,
  "Experiment config file, configs/<method>_<dataset>.py[:variant]; every mode "
  "but compare needs it. reproduce: any method's file of the dataset, whose "
  "variant (none, reduced or tiny) is the scale; each method's config is built "
  "from its own file with the same --config.* overrides.",
  lock_config=True,
)
flags.DEFINE_string(
  "workdir",
  None,
  "Directory of checkpoints, logs and outputs; every mode but compare needs it. "
  "reproduce: the directory of every method's run and the report. compare: "
  "where comparison.md and its plots go (default: COMMON_PARENT/comparison).",
)
flags.DEFINE_enum(
  "mode",
  "train",
  list(MODES),
  "prepare: build the dataset; train: main network; train_lstm: stage 2; eval; "
  "curves: score every checkpoint of the main network and plot learning curves; "
  "compare: one table and overlaid curves over evaluated --workdirs; "
  "reproduce: train, evaluate and compare --methods (the paper's comparison).",
)
flags.DEFINE_list(
  "workdirs",
  [],
  "curves: other scored workdirs drawn on the same plot; compare: the evaluated "
  "workdirs, one row each. Comma-separated; a path holding a comma goes in "
  "double quotes (CSV): --workdirs='\"runs/a=1,b=2\",runs/c'.",
)
flags.DEFINE_alias("plot_with", "workdirs")
flags.DEFINE_list(
  "methods", ["mipae", "drnet"], "reproduce: the methods to run, in this order."
)


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


def config_file_error(spec: str) -> str | None:
  """One line on a --config file that cannot load (missing, not a file, or
  not Python: its line and error), else None."""
  path = spec.partition(":")[0]
  if not os.path.isfile(path):
    what = "is not a file" if os.path.exists(path) else "does not exist"
    return f"config file {path} {what} (run from the repository root?)"
  try:
    with open(path, encoding="utf-8") as source:
      compile(source.read(), path, "exec")
  except SyntaxError as error:
    return f"config file {path}, line {error.lineno}: {error.msg}"
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parser (app.run's `flags_parser`), but a --config file that
  cannot load and an unknown --config.* field exit with one line naming them
  instead of config_flags' tracebacks."""
  spec, _ = _config_overrides(argv[1:])
  message = spec and config_file_error(spec)
  if message:
    print(f"FATAL Flags parsing error: {message}", file=sys.stderr)
    sys.exit(1)
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as error:
    spec, fields = _config_overrides(argv[1:])
    if spec is None:
      raise
    config = _load_config_file(spec)
    for field in fields:
      message = config_fields.unknown_field(config, field)
      if message:
        print(f"FATAL Flags parsing error: {message}", file=sys.stderr)
        sys.exit(1)
    raise error


def check_flags() -> None:
  """Raises app.UsageError, one line, for flags that --mode cannot run with."""
  mode = FLAGS.mode
  if mode == "compare":
    if not FLAGS.workdirs:
      raise app.UsageError("--mode=compare needs --workdirs=DIR1,DIR2,...")
  else:
    if FLAGS.config is None:
      raise app.UsageError(
        f"--mode={mode} needs --config=configs/<method>_<dataset>.py[:variant]."
      )
    if FLAGS.workdir is None:
      raise app.UsageError(f"--mode={mode} needs --workdir=DIR.")
  for name, modes in (("workdirs", WORKDIRS_MODES), ("methods", METHODS_MODES)):
    if FLAGS[name].present and mode not in modes:
      raise app.UsageError(
        f"--{name} is read by --mode={' and '.join(modes)}, not --mode={mode}."
      )
  if mode == "reproduce":
    _reproduce_arguments()


def _reproduce_arguments() -> dict[str, Any]:
  """reproduce.reproduce's keyword arguments from the flags; raises
  app.UsageError for a variant, dataset or method it cannot run."""
  spec = config_flags.get_config_filename(FLAGS["config"])
  variant = spec.partition(":")[2]
  if variant not in REPRODUCE_VARIANTS:
    raise app.UsageError(
      f"--mode=reproduce runs the config variants reduced, smoke and tiny, or none (the "
      f"paper's settings); got --config={spec}."
    )
  dataset = FLAGS.config.dataset.name
  if dataset not in registry.CONFIG_SUFFIXES:
    raise app.UsageError(
      f"--mode=reproduce: config.dataset.name={dataset!r}; expected one of "
      f"{sorted(registry.CONFIG_SUFFIXES)}."
    )
  methods = tuple(FLAGS.methods)
  if (
    not methods
    or len(set(methods)) != len(methods)
    or set(methods) - set(registry.METHODS)
  ):
    raise app.UsageError(
      f"--methods={','.join(methods)}: expected some of {','.join(registry.METHODS)}, "
      "each once."
    )
  overrides = dict(config_flags.get_override_values(FLAGS["config"]))
  if "method" in overrides:
    raise app.UsageError(
      "--mode=reproduce: --methods chooses the methods, not --config.method."
    )
  return {
    "dataset": dataset,
    "scale": REPRODUCE_VARIANTS[variant],
    "workdir": FLAGS.workdir,
    "methods": methods,
    "data_dir": overrides.pop("dataset.data_dir", None),
    "manual_dir": overrides.pop("dataset.manual_dir", None),
    "overrides": overrides or None,
  }


def run_mode() -> Any:
  """Runs --mode of the parsed, checked flags; returns its result: the exit
  status of train and train_lstm (checkpointing.PREEMPTED_EXIT_CODE, 143,
  when SIGTERM stopped them), eval's metrics, curves' plot path, compare's
  table (also printed), reproduce's report path (also printed; 143 when a
  stage stopped early)."""
  mode = FLAGS.mode
  if mode == "compare":
    from mipae_jax.experiments import compare

    text = compare.compare(FLAGS.workdirs, FLAGS.workdir)
    print(text)
    return text
  config = FLAGS.config
  if mode != "prepare":
    from mipae_jax import workdir

    workdir.check_workdir(FLAGS.workdir)
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
  if mode == "prepare":
    from mipae_jax.datasets import prepared

    prepared.prepare_dataset(config.dataset)
    return None
  if mode == "train":
    from mipae_jax import checkpointing, train

    state = train.train_and_evaluate(config, FLAGS.workdir)
    return checkpointing.exit_code(int(state.step), config.num_train_steps)
  if mode == "train_lstm":
    from mipae_jax import checkpointing, train_lstm

    state = train_lstm.train_and_evaluate(config, FLAGS.workdir)
    return checkpointing.exit_code(int(state.step), config.lstm.num_train_steps)
  if mode == "curves":
    from mipae_jax.evaluation import learning_curves

    path = learning_curves.learning_curves(config, FLAGS.workdir, FLAGS.workdirs)
    logging.info("Learning curves: %s", path)
    return path
  if mode == "reproduce":
    from mipae_jax import checkpointing
    from mipae_jax.experiments import reproduce

    try:
      path = reproduce.reproduce(**_reproduce_arguments())
    except reproduce.StageIncomplete as error:
      logging.warning("%s", error)
      return checkpointing.PREEMPTED_EXIT_CODE
    from mipae_jax.evaluation import eval_outputs
    from mipae_jax.experiments import compare

    for method in FLAGS.methods:
      try:
        metrics = compare.load_metrics(os.path.join(FLAGS.workdir, method))
      except FileNotFoundError:
        continue
      print(eval_outputs.console_summary(metrics))
    print(f"Report: {path}")
    figures = os.path.join(os.path.dirname(path), "figures")
    if os.path.isdir(figures):
      print(f"Pictures: {figures}")
    return path
  from mipae_jax.evaluation import eval_outputs, evaluate

  result = evaluate.evaluate(config, FLAGS.workdir)
  if jax.process_index() == 0:
    print(eval_outputs.console_summary(result))
  return result


def main(argv: list[str]) -> int | None:
  """app.run's main: runs --mode; returns the exit status of a run that a
  SIGTERM stopped (checkpointing.PREEMPTED_EXIT_CODE, 143), else None."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  check_flags()
  result = run_mode()
  return result if isinstance(result, int) and result else None


def call(argv: Sequence[str]) -> Any:
  """This command line in this process: parses `argv` (program name first)
  with these flags, checks them as main does and returns run_mode()'s
  result. Every flag is unparsed again after (also those of an earlier
  parse in this process: before), and sys.argv, where config_flags reads
  the --config.* overrides, restored."""
  saved_argv = sys.argv
  sys.argv = list(argv)
  try:
    _unparse()
    rest = FLAGS(sys.argv)
    if len(rest) > 1:
      raise app.UsageError(f"Unexpected arguments: {rest[1:]}")
    check_flags()
    return run_mode()
  finally:
    _unparse()
    sys.argv = saved_argv


def _unparse() -> None:
  """Unparses every flag and deletes the --config.FIELD flags that parsing
  --config defined (a second parse would define them again)."""
  FLAGS.unparse_flags()
  for name in [name for name in FLAGS if name.startswith("config.")]:
    delattr(FLAGS, name)


def _one_line_errors(argv: list[str]) -> int | None:
  """main(argv), but every error ends the output as its one line: printed
  after every log line, then the process exits 1 at once, before Orbax's
  and tensorstore's background threads (or the interpreter's shutdown) can
  print their own failures after it. Errors of ours (bad config, corrupt
  data or checkpoint, unwritable or busy workdir) are their message; any
  other is its type and first line, its traceback only with --verbosity=1.
  Open checkpoint managers were already closed by main's finally blocks."""
  from mipae_jax import checkpointing
  from mipae_jax.datasets import prepared

  ours = (
    checkpointing.CheckpointError,
    config_validation.ConfigError,
    prepared.CorruptDataError,
    PermissionError,
    FloatingPointError,
  )
  try:
    return main(argv)
  except (app.UsageError, KeyboardInterrupt):
    raise
  except Exception as error:  # noqa: BLE001 (every error ends as one line)
    if not isinstance(error, ours):
      # Not ours (an OSError, an Orbax or TensorStore error): its traceback
      # goes to the log at --verbosity=1, its first line ends the output.
      if logging.get_verbosity() >= 1:
        logging.exception("The error:")
    logging.flush()
    sys.stdout.flush()
    name = f"{type(error).__module__}.{type(error).__qualname__}"
    name = name.removeprefix("builtins.")
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    hint = "" if isinstance(error, ours) else " (--verbosity=1 shows the traceback)"
    print(f"{name}: {first}{hint}", file=sys.stderr, flush=True)
    os._exit(1)


def command_line(argv: Sequence[str]) -> None:
  """Runs `argv` (sys.argv form) as `python -m mipae_jax.main` does, then
  exits."""
  sys.argv = list(argv)  # config_flags reads the --config.* overrides there.
  jax.config.config_with_absl()
  app.run(_one_line_errors, argv=sys.argv, flags_parser=parse_flags)


if __name__ == "__main__":
  command_line(sys.argv)
