"""A real Hydra multirun grid from the command line: every grid point one FINISHED, fully evaluated MLflow run, one shared sweep id."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow


def test_multirun_grid_logs_one_finished_run_per_point(session_env, repo_root, mlflow_uri) -> None:
    command = [sys.executable, "-m", "train", "-m", "mask_prob=0,0.2", "sae=topk,jumprelu", "debug=smoke", "tracking.experiment=grid-test"]
    done = subprocess.run(command, cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stderr[-4000:]
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs(client.get_experiment_by_name("grid-test").experiment_id)
    assert len(runs) == 4
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert len({run.data.tags["sweep_id"] for run in runs}) == 1
    assert len({run.data.tags["run_key"] for run in runs}) == 4
    points = {(run.data.params["mask_prob"], run.data.params["sae.architecture"]) for run in runs}
    assert points == {("0", "topk"), ("0", "jumprelu"), ("0.2", "topk"), ("0.2", "jumprelu")}
    for run in runs:
        assert "core/explained_variance" in run.data.metrics and "core/ce_loss_recovered" in run.data.metrics
        for name in ("absorption/mean_full_absorption_score", "absorption/n_letters", "sparse_probing/sae_top_1_test_accuracy",
                     "sparse_probing/llm_test_accuracy", "ood/sae_auc_ood", "ood/gap_to_dense"):
            assert name in run.data.metrics, (name, run.data.params["sae.architecture"], run.data.params["mask_prob"])
    # the LLM-side eval work is SAE-independent: every run of the grid reads the same dense baselines
    assert len({run.data.metrics["sparse_probing/llm_test_accuracy"] for run in runs}) == 1
    again = subprocess.run(command, cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("already FINISHED") == 4
    assert len(client.search_runs(client.get_experiment_by_name("grid-test").experiment_id)) == 4
