#!/usr/bin/env bash
# launch/tpu_vm.sh: run `llm-jax train` on every worker of a Cloud TPU VM slice (or of several slices).
#
#   launch/tpu_vm.sh --name my-tpu --zone us-east5-a --type v5p-256 [--create | --queued [--slices N]]
#                    [--project P] [--version V] [--dry-run] -- --config configs/llama_7b.py --workdir gs://b/run
#
# --create     create the TPU VM first (gcloud compute tpus tpu-vm create)
# --queued     create it through a queued resource (waits for capacity); with --slices N > 1 a multi-slice
#              queued resource whose slices JAX joins over DCN (set --config.mesh.dcn_data=N)
# Then: copy this checkout to every worker, install it, and run `llm-jax train ARGS` on all workers at once
# (gcloud compute tpus tpu-vm ssh --worker=all). JAX reads the TPU metadata to join the workers.
# --dry-run prints every command instead of running it.
set -euo pipefail

NAME="" ZONE="" TYPE="" PROJECT="" VERSION="v2-alpha-tpuv5" CREATE=0 QUEUED=0 SLICES=1 DRY_RUN=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --zone) ZONE=$2; shift 2 ;;
    --type) TYPE=$2; shift 2 ;;
    --project) PROJECT=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --create) CREATE=1; shift ;;
    --queued) QUEUED=1; shift ;;
    --slices) SLICES=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; break ;;
    *) echo "launch/tpu_vm.sh: unknown option $1 (train arguments go after --)" >&2; exit 2 ;;
  esac
done
if [[ -z "$NAME" || -z "$ZONE" || ( ($CREATE == 1 || $QUEUED == 1) && -z "$TYPE" ) ]]; then
  echo "usage: launch/tpu_vm.sh --name NAME --zone ZONE [--type TYPE --create|--queued [--slices N]] -- ARGS" >&2
  exit 2
fi
PROJECT_FLAG=${PROJECT:+ --project=$PROJECT}
TRAIN_ARGS=$(printf '%q ' "$@"); TRAIN_ARGS=${TRAIN_ARGS% }
REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)

run() { if [[ $DRY_RUN == 1 ]]; then echo "$*"; else eval "$*"; fi; }

nodes=("$NAME")
if [[ $QUEUED == 1 ]]; then
  if [[ $SLICES -gt 1 ]]; then
    run "gcloud compute tpus queued-resources create $NAME --zone=$ZONE$PROJECT_FLAG --accelerator-type=$TYPE" \
        "--runtime-version=$VERSION --node-count=$SLICES --node-prefix=$NAME"
    nodes=(); for ((i = 0; i < SLICES; i++)); do nodes+=("$NAME-$i"); done
  else
    run "gcloud compute tpus queued-resources create $NAME --zone=$ZONE$PROJECT_FLAG --accelerator-type=$TYPE" \
        "--runtime-version=$VERSION --node-id=$NAME"
  fi
  run "until gcloud compute tpus queued-resources describe $NAME --zone=$ZONE$PROJECT_FLAG" \
      "--format='value(state.state)' | grep -q ACTIVE; do sleep 30; done"
elif [[ $CREATE == 1 ]]; then
  run "gcloud compute tpus tpu-vm create $NAME --zone=$ZONE$PROJECT_FLAG --accelerator-type=$TYPE --version=$VERSION"
fi

run "tar -czf /tmp/llm_jax_src.tgz -C $REPO_DIR --exclude=.venv --exclude=runs --exclude=.git ."
for node in "${nodes[@]}"; do
  ssh_all="gcloud compute tpus tpu-vm ssh $node --zone=$ZONE$PROJECT_FLAG --worker=all"
  run "gcloud compute tpus tpu-vm scp /tmp/llm_jax_src.tgz $node:~/llm_jax_src.tgz --zone=$ZONE$PROJECT_FLAG --worker=all"
  run "$ssh_all --command='mkdir -p ~/llm_jax && tar -xzf ~/llm_jax_src.tgz -C ~/llm_jax &&" \
      "pip install -q -e ~/llm_jax \"jax[tpu]\"'"
done
for node in "${nodes[@]}"; do
  run "gcloud compute tpus tpu-vm ssh $node --zone=$ZONE$PROJECT_FLAG --worker=all" \
      "--command='cd ~/llm_jax && python3 -m llm_jax train $TRAIN_ARGS' &"
done
run "wait"
