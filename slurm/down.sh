#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by slurm/up.sh (slurmd, slurmctld, slurmdbd, MariaDB), by pid file,
# waiting for each daemon to exit. Job state and accounting stay in $MASKSAE_SLURM_DIR; munged is left running.
set -uo pipefail
DIR=${MASKSAE_SLURM_DIR:-/var/tmp/masksae-slurm}

stop() {  # stop NAME PIDFILE
  local pidfile=$2 pid
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { echo "[slurm-down] $1 ($pid) ignored SIGTERM for 30 s: SIGKILL"; kill -KILL "$pid"; }
    echo "[slurm-down] stopped $1 ($pid)"
  fi
  rm -f "$pidfile"
}

stop slurmd "$DIR/run/slurmd.pid"
stop slurmctld "$DIR/run/slurmctld.pid"
stop slurmdbd "$DIR/run/slurmdbd.pid"
stop mariadb "$DIR/mysql-run/mysqld.pid"
