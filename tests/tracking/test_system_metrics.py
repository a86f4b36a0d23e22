"""MLflow system metrics: sampled into an open run by MLflow's own monitor (real sqlite store), none when turned off."""

from __future__ import annotations

import time
from pathlib import Path

from mlflow import MlflowClient

from masksae.system_metrics import system_metrics


def _run(uri: str) -> str:
    client = MlflowClient(tracking_uri=uri)
    return client.create_run(client.create_experiment("system-metrics")).info.run_id


def test_an_open_run_gets_cpu_and_memory_samples(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = _run(uri)
    with system_metrics(run_id, uri, 1, resumed=False):
        time.sleep(3.5)
    metrics = MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics), sorted(metrics)
    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert len(history) >= 2 and 0 <= history[-1].value <= 100 * 64


def test_no_samples_when_turned_off(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = _run(uri)
    with system_metrics(run_id, uri, None, resumed=False):
        time.sleep(1.5)
    assert not MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics
