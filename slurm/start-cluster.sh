#!/usr/bin/env bash
# Start the vitbench local one-node SLURM cluster (ClusterName=vitbench) on
# loopback, with accounting (slurmdbd + a private MariaDB) so that `sacct`,
# and therefore submitit's job states, work.
#
# * Installs what it needs from Debian with apt-get (munge, slurmctld, slurmd,
#   slurm-client, slurmdbd, mariadb-server) when it is missing.
# * Idempotent: daemons already running with the same configuration are left
#   alone; a changed configuration restarts the daemons it concerns.
# * No systemd needed: every daemon is started directly and waited for with
#   bounded retries.  On failure the daemon logs are printed and it exits 1.
#
# State, spool, pid files, the MariaDB data and all logs live under
#   $VITBENCH_SLURM_DIR (default /var/lib/vitbench-slurm), logs in $DIR/log/.
# The rendered slurm.conf / slurmdbd.conf go to /etc/slurm/ (where Debian's
# client commands look) with a copy in $DIR/etc/.
#
# Environment knobs:
#   VITBENCH_SLURM_DIR    state directory (default /var/lib/vitbench-slurm)
#   VITBENCH_SLURM_CPUS   CPUs the node declares: a number, or "auto" for what
#                         `slurmd -C` detects (default: max(8, detected) so
#                         several 1-CPU test jobs run at once on 2 cores)
#   VITBENCH_SLURM_MEM_MB RealMemory of the node (default 90% of detected)
#   VITBENCH_SLURM_MAX_ARRAY MaxArraySize (default 10001; the array-split test uses 4)
#   VITBENCH_SLURMCTLD_PORT / _SLURMD_PORT / _SLURMDBD_PORT / VITBENCH_SLURM_DB_PORT
#                         (defaults 16817 / 16818 / 16819 / 16820)
#   VITBENCH_SLURM_TIMEOUT seconds to wait for each daemon (default 90)
set -euo pipefail

SCRIPT_NAME=start-cluster
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=local/common.sh
source "$HERE/local/common.sh"
TEMPLATES=$HERE/local
WAIT=${VITBENCH_SLURM_TIMEOUT:-90}

dump_logs() {
  local f
  for f in "$DIR"/log/*.log; do
    [[ -e $f ]] || continue
    echo "===================== $f (last 60 lines) ====================="
    tail -n 60 "$f" || true
  done
}
_died=0
die() {
  _died=1
  echo "start-cluster: ERROR: $*" >&2
  dump_logs >&2
  echo "start-cluster: ERROR: $* (daemon logs above, all logs in $DIR/log/)" >&2
  exit 1
}
# Any other failure (set -e): say where, and print the logs as well.
_failed_at=""
trap '_failed_at="line $LINENO: $BASH_COMMAND"' ERR
_on_exit() {
  local rc=$?
  if ((rc != 0 && !_died)); then
    echo "start-cluster: ERROR: failed with exit code $rc${_failed_at:+ at $_failed_at}" >&2
    dump_logs >&2
    echo "start-cluster: ERROR: failed with exit code $rc (daemon logs above, all logs in $DIR/log/)" >&2
  fi
}
trap _on_exit EXIT

# wait_for DESCRIPTION CMD...: retry CMD every 0.5 s for $WAIT s.
wait_for() {
  local what=$1 i
  shift
  for ((i = 0; i < WAIT * 2; i++)); do
    if "$@" >/dev/null 2>&1; then
      log "$what: ready"
      return 0
    fi
    sleep 0.5
  done
  die "$what: not ready after ${WAIT}s"
}

[[ $(id -u) == 0 ]] || { echo "start-cluster: must run as root" >&2; exit 1; }
take_lock  # one start/stop at a time (daemons are started with fd 9 closed)

# ---------------------------------------------------------------- packages --
PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
    missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing with apt-get: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep the packages' maintainer scripts from starting daemons with their
  # default configuration (we start our own, below).
  made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt_install() {
    apt-get install -y -q --no-install-recommends \
      -o DPkg::Lock::Timeout=300 \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      "${PKGS[@]}"
  }
  if ! apt_install; then
    log "apt-get install failed; running apt-get update and retrying"
    apt-get update -q -o DPkg::Lock::Timeout=300 || log "apt-get update reported errors (continuing)"
    apt_install || { ((made_policy)) && rm -f /usr/sbin/policy-rc.d; die "apt-get install ${PKGS[*]} failed"; }
  fi
  ((made_policy)) && rm -f /usr/sbin/policy-rc.d
  log "packages installed"
else
  log "packages already installed"
fi

# --------------------------------------------------------------- layout ----
install -d -m 0755 "$DIR" "$DIR/state" "$DIR/spool" "$DIR/spool/slurmd" "$DIR/run" "$DIR/log" "$DIR/etc" "$CONF_DIR"
install -d -m 0755 -o munge -g munge "$DIR/run/munge" /run/munge
install -d -m 0755 -o mysql -g mysql "$DIR/run/mariadb" "$DIR/mysql"
for f in munged.log mariadb.log; do
  touch "$DIR/log/$f"
done
chown munge:munge "$DIR/log/munged.log"
chown mysql:mysql "$DIR/log/mariadb.log"

NODE=$(hostname -s)
[[ -n $NODE ]] || die "hostname -s is empty"
# Slurm resolves its own host name here and there; make sure it resolves.
if ! getent hosts "$NODE" >/dev/null; then
  log "adding '127.0.0.1 $NODE' to /etc/hosts (host name did not resolve)"
  echo "127.0.0.1 $NODE  # vitbench-local-cluster" >>/etc/hosts
fi

# ---------------------------------------------------------- configuration --
hw=$(slurmd -C 2>/dev/null | head -n 1) || true
hw_cpus=$(sed -n 's/.*\bCPUs=\([0-9]\+\).*/\1/p' <<<"$hw")
hw_mem=$(sed -n 's/.*\bRealMemory=\([0-9]\+\).*/\1/p' <<<"$hw")
[[ -n $hw_cpus ]] || hw_cpus=$(nproc)
[[ -n $hw_mem ]] || hw_mem=$(awk '/^MemTotal:/{print int($2/1024)}' /proc/meminfo)
case ${VITBENCH_SLURM_CPUS:-} in
  '') CPUS=$((hw_cpus > 8 ? hw_cpus : 8)) ;;
  auto) CPUS=$hw_cpus ;;
  *[!0-9]* | 0) die "VITBENCH_SLURM_CPUS must be a positive integer or 'auto'" ;;
  *) CPUS=$VITBENCH_SLURM_CPUS ;;
