"""Expands a config's get_sweep() into runs and runs or submits them.

Each run of the sweep (see mipae_jax/sweeps.py) gets a name built from its
overrides and the workdir ROOT/NAME. Locally the runs train one after another;
with --mode=slurm they become one SLURM job array whose task i runs run i of
the run list ROOT/sweep.json. Either way the script ends by printing the
command that tabulates the sweep's results.

Worked example (three MI weights times two seeds, each trained and evaluated
on the small CPU variant of the MIPAE dSprites config):

  python launch/sweep.py --config=configs/mipae_dsprites.py:smoke \\
      --workdir_root=/tmp/mi_sweep --stages=train,eval --dry-run \\
      -- --config.num_train_steps=200

prints, for every run, its name (e.g. "mi_weight=0.0001,seed=1"), its workdir
and the command of each stage:

  /usr/bin/python3 -m mipae_jax.main --config=/repo/configs/mipae_dsprites.py:smoke
      --workdir=/tmp/mi_sweep/mi_weight=0.0001,seed=1 --mode=train
      --config.num_train_steps=200 --config.loss.mi_weight=0.0001 --config.seed=1

then `python -m mipae_jax.main --mode=compare --workdirs=...` over the six
workdirs. Drop --dry-run to run them; add --mode=slurm
--sbatch_option=--partition=gpu to submit a 6-task array instead. A SLURM task runs its run with
`launch/sweep.py --run_from=ROOT/sweep.json --task_id=$SLURM_ARRAY_TASK_ID`.
"""

import argparse
import dataclasses
import importlib.util
import inspect
import json
import os
import pathlib
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

# Run as a script, this file does not put the repository root on sys.path;
# `mipae_jax` and the configs' own imports (`from mipae_jax.configs import
# base`) need it in a checkout that is not pip-installed, as they have it under
# `python -m mipae_jax.main` run from the root.
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mipae_jax import commands, config_fields, sweeps  # noqa: E402

# Entry-point modes a run can go through; curves scores its checkpoints.
STAGES = ("train", "train_lstm", "eval", "curves")
SWEEP_FILE = "sweep.json"
SBATCH_FILE = "sweep.sbatch"


class SweepError(Exception):
  """A sweep that cannot be expanded or run, with the reason for the user."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep: its name, workdir, overrides and stage commands."""

  name: str
  workdir: str
  overrides: dict[str, Any]
  commands: list[list[str]]


def load_config_module(config_path: str) -> Any:
  """Imports a config file ("configs/X.py", without ":arg") as a module."""
  path = pathlib.Path(config_path)
  if not path.is_file():
    raise SweepError(f"Config file {config_path} does not exist.")
  spec = importlib.util.spec_from_file_location(f"sweep_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _call_with_arg(function: Any, arg: str | None) -> Any:
  """Calls get_config / get_sweep with the config's ":arg" when it takes one."""
  if arg is not None and inspect.signature(function).parameters:
    return function(arg)
  return function()


def _check_field(config: Any, field: str, config_spec: str) -> None:
  try:
    config_fields.get_field(config, field)
  except ValueError as error:
    raise SweepError(
      f"Sweep field {field!r} is not a field of {config_spec}."
    ) from error


def load_sweep(config_spec: str) -> list[sweeps.Overrides]:
  """The runs of `config_spec`'s get_sweep(), checked against its get_config()."""
  config_path, _, arg = config_spec.partition(":")
  module = load_config_module(config_path)
  if not hasattr(module, "get_sweep"):
    raise SweepError(
      f"{config_path} defines no get_sweep(); add one beside get_config() that "
      "returns e.g. sweeps.product(sweeps.sweep('seed', [0, 1]), ...)."
    )
  try:
    runs = _call_with_arg(module.get_sweep, arg or None)
  except ValueError as error:
    raise SweepError(f"get_sweep() of {config_path} failed: {error}") from error
  if (
    not isinstance(runs, list)
    or not runs
    or not all(isinstance(run, dict) for run in runs)
  ):
    raise SweepError(
      f"get_sweep() of {config_path} must return a non-empty list of dicts "
      f"{{field: value}}, got {runs!r}."
    )
  config = _call_with_arg(module.get_config, arg or None)
  for field in dict.fromkeys(field for run in runs for field in run):
    _check_field(config, field, config_spec)
  return runs


def _overridden_field(flag: str) -> str | None:
  if flag.startswith("--config."):
    return flag[len("--config.") :].partition("=")[0]
  return None


def build_runs(
  runs: Sequence[sweeps.Overrides],
  config_spec: str,
  workdir_root: str,
  stages: Sequence[str],
  extra_flags: Sequence[str],
  python: str,
  module: str,
) -> list[Run]:
  """The runs' names, workdirs and, per stage, the entry point's argv."""
  for flag in extra_flags:
    if not flag.startswith("--"):
      raise SweepError(f"Extra argument {flag!r} is not a --flag.")
    field = _overridden_field(flag)
    if any(field in run for run in runs):
      raise SweepError(f"{flag} overrides {field!r}, which the sweep sets.")
  try:
    names = sweeps.run_names(runs)
  except ValueError as error:
    raise SweepError(str(error)) from error
  built = []
  for name, overrides in zip(names, runs, strict=True):
    workdir = os.path.join(workdir_root, name)
    commands = [
      [
        python,
        "-m",
        module,
        f"--config={config_spec}",
        f"--workdir={workdir}",
        f"--mode={stage}",
        *extra_flags,
        *sweeps.override_flags(overrides),
      ]
      for stage in stages
    ]
    built.append(Run(name, workdir, dict(overrides), commands))
  return built


def compare_command(python: str, runs: Sequence[Run]) -> list[str]:
  """The command that prints one table over the runs' workdirs (run names
  hold commas: --workdirs quotes them, CSV style)."""
  workdirs = commands.list_value([run.workdir for run in runs])
  return [python, "-m", "mipae_jax.main", "--mode=compare", f"--workdirs={workdirs}"]


def sweep_record(runs: Sequence[Run], compare: list[str]) -> dict[str, Any]:
  """The content of ROOT/sweep.json: the runs and where to run them."""
  return {
    "cwd": str(REPO_ROOT),
    "runs": [dataclasses.asdict(run) for run in runs],
    "compare_command": compare,
  }


def write_record(workdir_root: str, record: dict[str, Any]) -> pathlib.Path:
  """Writes ROOT/sweep.json, refusing to mix two different sweeps in ROOT."""
  path = pathlib.Path(workdir_root, SWEEP_FILE)
  if path.exists():
    old_names = [run["name"] for run in json.loads(path.read_text())["runs"]]
    new_names = [run["name"] for run in record["runs"]]
    if old_names != new_names:
      raise SweepError(
        f"{path} holds a different sweep (runs {old_names}); "
        "choose another --workdir_root."
      )
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record, indent=2) + "\n")
  return path


