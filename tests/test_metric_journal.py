"""The metric journal against a real MLflow store: every metric arrives once, an unreachable server keeps them in the
journal for the next attempt, a resumed job does not log a step twice, a torn last line is cut off."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from mlflow import MlflowClient

from masksae.metric_journal import MetricJournal


def _history(client: MlflowClient, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


@pytest.fixture()
def run(mlflow_uri: str) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("journal") or client.get_experiment(client.create_experiment("journal"))
    return client, client.create_run(experiment.experiment_id).info.run_id


def test_metrics_arrive_once_and_a_resumed_job_does_not_log_a_step_twice(run, tmp_path: Path) -> None:
    client, run_id = run
    journal = MetricJournal(tmp_path / "metrics.jsonl", client, run_id)
    for step in range(4, 50, 5):
        journal.append({"train/loss": 1.0 / (step + 1), "train/l0": 64.0}, step)
    assert journal.close(timeout_s=60) == 0
    # a resumed job recomputes steps 24..49 from its checkpoint (same values), then goes on
    again = MetricJournal(tmp_path / "metrics.jsonl", client, run_id)
    for step in range(24, 80, 5):
        again.append({"train/loss": 1.0 / (step + 1), "train/l0": 64.0}, step)
    assert again.close(timeout_s=60) == 0
    assert _history(client, run_id, "train/loss") == [(step, 1.0 / (step + 1)) for step in range(4, 80, 5)]
    assert [s for s, _ in _history(client, run_id, "train/l0")] == list(range(4, 80, 5))


def test_unreachable_server_keeps_metrics_for_the_next_attempt(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, run_id = run
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as sock:  # a port nobody listens on: a real connection refusal
        sock.bind(("127.0.0.1", 0))
        dead = MlflowClient(tracking_uri=f"http://127.0.0.1:{sock.getsockname()[1]}")
    down = MetricJournal(tmp_path / "metrics.jsonl", dead, run_id)
    for step in range(3):
        down.append({"train/loss": float(step)}, step)
    assert down.close(timeout_s=2) > 0  # the job ends (or is killed) before the server is back
    assert client.get_metric_history(run_id, "train/loss") == []
    with open(tmp_path / "metrics.jsonl", "a") as torn:  # a kill in the middle of a line
        torn.write('{"step": 3, "timestamp": 1, "met')
    back = MetricJournal(tmp_path / "metrics.jsonl", client, run_id)
    back.append({"train/loss": 3.0}, 3)
    assert back.close(timeout_s=60) == 0
    assert _history(client, run_id, "train/loss") == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0)]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1, 2, 3]
