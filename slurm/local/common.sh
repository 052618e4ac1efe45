# Shared by slurm/start-cluster.sh and slurm/stop-cluster.sh (sourced, not run).
# shellcheck shell=bash

# The daemons and runuser live in sbin directories, which a CI or cron environment may leave off PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

VITBENCH_SLURM_DIR=${VITBENCH_SLURM_DIR:-/var/lib/vitbench-slurm}
DIR=$VITBENCH_SLURM_DIR
CLUSTER=vitbench
PARTITION=debug
# Debian's slurm is built with sysconfdir=/etc/slurm: the client commands
# (sinfo, sbatch, sacct, ...) read /etc/slurm/slurm.conf without any env var.
CONF_DIR=/etc/slurm
SLURMCTLD_PORT=${VITBENCH_SLURMCTLD_PORT:-16817}
SLURMD_PORT=${VITBENCH_SLURMD_PORT:-16818}
DBD_PORT=${VITBENCH_SLURMDBD_PORT:-16819}
DB_PORT=${VITBENCH_SLURM_DB_PORT:-16820}
DB_SOCK=$DIR/run/mariadb/mariadb.sock
MUNGE_SOCK=/run/munge/munge.socket.2

_T0=$(date +%s.%N)
elapsed() { awk -v a="$_T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
log() { printf '[%s %6ss] %s\n' "${SCRIPT_NAME:-cluster}" "$(elapsed)" "$*"; }

# pid_of NAME PIDFILE -> prints the pid when PIDFILE names a live process whose
# command is NAME (guards against stale pid files and recycled pids).
pid_of() {
  local name=$1 pidfile=$2 pid comm
  [[ -r $pidfile ]] || return 1
  pid=$(tr -dc 0-9 <"$pidfile")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ $comm == "$name"* ]] || return 1
  echo "$pid"
}

# stop_daemon NAME PIDFILE [TIMEOUT]: SIGTERM, wait, then SIGKILL.
stop_daemon() {
  local name=$1 pidfile=$2 timeout=${3:-30} pid i
  if ! pid=$(pid_of "$name" "$pidfile"); then
    rm -f "$pidfile"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 0.2
  done
  log "$name (pid $pid) ignored SIGTERM for ${timeout}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.5
  rm -f "$pidfile"
}

# take_lock: serialise start/stop scripts (parallel CI steps, two shells).
take_lock() {
  local lock=/run/lock/vitbench-slurm.lock
  [[ -d /run/lock ]] || lock=/tmp/vitbench-slurm.lock
  exec 9>"$lock"
  if ! flock -w 600 9; then
    echo "${SCRIPT_NAME:-cluster}: could not get $lock within 600 s" >&2
    exit 1
  fi
}
