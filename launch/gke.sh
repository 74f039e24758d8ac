#!/usr/bin/env bash
# launch/gke.sh: render launch/gke/jobset.yaml and apply it (kubectl; the JobSet controller must be installed).
#
#   launch/gke.sh --name run1 --image gcr.io/p/llm-jax:latest --processes 4 --gpus 8 [--dry-run] -- ARGS
#
# --gpus K    nvidia.com/gpu per pod; --tpus K google.com/tpu per pod (TPU node pools). --dry-run prints the
# rendered manifest and the kubectl command instead of applying it.
set -euo pipefail
NAME="" IMAGE="" PROCESSES=1 RESOURCES="" DRY_RUN=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    --processes) PROCESSES=$2; shift 2 ;;
    --gpus) RESOURCES="nvidia.com/gpu: $2"; shift 2 ;;
    --tpus) RESOURCES="google.com/tpu: $2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; break ;;
    *) echo "launch/gke.sh: unknown option $1 (train arguments go after --)" >&2; exit 2 ;;
  esac
done
if [[ -z "$NAME" || -z "$IMAGE" ]]; then
  echo "usage: launch/gke.sh --name NAME --image IMAGE [--processes N] [--gpus K|--tpus K] -- ARGS" >&2
  exit 2
fi
ARGS=""
for a in "$@"; do ARGS+="${ARGS:+, }\"${a//\"/\\\"}\""; done
TEMPLATE="$(dirname "$0")/gke/jobset.yaml"
manifest=$(sed -e "s|__NAME__|$NAME|g" -e "s|__IMAGE__|$IMAGE|g" -e "s|__PROCESSES__|$PROCESSES|g" \
               -e "s|__ARGS__|$ARGS|g" -e "s|__ACCELERATOR_RESOURCES__|$RESOURCES|g" "$TEMPLATE")
if [[ $DRY_RUN == 1 ]]; then
  echo "$manifest"
  echo "kubectl apply -f -   # the manifest above"
else
  echo "$manifest" | kubectl apply -f -
fi
