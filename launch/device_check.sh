#!/usr/bin/env bash
# launch/device_check.sh: one command for a lent accelerator (about 8 minutes
# on one GPU), everything it measures written into DIR (8 files, each well
# under 16 MB):
#   env.txt              versions, devices, XLA flags
#   step_times.md        host and wall time per step of both methods at
#                        batch 100, float32 and bfloat16, for each data
#                        placement (benchmarks/host_overhead.py --networks=real),
#                        then the tiny-network table of host overhead, the
#                        input rates and the step FLOPs
#   mipae_scores.jsonl   learning curve of each method: per checkpoint, MIG
#   drnet_scores.jsonl   and the per-channel reconstruction error against
#                        all-black (the last line: the last checkpoint)
#   learning_curves.png  both runs on one plot
#   mipae_swap_grid.png  swap grid of each run's last checkpoint
#   drnet_swap_grid.png
#   log.txt              everything the commands printed
# MIPAE and DRNET are trained for the same wall time each (--train_seconds),
# on 2,000 stored Moving dSprites videos held on the device, 10 steps per
# call (the `device_check` variant, configs/base.py); SIGTERM stops each run
# with a final checkpoint.
#
# Usage: launch/device_check.sh --out=DIR [--smoke] [--train_seconds=S]
#   --out=DIR          where the results go (created)
#   --smoke            the whole sequence at test scale, on any machine (CPU
#                      included): batch 8 on the small dataset, MIPAE float32
#                      only in the step table, runs of 6 steps
#   --train_seconds=S  wall time of each training run (default 120; smoke:
#                      a cap of 300, the 6 steps end first)
#   -h, --help         print this help

set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh

out="" smoke=0 train_seconds=""
for arg in "$@"; do
  case $arg in
    -h | --help) print_usage; exit 0 ;;
    --smoke) smoke=1 ;;
    --out=*) out=$(option_value "$arg") ;;
    --train_seconds=*) train_seconds=$(option_value "$arg") ;;
    *) die_usage "unknown argument $arg" ;;
  esac
done
[[ -n $out ]] || die_usage "--out=DIR is required"
[[ -z $train_seconds || $train_seconds =~ ^[0-9]+$ ]] ||
  die_usage "--train_seconds=$train_seconds must be a whole number of seconds"
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
trap 'rm -rf "$work"' EXIT
python=${PYTHON:-python3}

if ((smoke)); then
  variant=device_check_smoke
  bench=(--batch_size=8 --steps_per_call=2 --min_steps=4)
  steps=(--methods=mipae --dtypes=float32)
  train_seconds=${train_seconds:-300}
else
  variant=device_check
  bench=(--batch_size=100 --steps_per_call=1,10 --min_steps=100)
  steps=(--methods=mipae,drnet --dtypes=float32,bfloat16)
  train_seconds=${train_seconds:-120}
fi
# Compiled steps are shared between the benchmark and the training runs.
export JAX_COMPILATION_CACHE_DIR=$work/xla_cache
data_dir=$work/tfds

exec > >(tee "$out/log.txt") 2>&1
echo "device_check: variant $variant, $train_seconds s per run, work in $work"

"$python" - > "$out/env.txt" <<'EOF'
import os, platform, subprocess
import flax, jax, jaxlib, optax, orbax.checkpoint as ocp
print("python", platform.python_version(), platform.platform())
for m in (jax, jaxlib, flax, optax, ocp):
  print(m.__name__, getattr(m, "__version__", "?"))
print("backend", jax.default_backend(), "devices", jax.devices())
for d in jax.local_devices():
  print(d, d.device_kind, (d.memory_stats() or {}).get("bytes_limit"))
for k in sorted(os.environ):
  if k.startswith(("XLA_", "JAX_", "CUDA_", "NVIDIA_", "TF_CPP", "TF_GPU")):
    print(f"{k}={os.environ[k]}")
try:
  print(subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout)
except OSError:
  print("nvidia-smi: not found")
EOF
cat "$out/env.txt"

config() { echo "configs/$1_dsprites.py:$variant"; }
common=(--config.dataset.data_dir="$data_dir")

echo "== data"
"$python" -m mipae_jax.main --mode=prepare --config="$(config mipae)" \
  --workdir="$work/mipae" "${common[@]}"

echo "== step times"
{
  echo "# Step times ($variant)"
  "$python" benchmarks/host_overhead.py "${bench[@]}" "${steps[@]}" \
    --networks=real --norates --noflops --data_dir="$data_dir"
  echo
  echo "# Host overhead (tiny networks), input rates, step FLOPs"
  "$python" benchmarks/host_overhead.py "${bench[@]}" --data_dir="$data_dir"
} > "$out/step_times.md"
cat "$out/step_times.md"

for method in mipae drnet; do
  echo "== $method: training for $train_seconds s"
  status=0
  timeout -s TERM "$train_seconds" "$python" -m mipae_jax.main --mode=train \
    --config="$(config $method)" --workdir="$work/$method" "${common[@]}" || status=$?
  # 124: stopped by the clock (after the final save); 0: reached its steps.
  [[ $status == 0 || $status == 124 ]] || {
    echo "device_check: training $method failed (exit $status)"
    exit "$status"
  }
done

for method in mipae drnet; do
  echo "== $method: learning curve"
  others=$([[ $method == drnet ]] && echo "--workdirs=$work/mipae" || true)
  "$python" -m mipae_jax.main --mode=curves --config="$(config $method)" \
    --workdir="$work/$method" "${common[@]}" $others
  cp "$work/$method/curves/scores.jsonl" "$out/${method}_scores.jsonl"
  last=$(ls "$work/$method"/curves/swap_grid_*.png | sort | tail -n 1)
  cp "$last" "$out/${method}_swap_grid.png"
done
cp "$work/drnet/curves/learning_curves.png" "$out/learning_curves.png"
echo "device_check: done; results in $out"
