#!/usr/bin/env bash
# launch/tpu_pod.sh: installs mipae_jax on every host of a TPU pod slice, runs it.
#
# Two steps, both through `gcloud compute tpus tpu-vm ... --worker=all`:
#  1. install: puts the code in REMOTE_DIR (relative to the home directory) on
#     every worker and runs `pip install -e REMOTE_DIR 'jax[tpu]'` there. The
#     code is either this checkout (default: its tracked and untracked,
#     not ignored files, packed with tar and copied with `tpu-vm scp`, so
#     uncommitted edits travel too) or, with --git-url, a `git clone`/`fetch` of
#     a repository every worker can reach, checked out at --git-ref.
#  2. run: the same `python3 -m mipae_jax.main ... --config.distributed=True`
#     on every host. jax.distributed.initialize() finds the other hosts through
#     the Cloud TPU metadata; one mesh spans the TPU chips of all hosts and each
#     host loads only its shard of every global batch.
# WORKDIR (and config.dataset.data_dir) must be reachable from every host,
# e.g. gs://BUCKET/...: Orbax writes one checkpoint from all hosts there.
# CONFIG is a path inside the installed tree, e.g. configs/mipae_mnist.py.
#
# Usage: launch/tpu_pod.sh --tpu=NAME --zone=ZONE [options] CONFIG WORKDIR
#                          [--config.FIELD=VALUE ...] [-- OTHER_MAIN_FLAGS ...]
# Options:
#   --tpu=NAME           TPU VM name (required)
#   --zone=ZONE          its zone (required)
#   --project=PROJECT    Google Cloud project (default: gcloud's configured one)
#   --git-url=URL        install from this git repository instead of copying
#   --git-ref=REF        branch, tag or commit of --git-url (default: HEAD)
#   --remote-dir=DIR     where the code goes on each worker (default: mipae-jax)
#   --jax-spec=SPEC      pip requirement for JAX on TPU (default: 'jax[tpu]')
#   --skip-install       only run (the code is already installed)
#   --mode=MODE          train (default), train_lstm or eval
#   --python=PY          Python interpreter on the workers (default: python3)
#   --detach             run under nohup, logging to
#                        REMOTE_DIR/mipae_jax_MODE.log, and return at once
#   --dry-run            print the commands instead of running them
#   -h, --help           print this help
#
# Worked example: MIPAE on dSprites on a v4-32 slice (4 hosts, 16 chips),
# global batch 128:
#   launch/tpu_pod.sh --tpu=my-v4-32 --zone=us-central2-b \
#       configs/mipae_dsprites.py gs://my-bucket/runs/dsprites \
#       --config.batch_size=128 --config.model.dtype=bfloat16 \
#       --config.dataset.data_dir=gs://my-bucket/tensorflow_datasets
# packs this checkout, copies it to every worker with
#   gcloud compute tpus tpu-vm scp /tmp/mipae_jax_tree.PID.tar.gz
#       my-v4-32:mipae_jax_tree.tar.gz --zone=us-central2-b --worker=all
# installs it with `gcloud compute tpus tpu-vm ssh my-v4-32 --worker=all
# --command=...pip install -e mipae-jax...`, then runs on all 4 hosts
#   cd mipae-jax && python3 -m mipae_jax.main --config=configs/mipae_dsprites.py
#       --workdir=gs://my-bucket/runs/dsprites --mode=train
#       --config.distributed=True --config.batch_size=128 ...

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tpu=""
zone=""
project=""
git_url=""
git_ref=HEAD
remote_dir=mipae-jax
jax_spec="jax[tpu]"
install=true
mode=train
python=python3
detach=false
dry_run=false
positional=()
main_flags=()