def sbatch_script(
  workdir_root: str,
  num_runs: int,
  python: str,
  gpus_per_run: int,
  max_parallel: int | None,
  sbatch_options: Sequence[str],
  setup: Sequence[str],
) -> str:
  """The SLURM array job: task i runs run i of ROOT/sweep.json on one node."""
  array = f"0-{num_runs - 1}" + (f"%{max_parallel}" if max_parallel else "")
  lines = [
    "#!/bin/bash",
    f"#SBATCH --job-name=sweep-{os.path.basename(workdir_root)}",
    f"#SBATCH --array={array}",
    "#SBATCH --nodes=1",
    "#SBATCH --ntasks=1",
  ]
  if gpus_per_run:
    lines.append(f"#SBATCH --gpus-per-node={gpus_per_run}")
  lines += [
    f"#SBATCH --output={os.path.join(workdir_root, 'slurm-%A_%a.out')}",
    f"#SBATCH --chdir={REPO_ROOT}",
  ]
  lines += [f"#SBATCH {option}" for option in sbatch_options]
  lines += ["set -euo pipefail", *setup]
  runner = [
    python,
    str(pathlib.Path(__file__).resolve()),
    f"--run_from={os.path.join(workdir_root, SWEEP_FILE)}",
  ]
  lines.append(f'exec {shlex.join(runner)} --task_id="$SLURM_ARRAY_TASK_ID"')
  return "\n".join(lines) + "\n"


def run_commands(commands: Sequence[Sequence[str]], cwd: str) -> int:
  """Runs a run's stage commands in order; stops at the first that fails."""
  for command in commands:
    print(f"+ {shlex.join(command)}", flush=True)
    returncode = subprocess.run(command, cwd=cwd, check=False).returncode
    if returncode:
      return returncode
  return 0


def print_runs(runs: Sequence[Run]) -> None:
  """Prints each run's name, workdir and stage commands."""
  print(f"{len(runs)} runs:")
  for run in runs:
    print(f"  {run.name}  ->  {run.workdir}")
    for command in run.commands:
      print(f"    {shlex.join(command)}")


