"""Sweeps on a real single-node SLURM through submitit_slurm, logged to the cluster tracking server (PostgreSQL, basic
auth, host name): a 4-job smoke sweep, a re-launch that skips it, 16 concurrent jobs, a job requeued mid-training and
one preempted by SLURM's USR2 signal (submitit's requeue path) that resume at their checkpoint's step, and a hard-killed
job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# Every job of these tests: smoke-sized, 8 epochs (184 steps, checkpoints every 10) so an interruption lands mid-training.
SMOKE = ["experiment=local_sweep", "launcher=slurm", "training.epochs=8"]
ONE_POINT = ["hydra.sweeper.params.mask_prob=0", "hydra.sweeper.params.sae=topk"]
# Jobs that only train (the run key leaves eval.* out, so they share the smoke sweep's run keys and cached activations).
TRAIN_ONLY = ["eval.evals=[]"]
TOTAL_STEPS = 184


def _train(args: list[str], env: dict[str, str], tmp: Path) -> tuple[subprocess.Popen, Path]:
    """A sweep driver (`python -m train -m`) in the background, its output in a log file."""
    log = tmp / "driver.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "train", "-m", *args, f"hydra.sweep.dir={tmp / 'sweep'}"],
                                   cwd=Path(__file__).resolve().parents[2], env=env, stdout=out, stderr=subprocess.STDOUT)
    return process, log


def _finish(driver: tuple[subprocess.Popen, Path], timeout: float) -> str:
    driver[0].wait(timeout=timeout)
    return driver[1].read_text()


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
    assert "4 runs in 4 jobs submitted" in smoke_sweep["submit"].stdout
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


def _max_overlap(runs: list) -> int:
    """Most runs open (between their MLflow start and end times) at one moment."""
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    open_runs, most = 0, 0
    for _, change in events:
        open_runs += change
        most = max(most, open_runs)
    return most


def test_sixteen_concurrent_jobs_log_every_run_through_the_server(smoke_sweep, tmp_path) -> None:
    """16 training-only jobs at once on the `shared` partition (cores shared, as many nodes would run them), every one
    logging through the server by host name with auth: none lost, none left RUNNING, every metric step there."""
    env = dict(smoke_sweep["env"], MASKSAE_OUTPUT_DIR=str(tmp_path / "outputs"))  # run folders of their own
    grid = ["seed=0,1,2,3", "training.epochs=2", "launcher.partition=shared", "launcher.parallel=16", "launcher.mem_gb=1",
            "tracking.experiment=sixteen", *TRAIN_ONLY]
    output = _finish(_train([*SMOKE, *grid], env, tmp_path), timeout=900)
    assert "16 finished / 0 skipped / 0 resumed / 0 failed / 0 running" in output, output[-3000:]
    runs = _runs(env["MLFLOW_TRACKING_URI"], "sixteen")
    assert len(runs) == 16 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["slurm_job_id"] for r in runs}) == 16 and {_sacct(r.data.tags["slurm_job_id"]) for r in runs} == {"COMPLETED"}
    assert _max_overlap(runs) == 16  # all 16 were logging at the same time
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == list(range(4, 46, 5)), run.info.run_name  # 2 epochs of 23 steps, logged every 5
    print(f"16 concurrent jobs: {len(runs)} runs logged, 0 lost, 0 left RUNNING")


def _hard_kill(job_id: str) -> None:
    """SIGKILL every process of the job that runs submitit (the job cannot write a result or end its MLflow run)."""
    listed = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True, check=True).stdout.split("\n")[1:]
    for pid in [int(line.split()[0]) for line in listed if line.strip()]:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if b"submitit" in cmdline.read():
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def interrupted(smoke_sweep, tmp_path_factory) -> dict:
    """Three one-job training-only sweeps side by side (the `shared` partition runs them at once): one requeued
    (`scontrol requeue`) and one sent SLURM's preemption warning (USR2, on which submitit checkpoints and requeues)
    after their first checkpoint, one SIGKILLed once its MLflow run is RUNNING. Each has its own output root, so none
    sees the smoke sweep's checkpoints."""
    jobs = {}
    for name in ("requeue", "preempt", "killed"):
        tmp = tmp_path_factory.mktemp(name)
        env = dict(smoke_sweep["env"], MASKSAE_OUTPUT_DIR=str(tmp / "outputs"))
        args = [*SMOKE, *ONE_POINT, *TRAIN_ONLY, "launcher.partition=shared", f"tracking.experiment={name}"]  # all three at once
        jobs[name] = {"env": env, "tmp": tmp, "driver": _train(args, env, tmp)}
    uri = smoke_sweep["env"]["MLFLOW_TRACKING_URI"]

    def act() -> bool:
        for name, job in jobs.items():
            if "job_id" in job:
                continue
            runs = [r for r in _runs(uri, name) if r.info.status == "RUNNING"]
            ready = list((job["tmp"] / "outputs" / "runs").glob("*/checkpoints/last.ckpt")) if name != "killed" else True
            if runs and ready:
                job["job_id"] = runs[0].data.tags["slurm_job_id"]
                if name == "requeue":
                    subprocess.run(["scontrol", "requeue", job["job_id"]], check=True)
                elif name == "preempt":
                    subprocess.run(["scancel", "--signal=USR2", job["job_id"]], check=True)
                else:
                    _hard_kill(job["job_id"])
        return all("job_id" in job for job in jobs.values())

    _wait_for(act, 600, "the jobs to reach their interruption point", poll=0.3)
    for job in jobs.values():
        job["output"] = _finish(job["driver"], timeout=600)
        job["returncode"] = job["driver"][0].returncode
    return jobs


