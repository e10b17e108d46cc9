#!/usr/bin/env bash
# Train SAEs on a Cloud TPU VM slice (v4 / v5e / v5p pod slices): create the slice, install this package on
# every worker, and run the same `qwen-sae train` command on all of them at once (jax.distributed finds the
# other workers by itself on TPU VMs; the script passes distributed.initialize=yes).
#
#   TPU_NAME=sae ZONE=us-central2-b ACCELERATOR=v4-32 launch/tpu_pod.sh create
#   TPU_NAME=sae ZONE=us-central2-b launch/tpu_pod.sh install           # copies this checkout to every worker
#   TPU_NAME=sae ZONE=us-central2-b launch/tpu_pod.sh train configs/qwen-scope-1.7b.yaml run_dir=gs-mounted/run
#   TPU_NAME=sae ZONE=us-central2-b launch/tpu_pod.sh train configs/qwen-scope-1.7b.yaml --resume
#   TPU_NAME=sae ZONE=us-central2-b launch/tpu_pod.sh ssh 'tail -n 3 sae/runs/*/metrics.jsonl'
#   TPU_NAME=sae ZONE=us-central2-b launch/tpu_pod.sh delete
#
# Variables: TPU_NAME, ZONE (required); ACCELERATOR (create; e.g. v4-32, v5litepod-32, v5p-32); VERSION (create;
# default from ACCELERATOR: v4 -> tpu-ubuntu2204-base, v5litepod -> v2-alpha-tpuv5-lite, v5p -> v2-alpha-tpuv5);
# PROJECT (optional); SPOT=1 (create a Spot slice); REMOTE_DIR (default: sae, under the worker's home).
# --dry-run (first argument) prints the gcloud commands instead of running them.
# The run directory must be on storage every worker sees (a GCS FUSE / NFS mount): orbax writes each
# worker's shards there, and `--resume` reads them back. See docs/launch.md for the mesh to choose.
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
ACTION="${1:-}"; shift || true

die() { echo "tpu_pod.sh: $*" >&2; exit 2; }
run() {
  if (( DRY_RUN )); then printf '%q ' "$@"; echo; else "$@"; fi
}

[[ -n "$ACTION" ]] || die "usage: tpu_pod.sh [--dry-run] create|install|train|ssh|delete [args...]"
[[ -n "${TPU_NAME:-}" ]] || die "set TPU_NAME"
[[ -n "${ZONE:-}" ]] || die "set ZONE"
REMOTE_DIR="${REMOTE_DIR:-sae}"
COMMON=(--zone="$ZONE")
[[ -n "${PROJECT:-}" ]] && COMMON+=(--project="$PROJECT")

default_version() {
  case "$1" in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "no default VERSION for ACCELERATOR=$1; set VERSION" ;;
  esac
}

on_all_workers() {   # run a shell command on every worker of the slice, in parallel
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${COMMON[@]}" --worker=all --command="$1"
}

case "$ACTION" in
  create)
    [[ -n "${ACCELERATOR:-}" ]] || die "set ACCELERATOR (e.g. v4-32, v5litepod-32)"
    VERSION="${VERSION:-$(default_version "$ACCELERATOR")}"
    args=(--accelerator-type="$ACCELERATOR" --version="$VERSION")
    [[ "${SPOT:-0}" == 1 ]] && args+=(--spot)
    run gcloud compute tpus tpu-vm create "$TPU_NAME" "${COMMON[@]}" "${args[@]}"
    ;;
  install)
    repo="$(cd "$(dirname "$0")/.." && pwd)"
    archive="$(mktemp -d)/qwen_sae_jax.tar.gz"
    run git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
    run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:qwen_sae_jax.tar.gz" "${COMMON[@]}" --worker=all
    on_all_workers "mkdir -p $REMOTE_DIR && tar -xzf qwen_sae_jax.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR && \
python3 -m pip install -q -U pip && python3 -m pip install -q -e . && python3 -m pip install -q -U 'jax[tpu]'"
    ;;
  train)
    (( $# >= 1 )) || die "usage: tpu_pod.sh train CONFIG.yaml [key=value ...] [--resume]"
    config="$1"; shift
    quoted="$(printf '%q' "$config") distributed.initialize=yes"
    for a in "$@"; do quoted+=" $(printf '%q' "$a")"; done
    # every worker runs the same command (its output also goes to train.log on that worker)
    on_all_workers "cd $REMOTE_DIR && python3 -m qwen_sae_jax.cli train $quoted 2>&1 | tee train.log"
    ;;
  ssh)
    (( $# == 1 )) || die "usage: tpu_pod.sh ssh 'COMMAND'"
    on_all_workers "cd $REMOTE_DIR && $1"
    ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${COMMON[@]}" --quiet
    ;;
  *) die "unknown action '$ACTION' (create|install|train|ssh|delete)" ;;
esac
