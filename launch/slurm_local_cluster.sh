#!/usr/bin/env bash
# launch/slurm_local_cluster.sh start|stop DIR: a real single-node SLURM cluster on this machine, for tests.
#
# start: installs Debian's slurm-wlm and munge if missing (apt-get; needs root), writes DIR/slurm.conf (no
# systemd, no cgroups: proctrack/linuxproc, task/none), starts munged, slurmctld and slurmd, and waits until
# the node is idle. Jobs then run with: SLURM_CONF=DIR/slurm.conf sbatch --ntasks=2 launch/slurm.sbatch ...
# stop: stops the daemons it started. Exit status 3 means SLURM cannot be installed or started here.
set -euo pipefail
ACTION=${1:-}; DIR=${2:-}
if [[ -z "$ACTION" || -z "$DIR" ]]; then echo "usage: $0 start|stop DIR" >&2; exit 2; fi
DIR=$(mkdir -p "$DIR" && cd "$DIR" && pwd)

if [[ $ACTION == stop ]]; then
  for name in slurmd slurmctld; do
    [[ -f $DIR/$name.pid ]] && kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true
  done
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if [[ $(id -u) != 0 ]] || ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      slurm-wlm munge >"$DIR/apt.log" 2>&1; then
    echo "cannot install slurm-wlm and munge (see $DIR/apt.log)" >&2
    exit 3
  fi
fi

mkdir -p "$DIR/state" "$DIR/spool" /run/munge
chown munge:munge /run/munge 2>/dev/null || true
if [[ ! -f /etc/munge/munge.key ]]; then
  (mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null)
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
pgrep -x munged >/dev/null || runuser -u munge -- munged || munged --force
NODE=$(slurmd -C | head -1)
HOST=$(hostname -s)
cat >"$DIR/slurm.conf" <<CONF
ClusterName=llmjax
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
$NODE
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF=$DIR/slurm.conf
slurmctld -f "$SLURM_CONF" || { echo "slurmctld did not start (see $DIR/slurmctld.log)" >&2; exit 3; }
slurmd -f "$SLURM_CONF" || { echo "slurmd did not start (see $DIR/slurmd.log)" >&2; exit 3; }
for _ in $(seq 1 60); do
  if sinfo -h -o %t 2>/dev/null | grep -q idle; then echo "slurm: node $HOST idle (SLURM_CONF=$SLURM_CONF)"; exit 0; fi
  sleep 0.5
done
echo "the SLURM node never became idle (see $DIR/*.log)" >&2
exit 3
