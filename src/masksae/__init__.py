"""masksae: sparse autoencoders trained with masked regularization, swept with Hydra and tracked in MLflow."""

import os

__version__ = "0.1.0"

# MLflow's usage telemetry phones home (cluster nodes are often offline) and sets and unsets an environment variable
# from background threads, racing the logging threads of a job: with 16 concurrent jobs a log-batch call failed with
# KeyError '_MLFLOW_TELEMETRY_SESSION_ID'. Off unless the user turns it on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
