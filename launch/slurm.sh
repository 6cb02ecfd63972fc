#!/usr/bin/env bash
# launch/slurm.sh: writes an sbatch script that trains on SLURM nodes, submits it.
#
# srun starts the processes; each runs `python -m mipae_jax.main ...
# --config.distributed=True`, whose jax.distributed.initialize() reads the
# coordinator (first node of the step), process count and process id from
# SLURM's environment. All processes then share one mesh over every GPU of
# the job; each loads only its own shard of every global batch.
#   --per=host  one process per node that drives all its GPUs (the script
#               exports JAX_LOCAL_DEVICE_IDS=0,...,G-1 for that: by itself,
#               JAX would give a SLURM process only GPU $SLURM_LOCALID)
#   --per=gpu   one process per GPU (process i of a node takes GPU i)
# The script is saved as WORKDIR/slurm_job.sbatch; logs go to
# WORKDIR/slurm-JOBID.out. Submit from the repository root (the job runs
# where it was submitted), with WORKDIR on a filesystem all nodes share.
#
# Usage: launch/slurm.sh [options] CONFIG WORKDIR [--config.FIELD=VALUE ...]
#                        [-- OTHER_MAIN_FLAGS ...]
#   CONFIG               config file, e.g. configs/mipae_mpi3d.py
#   WORKDIR              shared directory for checkpoints, logs and images
#   --config.F=V         overrides of config fields, passed on to mipae_jax.main
#   -- ...               anything after -- is passed on to mipae_jax.main as is
# Options:
#   --nodes=N            nodes (default 1)
#   --gpus-per-node=G    GPUs per node (default 8; 0 for CPU nodes, --per=host)
#   --per=host|gpu       one process per node (default) or per GPU
#   --mode=MODE          train (default), train_lstm or eval
#   --time=T             wall-clock limit, e.g. 24:00:00
#   --partition=P        SLURM partition
#   --account=A          SLURM account
#   --job-name=NAME      job name (default mipae)
#   --sbatch-option=OPT  extra #SBATCH line, e.g. --sbatch-option=--qos=high
#                        (repeatable)
#   --setup=LINE         shell line run before srun, e.g.
#                        --setup='source ~/venvs/mipae/bin/activate' (repeatable)
#   --python=PY          Python interpreter (default: python3)
#   --dry-run            print the sbatch script and the sbatch command only
#   -h, --help           print this help
#
# Worked example: MIPAE on MPI3D over 2 nodes x 4 GPUs, one process per GPU,
# global batch 128 (16 per GPU):
#   launch/slurm.sh --nodes=2 --gpus-per-node=4 --per=gpu --time=48:00:00 \
#       configs/mipae_mpi3d.py /shared/runs/mpi3d --config.batch_size=128
# writes /shared/runs/mpi3d/slurm_job.sbatch, which asks for
#   #SBATCH --nodes=2 --ntasks-per-node=4 --gpus-per-node=4
# and runs
#   srun --kill-on-bad-exit=1 python3 -m mipae_jax.main
#       --config=configs/mipae_mpi3d.py --workdir=/shared/runs/mpi3d
#       --mode=train --config.distributed=True --config.batch_size=128
# then `sbatch /shared/runs/mpi3d/slurm_job.sbatch`.

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

nodes=1
gpus_per_node=8
per=host
mode=train
time_limit=""
partition=""
account=""
job_name=mipae
sbatch_options=()
setup_lines=()
python=python3
dry_run=false
positional=()
main_flags=()

while (($#)); do
  case "$1" in
    -h | --help) print_usage; exit 0 ;;
    --dry-run) dry_run=true ;;
    --nodes | --nodes=*) nodes=$(option_value "$1") ;;
    --gpus-per-node | --gpus-per-node=*) gpus_per_node=$(option_value "$1") ;;
    --per | --per=*) per=$(option_value "$1") ;;
    --mode | --mode=*) mode=$(option_value "$1") ;;
    --time | --time=*) time_limit=$(option_value "$1") ;;
    --partition | --partition=*) partition=$(option_value "$1") ;;
    --account | --account=*) account=$(option_value "$1") ;;
    --job-name | --job-name=*) job_name=$(option_value "$1") ;;
    --sbatch-option | --sbatch-option=*) sbatch_options+=("$(option_value "$1")") ;;
    --setup | --setup=*) setup_lines+=("$(option_value "$1")") ;;
    --python | --python=*) python=$(option_value "$1") ;;
    --config.*) main_flags+=("$1") ;;
    --) shift; main_flags+=("$@"); break ;;
    -*) die_usage "unknown option $1 (flags for mipae_jax.main go after --)" ;;
    *) positional+=("$1") ;;
  esac
  shift
done

set_config_workdir_and_check_mode
[[ -f ${config%%:*} ]] || die_usage "config file ${config%%:*} does not exist"
[[ $workdir != *[[:space:]]* ]] || die_usage "WORKDIR must not contain spaces (it goes into an #SBATCH line)"
[[ $nodes =~ ^[1-9][0-9]*$ ]] || die_usage "--nodes=$nodes is not a positive integer"
[[ $gpus_per_node =~ ^[0-9]+$ ]] || die_usage "--gpus-per-node=$gpus_per_node is not an integer"
case "$per" in
  host) tasks_per_node=1 ;;
  gpu)
    ((gpus_per_node > 0)) || die_usage "--per=gpu needs --gpus-per-node > 0"
    tasks_per_node=$gpus_per_node
    ;;
  *) die_usage "unknown --per=$per (host or gpu)" ;;
esac

job_file="$workdir/slurm_job.sbatch"
main_command=("$python" -m mipae_jax.main "--config=$config" "--workdir=$workdir"
  "--mode=$mode" --config.distributed=True ${main_flags[@]+"${main_flags[@]}"})

# Prints the sbatch script.
write_job() {
  echo "#!/bin/bash"
  echo "#SBATCH --job-name=$job_name"
  echo "#SBATCH --nodes=$nodes"
  echo "#SBATCH --ntasks-per-node=$tasks_per_node"
  if ((gpus_per_node > 0)); then
    echo "#SBATCH --gpus-per-node=$gpus_per_node"
  fi
  echo "#SBATCH --output=$workdir/slurm-%j.out"
  [[ -z $time_limit ]] || echo "#SBATCH --time=$time_limit"
  [[ -z $partition ]] || echo "#SBATCH --partition=$partition"
  [[ -z $account ]] || echo "#SBATCH --account=$account"
  local option line
  for option in ${sbatch_options[@]+"${sbatch_options[@]}"}; do
    echo "#SBATCH $option"
  done
  echo "set -euo pipefail"
  for line in ${setup_lines[@]+"${setup_lines[@]}"}; do
    echo "$line"
  done
  if [[ $per == gpu ]]; then
    echo "# Process i of a node takes GPU i (JAX's default under SLURM)."
  elif ((gpus_per_node > 0)); then
    echo "# One process drives all GPUs of its node."
    echo "export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((gpus_per_node - 1)))"
  fi
  echo "# Processes: $((nodes * tasks_per_node)); jax.distributed reads SLURM's environment."
  echo "srun --kill-on-bad-exit=1 $(shell_join "${main_command[@]}")"
}

submit_command=(sbatch "$job_file")
if $dry_run; then
  echo "# $job_file"
  write_job
  echo
  shell_join "${submit_command[@]}"
else
  mkdir -p "$workdir"
  write_job >"$job_file"
  "${submit_command[@]}"
fi
