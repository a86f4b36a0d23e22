#!/usr/bin/env bash
# Start a single-node SLURM cluster with accounting (munge, MariaDB, slurmdbd, slurmctld, slurmd) on this machine.
# Idempotent: installs the Debian packages if missing, reuses running daemons. Needs root (or everything already
# installed and running). Config and state live in $MASKSAE_SLURM_DIR (default /var/tmp/masksae-slurm); use the
# cluster with `export SLURM_CONF=$MASKSAE_SLURM_DIR/etc/slurm.conf` (printed at the end).
set -euo pipefail
DIR=${MASKSAE_SLURM_DIR:-/var/tmp/masksae-slurm}
export SLURM_CONF=$DIR/etc/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
log() { echo "[slurm-up] $*"; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "[slurm-up] error: $what did not come up within ${seconds}s (logs in $DIR/log)" >&2; exit 1
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "[slurm-up] error: packages missing (${missing[*]}) and not root: install them or run as root" >&2; exit 3
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
}

write_configs() {
  mkdir -p "$DIR"/{etc,log,state,spool,run,mysql,mysql-run}
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat > "$DIR/etc/slurm.conf" <<CONF
ClusterName=masksae
SlurmctldHost=localhost
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmdSpoolDir=$DIR/spool
StateSaveLocation=$DIR/state
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
KillWait=5
MinJobAge=600
JobRequeue=1
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
# Jobs share cores (up to 16 per core): many small concurrent jobs on one machine, as a cluster runs them on many nodes.
PartitionName=shared Nodes=localhost Default=NO MaxTime=INFINITE State=UP OverSubscribe=FORCE:16
CONF
  cat > "$DIR/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=masksae
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$DIR/etc/slurmdbd.conf"
  chown mysql:mysql "$DIR/mysql" "$DIR/mysql-run"
}

start_munge() {
  pgrep -x munged >/dev/null && return 0
  mkdir -p /run/munge && chown munge:munge /run/munge
  [[ -f /etc/munge/munge.key ]] || { /usr/sbin/mungekey --create 2>/dev/null || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 munged munge -n
}

start_mariadb() {
  if ! mysqladmin --protocol=tcp -h 127.0.0.1 -P 3306 -u slurm -pmasksae ping >/dev/null 2>&1; then
    if [[ ! -d $DIR/mysql/mysql ]]; then
      mariadb-install-db --user=mysql --datadir="$DIR/mysql" --auth-root-authentication-method=socket >/dev/null
    fi
    runuser -u mysql -- mariadbd --datadir="$DIR/mysql" --bind-address=127.0.0.1 --port=3306 \
      --socket="$DIR/mysql-run/mysqld.sock" --pid-file="$DIR/mysql-run/mysqld.pid" \
      --log-error="$DIR/mysql-run/error.log" --skip-name-resolve >/dev/null 2>&1 &
    wait_for 30 mariadb mysqladmin --socket="$DIR/mysql-run/mysqld.sock" ping
    mysql --socket="$DIR/mysql-run/mysqld.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'masksae';
      GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  fi
}

start_slurm() {
  alive "$DIR/run/slurmdbd.pid" || { slurmdbd;  # reads slurmdbd.conf beside $SLURM_CONF
    wait_for 30 slurmdbd sacctmgr -i list cluster; }
  sacctmgr -i list cluster -n -P format=cluster | grep -qx masksae || sacctmgr -i add cluster masksae >/dev/null
  alive "$DIR/run/slurmctld.pid" || { slurmctld; wait_for 30 slurmctld scontrol ping; }
  alive "$DIR/run/slurmd.pid" || slurmd -N localhost
  wait_for 30 "node localhost" bash -c "sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'"
}

install_packages
write_configs
start_munge
start_mariadb
start_slurm
log "cluster up: $(sinfo -h -N -o '%N %t %c CPUs %m MB')"
echo "export SLURM_CONF=$SLURM_CONF"