def run_from_record(record_path: str, task_id: str | None, dry_run: bool) -> int:
  """Runs run `task_id` of a sweep.json (a SLURM array task does this)."""
  if task_id is None:
    task_id = os.environ.get("SLURM_ARRAY_TASK_ID")
  if task_id is None:
    raise SweepError("--run_from needs --task_id or SLURM_ARRAY_TASK_ID.")
  record = json.loads(pathlib.Path(record_path).read_text())
  runs = record["runs"]
  index = int(task_id)
  if not 0 <= index < len(runs):
    raise SweepError(f"Task {index} is outside the {len(runs)} runs of {record_path}.")
  run = runs[index]
  print(f"Run {index}: {run['name']} -> {run['workdir']}", flush=True)
  if dry_run:
    for command in run["commands"]:
      print(shlex.join(command))
    return 0
  return run_commands(run["commands"], record["cwd"])


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
  """Splits argv at "--": the sweep's options, then flags for every run."""
  argv = list(argv)
  extra_flags = []
  if "--" in argv:
    split = argv.index("--")
    argv, extra_flags = argv[:split], argv[split + 1 :]
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n")[0],
    epilog="Arguments after -- are passed to every run, e.g. "
    "-- --config.num_train_steps=1000.",
  )
  parser.add_argument("--config", help="configs/X.py[:arg] defining get_sweep()")
  parser.add_argument("--workdir_root", help="ROOT: run NAME trains in ROOT/NAME")
  parser.add_argument("--mode", choices=("local", "slurm"), default="local")
  parser.add_argument(
    "--stages",
    default="train",
    help="comma-separated entry-point modes each run goes through, in order, "
    f"from {', '.join(STAGES)} (default: train)",
  )
  parser.add_argument("--dry-run", action="store_true", help="print, run nothing")
  parser.add_argument(
    "--python", default=sys.executable, help="interpreter of the runs"
  )
  parser.add_argument(
    "--module", default="mipae_jax.main", help="entry-point module of the runs"
  )
  slurm = parser.add_argument_group("--mode=slurm")
  slurm.add_argument("--gpus_per_run", type=int, default=1)
  slurm.add_argument(
    "--max_parallel", type=int, default=None, help="array tasks running at once"
  )
  slurm.add_argument(
    "--sbatch_option",
    action="append",
    default=[],
    help="extra #SBATCH line, e.g. --sbatch_option=--partition=gpu (repeatable)",
  )
  slurm.add_argument(
    "--setup",
    action="append",
    default=[],
    help="shell line run before the task, e.g. 'source venv/bin/activate'",
  )
  task = parser.add_argument_group("one SLURM array task")
  task.add_argument("--run_from", help="a sweep.json: run one of its runs")
  task.add_argument("--task_id", help="index of that run (SLURM_ARRAY_TASK_ID)")
  args = parser.parse_args(argv)
  if args.run_from is None and (args.config is None or args.workdir_root is None):
    parser.error("--config and --workdir_root are required (or --run_from).")
  stages = args.stages.split(",")
  unknown = [stage for stage in stages if stage not in STAGES]
  if unknown:
    parser.error(f"unknown stages {unknown}; choose from {', '.join(STAGES)}.")
  args.stages = stages
  if args.workdir_root is not None:
    if "://" in args.workdir_root:
      parser.error("--workdir_root must be a filesystem path (it holds sweep.json).")
    args.workdir_root = os.path.abspath(args.workdir_root)
  return args, extra_flags


def main(argv: Sequence[str]) -> int:
  args, extra_flags = parse_args(argv)
  if args.run_from is not None:
    return run_from_record(args.run_from, args.task_id, args.dry_run)
  config_path, colon, arg = args.config.partition(":")
  config_spec = os.path.abspath(config_path) + colon + arg
  runs = build_runs(
    load_sweep(config_spec),
    config_spec,
    args.workdir_root,
    args.stages,
    extra_flags,
    args.python,
    args.module,
  )
  compare = compare_command(args.python, runs)
  print_runs(runs)
  record = sweep_record(runs, compare)
  status = 0
  if args.mode == "slurm":
    script = sbatch_script(
      args.workdir_root,
      len(runs),
      args.python,
      args.gpus_per_run,
      args.max_parallel,
      args.sbatch_option,
      args.setup,
    )
    submit = ["sbatch", os.path.join(args.workdir_root, SBATCH_FILE)]
    if args.dry_run:
      print(f"\n{SBATCH_FILE}:\n{script}\n{shlex.join(submit)}")
    else:
      write_record(args.workdir_root, record)
      pathlib.Path(submit[1]).write_text(script)
      subprocess.run(submit, check=True)
  elif not args.dry_run:
    write_record(args.workdir_root, record)
    failed = [
      run.name for run in runs if run_commands(run.commands, record["cwd"]) != 0
    ]
    if failed:
      print(f"Failed runs: {', '.join(failed)}", file=sys.stderr)
      status = 1
  print(f"\nResults table:\n  {shlex.join(compare)}")
  return status


if __name__ == "__main__":
  try:
    sys.exit(main(sys.argv[1:]))
  except SweepError as error:
    sys.exit(f"sweep.py: error: {error}")
