#!/usr/bin/env bash
# `mlflow-server.sh start|stop|check`: the MLflow tracking server sweep jobs log to, in the background
# (python -m masksae.launch.server). Environment:
#   MLFLOW_HOST           the name compute nodes use to reach this host (default: its full host name)
#   MLFLOW_BIND           the interface to listen on (default 0.0.0.0)
#   MLFLOW_PORT           port (5000)
#   MLFLOW_STORE          backend store: postgresql://user@dbhost:port/db (cluster; password from PGPASSFILE or
#                         ~/.pgpass) or sqlite:///path (one machine)
#   MLFLOW_ARTIFACTS      artifact folder, served through the server
#   MLFLOW_ALLOWED_HOSTS  more Host headers to accept (comma-separated) besides this host's names and addresses
#   MLFLOW_AUTH           on (default: MLflow's basic-auth app) or off
#   MLFLOW_SERVER_DIR     pid, log, auth database and secrets (default outputs/mlflow-server)
# Credentials: MLFLOW_TRACKING_USERNAME/PASSWORD from the environment, else ~/.mlflow/credentials (generated there,
# mode 600, when neither exists); jobs read the same, never a command line. The start waits for an authenticated
# experiments search through http://$MLFLOW_HOST:$MLFLOW_PORT, the way a compute node calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PY:-.venv/bin/python}" -m masksae.launch.server "${1:-start}"
