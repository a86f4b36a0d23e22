"""Sweeps on a real single-node SLURM through submitit_slurm, logged to a real MLflow server: a 4-job smoke sweep,
a re-launch that skips it, a job requeued mid-training that resumes into one run, and a hard-killed job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

# Every job of these tests: smoke-sized, 4 epochs (92 steps, checkpoints every 10) so a requeue lands mid-training.
SMOKE = ["experiment=local_sweep", "launcher=slurm", "training.epochs=4"]
ONE_POINT = ["hydra.sweeper.params.mask_prob=0", "hydra.sweeper.params.sae=topk"]


def _train(args: list[str], env: dict[str, str], tmp: Path, **kwargs) -> subprocess.Popen:
    out = open(tmp / f"driver-{time.monotonic_ns()}.log", "w+")
    return subprocess.Popen([sys.executable, "-m", "train", "-m", *args, f"hydra.sweep.dir={tmp / 'sweep'}"],
                            cwd=Path(__file__).resolve().parents[2], env=env, stdout=out, stderr=subprocess.STDOUT, text=True, **kwargs)


def _finish(process: subprocess.Popen, timeout: float) -> str:
    process.wait(timeout=timeout)
    process.stdout.seek(0)
    return process.stdout.read()


def _runs(uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def _wait_for(condition, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _alive(pid: int) -> bool:
    """Whether a process runs (an exited child of an exited parent may linger as a zombie, state Z)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _sacct(job_id: str) -> str:
    done = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], capture_output=True, text=True)
    return done.stdout.split("\n")[0].split(" ")[0]


@pytest.fixture(scope="module")
def smoke_sweep(sweep_env, tmp_path_factory) -> dict:
    """`python -m masksae.launch submit` of the 4-point local grid; returns once submitted; then waits for the runs."""
    env = dict(sweep_env)
    tmp = tmp_path_factory.mktemp("smoke")
    started = time.monotonic()
    submit = subprocess.run([sys.executable, "-m", "masksae.launch", "submit", *SMOKE, f"hydra.sweep.dir={tmp / 'sweep'}"],
                            cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=600)
    submitted_after = time.monotonic() - started
    assert submit.returncode == 0, submit.stdout + submit.stderr
    at_submit = _runs(env["MLFLOW_TRACKING_URI"], "masksae")
    driver_pid = int(next(Path(env["MASKSAE_OUTPUT_DIR"], "sweeps").glob("*/driver.pid")).read_text())
    _wait_for(lambda: not _alive(driver_pid), 900, "the detached sweep driver", poll=5)
    status = subprocess.run([sys.executable, "-m", "masksae.launch", "status"], env=env, capture_output=True, text=True, timeout=300)
    return {"submit": submit, "submitted_after": submitted_after, "at_submit": at_submit, "status": status.stdout, "env": env}


def test_smoke_sweep_ends_with_four_finished_runs_carrying_slurm_ids(smoke_sweep) -> None:
    env = smoke_sweep["env"]
    assert "4 jobs submitted" in smoke_sweep["submit"].stdout
    assert not [r for r in smoke_sweep["at_submit"] if r.info.status == "FINISHED"], "submit returned only after jobs finished"
    runs = _runs(env["MLFLOW_TRACKING_URI"], "masksae")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    job_ids = {r.data.tags["slurm_job_id"] for r in runs}
    assert len(job_ids) == 4 and all("_" in j for j in job_ids)
    assert {_sacct(j) for j in job_ids} == {"COMPLETED"}
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    assert {(r.data.params["mask_prob"], r.data.params["sae.architecture"]) for r in runs} == {
        ("0", "topk"), ("0", "batchtopk"), ("0.2", "topk"), ("0.2", "batchtopk")}
    assert all("core/explained_variance" in r.data.metrics and "heartbeat" in r.data.tags for r in runs)
    assert "4 finished / 0 skipped / 0 resumed / 0 failed / 0 running" in smoke_sweep["status"]


def test_relaunch_skips_every_finished_run_without_submitting(smoke_sweep, tmp_path) -> None:
    env = smoke_sweep["env"]
    before = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID"], capture_output=True, text=True).stdout
    output = _finish(_train(SMOKE, env, tmp_path), timeout=300)
    assert "4 skipped" in output and "0 failed" in output, output[-3000:]
    assert output.count("already FINISHED") == 4
    assert subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID"], capture_output=True, text=True).stdout == before
    assert len(_runs(env["MLFLOW_TRACKING_URI"], "masksae")) == 4


def test_job_requeued_mid_training_resumes_into_one_run_with_the_same_result(smoke_sweep, tmp_path) -> None:
    env = dict(smoke_sweep["env"], MASKSAE_OUTPUT_DIR=str(tmp_path / "outputs"))
    driver = _train([*SMOKE, *ONE_POINT, "tracking.experiment=requeue"], env, tmp_path)
    checkpoints = tmp_path / "outputs" / "runs"
    _wait_for(lambda: list(checkpoints.glob("*/checkpoints/last.ckpt")), 600, "the first checkpoint", poll=0.2)
    run = _wait_for(lambda: _runs(env["MLFLOW_TRACKING_URI"], "requeue"), 30, "the MLflow run")[0]
    job_id = run.data.tags["slurm_job_id"]
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    output = _finish(driver, timeout=600)
    assert "1 finished / 0 skipped / 0 resumed / 0 failed / 0 running" in output, output[-3000:]
    runs = _runs(env["MLFLOW_TRACKING_URI"], "requeue")
    assert len(runs) == 1, output[-3000:]
    resumed = runs[0]
    assert resumed.info.status == "FINISHED" and resumed.data.tags["resume_count"] == "1" and "error" not in resumed.data.tags
    assert resumed.data.tags["slurm_job_id"] == job_id
    reference = next(r for r in _runs(env["MLFLOW_TRACKING_URI"], "masksae") if r.data.tags["run_key"] == resumed.data.tags["run_key"])
    for name in ("core/mse", "core/explained_variance", "core/l0", "core/ce_loss_sae", "train/activation_scale"):
        assert resumed.data.metrics[name] == pytest.approx(reference.data.metrics[name], rel=1e-4), name


def test_hard_killed_job_ends_failed_and_the_summary_reports_it(smoke_sweep, tmp_path) -> None:
    env = dict(smoke_sweep["env"], MASKSAE_OUTPUT_DIR=str(tmp_path / "outputs"))
    driver = _train([*SMOKE, *ONE_POINT, "tracking.experiment=killed"], env, tmp_path)
    run = _wait_for(lambda: [r for r in _runs(env["MLFLOW_TRACKING_URI"], "killed") if r.info.status == "RUNNING"], 600, "a RUNNING run")[0]
    job_id = run.data.tags["slurm_job_id"]
    pids = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True, check=True).stdout.split("\n")[1:]
    for pid in [int(line.split()[0]) for line in pids if line.strip()]:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if b"submitit" in cmdline.read():
                os.kill(pid, signal.SIGKILL)
    output = _finish(driver, timeout=300)
    assert driver.returncode != 0
    assert "0 finished / 0 skipped / 0 resumed / 1 failed" in output, output[-3000:]
    failed = _runs(env["MLFLOW_TRACKING_URI"], "killed")
    assert len(failed) == 1 and failed[0].info.status == "FAILED"
    assert f"SLURM job {job_id} ended" in failed[0].data.tags["error"]
    assert _sacct(job_id) in ("FAILED", "CANCELLED")
