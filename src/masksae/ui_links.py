"""Addresses in the MLflow UI that open where a person wants to look: the model-training view of an experiment, its runs
table with the headline metrics as columns (a view stored in the experiment as MLflow's "shared view"), a run's page."""

from __future__ import annotations

import json

HEADLINE_METRICS = (
    "core/l0", "core/explained_variance", "core/ce_loss_recovered", "absorption/mean_full_absorption_score",
    "absorption/mean_absorption_fraction_score", "absorption/n_letters", "sparse_probing/sae_top_1_test_accuracy",
    "sparse_probing/llm_test_accuracy", "ood/sae_auc_ood", "ood/gap_to_dense",
)
RUNS_VIEW_PARAMS = ("model.name", "layer", "sae.architecture", "mask_prob", "seed")
RUNS_VIEW_KEY = "masksae-runs"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"  # MLflow 3's UI reads `?viewStateShareKey=<key>` from this tag
MODEL_TRAINING = "workflowType=machine_learning"  # MLflow 3's UI opens in its GenAI view unless told otherwise
LOCAL_UI = "http://127.0.0.1:5000"  # `make mlflow-ui` over the default store


def runs_view_state() -> str:
    """The runs table as masksae shows it: the grid's parameters and the headline metrics as columns, newest first."""
    columns = [f"params.`{name}`" for name in RUNS_VIEW_PARAMS] + [f"metrics.`{name}`" for name in HEADLINE_METRICS]
    return json.dumps({"selectedColumns": columns, "orderByKey": "attributes.start_time", "orderByAsc": False}, sort_keys=True)


def ui_address(tracking_uri: str) -> str | None:
    """The UI's address when the store is an MLflow server (its UI is served at the same address), else None."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else None


def experiment_link(address: str, experiment_id: str) -> str:
    """The experiment's runs table in the model-training view, headline metrics as columns."""
    return f"{address}/#/experiments/{experiment_id}/runs?viewStateShareKey={RUNS_VIEW_KEY}&{MODEL_TRAINING}"


def run_link(address: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """A run's page in the model-training view: its overview, or `tab` ("artifacts", "model-metrics", ...)."""
    return f"{address}/#/experiments/{experiment_id}/runs/{run_id}{f'/{tab}' if tab else ''}?{MODEL_TRAINING}"