while (($#)); do
  case "$1" in
    -h | --help) print_usage; exit 0 ;;
    --dry-run) dry_run=true ;;
    --skip-install) install=false ;;
    --detach) detach=true ;;
    --tpu | --tpu=*) tpu=$(option_value "$1") ;;
    --zone | --zone=*) zone=$(option_value "$1") ;;
    --project | --project=*) project=$(option_value "$1") ;;
    --git-url | --git-url=*) git_url=$(option_value "$1") ;;
    --git-ref | --git-ref=*) git_ref=$(option_value "$1") ;;
    --remote-dir | --remote-dir=*) remote_dir=$(option_value "$1") ;;
    --jax-spec | --jax-spec=*) jax_spec=$(option_value "$1") ;;
    --mode | --mode=*) mode=$(option_value "$1") ;;
    --python | --python=*) python=$(option_value "$1") ;;
    --config.*) main_flags+=("$1") ;;
    --) shift; main_flags+=("$@"); break ;;
    -*) die_usage "unknown option $1 (flags for mipae_jax.main go after --)" ;;
    *) positional+=("$1") ;;
  esac
  shift
done

set_config_workdir_and_check_mode
[[ -n $tpu ]] || die_usage "--tpu=NAME is required"
[[ -n $zone ]] || die_usage "--zone=ZONE is required"
[[ $config != /* ]] || die_usage "CONFIG must be a path inside the installed tree, e.g. configs/mipae_mnist.py"
if [[ -z $git_url ]] && [[ ! -f $repo_root/${config%%:*} ]]; then
  die_usage "config file ${config%%:*} is not in $repo_root, the tree that is copied"
fi
if [[ $workdir != gs://* ]]; then
  echo "note: WORKDIR $workdir is not a gs:// path: each host would write to its own disk." >&2
fi

gcloud_flags=("--zone=$zone" --worker=all)
[[ -z $project ]] || gcloud_flags+=("--project=$project")

# Prints the gcloud command that runs shell line $1 on every worker.
on_all_workers() {
  shell_join gcloud compute tpus tpu-vm ssh "$tpu" "${gcloud_flags[@]}" "--command=$1"
}

steps=()
if $install; then
  pip_install="$(shell_join "$python" -m pip install -e "$remote_dir" "$jax_spec")"
  if [[ -z $git_url ]]; then
    tarball="${TMPDIR:-/tmp}/mipae_jax_tree.$$.tar.gz"
    remote_tarball=mipae_jax_tree.tar.gz
    steps+=("cd $(shell_quote "$repo_root") && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -czf $(shell_quote "$tarball")")
    steps+=("$(shell_join gcloud compute tpus tpu-vm scp "$tarball" "$tpu:$remote_tarball" "${gcloud_flags[@]}")")
    steps+=("$(on_all_workers "mkdir -p $(shell_quote "$remote_dir") && tar -xzf $remote_tarball -C $(shell_quote "$remote_dir") && rm $remote_tarball && $pip_install")")
  else
    dir=$(shell_quote "$remote_dir")
    steps+=("$(on_all_workers "if [ ! -d $dir/.git ]; then git clone $(shell_quote "$git_url") $dir; fi && git -C $dir fetch $(shell_quote "$git_url") $(shell_quote "$git_ref") && git -C $dir checkout --detach FETCH_HEAD && $pip_install")")
  fi
fi

main_line=$(shell_join "$python" -m mipae_jax.main "--config=$config" "--workdir=$workdir" \
  "--mode=$mode" --config.distributed=True ${main_flags[@]+"${main_flags[@]}"})
if $detach; then
  run_line="cd $(shell_quote "$remote_dir") && nohup $main_line > mipae_jax_$mode.log 2>&1 < /dev/null &"
else
  run_line="cd $(shell_quote "$remote_dir") && $main_line"
fi
steps+=("$(on_all_workers "$run_line")")

if $dry_run; then
  printf '%s\n' "${steps[@]}"
  exit 0
fi
[[ -z ${tarball:-} ]] || trap 'rm -f "$tarball"' EXIT
for step in "${steps[@]}"; do
  bash -c "$step"
done
