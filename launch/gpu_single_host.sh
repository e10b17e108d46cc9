#!/usr/bin/env bash
# Train SAEs on one GPU host (e.g. 8 x H100): one process drives every local GPU; the config's mesh
# ('data', 'model') spans them (docs/launch.md). Optionally installs JAX for CUDA 12 first.
#
#   launch/gpu_single_host.sh configs/qwen-scope-8b.yaml                       # all visible GPUs
#   launch/gpu_single_host.sh --install configs/qwen-scope-8b.yaml mesh.model=8
#   GPUS=0,1,2,3 launch/gpu_single_host.sh configs/qwen-scope-1.7b.yaml mesh.model=4 --resume
#   launch/gpu_single_host.sh --dry-run configs/tiny.yaml                      # print the command only
#
# Variables: GPUS (CUDA_VISIBLE_DEVICES, default all), PYTHON (default python3), MEM_FRACTION (share of GPU
# memory JAX preallocates, default 0.92).
set -euo pipefail

DRY_RUN=0
INSTALL=0
while [[ "${1:-}" == --* ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --install) INSTALL=1 ;;
    --help|-h) sed -n '2,12p' "$0"; exit 0 ;;
    *) break ;;
  esac
  shift
done
(( $# >= 1 )) || { echo "usage: gpu_single_host.sh [--dry-run] [--install] CONFIG.yaml [key=value ...] [--resume]" >&2; exit 2; }
PYTHON="${PYTHON:-python3}"

run() {
  if (( DRY_RUN )); then printf '%q ' "$@"; echo; else "$@"; fi
}

if (( INSTALL )); then
  run "$PYTHON" -m pip install -q -e "$(cd "$(dirname "$0")/.." && pwd)"
  run "$PYTHON" -m pip install -q -U "jax[cuda12]"
fi

export XLA_PYTHON_CLIENT_MEM_FRACTION="${MEM_FRACTION:-0.92}"
# overlap collectives with compute; one NCCL clique for the whole host
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
[[ -n "${GPUS:-}" ]] && export CUDA_VISIBLE_DEVICES="$GPUS"
if (( DRY_RUN )); then
  echo "XLA_PYTHON_CLIENT_MEM_FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION XLA_FLAGS='$XLA_FLAGS'" \
       "${CUDA_VISIBLE_DEVICES:+CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES}"
fi
config="$1"; shift
run "$PYTHON" -m qwen_sae_jax.cli train "$config" distributed.initialize=no "$@"
