"""Re-launching a sweep: a run with a checkpoint resumes at its checkpoint's step, a FAILED one runs again, a live one is
left alone; a direct `python -m train` refuses to take over a live run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from masksae.checkpoints import checkpoint_step
from masksae.locks import holder_id
from masksae.tracking import run_key

pytestmark = pytest.mark.slow

# Training only (no evals), 4 smoke epochs: 92 steps, checkpoints every 10, metrics every 5.
POINT = ["debug=smoke", "eval.evals=[]", "training.epochs=4", "tracking.experiment=relaunch"]


def test_relaunch_resumes_reruns_and_leaves_live_runs_alone(session_env, repo_root, make_cfg, mlflow_uri) -> None:
    client = MlflowClient(tracking_uri=mlflow_uri)
    keys = {seed: run_key(make_cfg(*POINT, f"seed={seed}")) for seed in (21, 22, 23)}
    # seed 21: a job SIGKILLed after its first checkpoint (its run stays RUNNING; its process is gone)
    killed = subprocess.Popen([sys.executable, "-m", "train", *POINT, "seed=21"], cwd=repo_root, env=session_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = Path(session_env["MASKSAE_OUTPUT_DIR"]) / "runs" / keys[21] / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not checkpoint.exists():
        assert killed.poll() is None and time.monotonic() < deadline, "the job ended before its first checkpoint"
        time.sleep(0.1)
    killed.kill()
    killed.wait()
    step_at_kill = checkpoint_step(checkpoint)
    experiment_id = client.get_experiment_by_name("relaunch").experiment_id
    # seed 22: a run that FAILED (no checkpoint); seed 23: a run a live process (this one) is training
    failed = client.create_run(experiment_id, tags={"run_key": keys[22]}).info.run_id
    client.set_terminated(failed, status="FAILED")
    live_tags = {"run_key": keys[23], "heartbeat": f"{time.time():.0f}", "heartbeat_owner": holder_id()}  # this process
    live = client.create_run(experiment_id, tags=live_tags).info.run_id

    direct = subprocess.run([sys.executable, "-m", "train", *POINT, "seed=23"], cwd=repo_root, env=session_env,
                            capture_output=True, text=True, timeout=600)
    assert direct.returncode == 2
    refusal = direct.stderr.strip().splitlines()[-1]
    assert refusal.startswith(f"error: run {keys[23]} (") and f"MLflow run {live}) is being trained by process" in refusal

    again = subprocess.run([sys.executable, "-m", "train", "-m", *POINT, "seed=21,22,23"], cwd=repo_root, env=session_env,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "1 finished / 0 skipped / 1 resumed / 0 failed / 1 running" in again.stdout + again.stderr
    by_key = {run.data.tags["run_key"]: run for run in client.search_runs([experiment_id])}
    resumed, rerun, untouched = by_key[keys[21]], by_key[keys[22]], client.get_run(live)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["resume_count"] == "1"
    assert 0 < step_at_kill and int(resumed.data.tags["resumed_from_step"]) == step_at_kill
    assert int(resumed.data.tags["first_step_after_resume"]) == step_at_kill + 1
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(4, 92, 5))  # the killed attempt's metrics and the resumed ones, each step once
    assert rerun.info.run_id == failed and rerun.info.status == "FINISHED" and rerun.data.tags["resumed_from_step"] == "0"
    assert untouched.info.status == "RUNNING"
    assert {k: v for k, v in untouched.data.tags.items() if not k.startswith("mlflow.")} == live_tags  # not touched
