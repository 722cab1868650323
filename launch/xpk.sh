#!/usr/bin/env bash
# Submits a vdit training run to a GKE cluster with xpk (`xpk workload create`): TPU slices,
# multislice, or GPU node pools.
#   CLUSTER=my-cluster TPU_TYPE=v5litepod-16 NUM_SLICES=2 ZONE=us-west4-a PROJECT=my-project \
#     CONFIG=configs/dit_xl.py WORKDIR=gs://BUCKET/runs/dit_xl bash launch/xpk.sh \
#     --config.data.dir=/data/clips [more --config.* flags]
# Required env: CLUSTER, TPU_TYPE (e.g. v5litepod-16, v5p-128, v6e-256) or DEVICE_TYPE (xpk's
#   --device-type, e.g. h100-80gb-8, with JAX_PIP="jax[cuda12]"), CONFIG (configs/NAME.py[:args]),
#   WORKDIR (gs://...: shared by every host).
# Optional env (default): WORKLOAD (vdit-YYYYMMDD-HHMMSS), NUM_SLICES (1), ZONE and PROJECT (xpk's
#   defaults), MAX_RESTARTS (0; a restarted workload resumes from WORKDIR's latest checkpoint),
#   DOCKER_IMAGE (an image with vdit and JAX installed, started in the checkout: runs as is),
#   else BASE_IMAGE (python:3.11): xpk layers a copy of this checkout (`git ls-files`, untracked
#   unignored files included) onto it and the command first runs `pip install -e . $JAX_PIP`
#   (JAX_PIP: "jax[tpu]").
# Arguments pass through to vdit.main unchanged (quoted for the container's shell). GKE sets
# TPU_WORKER_HOSTNAMES on multi-host slices, which makes vdit/parallel/distributed.py initialise JAX's
# distributed runtime (JAX reads the rest, multislice included, from the environment).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for name in CLUSTER CONFIG WORKDIR; do
  [[ -n ${!name:-} ]] || missing+=("$name")
done
if [[ -z ${TPU_TYPE:-} && -z ${DEVICE_TYPE:-} ]]; then missing+=("TPU_TYPE (or DEVICE_TYPE)"); fi
if ((${#missing[@]})); then
  echo "launch/xpk.sh: set ${missing[*]} (e.g. CLUSTER=my-cluster TPU_TYPE=v5litepod-16" \
    "CONFIG=configs/dit_xl.py WORKDIR=gs://BUCKET/runs/dit_xl bash launch/xpk.sh)." >&2
  exit 2
fi
if [[ -n ${TPU_TYPE:-} && -n ${DEVICE_TYPE:-} ]]; then
  echo "launch/xpk.sh: set TPU_TYPE=$TPU_TYPE or DEVICE_TYPE=$DEVICE_TYPE, not both." >&2
  exit 2
fi
if [[ -n ${DOCKER_IMAGE:-} && -n ${BASE_IMAGE:-} ]]; then
  echo "launch/xpk.sh: set DOCKER_IMAGE=$DOCKER_IMAGE (vdit installed) or BASE_IMAGE=$BASE_IMAGE" \
    "(this checkout is added and installed), not both." >&2
  exit 2
fi
WORKLOAD=${WORKLOAD:-vdit-$(date +%Y%m%d-%H%M%S)}
NUM_SLICES=${NUM_SLICES:-1}
MAX_RESTARTS=${MAX_RESTARTS:-0}
JAX_PIP=${JAX_PIP:-jax[tpu]}

args=(workload create --cluster="$CLUSTER" --workload="$WORKLOAD" --num-slices="$NUM_SLICES"
  --max-restarts="$MAX_RESTARTS")
if [[ -n ${TPU_TYPE:-} ]]; then args+=(--tpu-type="$TPU_TYPE"); else args+=(--device-type="$DEVICE_TYPE"); fi
if [[ -n ${ZONE:-} ]]; then args+=(--zone="$ZONE"); fi
if [[ -n ${PROJECT:-} ]]; then args+=(--project="$PROJECT"); fi

command=$(printf '%q ' python3 -m vdit.main --config="$CONFIG" --workdir="$WORKDIR" "$@")
if [[ -n ${DOCKER_IMAGE:-} ]]; then
  args+=(--docker-image="$DOCKER_IMAGE")
else
  # A clean copy for xpk to layer onto the image: the checkout without .venv, runs/ or caches.
  staging=$(mktemp -d)
  trap 'rm -rf "$staging"' EXIT
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do if [[ -f $file ]]; then printf '%s\0' "$file"; fi; done |
    tar --null -T - -cf - | tar -xf - -C "$staging"
  args+=(--base-docker-image="${BASE_IMAGE:-python:3.11}" --script-dir="$staging")
  command="python3 -m pip install -q -e . $(printf '%q' "$JAX_PIP") && $command"
fi
xpk "${args[@]}" --command="$command"
