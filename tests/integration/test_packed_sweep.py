"""A real packed sweep from the command line: two SAEs trained in one job from one activation stream, two MLflow runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from masksae.tracking import run_key

pytestmark = pytest.mark.slow

OVERRIDES = ["mask_prob=0", "debug=smoke", "eval.evals=[core]", "tracking.experiment=pack-test"]


def test_a_pack_trains_its_members_in_one_job_each_in_its_own_run(session_env, repo_root, mlflow_uri, make_cfg) -> None:
    command = [sys.executable, "-m", "train", "-m", "sae=topk,jumprelu", "hydra.sweeper.pack_size=2", *OVERRIDES]
    done = subprocess.run(command, cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Launching 1 jobs locally" in done.stdout + done.stderr  # one job for both grid points
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs(client.get_experiment_by_name("pack-test").experiment_id)
    assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}
    assert {run.data.params["sae.architecture"] for run in runs} == {"topk", "jumprelu"}
    # the same run keys as unpacked points: a later unpacked launch skips them
    assert {run.data.tags["run_key"] for run in runs} == {run_key(make_cfg(f"sae={a}", *OVERRIDES)) for a in ("topk", "jumprelu")}
    (pack,) = {run.data.tags["pack"] for run in runs}
    assert (Path(pack) / "checkpoints" / "last.ckpt").is_file()
    histories = [[m.value for m in client.get_metric_history(run.info.run_id, "train/mse")] for run in runs]
    assert all(len(history) >= 3 for history in histories) and histories[0] != histories[1]
    for run in runs:
        assert 0.0 < run.data.metrics["core/explained_variance"] <= 1.0
        assert {"sae/cfg.json", "sae/sae_weights.safetensors"} == {a.path for a in client.list_artifacts(run.info.run_id, "sae")}
    again = subprocess.run([sys.executable, "-m", "train", "-m", "sae=topk,jumprelu", *OVERRIDES], cwd=repo_root, env=session_env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("already FINISHED") == 2
