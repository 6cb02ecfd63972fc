"""Tests of mipae_jax/sweeps.py, launch/sweep.py and the launch/*.sh scripts.

Nothing here trains: the entry point, sbatch and gcloud are replaced by small
fakes that record how they were called.
"""

import importlib.util
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tarfile

import pytest

from mipae_jax import sweeps

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = REPO_ROOT / "launch"


def _load_sweep_tool():
  spec = importlib.util.spec_from_file_location("launch_sweep", LAUNCH / "sweep.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


sweep_tool = _load_sweep_tool()

_CONFIG_HEAD = """\
import ml_collections
from mipae_jax import sweeps


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_train_steps = 10
  config.loss = ml_collections.ConfigDict({"mi_weight": 1e-4})
  config.model = ml_collections.ConfigDict({"dtype": "float32"})
  return config
"""

_PRODUCT_OF_ZIP = """
def get_sweep():
  return sweeps.product(
      sweeps.sweep("loss.mi_weight", [1e-4, 1e-3]),
      sweeps.zipit(
          sweeps.sweep("seed", [0, 1]),
          sweeps.sweep("model.dtype", ["float32", "bfloat16"]),
      ),
  )
"""

_EXPECTED_RUNS = {
  "mi_weight=0.0001,seed=0,dtype=float32": ("0.0001", "0", "float32"),
  "mi_weight=0.0001,seed=1,dtype=bfloat16": ("0.0001", "1", "bfloat16"),
  "mi_weight=0.001,seed=0,dtype=float32": ("0.001", "0", "float32"),
  "mi_weight=0.001,seed=1,dtype=bfloat16": ("0.001", "1", "bfloat16"),
}

# A stand-in for mipae_jax.main: appends its flags to WORKDIR/calls.jsonl.
_FAKE_MAIN = """\
import json, pathlib, sys
flags = sys.argv[1:]
workdir = pathlib.Path(next(f for f in flags if f.startswith("--workdir="))[10:])
workdir.mkdir(parents=True, exist_ok=True)
with open(workdir / "calls.jsonl", "a") as calls:
  calls.write(json.dumps(flags) + "\\n")
"""


def _write_config(tmp_path: pathlib.Path, sweep_source: str) -> pathlib.Path:
  path = tmp_path / "sweep_config.py"
  path.write_text(_CONFIG_HEAD + sweep_source)
  return path


def _fake_main_env(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
  (tmp_path / "fake_main.py").write_text(_FAKE_MAIN)
  monkeypatch.setenv("PYTHONPATH", str(tmp_path))


def _recorded_calls(workdir: pathlib.Path) -> list[list[str]]:
  calls = workdir / "calls.jsonl"
  if not calls.exists():
    return []
  return [json.loads(line) for line in calls.read_text().splitlines()]


def _fake_executable(bin_dir: pathlib.Path, name: str, body: str) -> None:
  """A bash script `name` on bin_dir that records its argv, one word a line."""
  bin_dir.mkdir(exist_ok=True)
  path = bin_dir / name
  path.write_text(f"#!/usr/bin/env bash\n{body}\n")
  path.chmod(0o755)


def _bash(script: str, *args: str, env: dict | None = None):
  return subprocess.run(
    ["bash", str(LAUNCH / script), *args],
    capture_output=True,
    text=True,
    env=env,
    check=False,
  )


# mipae_jax/sweeps.py


def test_sweep_makes_one_run_per_value():
  assert sweeps.sweep("loss.mi_weight", [1e-4, 1e-3]) == [
    {"loss.mi_weight": 1e-4},
    {"loss.mi_weight": 1e-3},
  ]


def test_product_gives_every_combination_with_the_last_sweep_fastest():
  runs = sweeps.product(sweeps.sweep("a", [1, 2]), sweeps.sweep("b.c", ["x", "y"]))
  assert runs == [
    {"a": 1, "b.c": "x"},
    {"a": 1, "b.c": "y"},
    {"a": 2, "b.c": "x"},
    {"a": 2, "b.c": "y"},
  ]


def test_zipit_merges_runs_at_the_same_position():
  runs = sweeps.zipit(sweeps.sweep("seed", [0, 1]), sweeps.sweep("lr", [0.1, 0.2]))
  assert runs == [{"seed": 0, "lr": 0.1}, {"seed": 1, "lr": 0.2}]


def test_zipit_of_unequal_lengths_raises():
  with pytest.raises(ValueError, match=r"equal length.*\[2, 3\]"):
    sweeps.zipit(sweeps.sweep("a", [1, 2]), sweeps.sweep("b", [1, 2, 3]))


def test_combining_two_sweeps_of_one_field_raises():
  with pytest.raises(ValueError, match="'seed' is set by more than one sweep"):
    sweeps.product(sweeps.sweep("seed", [0]), sweeps.sweep("seed", [1]))


@pytest.mark.parametrize(
  ("field", "values", "message"),
  [
    ("loss..mi_weight", [1], "not a dotted config path"),
    ("--config.seed", [1], "not a dotted config path"),
    ("seed", [], "has no values"),
  ],
)
def test_sweep_rejects_bad_fields_and_empty_values(field, values, message):
  with pytest.raises(ValueError, match=message):
    sweeps.sweep(field, values)


def test_override_flags_write_values_as_config_flags_parse_them():
  flags = sweeps.override_flags(
    {"distributed": True, "loss.mi_weight": 1e-5, "eval.lpips_nets": ["alex"]}
  )
  assert flags == [
    "--config.distributed=True",
    "--config.loss.mi_weight=1e-05",
    "--config.eval.lpips_nets=('alex',)",
  ]


def test_run_names_use_shortest_distinct_field_suffixes():
  runs = sweeps.sweep("learning_rate", [0.1]) + sweeps.product(
    sweeps.sweep("lstm.learning_rate", [0.2]), sweeps.sweep("loss.mi_weight", [1e-4])
  )
  assert sweeps.run_names(runs) == [
    "learning_rate=0.1",
    "lstm.learning_rate=0.2,mi_weight=0.0001",
  ]


def test_run_names_are_sanitised_stable_and_unique():
  runs = sweeps.sweep("dataset.data_dir", ["/data/a b", "_data_a_b", "x"])
  names = sweeps.run_names(runs)
  assert names == sweeps.run_names(runs)
  assert len(set(names)) == 3
  assert names[2] == "data_dir=x"
  for name in names[:2]:
    assert name.startswith("data_dir=_data_a_b-")
    assert "/" not in name and " " not in name


def test_run_names_cut_long_names_and_name_empty_runs():
  long_runs = sweeps.sweep("dataset.manual_dir", ["d" * 300, "e" * 300])
  names = sweeps.run_names(long_runs)
  assert all(len(name) <= 120 for name in names)
  assert names[0] != names[1]
  assert sweeps.run_names([{}]) == ["default"]


def test_run_names_reject_a_run_listed_twice():
  with pytest.raises(ValueError, match="holds the run .* twice"):
    sweeps.run_names(sweeps.sweep("seed", [0, 1, 0]))


# launch/sweep.py


def test_sweep_dry_run_lists_product_and_zip_runs_with_their_workdirs(tmp_path, capsys):
  config = _write_config(tmp_path, _PRODUCT_OF_ZIP)
  root = tmp_path / "root"
  status = sweep_tool.main(
    [
      f"--config={config}:smoke",
      f"--workdir_root={root}",
      "--stages=train,eval,curves",
      "--dry-run",
      "--",
      "--config.num_train_steps=5",
    ]
  )
  out = capsys.readouterr().out
  assert status == 0
  assert "4 runs:" in out
  for name, (mi_weight, seed, dtype) in _EXPECTED_RUNS.items():
    workdir = root / name
    assert f"{name}  ->  {workdir}" in out
    for stage in ("train", "eval", "curves"):
      expected = [
        sys.executable,
        "-m",
        "mipae_jax.main",
        f"--config={config}:smoke",
        f"--workdir={workdir}",
        f"--mode={stage}",
        "--config.num_train_steps=5",
        f"--config.loss.mi_weight={mi_weight}",
        f"--config.seed={seed}",
        f"--config.model.dtype={dtype}",
      ]
      assert f"    {shlex.join(expected)}\n" in out
  workdirs = ",".join(f'"{root / name}"' for name in _EXPECTED_RUNS)
  compare = [sys.executable, "-m", "mipae_jax.main", "--mode=compare"]
  assert shlex.join([*compare, f"--workdirs={workdirs}"]) in out
  assert not root.exists()


def test_sweep_local_mode_runs_every_stage_of_every_run(tmp_path, capsys, monkeypatch):
  _fake_main_env(tmp_path, monkeypatch)
  config = _write_config(tmp_path, _PRODUCT_OF_ZIP)
  root = tmp_path / "root"
  args = [
    f"--config={config}",
    f"--workdir_root={root}",
    "--module=fake_main",
    "--stages=train,train_lstm",
  ]
  assert sweep_tool.main(args) == 0
  for name, (mi_weight, seed, dtype) in _EXPECTED_RUNS.items():
    calls = _recorded_calls(root / name)
    assert [call[2] for call in calls] == ["--mode=train", "--mode=train_lstm"]
    assert calls[0][3:] == [
      f"--config.loss.mi_weight={mi_weight}",
      f"--config.seed={seed}",
      f"--config.model.dtype={dtype}",
    ]
  record = json.loads((root / "sweep.json").read_text())
  assert [run["name"] for run in record["runs"]] == list(_EXPECTED_RUNS)
  assert record["runs"][1]["overrides"] == {
    "loss.mi_weight": 1e-4,
    "seed": 1,
    "model.dtype": "bfloat16",
  }
  assert "mipae_jax.main --mode=compare '--workdirs=\"" in capsys.readouterr().out


def test_sweep_slurm_mode_submits_one_array_whose_tasks_pick_their_run(
  tmp_path, monkeypatch
):
  _fake_main_env(tmp_path, monkeypatch)
  bin_dir = tmp_path / "bin"
  _fake_executable(bin_dir, "sbatch", f'printf "%s\\n" "$@" > {tmp_path}/sbatch_args')
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  config = _write_config(tmp_path, _PRODUCT_OF_ZIP)
  root = tmp_path / "root"
  args = [
    f"--config={config}",
    f"--workdir_root={root}",
    "--mode=slurm",
    "--module=fake_main",
    "--max_parallel=2",
    "--sbatch_option=--partition=gpu",
  ]
  assert sweep_tool.main(args) == 0
  job_file = root / "sweep.sbatch"
  assert (tmp_path / "sbatch_args").read_text() == f"{job_file}\n"
  script = job_file.read_text()
  assert "#SBATCH --array=0-3%2\n" in script
  assert "#SBATCH --partition=gpu\n" in script
  assert f"--run_from={root / 'sweep.json'}" in script
  assert all(not (root / name).exists() for name in _EXPECTED_RUNS)

  task = subprocess.run(
    ["bash", str(job_file)],
    env={**os.environ, "SLURM_ARRAY_TASK_ID": "2"},
    capture_output=True,
    text=True,
    check=False,
  )
  assert task.returncode == 0, task.stderr
  ran = [name for name in _EXPECTED_RUNS if _recorded_calls(root / name)]
  assert ran == ["mi_weight=0.001,seed=0,dtype=float32"]


def test_sweep_rejects_an_unknown_mode(tmp_path):
  config = _write_config(tmp_path, _PRODUCT_OF_ZIP)
  result = subprocess.run(
    [
      sys.executable,
      str(LAUNCH / "sweep.py"),
      f"--config={config}",
      f"--workdir_root={tmp_path / 'root'}",
      "--mode=kubernetes",
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 2
  assert "invalid choice: 'kubernetes'" in result.stderr


def test_sweep_cli_reports_a_config_without_get_sweep(tmp_path):
  config = _write_config(tmp_path, "")
  result = subprocess.run(
    [
      sys.executable,
      str(LAUNCH / "sweep.py"),
      f"--config={config}",
      f"--workdir_root={tmp_path / 'root'}",
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert result.returncode == 1
  assert "defines no get_sweep()" in result.stderr
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
  ("sweep_source", "extra_flags", "message"),
  [
    (
      "\ndef get_sweep():\n"
      "  return sweeps.zipit(sweeps.sweep('seed', [0, 1]),"
      " sweeps.sweep('loss.mi_weight', [1e-4]))\n",
      [],
      r"get_sweep\(\) of .* failed: .*equal length",
    ),
    (
      "\ndef get_sweep():\n  return sweeps.sweep('loss.mi_weigth', [1e-4])\n",
      [],
      "'loss.mi_weigth' is not a field of",
    ),
    (
      "\ndef get_sweep():\n  return sweeps.sweep('seed.value', [1])\n",
      [],
      "'seed.value' is not a field of",
    ),
    (
      "\ndef get_sweep():\n  return {'seed': 1}\n",
      [],
      "must return a non-empty list of dicts",
    ),
    (
      "\ndef get_sweep():\n  return sweeps.sweep('seed', [0, 1])\n",
      ["--", "--config.seed=3"],
      "--config.seed=3 overrides 'seed', which the sweep sets",
    ),
  ],
  ids=["zip_unequal", "unknown_field", "field_below_a_leaf", "not_a_list", "clash"],
)
def test_sweep_rejects_bad_sweeps(tmp_path, sweep_source, extra_flags, message):
  config = _write_config(tmp_path, sweep_source)
  args = [f"--config={config}", f"--workdir_root={tmp_path / 'root'}", "--dry-run"]
  with pytest.raises(sweep_tool.SweepError, match=message):
    sweep_tool.main(args + extra_flags)


def test_sweep_refuses_a_root_that_holds_another_sweep(tmp_path):
  root = tmp_path / "root"
  root.mkdir()
  (root / "sweep.json").write_text(json.dumps({"runs": [{"name": "seed=7"}]}))
  config = _write_config(tmp_path, _PRODUCT_OF_ZIP)
  with pytest.raises(sweep_tool.SweepError, match="holds a different sweep"):
    sweep_tool.main([f"--config={config}", f"--workdir_root={root}"])


# launch/local_gpu.sh, launch/slurm.sh, launch/tpu_pod.sh


@pytest.mark.parametrize("script", ["local_gpu.sh", "slurm.sh", "tpu_pod.sh"])
def test_launch_scripts_print_usage_with_a_worked_example(script):
  result = _bash(script, "-h")
  assert result.returncode == 0
  assert "Usage: launch/" in result.stdout
  assert "Worked example" in result.stdout
  assert "--dry-run" in result.stdout


@pytest.mark.parametrize("script", ["local_gpu.sh", "slurm.sh", "tpu_pod.sh"])
@pytest.mark.parametrize(
  ("args", "message"),
  [
    (["configs/base.py"], "expected CONFIG and WORKDIR, got 1"),
    (["--bogus", "configs/base.py", "w"], "unknown option --bogus"),
    (["--mode=sample", "configs/base.py", "w"], "unknown --mode=sample"),
    (["--mode", "configs/base.py", "w"], "--mode needs a value"),
    (["configs/missing.py", "w"], "missing.py"),
  ],
  ids=["one_positional", "unknown_option", "bad_mode", "no_value", "no_config"],
)
def test_launch_scripts_reject_bad_input(script, args, message):
  if script == "tpu_pod.sh":
    args = ["--tpu=t", "--zone=z", *args]
  result = subprocess.run(
    ["bash", str(LAUNCH / script), "--dry-run", *args],
    capture_output=True,
    text=True,
    cwd=REPO_ROOT,
    check=False,
  )
  assert result.returncode == 2
  assert message in result.stderr
  assert result.stdout == ""


def test_local_gpu_dry_run_prints_one_process_over_the_chosen_gpus(tmp_path):
  config = _write_config(tmp_path, "")
  result = _bash(
    "local_gpu.sh",
    "--dry-run",
    "--gpus=0,1",
    "--mode=train_lstm",
    f"{config}:smoke",
    "/runs/my run",
    "--config.model.dtype=bfloat16",
    "--",
    "--jax_log_compiles",
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout == (
    "env CUDA_VISIBLE_DEVICES=0,1 python3 -m mipae_jax.main "
    f"--config={config}:smoke '--workdir=/runs/my run' --mode=train_lstm "
    "--config.model.dtype=bfloat16 --jax_log_compiles\n"
  )


def test_local_gpu_runs_the_command_its_dry_run_prints(tmp_path):
  config = _write_config(tmp_path, "")
  record = tmp_path / "python_argv"
  _fake_executable(
    tmp_path / "bin",
    "python",
    f'{{ echo "$CUDA_VISIBLE_DEVICES"; printf "%s\\n" "$@"; }} > {record}',
  )
  args = [
    f"--python={tmp_path / 'bin' / 'python'}",
    "--gpus=2,3",
    str(config),
    str(tmp_path / "work dir"),
    "--config.batch_size=50",
  ]
  printed = _bash("local_gpu.sh", "--dry-run", *args).stdout
  assert _bash("local_gpu.sh", *args).returncode == 0
  gpus, *argv = record.read_text().splitlines()
  words = shlex.split(printed)
  assert words[:2] == ["env", "CUDA_VISIBLE_DEVICES=2,3"]
  assert gpus == "2,3"
  assert argv == words[3:]


def _split_slurm_dry_run(stdout: str) -> tuple[str, str]:
  """The sbatch script and the sbatch command of slurm.sh's dry-run output."""
  header, _, rest = stdout.partition("\n")
  script, _, command = rest.rpartition("\n\n")
  assert header.startswith("# ")
  return script + "\n", command


@pytest.mark.parametrize(
  ("per", "tasks_per_node", "local_device_ids"),
  [("host", 1, "export JAX_LOCAL_DEVICE_IDS=0,1,2,3\n"), ("gpu", 4, None)],
)
def test_slurm_dry_run_prints_one_process_per_host_or_per_gpu(
  tmp_path, per, tasks_per_node, local_device_ids
):
  config = _write_config(tmp_path, "")
  result = _bash(
    "slurm.sh",
    "--dry-run",
    "--nodes=2",
    "--gpus-per-node=4",
    f"--per={per}",
    "--partition=a100",
    "--setup=source venv/bin/activate",
    str(config),
    "/shared/run",
    "--config.batch_size=128",
  )
  assert result.returncode == 0, result.stderr
  script, command = _split_slurm_dry_run(result.stdout)
  assert "#SBATCH --nodes=2\n" in script
  assert f"#SBATCH --ntasks-per-node={tasks_per_node}\n" in script
  assert "#SBATCH --gpus-per-node=4\n" in script
  assert "#SBATCH --partition=a100\n" in script
  assert "source venv/bin/activate\n" in script
  assert (local_device_ids in script) if local_device_ids else "JAX_LOCAL" not in script
  assert script.endswith(
    "srun --kill-on-bad-exit=1 python3 -m mipae_jax.main "
    f"--config={config} --workdir=/shared/run --mode=train "
    "--config.distributed=True --config.batch_size=128\n"
  )
  assert command == "sbatch /shared/run/slurm_job.sbatch\n"
  syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
  assert syntax.returncode == 0


def test_slurm_submits_the_script_its_dry_run_prints(tmp_path):
  config = _write_config(tmp_path, "")
  bin_dir = tmp_path / "bin"
  _fake_executable(bin_dir, "sbatch", f'printf "%s\\n" "$@" > {tmp_path}/sbatch_args')
  env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
  workdir = tmp_path / "run"
  args = ["--gpus-per-node=2", str(config), str(workdir)]
  script, _ = _split_slurm_dry_run(_bash("slurm.sh", "--dry-run", *args).stdout)
  result = _bash("slurm.sh", *args, env=env)
  assert result.returncode == 0, result.stderr
  job_file = workdir / "slurm_job.sbatch"
  assert (tmp_path / "sbatch_args").read_text() == f"{job_file}\n"
  assert job_file.read_text() == script


def test_tpu_pod_dry_run_copies_installs_and_runs_on_all_workers():
  result = subprocess.run(
    [
      "bash",
      str(LAUNCH / "tpu_pod.sh"),
      "--dry-run",
      "--tpu=my-v4-32",
      "--zone=us-central2-b",
      "--project=proj",
      "configs/base.py",
      "gs://bucket/run",
      "--config.batch_size=128",
    ],
    capture_output=True,
    text=True,
    cwd=REPO_ROOT,
    check=False,
  )
  assert result.returncode == 0, result.stderr
  pack, scp, install, run = result.stdout.splitlines()
  assert "git ls-files" in pack and "tar" in pack
  assert scp.startswith("gcloud compute tpus tpu-vm scp ")
  assert scp.endswith(
    " my-v4-32:mipae_jax_tree.tar.gz --zone=us-central2-b --worker=all --project=proj"
  )
  ssh = "gcloud compute tpus tpu-vm ssh my-v4-32 --zone=us-central2-b --worker=all"
  assert install.startswith(ssh) and run.startswith(ssh)
  install_line = shlex.split(install)[-1]
  assert "tar -xzf mipae_jax_tree.tar.gz -C mipae-jax" in install_line
  assert install_line.endswith("python3 -m pip install -e mipae-jax 'jax[tpu]'")
  assert shlex.split(run)[-1] == (
    "--command=cd mipae-jax && python3 -m mipae_jax.main --config=configs/base.py "
    "--workdir=gs://bucket/run --mode=train --config.distributed=True "
    "--config.batch_size=128"
  )


def _fake_gcloud_env(tmp_path: pathlib.Path) -> dict[str, str]:
  """PATH with a gcloud that logs its argv and keeps copies of scp'd files."""
  body = f"""
printf '%s\\n' "$(printf '%q ' "$@")" >> {tmp_path}/gcloud_calls
if [[ $4 == scp ]]; then cp "$5" {tmp_path}/copied.tar.gz; fi
"""
  _fake_executable(tmp_path / "bin", "gcloud", body)
  return {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def test_tpu_pod_from_git_runs_the_gcloud_commands_its_dry_run_prints(tmp_path):
  env = _fake_gcloud_env(tmp_path)
  args = [
    "--tpu=pod",
    "--zone=z",
    "--git-url=https://example.org/mipae-jax.git",
    "--git-ref=v1.0",
    "--detach",
    "configs/base.py",
    "gs://bucket/run",
  ]
  printed = _bash("tpu_pod.sh", "--dry-run", *args, env=env).stdout.splitlines()
  assert _bash("tpu_pod.sh", *args, env=env).returncode == 0
  calls = (tmp_path / "gcloud_calls").read_text().splitlines()
  assert [shlex.split(call) for call in calls] == [
    shlex.split(line)[1:] for line in printed
  ]
  install, run = (shlex.split(line)[-1] for line in printed)
  assert "git clone https://example.org/mipae-jax.git mipae-jax" in install
  assert "git -C mipae-jax fetch https://example.org/mipae-jax.git v1.0" in install
  assert run.startswith("--command=cd mipae-jax && nohup python3 -m mipae_jax.main")
  assert run.endswith(
    "--config.distributed=True > mipae_jax_train.log 2>&1 < /dev/null &"
  )


def test_tpu_pod_copies_this_checkout_to_the_workers(tmp_path):
  env = {**_fake_gcloud_env(tmp_path), "TMPDIR": str(tmp_path / "tmp")}
  (tmp_path / "tmp").mkdir()
  result = _bash(
    "tpu_pod.sh", "--tpu=pod", "--zone=z", "configs/base.py", "gs://b/r", env=env
  )
  assert result.returncode == 0, result.stderr
  calls = (tmp_path / "gcloud_calls").read_text().splitlines()
  assert [shlex.split(call)[3] for call in calls] == ["scp", "ssh", "ssh"]
  with tarfile.open(tmp_path / "copied.tar.gz") as tree:
    members = set(tree.getnames())
  # The root's configs is a link to mipae_jax/configs: both travel.
  assert {
    "configs",
    "mipae_jax/configs/base.py",
    "launch/tpu_pod.sh",
    "mipae_jax/sweeps.py",
  } <= members
  assert not any(name.startswith(".git/") for name in members)
  assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize(
  "config_file, weight",
  [
    ("mipae_dsprites.py", "loss.mi_weight"),
    ("drnet_dsprites.py", "loss.adversarial_weight"),
  ],
)
def test_shipped_get_sweep_expands_to_seeds_times_weights(config_file, weight):
  root = pathlib.Path(__file__).resolve().parents[1]
  runs = sweep_tool.load_sweep(str(root / "configs" / config_file))
  assert len(runs) == 6
  assert {run["seed"] for run in runs} == {0, 1}
  assert sorted({run[weight] for run in runs}) == [1e-5, 1e-4, 1e-3]
  assert len(set(sweeps.run_names(runs))) == 6


def test_method_sweep_runs_equal_each_methods_own_config_with_that_seed():
  from mipae_jax.configs import drnet_dsprites, mipae_dsprites, mipae_vs_drnet_dsprites

  spec = str(REPO_ROOT / "configs" / "mipae_vs_drnet_dsprites.py:long_cpu")
  runs = sweep_tool.load_sweep(spec)
  assert [(run["method"], run["seed"]) for run in runs] == [
    ("mipae", 0),
    ("mipae", 1),
    ("drnet", 0),
    ("drnet", 1),
  ]
  own = {"mipae": mipae_dsprites, "drnet": drnet_dsprites}
  for run in runs:
    config = mipae_vs_drnet_dsprites.get_config("long_cpu")
    expected = own[run["method"]].get_config("long_cpu")
    expected.seed = run["seed"]
    config.update(run)
    assert config.to_dict() == expected.to_dict()
  assert config.method == "drnet" and config.batch_size == 16


# mipae_jax/main.py: the one command line.


@pytest.fixture
def cli(monkeypatch):
  """mipae_jax.main, run from the repository root (configs/ is relative)."""
  from mipae_jax import main

  monkeypatch.chdir(REPO_ROOT)
  return main


@pytest.fixture
def reproduce_calls(monkeypatch):
  """The keyword arguments of every reproduce.reproduce call, which does nothing."""
  from mipae_jax.experiments import reproduce

  calls = []

  def fake_reproduce(**kwargs):
    calls.append(kwargs)
    return f"{kwargs['workdir']}/report.md"

  monkeypatch.setattr(reproduce, "reproduce", fake_reproduce)
  return calls


def test_reproduce_mode_makes_the_call_of_its_flags(cli, reproduce_calls, capsys):
  main_form = cli.call(
    [
      "main.py",
      "--mode=reproduce",
      "--config=configs/drnet_dsprites.py:tiny",
      "--workdir=/w",
      "--methods=drnet,mipae",
      "--config.dataset.data_dir=/d",
      "--config.eval.lpips_nets=('alex',)",
      "--config.learning_rate=0.001",
    ]
  )
  assert main_form == "/w/report.md"
  assert reproduce_calls == [
    {
      "dataset": "moving_dsprites",
      "scale": "tiny",
      "workdir": "/w",
      "methods": ("drnet", "mipae"),
      "data_dir": "/d",
      "manual_dir": None,
      "overrides": {"eval.lpips_nets": ("alex",), "learning_rate": 0.001},
    }
  ]
  assert capsys.readouterr().out.count("Report: /w/report.md\n") == 1
  # The flags are unparsed again after each in-process call.
  assert not cli.FLAGS.is_parsed()


def test_the_report_prints_a_command_that_makes_the_same_call(cli, reproduce_calls):
  from mipae_jax.experiments import reproduce

  arguments = {
    "dataset": "moving_mnist",
    "scale": "paper",
    "workdir": "/runs/a b",
    "methods": ("drnet",),
    "data_dir": "/tfds",
    "manual_dir": "/src",
    "overrides": {"eval.lpips_nets": ("alex",), "num_train_steps": 30},
  }
  command = reproduce.reproduce_command(*arguments.values())
  assert command.startswith(
    "python -m mipae_jax.main --mode=reproduce --config=configs/drnet_mnist.py "
    '--workdir="/runs/a b" --methods=drnet --config.dataset.data_dir=/tfds '
  )
  words = shlex.split(command)
  assert words[:3] == ["python", "-m", "mipae_jax.main"]
  cli.call(["main.py", *words[3:]])
  assert reproduce_calls == [arguments]


def test_reproduce_mode_exits_143_when_a_stage_stopped_early(cli, monkeypatch):
  from mipae_jax import checkpointing
  from mipae_jax.experiments import reproduce

  def stopped(**kwargs):
    raise reproduce.StageIncomplete("mipae main network stopped at step 2 of 4")

  monkeypatch.setattr(reproduce, "reproduce", stopped)
  argv = ["m", "--mode=reproduce", "--config=configs/mipae_dsprites.py:tiny"]
  argv.append("--workdir=/w")
  assert cli.call(argv) == checkpointing.PREEMPTED_EXIT_CODE == 143
  cli.FLAGS(argv)
  try:
    assert cli.main(["m"]) == 143
  finally:
    cli._unparse()


def test_compare_mode_reads_only_the_evaluated_workdirs(cli, monkeypatch, capsys):
  from mipae_jax.experiments import compare

  calls = []

  def fake_compare(workdirs, output_dir=None):
    calls.append((list(workdirs), output_dir))
    return "the table"

  monkeypatch.setattr(compare, "compare", fake_compare)
  sweep_run = "/s/mi_weight=1e-05,seed=0"
  # No --config: compare reads only the evaluated workdirs.
  assert (
    cli.call(["m", "--mode=compare", f'--workdirs=/a,"{sweep_run}"', "--workdir=/out"])
    == "the table"
  )
  cli.call(["m", "--mode=compare", "--workdirs=/a,/b"])
  assert calls == [(["/a", sweep_run], "/out"), (["/a", "/b"], None)]
  assert capsys.readouterr().out == "the table\n" * 2


def test_curves_take_workdirs_and_the_old_plot_with(cli, monkeypatch):
  from mipae_jax.evaluation import learning_curves

  calls = []
  monkeypatch.setattr(
    learning_curves,
    "learning_curves",
    lambda config, workdir, others: calls.append((workdir, list(others))),
  )
  for flag in ("--workdirs", "--plot_with"):
    cli.call(
      [
        "m",
        "--mode=curves",
        "--config=configs/mipae_dsprites.py:tiny",
        "--workdir=/w",
        f"{flag}=/x,/y",
      ]
    )
  assert calls == [("/w", ["/x", "/y"])] * 2


@pytest.mark.parametrize(
  ("argv", "message"),
  [
    (["--workdir=/w"], "--mode=train needs --config=configs/<method>_<dataset>.py"),
    (["--mode=eval", "--config=configs/mipae_mnist.py"], "--mode=eval needs --workdir"),
    (["--mode=compare"], "--mode=compare needs --workdirs=DIR1,DIR2,..."),
    (
      ["--config=configs/mipae_mnist.py", "--workdir=/w", "--workdirs=/x"],
      "--workdirs is read by --mode=curves and compare, not --mode=train",
    ),
    (
      ["--mode=curves", "--config=configs/mipae_mnist.py", "--workdir=/w"]
      + ["--methods=drnet"],
      "--methods is read by --mode=reproduce, not --mode=curves",
    ),
    (
      ["--mode=reproduce", "--config=configs/mipae_mnist.py:long_cpu", "--workdir=/w"],
      "runs the config variants reduced, smoke and tiny, or none",
    ),
    (
      ["--mode=reproduce", "--config=configs/mipae_mnist.py", "--workdir=/w"]
      + ["--methods=mipae,vae"],
      "--methods=mipae,vae: expected some of mipae,drnet, each once",
    ),
    (
      ["--mode=reproduce", "--config=configs/mipae_mnist.py", "--workdir=/w"]
      + ["--config.method=drnet"],
      "--methods chooses the methods",
    ),
  ],
  ids=[
    "no_config",
    "no_workdir",
    "compare_without_workdirs",
    "workdirs_for_train",
    "methods_for_curves",
    "reproduce_variant",
    "unknown_method",
    "config_method",
  ],
)
def test_flags_a_mode_cannot_run_with_are_one_usage_error(cli, argv, message):
  from absl import app

  with pytest.raises(app.UsageError) as error:
    cli.call(["m", *argv])
  assert message in str(error.value)
  assert "\n" not in str(error.value)
  assert not cli.FLAGS.is_parsed()


@pytest.mark.parametrize(
  ("module", "args", "last_line"),
  [
    (
      "mipae_jax.main",
      ["--workdir=/nonexistent/w"],
      "--mode=train needs --config=configs/<method>_<dataset>.py[:variant].",
    ),
  ],
  ids=["main"],
)
def test_a_usage_error_is_the_last_line_and_exits_1(module, args, last_line):
  result = subprocess.run(
    [sys.executable, "-m", module, *args],
    capture_output=True,
    text=True,
    cwd=REPO_ROOT,
    timeout=300,
    check=False,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == last_line
  assert "Traceback" not in result.stderr


def test_hints_name_each_methods_own_config_file_from_the_config_alone():
  from mipae_jax import commands
  from mipae_jax.experiments import reproduce

  for method in ("mipae", "drnet"):
    config = reproduce.build_config(
      "moving_dsprites", method, "tiny", overrides={"seed": 3}
    )
    assert commands.command(config, f"/w/{method}", "train") == (
      f"python -m mipae_jax.main --config=configs/{method}_dsprites.py:tiny "
      f"--config.seed=3 --workdir=/w/{method} --mode=train"
    )
  paper = reproduce.build_config("moving_mpi3d", "mipae")
  assert commands.command(paper, "/w", "eval") == (
    "python -m mipae_jax.main --config=configs/mipae_mpi3d.py --workdir=/w --mode=eval"
  )


# launch/device_check.sh


def test_device_check_needs_an_output_directory():
  result = _bash("device_check.sh", "--smoke")
  assert result.returncode == 2
  assert "--out=DIR is required" in result.stderr


@pytest.mark.slow  # the whole check at test scale: about 5 minutes on 2 cores
def test_device_check_smoke_writes_every_result_file(tmp_path):
  out = tmp_path / "out"
  env = {**os.environ, "PYTHON": sys.executable}
  result = _bash("device_check.sh", "--smoke", f"--out={out}", env=env)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  files = {p.name: p for p in out.iterdir()}
  assert set(files) == {
    "env.txt",
    "step_times.md",
    "mipae_scores.jsonl",
    "drnet_scores.jsonl",
    "learning_curves.png",
    "mipae_swap_grid.png",
    "drnet_swap_grid.png",
    "log.txt",
  }
  assert all(p.stat().st_size < 16 * 2**20 for p in files.values())
  tables = files["step_times.md"].read_text()
  assert "| mipae float32 | device-stored |" in tables
  assert "| drnet |" in tables  # the FLOPs of both methods
  for method in ("mipae", "drnet"):
    last = json.loads(files[f"{method}_scores.jsonl"].read_text().splitlines()[-1])
    assert last["step"] == 6
  assert files["mipae_swap_grid.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