def _sae_weights(output_root: Path, key: str) -> dict[str, torch.Tensor]:
    return load_file(output_root / "runs" / key / "sae" / "sae_weights.safetensors")


@pytest.mark.parametrize("name", ["requeue", "preempt"])
def test_interrupted_job_resumes_at_its_checkpoint_step_into_one_run_with_the_same_weights(smoke_sweep, interrupted, name) -> None:
    job, uri = interrupted[name], smoke_sweep["env"]["MLFLOW_TRACKING_URI"]
    assert job["returncode"] == 0, job["output"][-3000:]
    assert "1 finished / 0 skipped / 0 resumed / 0 failed / 0 running" in job["output"]
    runs = _runs(uri, name)
    assert len(runs) == 1
    resumed = runs[0]
    tags = resumed.data.tags
    assert resumed.info.status == "FINISHED" and tags["resume_count"] == "1" and "error" not in tags
    assert tags["slurm_job_id"] == job["job_id"]
    # it continued from a checkpoint, at the step after it: not a silent restart from step 0
    assert 0 < int(tags["resumed_from_step"]) < TOTAL_STEPS and tags["checkpoint_used"] == "last.ckpt"
    assert int(tags["first_step_after_resume"]) == int(tags["resumed_from_step"]) + 1
    client = MlflowClient(tracking_uri=uri)
    for metric in ("train/loss", "train/l0", "train/lr"):
        steps = [m.step for m in client.get_metric_history(resumed.info.run_id, metric)]
        assert sorted(steps) == list(range(4, TOTAL_STEPS, 5)), metric  # every step once: none lost, none logged twice
    key = tags["run_key"]
    reference = next(r for r in _runs(uri, "masksae") if r.data.tags["run_key"] == key)  # the uninterrupted smoke run
    ours, theirs = _sae_weights(job["tmp"] / "outputs", key), _sae_weights(Path(smoke_sweep["env"]["MASKSAE_OUTPUT_DIR"]), key)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert resumed.data.metrics["train/activation_scale"] == reference.data.metrics["train/activation_scale"]
    if name == "preempt":  # submitit's path: the job checkpointed the step the signal came in, then requeued itself
        log = "".join(path.read_text() for path in (job["tmp"] / "sweep" / ".submitit").glob("*/*_log.*"))
        assert "signal SIGUSR2: checkpointing at the end of this step before the job stops" in log and "this job is preempted" in log, log[-3000:]
        assert f"checkpoint at step {tags['resumed_from_step']} saved" in log


def test_hard_killed_job_ends_failed_and_the_summary_reports_it(smoke_sweep, interrupted) -> None:
    job, uri = interrupted["killed"], smoke_sweep["env"]["MLFLOW_TRACKING_URI"]
    assert job["returncode"] != 0
    assert "0 finished / 0 skipped / 0 resumed / 1 failed / 0 running" in job["output"], job["output"][-3000:]
    failed = _runs(uri, "killed")
    assert len(failed) == 1 and failed[0].info.status == "FAILED"
    assert f"SLURM job {job['job_id']} ended" in failed[0].data.tags["error"]
    assert _sacct(job["job_id"]) in ("FAILED", "CANCELLED")
