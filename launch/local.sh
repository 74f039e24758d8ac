#!/usr/bin/env bash
# launch/local.sh N [llm-jax train arguments...]
#
# Starts N `llm-jax train` processes on this machine as one multi-process JAX run: CPU devices (LOCAL_DEVICES
# per process, default 4), gloo collectives, a coordinator on 127.0.0.1:PORT (default: a free port). Output
# lines are prefixed with the process index. If one process fails, the others are stopped; the exit status
# is the first failure's (75 = preempted, rerun to resume). --dry-run prints the commands instead.
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ || "$1" -lt 1 ]]; then
  echo "usage: launch/local.sh [--dry-run] N [llm-jax train arguments...]" >&2
  exit 2
fi
N=$1; shift
LOCAL_DEVICES=${LOCAL_DEVICES:-4}
PYTHON=${PYTHON:-python3}
PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
LLM_JAX=${LLM_JAX:-"$PYTHON -m llm_jax"}

command_for() {
  local args
  args=$(printf '%q ' "${@:2}")
  echo "LLM_JAX_COORDINATOR=127.0.0.1:$PORT LLM_JAX_NUM_PROCESSES=$N LLM_JAX_PROCESS_ID=$1" \
       "LLM_JAX_LOCAL_DEVICES=$LOCAL_DEVICES JAX_PLATFORMS=cpu $LLM_JAX train ${args% }"
}

if [[ $DRY_RUN == 1 ]]; then
  for ((i = 0; i < N; i++)); do command_for "$i" "$@"; done
  exit 0
fi

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap 'cleanup; exit 143' TERM INT
for ((i = 0; i < N; i++)); do
  ( eval "$(command_for "$i" "$@")" 2>&1 | sed -u "s/^/[$i] /"; exit "${PIPESTATUS[0]}" ) &
  pids+=($!)
done

status=0
remaining=$N
while ((remaining > 0)); do
  if wait -n; then code=0; else code=$?; fi
  remaining=$((remaining - 1))
  if ((code != 0 && status == 0)); then
    status=$code
    echo "[launch] a process exited with status $code; stopping the others" >&2
    cleanup
  fi
done
exit $status
