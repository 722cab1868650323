#!/usr/bin/env bash
# Trains on a Cloud TPU VM slice (one host or many): copies this checkout to every worker, installs
# it there, and runs the same vdit.main command on all workers at once.
#   TPU_NAME=my-v5e-16 ZONE=us-west4-a CONFIG=configs/dit_xl.py WORKDIR=gs://BUCKET/runs/dit_xl \
#     bash launch/tpu_pod.sh --config.data.dir=/data/clips [more --config.* flags]
# Required env: TPU_NAME, ZONE, CONFIG (configs/NAME.py[:args]), WORKDIR (gs://...: checkpoints are
#   written by all workers together, so every worker must see the same directory).
# Optional env (default): PROJECT (gcloud's default project), INSTALL (1: copy the checkout from
#   `git ls-files`, untracked unignored files included, and pip install it with JAX_PIP; 0 skips
#   both on a rerun), JAX_PIP ("jax[tpu]"), REMOTE_PYTHON (python3), DETACH (0: stream every
#   worker's output here; 1: start under nohup, log to ~/vdit.log on each worker, and return),
#   COORDINATOR_PORT (8482).
# Arguments pass through to vdit.main unchanged (quoted for the workers' shell). On a multi-host
# slice each worker reads its index and the worker list from the TPU metadata server and exports
# VDIT_COORDINATOR_ADDRESS/VDIT_NUM_PROCESSES/VDIT_PROCESS_ID for vdit/parallel/distributed.py (worker 0
# coordinates). Rerunning the same command resumes from the latest checkpoint in WORKDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for name in TPU_NAME ZONE CONFIG WORKDIR; do
  [[ -n ${!name:-} ]] || missing+=("$name")
done
if ((${#missing[@]})); then
  echo "launch/tpu_pod.sh: set ${missing[*]} (e.g. TPU_NAME=my-v5e-16 ZONE=us-west4-a" \
    "CONFIG=configs/dit_xl.py WORKDIR=gs://BUCKET/runs/dit_xl bash launch/tpu_pod.sh)." >&2
  exit 2
fi
INSTALL=${INSTALL:-1}
DETACH=${DETACH:-0}
JAX_PIP=${JAX_PIP:-jax[tpu]}
REMOTE_PYTHON=${REMOTE_PYTHON:-python3}
COORDINATOR_PORT=${COORDINATOR_PORT:-8482}
for name in INSTALL DETACH; do
  if [[ ${!name} != [01] ]]; then
    echo "launch/tpu_pod.sh: $name=${!name} must be 0 or 1." >&2
    exit 2
  fi
done
if [[ $WORKDIR != gs://* ]]; then
  echo "launch/tpu_pod.sh: warning: WORKDIR=$WORKDIR is not a gs:// path; every worker must see the" \
    "same directory (a shared mount), or checkpoints will be incomplete." >&2
fi
gcloud_args=(--zone="$ZONE")
if [[ -n ${PROJECT:-} ]]; then gcloud_args+=(--project="$PROJECT"); fi

# Runs on every worker (sent as source with `declare -f`): INSTALL JAX_PIP REMOTE_PYTHON DETACH PORT
# then vdit.main's arguments.
worker() {
  set -euo pipefail
  local install=$1 jax_pip=$2 python=$3 detach=$4 port=$5
  shift 5
  if [[ $install == 1 ]]; then
    mkdir -p ~/vdit
    tar -xzf ~/vdit.tar.gz -C ~/vdit
    "$python" -m pip install -q -e ~/vdit "$jax_pip"
  fi
  cd ~/vdit
  local url=http://metadata.google.internal/computeMetadata/v1/instance/attributes
  local endpoints entries workers=() entry
  if ! endpoints=$(curl -sf -H Metadata-Flavor:Google "$url/worker-network-endpoints"); then
    echo "$(hostname): cannot read worker-network-endpoints from the TPU metadata server." >&2
    return 1
  fi
  # "name:id:ip,..." (older TPU VMs) or "hostname,...", in worker order, as JAX reads it.
  IFS=, read -r -a entries <<< "$endpoints"
  for entry in "${entries[@]}"; do workers+=("${entry##*:}"); done
  if ((${#workers[@]} > 1)); then
    VDIT_PROCESS_ID=$(curl -sf -H Metadata-Flavor:Google "$url/agent-worker-number")
    export VDIT_PROCESS_ID VDIT_NUM_PROCESSES=${#workers[@]} VDIT_COORDINATOR_ADDRESS="${workers[0]}:$port"
  fi
  if [[ $detach == 1 ]]; then
    nohup "$python" -m vdit.main "$@" > ~/vdit.log 2>&1 < /dev/null &
    echo "worker ${VDIT_PROCESS_ID:-0}: vdit.main started (pid $!); log in ~/vdit.log"
  else
    exec "$python" -m vdit.main "$@"
  fi
}

if [[ $INSTALL == 1 ]]; then
  staging=$(mktemp -d)
  trap 'rm -rf "$staging"' EXIT
  # Files git knows of (tracked, or untracked and not ignored) that exist: no .venv, runs/ or caches.
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do if [[ -f $file ]]; then printf '%s\0' "$file"; fi; done |
    tar --null -T - -czf "$staging/vdit.tar.gz"
  gcloud compute tpus tpu-vm scp "$staging/vdit.tar.gz" "$TPU_NAME:vdit.tar.gz" --worker=all "${gcloud_args[@]}"
fi
remote="$(declare -f worker); worker $(printf '%q ' "$INSTALL" "$JAX_PIP" "$REMOTE_PYTHON" "$DETACH" \
  "$COORDINATOR_PORT" --config="$CONFIG" --workdir="$WORKDIR" "$@")"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all "${gcloud_args[@]}" --command="$remote"
