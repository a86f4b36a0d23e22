"""The cluster tracking server (slurm/mlflow-server.sh over PostgreSQL, basic auth, reached by host name): who it
refuses, and a training job that lives through a server restart without losing or repeating a metric."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from masksae.launch.server import api_status

pytestmark = pytest.mark.slow


def test_server_answers_by_host_name_with_credentials_and_refuses_the_rest(tracking_server) -> None:
    url, env = tracking_server.url, tracking_server.env
    user, password = env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]
    assert api_status(url, (user, password)) == 200
    assert api_status(url, None) == 401  # no credentials
    assert api_status(url, (user, password + "x")) == 401
    port = url.rsplit(":", 1)[1]
    assert api_status(url, (user, password), host_header=f"login1:{port}") == 403  # a name the server was not told
    store = tracking_server.script_env["MLFLOW_STORE"]
    assert store.startswith("postgresql://") and ":" not in store.split("//", 1)[1].split("@", 1)[0]  # no password in it


def _journal_lines(folder: Path) -> int:
    journals = list(folder.glob("runs/*/metrics.jsonl"))
    return sum(1 for _ in journals[0].open()) if journals else 0


def test_a_job_lives_through_a_server_restart_without_losing_or_repeating_a_metric(tracking_server, test_cache, tmp_path, repo_root) -> None:
    """Training-only (eval.evals=[]) smoke job of 30 epochs (690 steps, metrics every 5): the server is stopped while
    it trains and started again after 10 s. The job goes on training meanwhile, then sends what waited."""
    env = {**tracking_server.script_env, **tracking_server.env, "MASKSAE_CACHE": str(test_cache),
           "MASKSAE_OUTPUT_DIR": str(tmp_path / "outputs"), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "train", "debug=smoke", "eval.evals=[]", "training.epochs=30", "tracking.experiment=restart"]
    with open(tmp_path / "job.log", "w") as log:
        job = subprocess.Popen(command, cwd=repo_root, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = MlflowClient(tracking_uri=tracking_server.url)
    deadline = time.monotonic() + 600
    while _journal_lines(tmp_path / "outputs") < 5:  # training, and its first metrics reached the server
        assert job.poll() is None and time.monotonic() < deadline, (tmp_path / "job.log").read_text()[-3000:]
        time.sleep(0.2)
    tracking_server.stop()
    lines_when_stopped = _journal_lines(tmp_path / "outputs")
    time.sleep(10)
    lines_while_down = _journal_lines(tmp_path / "outputs")
    tracking_server.start()
    assert job.wait(timeout=600) == 0, (tmp_path / "job.log").read_text()[-3000:]
    assert lines_while_down > lines_when_stopped  # training went on while the server was down
    (run,) = client.search_runs([client.get_experiment_by_name("restart").experiment_id])
    assert run.info.status == "FINISHED"
    expected = list(range(4, 690, 5))  # Lightning logs every 5 optimizer steps (global step 4, 9, ...)
    for name in ("train/loss", "train/mse", "train/l0"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert sorted(steps) == expected, name  # none lost, none twice
    print(f"metrics expected {len(expected)} / logged {len(steps)}; journal lines: {lines_when_stopped} at stop, "
          f"{lines_while_down} 10 s later")
