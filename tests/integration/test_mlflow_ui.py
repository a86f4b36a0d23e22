"""`make mlflow-ui` serves a real MLflow server on 127.0.0.1 that lists the runs of a store."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_make_mlflow_ui_serves_the_store(repo_root, tmp_path) -> None:
    store = f"sqlite:///{tmp_path / 'ui.db'}"
    client = MlflowClient(tracking_uri=store)
    experiment_id = client.create_experiment("ui-test", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment_id, run_name="listed")
    client.log_metric(run.info.run_id, "core/explained_variance", 0.5)
    client.set_terminated(run.info.run_id)
    port = _free_port()
    server = subprocess.Popen(
        ["make", "-s", "mlflow-ui", f"MLFLOW_PORT={port}", f"MLFLOW_STORE={store}", f"MLFLOW_ARTIFACTS={tmp_path / 'artifacts'}"],
        cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    os.killpg(server.pid, signal.SIGTERM)  # a server still starting would keep stderr open for ever
                    pytest.fail(f"mlflow-ui did not come up in 120 s: {server.communicate(timeout=30)[1].decode()[-2000:]}")
                time.sleep(1)
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.load(response)["runs"]
        assert [r["info"]["run_name"] for r in runs] == ["listed"]
        with urllib.request.urlopen(f"{base}/", timeout=10) as response:
            assert response.status == 200 and b"<html" in response.read(2000).lower()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
