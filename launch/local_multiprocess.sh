#!/usr/bin/env bash
# One vdit job as several CPU processes on this machine (gloo collectives): a multi-host run
# without the hosts, for tests and for debugging multi-process behaviour.
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=4 bash launch/local_multiprocess.sh \
#     --config=configs/toy.py --workdir=runs/toy_mp [--config.train.num_steps=100]
# Env (default): NUM_PROCESSES (2), DEVICES_PER_PROCESS (4) simulated CPU devices per process,
#   PYTHON (.venv/bin/python), VDIT_ENTRY ("-m vdit.main": the python arguments before this
#   script's, split at spaces; VDIT_ENTRY=-c runs the program given as the first argument),
#   COORDINATOR_PORT (a free port), STOP_GRACE_SECONDS (10: from SIGTERM to SIGKILL).
# Every process gets VDIT_COORDINATOR_ADDRESS, VDIT_NUM_PROCESSES and VDIT_PROCESS_ID (read by
# vdit/parallel/distributed.py) and its own device count in XLA_FLAGS; its output lines start "[rank I] ".
# Exit status: 0 when every process exits 0. When one fails, the others get SIGTERM (SIGKILL
# after STOP_GRACE_SECONDS) and the script exits with the first failure's status. SIGINT or
# SIGTERM to this script is passed on to every process as SIGTERM (vdit.main writes a checkpoint
# and exits 0), and the script exits with their statuses as above.
# Runs from the repository root, so relative paths are relative to it. Needs bash >= 5.1.
set -euo pipefail
if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501)); then
  echo "launch/local_multiprocess.sh needs bash >= 5.1 (wait -n -p); this is bash $BASH_VERSION." >&2
  exit 2
fi
cd "$(dirname "$0")/.."
NUM_PROCESSES=${NUM_PROCESSES:-2}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-4}
STOP_GRACE_SECONDS=${STOP_GRACE_SECONDS:-10}
PY=${PYTHON:-.venv/bin/python}
read -r -a entry <<< "${VDIT_ENTRY:--m vdit.main}"

require_int() {  # NAME VALUE MIN
  if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 < $3)); then
    echo "launch/local_multiprocess.sh: $1=$2 must be an integer >= $3 (e.g. $1=$(($3 + 1)))." >&2
    exit 2
  fi
}
require_int NUM_PROCESSES "$NUM_PROCESSES" 1
require_int DEVICES_PER_PROCESS "$DEVICES_PER_PROCESS" 1
require_int STOP_GRACE_SECONDS "$STOP_GRACE_SECONDS" 0
free_port='import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
port=${COORDINATOR_PORT:-$("$PY" -c "$free_port")}
require_int COORDINATOR_PORT "$port" 1

# The caller's XLA flags, with this script's device count in place of any other.
read -r -a caller_flags <<< "${XLA_FLAGS:-}"
xla_flags=()
for flag in "${caller_flags[@]}"; do
  [[ $flag == --xla_force_host_platform_device_count=* ]] || xla_flags+=("$flag")
done
xla_flags+=("--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS")
export XLA_FLAGS="${xla_flags[*]}" JAX_PLATFORMS=cpu PYTHONUNBUFFERED=1
export VDIT_COORDINATOR_ADDRESS="127.0.0.1:$port" VDIT_NUM_PROCESSES="$NUM_PROCESSES"

declare -A rank_of=()  # pid -> rank, for the processes still running
killer=""
stopping=0

prefix() { awk -v p="[rank $1] " '{ print p $0; fflush() }'; }

stop_all() {  # SIGTERM to every running process now, SIGKILL to any left after the grace period
  stopping=1
  ((${#rank_of[@]})) || return 0
  kill -TERM "${!rank_of[@]}" 2> /dev/null || true
  if [[ -z $killer ]]; then
    # stdio to /dev/null: a leftover sleep must not hold the caller's output pipe open.
    (sleep "$STOP_GRACE_SECONDS" && kill -KILL "${!rank_of[@]}") > /dev/null 2>&1 &
    killer=$!
  fi
}

# shellcheck disable=SC2329  # called by the traps below
on_signal() {
  echo "launch/local_multiprocess.sh: got SIG$1; sending SIGTERM to every process." >&2
  stop_all
}

# shellcheck disable=SC2329  # called by the EXIT trap: no process outlives the script
cleanup() {
  if ((${#rank_of[@]})); then kill -KILL "${!rank_of[@]}" 2> /dev/null || true; fi
  if [[ -n $killer ]]; then kill "$killer" 2> /dev/null || true; fi
}

trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap cleanup EXIT

for ((rank = 0; rank < NUM_PROCESSES && !stopping; rank++)); do
  VDIT_PROCESS_ID=$rank "$PY" "${entry[@]}" "$@" > >(prefix "$rank") 2>&1 &
  rank_of[$!]=$rank
done

status=0
while ((${#rank_of[@]})); do
  code=0
  unset finished
  wait -n -p finished "${!rank_of[@]}" || code=$?
  [[ -n ${finished:-} ]] || continue  # a trapped signal interrupted the wait
  rank=${rank_of[$finished]}
  unset "rank_of[$finished]"
  if ((code != 0 && status == 0)); then
    status=$code
    echo "launch/local_multiprocess.sh: rank $rank exited with status $code; stopping the others." >&2
    stop_all
  fi
done
exit "$status"
