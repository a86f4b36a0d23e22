#!/usr/bin/env bash
# `mlflow-server.sh start|stop`: a shared MLflow tracking server for sweeps, in the background.
# Creates the store's schema once (one process) before the server starts, so parallel jobs never race on a fresh
# database; jobs log through http://$MLFLOW_HOST:$MLFLOW_PORT. Environment: MLFLOW_STORE (sqlite:///... or
# postgresql://...), MLFLOW_ARTIFACTS (folder), MLFLOW_HOST (127.0.0.1; a cluster needs an address compute nodes
# reach), MLFLOW_PORT, MLFLOW_SERVER_DIR (pid and log).
set -euo pipefail
PY=${PY:-.venv/bin/python}
HOST=${MLFLOW_HOST:-127.0.0.1}
PORT=${MLFLOW_PORT:-5000}
STORE=${MLFLOW_STORE:-sqlite:///$PWD/mlflow.db}
ARTIFACTS=${MLFLOW_ARTIFACTS:-$PWD/mlartifacts}
STATE=${MLFLOW_SERVER_DIR:-$PWD/outputs/mlflow-server}
PIDFILE=$STATE/server-$PORT.pid
URL=http://$HOST:$PORT

healthy() { "$PY" -c "import urllib.request, sys; urllib.request.urlopen('$URL/health', timeout=2)" 2>/dev/null; }

case ${1:-start} in
  start)
    if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && healthy; then
      echo "[mlflow-server] already serving $URL (pid $(cat "$PIDFILE"))"; exit 0
    fi
    mkdir -p "$STATE" "$ARTIFACTS"
    "$PY" -c "from mlflow import MlflowClient; MlflowClient(tracking_uri='$STORE').search_experiments()" 2>/dev/null
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$(dirname "$PY")/mlflow" server --host "$HOST" --port "$PORT" \
      --workers 1 --backend-store-uri "$STORE" --artifacts-destination "$ARTIFACTS" \
      >"$STATE/server-$PORT.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    for _ in $(seq 240); do
      healthy && { echo "[mlflow-server] serving $URL (store $STORE, pid $(cat "$PIDFILE")); export MLFLOW_TRACKING_URI=$URL"; exit 0; }
      kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
      sleep 0.5
    done
    echo "[mlflow-server] error: no answer on $URL/health; log: $STATE/server-$PORT.log" >&2; tail -5 "$STATE/server-$PORT.log" >&2; exit 1 ;;
  stop)
    [[ -f $PIDFILE ]] || { echo "[mlflow-server] not running on port $PORT"; exit 0; }
    pid=$(cat "$PIDFILE")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    rm -f "$PIDFILE"; echo "[mlflow-server] stopped (pid $pid)" ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
