#!/usr/bin/env bash
# A real SLURM cluster, with accounting, on the machine this runs on: one node (or two, sharing
# the machine's cores: EXPERIMENTS_SLURM_NODES=2) that the tests marked `slurm` run against
# (tests/e2e/test_slurm.py) and a person can try the SLURM launcher on.
#   bash scripts/slurm_cluster.sh start    # installs the Debian packages if missing, starts the daemons
#   bash scripts/slurm_cluster.sh status   # each daemon's state, then sinfo
#   bash scripts/slurm_cluster.sh env      # `export SLURM_CONF=...`: eval it to use the cluster
#   bash scripts/slurm_cluster.sh stop     # stops the daemons this script started (by their pid files)
# Root only (it starts daemons and may apt-get install). Debian's slurm-wlm 22.05 with munge, and
# slurmdbd on its own MariaDB for accounting (submitit reads job states from sacct). No systemd is
# needed: every daemon is started directly and stopped by its pid file.
#
# It never touches a real cluster: everything it writes (slurm.conf, slurmdbd.conf, the database,
# spool, logs, pid files) lives under the state dir, the commands find it through SLURM_CONF, and
# its daemons listen on their own ports (EXPERIMENTS_SLURM_PORT and the next three), so
# /etc/slurm and the default ports stay as they are. A munged already running is used as it is
# (and left running); one it starts, it stops. `start` is idempotent: daemons already up are kept.
#
# Environment: EXPERIMENTS_SLURM_STATE (the state dir, default /var/tmp/experiments-slurm),
# EXPERIMENTS_SLURM_PORT (default 16817: slurmctld; +1 slurmd, +2 slurmdbd, +3 MariaDB; a second
# node's slurmd +11),
# EXPERIMENTS_SLURM_PARTITION (default debug), EXPERIMENTS_SLURM_NODES (1 or 2: two nodes named
# <host>-n1 and <host>-n2, each with half the CPUs and memory, one slurmd each on its own port;
# their names go into /etc/hosts, since Lightning takes MASTER_ADDR from the first node's name).
# Changing it restarts slurmctld and slurmd.
set -euo pipefail
# The daemons started below inherit this shell's open files: close all but stdin/out/err (and the
# script itself, 255), so that no daemon holds a caller's pipe open after `start` has returned.
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  if [ "$fd" -gt 2 ] && [ "$fd" != 255 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done

STATE=${EXPERIMENTS_SLURM_STATE:-/var/tmp/experiments-slurm}
PORT=${EXPERIMENTS_SLURM_PORT:-16817}
PARTITION=${EXPERIMENTS_SLURM_PARTITION:-debug}
HOST=$(hostname -s)
NNODES=${EXPERIMENTS_SLURM_NODES:-1}
if [ "$NNODES" = 1 ]; then
  NODES=("$HOST")  # the node's name: this host's own, so that it resolves (Lightning's MASTER_ADDR is one)
else
  NODES=()
  for i in $(seq "$NNODES"); do NODES+=("$HOST-n$i"); done
fi
NODE=${NODES[0]}
CTLD_PORT=$PORT SLURMD_PORT=$((PORT + 1)) DBD_PORT=$((PORT + 2)) DB_PORT=$((PORT + 3))
export SLURM_CONF=$STATE/etc/slurm.conf
PIDS=$STATE/pids
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

say() { echo "slurm_cluster: $*"; }
die() { echo "slurm_cluster: error: $*" >&2; exit 2; }

alive() {  # alive <pid file>: the process it names is running
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

need_root() {
  [ "$(uname -s)" = Linux ] || die "a Linux machine is needed (this is $(uname -s))"
  [ "$(id -u)" = 0 ] || die "run as root: it starts daemons (and may apt-get install ${PACKAGES[*]})"
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return
  command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get to install them"
  say "installing ${missing[*]} (apt-get)"
  apt-get update -qq >/dev/null
  # the packages' own start scripts are refused where there is no init system; that is fine
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

foreign_slurmctld() {  # the pid of a slurmctld this script did not start, if any
  local mine="" pid
  alive "$PIDS/slurmctld.pid" && mine=$(cat "$PIDS/slurmctld.pid")
  for pid in $(pgrep -x slurmctld 2>/dev/null || true); do
    [ "$pid" != "$mine" ] && { echo "$pid"; return; }
  done
  return 0
}

write_config() {
  mkdir -p "$STATE"/{etc,pids,log,ctld,slurmd,db}
  chmod 755 "$STATE"
  # CPUs, sockets and memory as slurmd sees them; memory a little under the machine's, for the OS
  local hw cpus mem
  hw=$(slurmd -C | head -1)
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$((mem * 9 / 10 / NNODES))
  local topo nodelines="" i=0 n
  topo=$(grep -o 'Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' <<<"$hw")
  if [ "$NNODES" != 1 ]; then  # the machine's cores shared out: each node one socket of cpus/n cores
    cpus=$((cpus / NNODES))
    topo="Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1"
  fi
  for n in "${NODES[@]}"; do
    nodelines+="NodeName=$n NodeHostname=$HOST Port=$((SLURMD_PORT + 10 * i)) CPUs=$cpus $topo RealMemory=$mem State=UNKNOWN"$'\n'
    i=$((i + 1))
  done
  cat >"$STATE/etc/slurm.conf.new" <<EOF
# Written by scripts/slurm_cluster.sh: a one-node test cluster on $HOST (state in $STATE).
ClusterName=experiments
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: how long a requeued job waits before it may start again (Slurm's default 120 s)
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd/%n
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
${nodelines}PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$STATE/etc/slurmdbd.conf.new" <<EOF
# Written by scripts/slurm_cluster.sh: accounting for the test cluster, in its own MariaDB.
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm-test-cluster
StorageLoc=slurm_acct_db
PidFile=$PIDS/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
  local f changed=0
  for f in slurm.conf slurmdbd.conf; do
    if ! cmp -s "$STATE/etc/$f.new" "$STATE/etc/$f"; then
      mv "$STATE/etc/$f.new" "$STATE/etc/$f"
      changed=1
    else
      rm "$STATE/etc/$f.new"
    fi
  done
  chmod 600 "$STATE/etc/slurmdbd.conf"  # slurmdbd refuses a readable one (it holds the db password)
  if [ "$changed" = 1 ] && { alive "$PIDS/slurmctld.pid" || ls "$PIDS"/slurmd-*.pid >/dev/null 2>&1; }; then
    say "configuration changed: restarting slurmctld and slurmd"
    for f in "$PIDS"/slurmd-*.pid; do [ -e "$f" ] && stop_pid "$f" "$(basename "$f" .pid)"; done
    stop_pid "$PIDS/slurmctld.pid" slurmctld
  fi
}

wait_for() {  # wait_for <seconds> <what> <command...>
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$what did not come up within ${seconds}s (logs: $STATE/log/)"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return  # a munged is running (ours or the machine's): use it
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  # (no inherited stdout: a daemon holding a caller's pipe open would make `start | ...` wait for ever)
  runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1
  wait_for 10 munged bash -c 'munge -n | unmunge'
  cp /run/munge/munged.pid "$PIDS/munged.pid"  # ours: `stop` stops it
}

db() { mariadb --socket="$STATE/db/mysqld.sock" -u root "$@"; }

start_mariadb() {
  alive "$PIDS/mariadbd.pid" && return
  if [ ! -d "$STATE/db/data/mysql" ]; then
    mkdir -p "$STATE/db/data"
    chown -R mysql:mysql "$STATE/db"
    mariadb-install-db --user=mysql --datadir="$STATE/db/data" --auth-root-authentication-method=socket \
      >"$STATE/log/mariadb-install.log" 2>&1
  fi
  chown -R mysql:mysql "$STATE/db"
  # its own session, every stream redirected: nothing of it waits on, or holds, the caller's pipes
  setsid nohup /usr/sbin/mariadbd --user=mysql --datadir="$STATE/db/data" \
    --socket="$STATE/db/mysqld.sock" --pid-file="$STATE/db/mariadbd.pid" --port="$DB_PORT" \
    --bind-address=127.0.0.1 --skip-name-resolve --innodb-buffer-pool-size=64M \
    --log-error="$STATE/db/mariadb.log" </dev/null >/dev/null 2>&1 &  # its files in db/, which it owns
  wait_for 30 mariadbd db -e "select 1"
  cp "$STATE/db/mariadbd.pid" "$PIDS/mariadbd.pid"
  db <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm-test-cluster';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
}

start_daemon() {  # start_daemon <pid file> <name> <command...>
  local pidfile=$1 name=$2
  shift 2
  alive "$pidfile" && return
  rm -f "$pidfile"
  "$@" </dev/null >>"$STATE/log/$name.start.log" 2>&1 || die "$name did not start (see $STATE/log/)"
  wait_for 20 "$name" test -s "$pidfile"
}

node_idle() {  # every node up
  [ "$(sinfo -h -N -o %t | grep -cE '^(idle|mix|alloc)')" -ge "$NNODES" ]
}

hosts_entries() {  # the nodes' names resolve to this machine (only when they are not its own name)
  [ "$NNODES" = 1 ] && return
  local n
  for n in "${NODES[@]}"; do
    getent hosts "$n" >/dev/null || echo "127.0.0.1 $n  # scripts/slurm_cluster.sh" >>/etc/hosts
  done
}

start() {
  need_root
  local other
  other=$(foreign_slurmctld)
  [ -z "$other" ] || die "a slurmctld this script did not start is running (pid $other): this script leaves a real cluster alone; use that one (its partition: hydra.launcher.partition=...) or stop it first"
  install_packages
  write_config
  start_munge
  start_mariadb
  start_daemon "$PIDS/slurmdbd.pid" slurmdbd /usr/sbin/slurmdbd
  wait_for 30 slurmdbd sacctmgr -i show cluster
  start_daemon "$PIDS/slurmctld.pid" slurmctld /usr/sbin/slurmctld
  hosts_entries
  local n
  for n in "${NODES[@]}"; do
    start_daemon "$PIDS/slurmd-$n.pid" "slurmd-$n" /usr/sbin/slurmd -N "$n"
  done
  wait_for 30 "nodes ${NODES[*]}" node_idle
  say "up: partition $PARTITION, $(sinfo -h -N -o '%N (%c CPUs, %m MB)' | paste -sd, -); SLURM_CONF=$SLURM_CONF"
}

stop_pid() {  # stop_pid <pid file> <name>: TERM, then KILL after 20 s
  local pidfile=$1 name=$2 pid
  alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; say "stopped $name"; return 0; }
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  say "stopped $name (killed)"
}

stop() {
  [ -d "$PIDS" ] || { say "nothing to stop ($STATE does not exist)"; return 0; }
  for pidfile in "$PIDS"/slurmd-*.pid; do
    [ -e "$pidfile" ] && stop_pid "$pidfile" "$(basename "$pidfile" .pid)"
  done
  stop_pid "$PIDS/slurmctld.pid" slurmctld
  stop_pid "$PIDS/slurmdbd.pid" slurmdbd
  stop_pid "$PIDS/mariadbd.pid" mariadbd
  stop_pid "$PIDS/munged.pid" munged  # only one this script started has its pid file here
  if grep -q '# scripts/slurm_cluster.sh$' /etc/hosts 2>/dev/null; then  # the two-node names it added
    grep -v '# scripts/slurm_cluster.sh$' /etc/hosts >"$STATE/hosts.new" || true
    cat "$STATE/hosts.new" >/etc/hosts  # in place: /etc/hosts may be a bind mount
    rm -f "$STATE/hosts.new"
  fi
  return 0
}

status() {
  local name rc=0
  for name in munged mariadbd slurmdbd slurmctld $(for n in "${NODES[@]}"; do echo "slurmd-$n"; done); do
    if alive "$PIDS/$name.pid"; then
      echo "$name: running (pid $(cat "$PIDS/$name.pid"))"
    elif [ "$name" = munged ] && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
      echo "munged: running (not started by this script)"
    else
      echo "$name: stopped"
      rc=3
    fi
  done
  [ "$rc" = 0 ] && sinfo
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
