"""Sweep planning without SLURM: dry-run estimates, bad launcher input, silent runs ended FAILED, the summary."""

from __future__ import annotations

import subprocess
import sys
import time

from mlflow import MlflowClient

from masksae.launch.plan import Plan, Point, reconcile, summary


def test_gemma_dry_run_shows_the_array_gpu_hours_and_cache_disk(session_env, repo_root) -> None:
    command = [sys.executable, "-m", "train", "-m", "experiment=gemma_sweep", "launcher=slurm", "hydra.sweeper.dry_run=true",
               "hydra.sweeper.params.seed=0", "hydra.sweeper.params.sae='topk,jumprelu'"]
    done = subprocess.run(command, cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "60 grid points -> 60 runs in 60 jobs to submit" in done.stdout  # 5 mask rates x 2 architectures x 3 l0 x 2 widths
    assert "gpus_per_node=1" in done.stdout and "timeout_min=720" in done.stdout
    assert "at most 720.0 requested (60 jobs x 1 x 12.0 h time limit)" in done.stdout
    assert "activation caches: 5 " in done.stdout and "x ~921.60 GB" in done.stdout and "= 4.61 TB" in done.stdout
    assert "#0 new    gemma-2-2b-L12-topk-k32-d18432-p0-s0-ds0" in done.stdout and "Submitted" not in done.stdout + done.stderr
    assert "WARNING: model gemma-2-2b (google/gemma-2-2b) is not in the Hugging Face cache" in done.stdout  # offline here
    memory = next(line for line in done.stdout.splitlines() if line.startswith("[dry run] memory per job: ~"))
    assert "LLM weights 5.23" in memory and "against launcher.mem_gb=" in memory  # 2614M bf16 parameters
    packed = subprocess.run([*command, "hydra.sweeper.pack_size=4"], cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=600)
    assert packed.returncode == 0, packed.stderr[-3000:]
    # 12 points per mask rate differ only in sae / l0: 3 packs of 4 each
    assert "60 grid points -> 60 runs in 15 jobs to submit" in packed.stdout and "(15 jobs x 1 x 12.0 h time limit)" in packed.stdout


def test_bad_pack_size_is_one_line_before_anything_is_submitted(session_env, repo_root) -> None:
    command = [sys.executable, "-m", "train", "-m", "experiment=local_sweep", "hydra.sweeper.pack_size=0"]
    done = subprocess.run(command, cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: invalid config hydra.sweeper.pack_size=0: an integer >= 1 (1: one SAE per job)"


def test_bad_launcher_value_is_one_line_before_anything_is_submitted(session_env, repo_root) -> None:
    command = [sys.executable, "-m", "train", "-m", "experiment=local_sweep", "launcher=slurm", "launcher.cpus=0"]
    done = subprocess.run(command, cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: invalid config launcher.cpus=0: an integer >= 1"


def test_silent_running_run_is_ended_failed_and_counted(mlflow_uri, tmp_path) -> None:
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment_id = client.create_experiment("silent-test")
    alive = client.create_run(experiment_id, tags={"run_key": "alive", "heartbeat": f"{time.time():.0f}"}).info.run_id
    silent = client.create_run(experiment_id, tags={"run_key": "silent", "heartbeat": f"{time.time() - 3600:.0f}"}).info.run_id
    done = client.create_run(experiment_id, tags={"run_key": "done"}).info.run_id
    client.set_terminated(done, status="FINISHED")
    points = [Point(index=i, overrides=[], run_key=key, name=key, checkpoint=str(tmp_path / key), action=action)
              for i, (key, action) in enumerate([("alive", "new"), ("silent", "new"), ("done", "skip")])]
    plan = Plan(sweep_id="s", tracking_uri=mlflow_uri, experiment="silent-test", launcher="basic", sweep_dir=str(tmp_path), points=points)
    still = reconcile(plan, stale_after_s=600)
    assert [p.run_key for p in still] == ["alive"]
    assert client.get_run(silent).info.status == "FAILED"
    assert "no heartbeat" in client.get_run(silent).data.tags["error"]
    assert client.get_run(alive).info.status == "RUNNING"
    assert summary(plan) == {"finished": 0, "skipped": 1, "resumed": 0, "failed": 1, "running": 1}
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == plan


def test_parallel_jobs_refuse_a_sqlite_store_before_anything_is_submitted(session_env, repo_root, tmp_path) -> None:
    command = [sys.executable, "-m", "train", "-m", "launcher=submitit_local", "debug=smoke", "mask_prob=0,0.1",
               f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    done = subprocess.run(command, cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: invalid config tracking.uri='{session_env['MLFLOW_TRACKING_URI']}': an MLflow server for launcher=submitit_local")
    assert "tracking.allow_sqlite=true" in line
    assert not (tmp_path / "sweep" / ".submitit").exists()  # nothing was launched
    dry = subprocess.run([*command, "hydra.sweeper.dry_run=true"], cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0 and "2 runs in 2 jobs to submit" in dry.stdout
    assert "[dry run] WARNING: invalid config tracking.uri" in dry.stdout  # the dry run warns, submits nothing


def test_the_dry_run_checks_each_jobs_memory_and_names_what_to_change(session_env, repo_root, tmp_path) -> None:
    command = [sys.executable, "-m", "train", "-m", "launcher=submitit_local", "debug=smoke", "mask_prob=0,0.1", "launcher.mem_gb=2",
               "tracking.allow_sqlite=true", "hydra.sweeper.dry_run=true"]
    done = subprocess.run(command, cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    warning = next(line for line in done.stdout.splitlines() if line.startswith("[dry run] WARNING: a job needs ~"))
    assert "at its peak, evals" in warning and "but launcher.mem_gb=2 (MASKSAE_SLURM_MEM_GB): raise launcher.mem_gb or lower" in warning
    assert "eval.core.batch_size" in warning  # the largest part a setting lowers is named
    enough = subprocess.run([*command, "launcher.mem_gb=8"], cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=300)
    assert enough.returncode == 0 and "memory per job: ~" in enough.stdout and "WARNING: a job needs" not in enough.stdout
    training_only = subprocess.run([*command, "eval.evals=[]"], cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=300)
    assert "evals: nothing" in training_only.stdout and "at its peak, evals" not in training_only.stdout  # no eval phase


def test_sinfo_time_limits_and_gres_are_read_in_every_slurm_format() -> None:
    from masksae.launch.slurm import _gpus, _minutes

    assert [_minutes(limit) for limit in ("infinite", "UNLIMITED", "45", "30:00", "12:00:00", "2-5", "2-05:30", "1-02:03:00")] == [
        None, None, 45, 30, 720, 2 * 1440 + 300, 2 * 1440 + 330, 1440 + 123]
    assert [_gpus(gres) for gres in ("(null)", "gpu:4", "gpu:a100:2(S:0-1)", "gpu:a100:2,gpu:v100:2", "mps:100")] == [0, 4, 2, 4, 0]
