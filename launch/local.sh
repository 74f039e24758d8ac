#!/usr/bin/env bash
# launch/local.sh [--dry-run] N [llm-jax train arguments...]
#
# Starts N `llm-jax train` processes on this machine as one multi-process JAX run: CPU devices (LOCAL_DEVICES
# per process, default 4), gloo collectives, a coordinator on 127.0.0.1:PORT (default: a free port). Output
# lines are prefixed with the process index (`[i] `); the launcher's own messages with `[launch] ` (stderr).
# --dry-run prints the N commands instead of running them.
#
# Exit status: the workers' status (the table in llm_jax/errors.py: 0 ok, 1 bug, 2 usage, 3 halted, 74 io,
# 75 preempted, 76 peer lost; 128+n for a worker killed by signal n) — 0 if every worker exited 0, otherwise
# the status of the FIRST worker to exit non-zero (not the statuses of the others it then stopped).
# 75 means "preempted with a checkpoint: rerun the same command to resume".
#
# - A worker exits non-zero: the others are sent SIGTERM (they checkpoint and exit 75), then SIGKILL if they
#   are still running after LAUNCH_GRACE_SECONDS (default 30); the launcher waits for all of them.
# - SIGTERM / SIGINT (SIGHUP: as SIGTERM) to the launcher: forwarded once to every worker, which finish their
#   step, checkpoint and exit 75; the launcher waits for them (SIGKILL after the same grace period) and exits
#   with their status. Further signals are not forwarded again and do not make it return early. (A signal that was
#   ignored when the launcher started cannot be trapped by bash: a non-interactive shell's `local.sh ... &` starts
#   it with SIGINT ignored, so stop such a launcher with SIGTERM.)
# - No orphans: each worker runs in its own process group (with its `sed` prefixer); signals go to the whole
#   group, and any process left in a group when its worker has exited is killed before the launcher returns.
#   The prefixer ignores SIGTERM/SIGINT so that a worker's last lines (its checkpoint) are not lost.
#
# Variables: LOCAL_DEVICES, PORT, PYTHON (default python3), LLM_JAX (the command, default "$PYTHON -m llm_jax"),
# LAUNCH_GRACE_SECONDS.
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
GRACE=${LAUNCH_GRACE_SECONDS:-30}
if [[ ! "$GRACE" =~ ^[0-9]+$ ]]; then
  echo "error: LAUNCH_GRACE_SECONDS must be a whole number of seconds, not '$GRACE'" >&2
  exit 2
fi

