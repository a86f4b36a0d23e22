"""A real packed sweep from the command line: two SAEs trained in one job from one activation stream, two MLflow runs;
the job killed during its evals resumes without training either SAE again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from masksae.checkpoints import TRAINED, load_trained
from masksae.tracking import run_key

pytestmark = pytest.mark.slow

# seed 7: run keys (so run folders) of this test's own, which no other test trains
OVERRIDES = ["mask_prob=0", "seed=7", "debug=smoke", "eval.evals=[core]", "tracking.experiment=pack-test"]


def test_a_pack_trains_its_members_in_one_job_each_in_its_own_run(session_env, repo_root, mlflow_uri, make_cfg) -> None:
    command = [sys.executable, "-m", "train", "-m", "sae=topk,jumprelu", "hydra.sweeper.pack_size=2", *OVERRIDES]
    # the first launch is SIGKILLed once both SAEs are trained and saved, while it evaluates them
    runs_root = Path(session_env["MASKSAE_OUTPUT_DIR"]) / "runs"
    trained = [runs_root / run_key(make_cfg(f"sae={a}", *OVERRIDES)) / TRAINED for a in ("topk", "jumprelu")]
    first = subprocess.Popen(command, cwd=repo_root, env=session_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 1200
    while not all(path.exists() for path in trained):
        assert first.poll() is None and time.monotonic() < deadline, "the pack ended before its SAEs were saved"
        time.sleep(0.1)
    first.kill()
    first.wait()
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment_id = client.get_experiment_by_name("pack-test").experiment_id
    trained_steps = {run.data.tags["run_key"]: [m.step for m in client.get_metric_history(run.info.run_id, "train/mse")]
                     for run in client.search_runs(experiment_id)}
    done = subprocess.run(command, cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Launching 1 jobs locally" in done.stdout + done.stderr  # one job for both grid points
    assert "0 finished / 0 skipped / 2 resumed / 0 failed / 0 running" in done.stdout + done.stderr
    runs = client.search_runs(experiment_id)
    assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}
    assert {run.data.params["sae.architecture"] for run in runs} == {"topk", "jumprelu"}
    # the same run keys as unpacked points: a later unpacked launch skips them
    assert {run.data.tags["run_key"] for run in runs} == {run_key(make_cfg(f"sae={a}", *OVERRIDES)) for a in ("topk", "jumprelu")}
    (pack,) = {run.data.tags["pack"] for run in runs}
    assert (Path(pack) / "checkpoints" / "last.ckpt").is_file()
    histories = [[m.value for m in client.get_metric_history(run.info.run_id, "train/mse")] for run in runs]
    assert all(len(history) >= 3 for history in histories) and histories[0] != histories[1]
    for run in runs:  # the resumed job trained neither SAE again: no step was added or logged twice
        assert run.data.tags["first_step_after_resume"] == "none: trained before its evals"
        assert int(run.data.tags["resumed_from_step"]) == load_trained(runs_root / run.data.tags["run_key"]).step
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train/mse")] == trained_steps[run.data.tags["run_key"]]
    for run in runs:
        assert 0.0 < run.data.metrics["core/explained_variance"] <= 1.0
        assert {"sae/cfg.json", "sae/sae_weights.safetensors"} == {a.path for a in client.list_artifacts(run.info.run_id, "sae")}
    again = subprocess.run([sys.executable, "-m", "train", "-m", "sae=topk,jumprelu", *OVERRIDES], cwd=repo_root, env=session_env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("already FINISHED") == 2
