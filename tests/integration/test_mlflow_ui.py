"""`make mlflow-ui` serves a real MLflow server on 127.0.0.1 that lists the runs of a store."""

from __future__ import annotations

import json
import urllib.request

import pytest
from mlflow import MlflowClient

from tests.ui import mlflow_ui

pytestmark = pytest.mark.slow


def test_make_mlflow_ui_serves_the_store(repo_root, tmp_path) -> None:
    store = f"sqlite:///{tmp_path / 'ui.db'}"
    client = MlflowClient(tracking_uri=store)
    experiment_id = client.create_experiment("ui-test", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment_id, run_name="listed")
    client.log_metric(run.info.run_id, "core/explained_variance", 0.5)
    client.set_terminated(run.info.run_id)
    with mlflow_ui(repo_root, store, tmp_path / "artifacts") as base:
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.load(response)["runs"]
        assert [r["info"]["run_name"] for r in runs] == ["listed"]
        with urllib.request.urlopen(f"{base}/", timeout=10) as response:
            assert response.status == 200 and b"<html" in response.read(2000).lower()
