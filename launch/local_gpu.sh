#!/usr/bin/env bash
# launch/local_gpu.sh: trains on one host with all its GPUs in one process.
#
# JAX's single-process multi-device mode: every visible GPU joins the mesh's
# data axis and each gets config.batch_size / (number of GPUs) examples of
# every global batch (batch_size must be a multiple of the GPU count). No
# jax.distributed is involved. Run it from the repository root, or anywhere
# once `pip install -e .` made mipae_jax importable (CONFIG and WORKDIR are
# then relative to where you are).
#
# Usage: launch/local_gpu.sh [options] CONFIG WORKDIR [--config.FIELD=VALUE ...]
#                            [-- OTHER_MAIN_FLAGS ...]
#   CONFIG           config file, e.g. configs/mipae_mnist.py or
#                    configs/mipae_mnist.py:smoke
#   WORKDIR          checkpoints, logs and images go here
#   --config.F=V     overrides of config fields, passed on to mipae_jax.main
#   -- ...           anything after -- is passed on to mipae_jax.main as is
# Options:
#   --mode=MODE      train (default), train_lstm or eval
#   --gpus=IDS       comma-separated GPU ids to use (sets CUDA_VISIBLE_DEVICES);
#                    default: every GPU the process can see
#   --python=PY      Python interpreter (default: python3)
#   --dry-run        print the command instead of running it
#   -h, --help       print this help
#
# Worked example: MIPAE on Moving MNIST at the paper's batch of 100 on four
# GPUs (25 sequences each), bfloat16 activations:
#   launch/local_gpu.sh --gpus=0,1,2,3 configs/mipae_mnist.py /data/runs/mnist \
#       --config.model.dtype=bfloat16
# runs
#   env CUDA_VISIBLE_DEVICES=0,1,2,3 python3 -m mipae_jax.main
#       --config=configs/mipae_mnist.py --workdir=/data/runs/mnist --mode=train
#       --config.model.dtype=bfloat16
# and the same line with --mode=train_lstm, then --mode=eval, trains the pose
# LSTM and evaluates.

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

mode=train
gpus=""
python=python3
dry_run=false
positional=()
main_flags=()

while (($#)); do
  case "$1" in
    -h | --help) print_usage; exit 0 ;;
    --dry-run) dry_run=true ;;
    --mode | --mode=*) mode=$(option_value "$1") ;;
    --gpus | --gpus=*) gpus=$(option_value "$1") ;;
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

command=()
if [[ -n $gpus ]]; then
  [[ $gpus =~ ^[0-9]+(,[0-9]+)*$ ]] || die_usage "--gpus=$gpus is not a comma-separated list of GPU ids"
  command+=(env "CUDA_VISIBLE_DEVICES=$gpus")
fi
command+=("$python" -m mipae_jax.main "--config=$config" "--workdir=$workdir" "--mode=$mode")
command+=(${main_flags[@]+"${main_flags[@]}"})

if $dry_run; then
  shell_join "${command[@]}"
else
  exec "${command[@]}"
fi