command_for() {  # the shell command of process $1 (what --dry-run prints is what runs)
  local args=""
  if (($# > 1)); then args=$(printf ' %q' "${@:2}"); fi
  echo "LLM_JAX_COORDINATOR=127.0.0.1:$PORT LLM_JAX_NUM_PROCESSES=$N LLM_JAX_PROCESS_ID=$1" \
       "LLM_JAX_LOCAL_DEVICES=$LOCAL_DEVICES JAX_PLATFORMS=cpu $LLM_JAX train$args"
}

if [[ $DRY_RUN == 1 ]]; then
  for ((i = 0; i < N; i++)); do command_for "$i" "$@"; done
  exit 0
fi

# From here on every status is handled explicitly. errexit must stay off: inherited by the worker pipelines it
# replaced the worker's status with 1 (an `eval` that fails inside a pipeline element under `set -e` exits 1).
set +e

exec 3>&2  # the launcher's messages: fd 3, as stderr is silenced around `wait` and `sleep` below
log() { echo "[launch] $*" >&3; }

pids=()       # pids[i]: worker i's wrapper subshell, leader of its process group (pgid = pid)
codes=()      # codes[i]: its exit status once it has exited
status=""     # the first non-zero status
stopping=0    # 1 once the workers have been told to stop
deadline=0    # when stopping: SECONDS at which the survivors get SIGKILL
killed=0
signals=0     # signals received by the launcher

stop_workers() {  # $1: the signal to send to every running worker's process group
  stopping=1
  deadline=$((SECONDS + GRACE + 1))  # SECONDS counts whole seconds: this waits GRACE seconds at least
  local i
  for i in "${!pids[@]}"; do
    [[ -n "${codes[i]:-}" ]] || kill -s "$1" -- "-${pids[i]}" 2>/dev/null
  done
}

on_signal() {  # $1: the signal received, $2: the signal to forward
  signals=$((signals + 1))
  if ((stopping)); then
    log "$1 received again: still waiting for the workers (SIGKILL in $((deadline - SECONDS))s at most)"
    return
  fi
  log "$1 received: forwarded to the workers; waiting up to ${GRACE}s for them to checkpoint and exit"
  stop_workers "$2"
}
trap 'on_signal SIGTERM TERM' TERM
trap 'on_signal SIGINT INT' INT
trap 'on_signal SIGHUP TERM' HUP

for ((i = 0; i < N; i++)); do
  ((stopping)) && break  # a signal arrived while starting: start no more
  # `set -m` puts the background subshell (and so the worker and its prefixer) in a process group of its own,
  # which also keeps SIGINT unignored for it. Each shell layer catches TERM/INT/HUP with a no-op handler (caught
  # signals are reset to the default in the worker, unlike ignored ones), so that the worker alone reacts to
  # them and its status comes back unchanged; `sed` ignores them and exits when the worker's output ends.
  # (stdin: /dev/null, as for any background job without job control.)
  set -m
  (
    trap : TERM INT HUP
    { trap : TERM INT HUP; eval "$(command_for "$i" "$@")"; } 2>&1 \
      | { trap '' TERM INT HUP; exec sed -u "s/^/[$i] /"; }
    exit "${PIPESTATUS[0]}"
  ) </dev/null 3>&- &
  pids[i]=$!
  set +m
done

running=${#pids[@]}
while ((running > 0)); do
  for i in "${!pids[@]}"; do
    [[ -z "${codes[i]:-}" ]] || continue
    kill -0 "${pids[i]}" 2>/dev/null && continue  # still running (once it has exited, bash has reaped it)
    code=""
    while :; do  # `wait` returns early (>128) if a trapped signal arrives: collect the real status again
      seen=$signals
      { wait "${pids[i]}"; } 2>/dev/null; c=$?
      [[ $c == 127 && -n "$code" ]] && break  # the previous call had collected it
      code=$c
      ((seen == signals)) && break
    done
    codes[i]=$code
    running=$((running - 1))
    if ((code != 0)); then
      [[ -n "$status" ]] || status=$code
      if ((!stopping && running > 0)); then
        log "process $i exited with status $code; stopping the others (SIGTERM, SIGKILL after ${GRACE}s)"
        stop_workers TERM
      else
        log "process $i exited with status $code"
      fi
    fi
  done
  if ((running > 0 && stopping && !killed && SECONDS >= deadline)); then
    log "the workers did not exit within ${GRACE}s: SIGKILL"
    killed=1
    for i in "${!pids[@]}"; do
      [[ -n "${codes[i]:-}" ]] || kill -s KILL -- "-${pids[i]}" 2>/dev/null
    done
  fi
  # (bash reports a job killed by a signal as "line N: PID Killed ( ... )" when it next waits: not here)
  ((running > 0)) && { sleep 0.1; } 2>/dev/null
done

left=()
for i in "${!pids[@]}"; do  # anything a worker left behind in its process group
  if kill -s KILL -- "-${pids[i]}" 2>/dev/null; then
    ((killed)) || log "sent SIGKILL to what process $i left in its process group"
    left+=("${pids[i]}")
  fi
done
for ((t = 0; ${#left[@]} > 0 && t < 50; t++)); do  # and see it gone (5 s at most: SIGKILL is not instant)
  { sleep 0.1; } 2>/dev/null
  for j in "${!left[@]}"; do kill -0 -- "-${left[j]}" 2>/dev/null || unset "left[j]"; done
done
exit "${status:-0}"
