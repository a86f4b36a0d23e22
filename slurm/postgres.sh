#!/usr/bin/env bash
# `postgres.sh start|stop`: a private PostgreSQL server for the MLflow tracking store (tests, CI, or a service node with
# no database of its own). Idempotent. Data, socket, log and a pgpass file live in $MASKSAE_PG_DIR (default
# /var/tmp/masksae-postgres); it listens on $MASKSAE_PG_LISTEN (127.0.0.1; a cluster needs an address the MLflow
# server's host reaches) port $MASKSAE_PG_PORT (55432). Role and database `masksae` get a generated password, kept only
# in the pgpass file (mode 600): the store URI carries no password, clients find it through PGPASSFILE. As root the
# server runs as the `postgres` system user (installing Debian's postgresql if missing); otherwise as the current user.
set -euo pipefail
DIR=${MASKSAE_PG_DIR:-/var/tmp/masksae-postgres}
LISTEN=${MASKSAE_PG_LISTEN:-127.0.0.1}
PORT=${MASKSAE_PG_PORT:-55432}
NAME=masksae
log() { echo "[postgres] $*"; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

SUPERUSER=$([[ $(id -u) -eq 0 ]] && echo postgres || id -un)  # peer authentication on the socket: OS user = role

as_owner() {  # run a command as the server's owner
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_server() {
  [[ -n $(pg_bin) ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "[postgres] error: PostgreSQL is not installed and this is not root: install Debian's postgresql" >&2; exit 3
  fi
  log "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends postgresql >/dev/null; }
}

store_uri() { echo "postgresql://$NAME@$LISTEN:$PORT/$NAME"; }

start() {
  install_server
  local bin; bin=$(pg_bin)
  mkdir -p "$DIR"/{data,run,log}
  if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$DIR"/{data,run,log}; fi
  if [[ ! -f $DIR/data/PG_VERSION ]]; then
    local superpass; superpass=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    ( umask 077; echo "$superpass" > "$DIR/run/superpass" )
    if [[ $(id -u) -eq 0 ]]; then chown postgres "$DIR/run/superpass"; fi
    as_owner "$bin/initdb" -D "$DIR/data" -U "$SUPERUSER" --auth-local=peer --auth-host=scram-sha-256 \
      --pwfile="$DIR/run/superpass" -E UTF8 >/dev/null
    rm -f "$DIR/run/superpass"
  fi
  if ! as_owner "$bin/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    as_owner "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/log/postgres.log" -w -t 60 \
      -o "-p $PORT -k $DIR/run -c listen_addresses=$LISTEN -c max_connections=200" start >/dev/null \
      || { echo "[postgres] error: the server did not start; $DIR/log/postgres.log says:" >&2; tail -5 "$DIR/log/postgres.log" >&2; exit 1; }
  fi
  if [[ ! -f $DIR/pgpass ]]; then
    local password; password=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    as_owner psql -h "$DIR/run" -p "$PORT" -U "$SUPERUSER" -d postgres -q -v ON_ERROR_STOP=1 \
      -c "DROP DATABASE IF EXISTS $NAME" -c "DROP ROLE IF EXISTS $NAME" \
      -c "CREATE ROLE $NAME LOGIN PASSWORD '$password'" -c "CREATE DATABASE $NAME OWNER $NAME" >/dev/null
    ( umask 077; echo "$LISTEN:$PORT:$NAME:$NAME:$password" > "$DIR/pgpass.tmp" && mv "$DIR/pgpass.tmp" "$DIR/pgpass" )
  fi
  log "serving $(store_uri) (data $DIR/data)"
  echo "export MLFLOW_STORE=$(store_uri) PGPASSFILE=$DIR/pgpass"
}

stop() {
  local bin; bin=$(pg_bin)
  [[ -n $bin && -f $DIR/data/PG_VERSION ]] || { log "not set up in $DIR"; return 0; }
  as_owner "$bin/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1 || { log "not running"; return 0; }
  as_owner "$bin/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null
  log "stopped"
}

case ${1:-start} in
  start) start ;;
  stop) stop ;;
  uri) store_uri ;;
  *) echo "usage: $0 start|stop|uri" >&2; exit 2 ;;
esac
