#!/usr/bin/env bash
# Stop the vitbench local SLURM cluster started by slurm/start-cluster.sh.
#
# Stops, in order, slurmd, slurmctld, slurmdbd, the private MariaDB and munged,
# each gracefully (SIGTERM, wait up to 30 s, then SIGKILL), and only the
# processes recorded in the cluster's own pid files under $VITBENCH_SLURM_DIR
# (default /var/lib/vitbench-slurm).  Harmless when nothing runs.
#
# Slurm state (queued jobs, job ids) and the accounting database are kept, so
# start-cluster.sh resumes where it stopped.  Like on a real cluster, job
# steps already running are NOT killed by stopping the daemons; pass
# --cancel-jobs to scancel every job (and wait for them to end) first.
#
# Usage: slurm/stop-cluster.sh [--cancel-jobs]
set -uo pipefail

SCRIPT_NAME=stop-cluster
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=local/common.sh
source "$HERE/local/common.sh"

cancel=0
for arg in "$@"; do
  case $arg in
    --cancel-jobs) cancel=1 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "stop-cluster: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done

[[ $(id -u) == 0 ]] || { echo "stop-cluster: must run as root" >&2; exit 1; }
take_lock  # one start/stop at a time

if [[ ! -d $DIR/run ]]; then
  log "nothing to stop ($DIR/run does not exist)"
  exit 0
fi

if ((cancel)) && pid_of slurmctld "$DIR/run/slurmctld.pid" >/dev/null; then
  jobs=$(squeue -h -o '%A' 2>/dev/null | tr '\n' ' ')
  if [[ -n ${jobs// /} ]]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs || true
    for ((i = 0; i < 60; i++)); do
      [[ -z $(squeue -h -o '%A' -t PD,R,CG,S,CF 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
fi

stop_daemon slurmd "$DIR/run/slurmd.pid"
stop_daemon slurmctld "$DIR/run/slurmctld.pid"
stop_daemon slurmdbd "$DIR/run/slurmdbd.pid"
stop_daemon mariadbd "$DIR/run/mariadb/mariadb.pid" 60
stop_daemon munged "$DIR/run/munge/munged.pid"

left=""
for spec in slurmd:slurmd.pid slurmctld:slurmctld.pid slurmdbd:slurmdbd.pid \
  mariadbd:mariadb/mariadb.pid munged:munge/munged.pid; do
  pid_of "${spec%%:*}" "$DIR/run/${spec#*:}" >/dev/null && left+=" ${spec%%:*}"
done
if [[ -n $left ]]; then
  echo "stop-cluster: ERROR: still running:$left (logs in $DIR/log/)" >&2
  exit 1
fi
log "cluster stopped"
