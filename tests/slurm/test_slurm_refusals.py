"""Submissions SLURM would refuse end the sweep at once with one line naming the setting to change, exit 2, and no run
left open: checked against sinfo before submitting (the local SLURM has no GPUs), and sbatch's own refusals."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

GRID = ["launcher=slurm", "mask_prob=0,0.1", "debug=smoke"]


def _sweep(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "train", "-m", *GRID, *args, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=300)
    return done, time.monotonic() - started


def _no_runs(env: dict[str, str], experiment: str) -> bool:
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    found = client.get_experiment_by_name(experiment)
    return found is None or not client.search_runs([found.experiment_id])


def test_gpus_the_partition_lacks_are_refused_before_submitting(sweep_env, tmp_path) -> None:
    done, seconds = _sweep(["tracking.experiment=refused-gpus"], sweep_env, tmp_path)  # defaults: 1 GPU, 8 CPUs, 64 GB
    assert done.returncode == 2, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: launcher.gpus=1: the nodes of partition debug have at most 0 GPUs (sinfo); "
                           "set launcher.gpus (or MASKSAE_SLURM_GPUS) to at most 0; ")
    assert "launcher.cpus=8: the nodes of partition debug have at most 2 CPUs" in line and "launcher.mem_gb=64:" in line
    assert seconds < 120 and not (tmp_path / "sweep" / ".submitit").exists() and _no_runs(sweep_env, "refused-gpus")
    dry, _ = _sweep(["hydra.sweeper.dry_run=true", "launcher.cpus=64"], sweep_env, tmp_path)
    assert dry.returncode == 0
    line = next(line for line in dry.stdout.splitlines() if line.startswith("[dry run] SLURM (sinfo)"))
    assert "partition debug (default): nodes with up to 2 CPUs" in line and "0 GPUs" in line
    assert "ERROR launcher.gpus=1" in line and "ERROR launcher.cpus=64" in line


def test_a_submission_sbatch_refuses_ends_the_sweep_at_once(sweep_env, tmp_path) -> None:
    done, seconds = _sweep(["launcher.gpus=0", "launcher.cpus=1", "launcher.mem_gb=2", "hydra.launcher.constraint=nosuchfeature",
                            "tracking.experiment=refused-sbatch"], sweep_env, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == ("error: SLURM refused the job array (sbatch: error: Batch job submission failed: "
                                                    "Invalid feature specification); check hydra.launcher.constraint")
    assert seconds < 120 and _no_runs(sweep_env, "refused-sbatch")
