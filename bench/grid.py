"""A 16-run grid end to end: ours (one multirun process: shared activation cache, the 4 SAEs of each mask rate packed
into one job, eval set-up and zero-ablation CE computed once) vs naive (one process per run, nothing shared: each run
loads the model and computes its own activations and eval set-up)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from masksae.tracking import REPO_ROOT

MASK_PROBS = ("0", "0.05", "0.1", "0.2")
ARCHITECTURES = ("topk", "batchtopk")  # both take sae.k, so the grid is one Cartesian product
KS = ("32", "64")
PACK_SIZE = len(ARCHITECTURES) * len(KS)  # the runs of one mask rate differ only in `sae`
MACHINE_CACHE = Path(os.environ.get("MASKSAE_CACHE", "~/.cache/masksae")).expanduser()


def fresh_cache(parent: Path) -> Path:
    """A cache root without activations that shares the machine's converted model and rendered corpus."""
    root = Path(tempfile.mkdtemp(prefix="cache-", dir=parent))
    for shared in ("models", "gguf", "corpora"):
        (MACHINE_CACHE / shared).mkdir(parents=True, exist_ok=True)
        (root / shared).symlink_to(MACHINE_CACHE / shared)
    return root


def _train(arguments: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "train", *arguments], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"train {' '.join(arguments)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def _side(workdir: Path, name: str) -> dict[str, str]:
    """Environment of one side: its own MLflow store (schema made before any job writes) and run folders, so
    neither side can skip or resume a run of the other."""
    from mlflow import MlflowClient

    (workdir / name).mkdir()
    uri = f"sqlite:///{workdir / name / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()
    return dict(os.environ, MLFLOW_TRACKING_URI=uri, MASKSAE_OUTPUT_DIR=str(workdir / name / "outputs"), HYDRA_FULL_ERROR="1")


def compare_grid(sizes: list[str], workdir: Path) -> dict[str, float]:
    """Wall seconds of the 16-run grid both ways, at `sizes` (overrides shrinking the default run, may be empty)."""
    common = ["eval=fast", f"hydra.sweep.dir={workdir / 'multirun'}", *sizes]
    ours_s = _train(["-m", f"mask_prob={','.join(MASK_PROBS)}", f"sae={','.join(ARCHITECTURES)}", f"sae.k={','.join(KS)}",
                     f"hydra.sweeper.pack_size={PACK_SIZE}", f"paths.cache_dir={fresh_cache(workdir)}", *common], _side(workdir, "ours"))
    naive_env = _side(workdir, "naive")
    naive_s = sum(
        _train([f"mask_prob={p}", f"sae={a}", f"sae.k={k}", f"paths.cache_dir={fresh_cache(workdir)}",
                f"hydra.run.dir={workdir / 'naive-runs' / str(index)}", *common], naive_env)
        for index, (p, a, k) in enumerate(itertools.product(MASK_PROBS, ARCHITECTURES, KS))
    )
    return {"ours_s": ours_s, "naive_s": naive_s, "ratio": naive_s / ours_s, "n_runs": len(MASK_PROBS) * len(ARCHITECTURES) * len(KS)}