esac
MEM_MB=${VITBENCH_SLURM_MEM_MB:-$((hw_mem * 9 / 10))}
log "node $NODE: slurmd -C reports CPUs=$hw_cpus RealMemory=$hw_mem; declaring CPUs=$CPUS RealMemory=$MEM_MB"

if [[ ! -s $DIR/etc/db.pass ]]; then
  (umask 077 && head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$DIR/etc/db.pass")
fi
DB_PASS=$(cat "$DIR/etc/db.pass")

render() { # render TEMPLATE > stdout
  sed -e "s|@DIR@|$DIR|g" -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$CPUS|g" \
    -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@MAX_ARRAY@|${VITBENCH_SLURM_MAX_ARRAY:-10001}|g" -e "s|@SLURMCTLD_PORT@|$SLURMCTLD_PORT|g" \
    -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" \
    -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" "$1"
}
# install_conf NAME MODE -> returns 0 when the file changed
install_conf() {
  local name=$1 mode=$2 dst=$CONF_DIR/$1 tmp
  tmp=$(mktemp)
  render "$TEMPLATES/$name.in" >"$tmp"
  if [[ -f $dst ]] && cmp -s "$tmp" "$dst"; then
    rm -f "$tmp"
    return 1
  fi
  if [[ -f $dst ]] && ! grep -q 'vitbench-local-cluster' "$dst"; then
    cp -p "$dst" "$dst.pre-vitbench"
    log "kept the previous $dst as $dst.pre-vitbench"
  fi
  install -m "$mode" -o root -g root "$tmp" "$dst"
  install -m "$mode" -o root -g root "$tmp" "$DIR/etc/$name"
  rm -f "$tmp"
  log "wrote $dst"
  return 0
}
slurm_conf_changed=0
dbd_conf_changed=0
install_conf slurm.conf 0644 && slurm_conf_changed=1
install_conf slurmdbd.conf 0600 && dbd_conf_changed=1

# ------------------------------------------------------------------ munge --
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating /etc/munge/munge.key"
  install -d -m 0700 -o munge -g munge /etc/munge
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile=/etc/munge/munge.key
  else
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
munge_ok() { munge -n -S "$MUNGE_SOCK" | unmunge -S "$MUNGE_SOCK"; }
if munge_ok >/dev/null 2>&1; then
  log "munged already running"
else
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCK" \
    --pid-file="$DIR/run/munge/munged.pid" --log-file="$DIR/log/munged.log" 9>&- ||
    die "munged failed to start"
  wait_for munged munge_ok
fi

# ---------------------------------------------------------------- mariadb --
db() { mariadb --no-defaults --protocol=socket --socket="$DB_SOCK" -u root "$@"; }
db_ok() { mariadb-admin --no-defaults --protocol=socket --socket="$DB_SOCK" -u root ping; }
if db_ok >/dev/null 2>&1; then
  log "mariadb already running"
else
  if [[ ! -d $DIR/mysql/mysql ]]; then
    log "initialising the MariaDB data directory $DIR/mysql"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql" \
      --auth-root-authentication-method=socket --skip-test-db \
      >>"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
  fi
  log "starting mariadbd (127.0.0.1:$DB_PORT)"
  setsid nohup /usr/sbin/mariadbd --no-defaults --user=mysql \
    --datadir="$DIR/mysql" --socket="$DB_SOCK" --pid-file="$DIR/run/mariadb/mariadb.pid" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
    --log-error="$DIR/log/mariadb.log" --skip-log-bin \
    --innodb-buffer-pool-size=256M --innodb-log-file-size=64M \
    --innodb-lock-wait-timeout=900 --max-allowed-packet=64M \
    </dev/null >>"$DIR/log/mariadb.log" 2>&1 9>&- &
  wait_for mariadb db_ok
fi
db <<SQL || die "could not create the slurm database/user"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL

# --------------------------------------------------------------- slurmdbd --
dbd_ok() { sacctmgr -n -P show cluster format=cluster; }
if pid=$(pid_of slurmdbd "$DIR/run/slurmdbd.pid") && ((!dbd_conf_changed)); then
  log "slurmdbd already running (pid $pid)"
else
  stop_daemon slurmdbd "$DIR/run/slurmdbd.pid"
  log "starting slurmdbd (127.0.0.1:$DBD_PORT)"
  slurmdbd 9>&- || die "slurmdbd failed to start"
fi
wait_for slurmdbd dbd_ok
if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
  log "registering cluster $CLUSTER with slurmdbd"
  sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
  ctld_restart_for_dbd=1
else
  ctld_restart_for_dbd=0
fi

# -------------------------------------------------------------- slurmctld --
ctld_ok() { scontrol ping | grep -q 'is UP'; }
if pid=$(pid_of slurmctld "$DIR/run/slurmctld.pid") && ((!slurm_conf_changed && !ctld_restart_for_dbd)); then
  log "slurmctld already running (pid $pid)"
else
  stop_daemon slurmctld "$DIR/run/slurmctld.pid"
  log "starting slurmctld (127.0.0.1:$SLURMCTLD_PORT)"
  slurmctld 9>&- || die "slurmctld failed to start"
fi
wait_for slurmctld ctld_ok

# ----------------------------------------------------------------- slurmd --
if pid=$(pid_of slurmd "$DIR/run/slurmd.pid") && ((!slurm_conf_changed)); then
  log "slurmd already running (pid $pid)"
else
  stop_daemon slurmd "$DIR/run/slurmd.pid"
  log "starting slurmd (node $NODE, 127.0.0.1:$SLURMD_PORT)"
  slurmd_started=$(($(date +%s) - 1))
  slurmd -N "$NODE" 9>&- || die "slurmd failed to start"
  # The node state survives in slurmctld's state files, so "idle" alone does
  # not prove that this slurmd registered: wait for its start time to show.
  slurmd_registered() {
    local t
    t=$(scontrol show node "$NODE" | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p')
    [[ -n $t && $t != None ]] && (($(date -d "$t" +%s) >= slurmd_started))
  }
  wait_for "slurmd registration" slurmd_registered
fi
node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }
node_ok() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }
resumed=0
for ((i = 0; i < WAIT * 2; i++)); do
  node_ok && break
  st=$(node_state)
  # ReturnToService=2 should bring the node back by itself; help once if the
  # saved state left it down/drained (e.g. after an unclean stop).
  if ((!resumed && i >= 10)) && [[ $st =~ ^(down|drain|drained|draining|fail) ]]; then
    log "node $NODE is '$st': resuming it"
    scontrol update nodename="$NODE" state=resume || true
    resumed=1
  fi
  sleep 0.5
done
node_ok || die "node $NODE not usable after ${WAIT}s (state '$(node_state)'; $(scontrol show node "$NODE" 2>&1 | grep -o 'Reason=.*' || true))"
log "node $NODE: $(node_state)"

# slurmctld must be registered with slurmdbd (ControlHost set), otherwise job
# records never reach sacct.
ctld_registered() {
  [[ -n $(sacctmgr -n -P show cluster "$CLUSTER" format=controlhost 2>/dev/null | tr -d '[:space:]') ]]
}
wait_for "slurmctld registration with slurmdbd" ctld_registered

echo
echo "---- sinfo ----"
sinfo
echo "---- sacctmgr show cluster ----"
sacctmgr show cluster format=cluster,controlhost,controlport,rpc
echo
log "SLURM cluster '$CLUSTER' is up (partition '$PARTITION', state in $DIR, logs in $DIR/log) in $(elapsed) s"
