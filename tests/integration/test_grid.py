"""A real Hydra multirun grid from the command line: every grid point one FINISHED, fully evaluated MLflow run, one shared
sweep id; every SAE at its stated sparsity on clean validation text, whatever its mask rate."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow


def test_multirun_grid_logs_one_finished_run_per_point(session_env, repo_root, mlflow_uri) -> None:
    command = [sys.executable, "-m", "train", "-m", "mask_prob=0,0.1,0.3", "sae=topk,jumprelu", "debug=smoke", "tracking.experiment=grid-test"]
    done = subprocess.run(command, cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stderr[-4000:]
    console = done.stdout + done.stderr
    assert console.count("`Trainer.fit` stopped") == 6  # once per run: Lightning's own handler printed every line again
    assert "litlogger" not in console and "is deprecated" not in console, console[-4000:]
    assert "\r" not in console  # no terminal: progress as log lines, never carriage-return bars
    assert console.count("training: ") >= 6 and console.count("steps (100%)") == 6 and "about " in console
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs(client.get_experiment_by_name("grid-test").experiment_id)
    assert len(runs) == 6
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert len({run.data.tags["sweep_id"] for run in runs}) == 1
    assert len({run.data.tags["run_key"] for run in runs}) == 6
    points = {(run.data.params["mask_prob"], run.data.params["sae.architecture"]) for run in runs}
    assert points == {(p, a) for p in ("0", "0.1", "0.3") for a in ("topk", "jumprelu")}
    for run in runs:  # k = target L0 = 64; JumpReLU's thresholds calibrated on clean text (uncalibrated at p=0.3: ~98)
        metrics, point = run.data.metrics, (run.data.params["sae.architecture"], run.data.params["mask_prob"])
        assert abs(metrics["core/l0"] / 64 - 1) <= 0.10, (point, metrics["core/l0"])
        if point[0] == "jumprelu":
            train_l0 = [m.value for m in client.get_metric_history(run.info.run_id, "train/l0")][-3:]
            assert abs(sum(train_l0) / len(train_l0) / 64 - 1) <= 0.10, (point, train_l0)  # held in training too
            assert "calibration/l0_uncalibrated" in metrics
    for run in runs:
        assert "core/explained_variance" in run.data.metrics and "core/ce_loss_recovered" in run.data.metrics
        for name in ("absorption/mean_full_absorption_score", "absorption/n_letters", "sparse_probing/sae_top_1_test_accuracy",
                     "sparse_probing/llm_test_accuracy", "ood/sae_auc_ood", "ood/gap_to_dense"):
            assert name in run.data.metrics, (name, run.data.params["sae.architecture"], run.data.params["mask_prob"])
    # the LLM-side eval work is SAE-independent: every run of the grid reads the same dense baselines
    assert len({run.data.metrics["sparse_probing/llm_test_accuracy"] for run in runs}) == 1
    _assert_tables_printed(done.stdout, runs)
    again = subprocess.run(command, cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("already FINISHED") == 6
    assert len(client.search_runs(client.get_experiment_by_name("grid-test").experiment_id)) == 6
    assert again.stdout.count("skipped (finished before)") == 6


def _assert_tables_printed(stdout: str, runs: list) -> None:
    """Each job ends with its headline table (values with standard errors) and where to look; the sweep with its table."""
    assert stdout.count("Headline metrics") == 6 and stdout.count("Where to look:") == 6
    absorption_line = next(line for line in stdout.splitlines() if "mean_full_absorption_score" in line)
    assert "±" in absorption_line  # its standard error over letters
    for run in runs:
        assert f"MLflow run {run.info.run_id}: `make mlflow-ui MLFLOW_STORE=" in stdout
        assert f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning" in stdout
    sweep = stdout[stdout.index(f"Sweep {runs[0].data.tags['sweep_id']}"):]
    for run in runs:  # its row: name, status, then its L0 as printed (4 significant digits)
        row = next(line for line in sweep.splitlines() if line.split() and line.split()[0] == run.info.run_name)
        assert row.split()[1] == "FINISHED" and f"{run.data.metrics['core/l0']:.4g}" in row.split()[2:], row
    assert "make report SWEEP_ID=" in sweep
