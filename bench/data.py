"""Data-path figures of issue 12: the sharded, memory-mapped read against the in-memory read it replaced (batches/s,
warm page cache), and a training job's peak RSS at two training-set sizes (flat if memory is bounded by the buffers)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.memcap import wait_with_peak_rss
from masksae.batching import CachedBlocks, ShuffledBatches
from masksae.config import compose_config
from masksae.resources import buffer_rows, shard_rows
from tests.activation_sets import sharded_set

REPO = Path(__file__).resolve().parents[1]


def in_memory_batches(acts_ND: torch.Tensor, batch_size: int, seed: int, scale: float):
    """The read this replaced: the whole set in memory, a full permutation an epoch, a gather per batch."""
    order_N = torch.randperm(acts_ND.shape[0], generator=torch.Generator().manual_seed(seed))
    for rows_B in order_N[: acts_ND.shape[0] // batch_size * batch_size].split(batch_size):
        yield acts_ND[rows_B].float() * scale


def _batches_per_s(batches, n_batches: int) -> float:
    started = time.perf_counter()
    count = sum(1 for _, _ in zip(range(n_batches), batches))
    return count / (time.perf_counter() - started)


def read_throughput(n_rows: int, repeats: int = 9) -> dict:
    """Batches/s of one epoch of default-sized batches (d_model 640, fp32, batch 4096, 128 MB buffers, 256 MB shards: the defaults)
    from a synthetic set of `n_rows` (reading does not depend on the values). The reads take turns within each of
    `repeats` rounds, so a load that comes and goes on the machine weighs on all of them alike; `ratio` is the median
    of the rounds' sharded / in-memory ratios (this machine's allocation costs vary several-fold from minute to minute),
    `ratio_of_best` that of each read's best round."""
    cfg = compose_config("train")
    batch = int(cfg.training.batch_size)
    acts_ND = torch.randn(n_rows, int(cfg.model.d_model), generator=torch.Generator().manual_seed(0))
    n_batches = n_rows // batch
    figures = {"rows": n_rows, "batch": batch, "buffer_rows": buffer_rows(cfg), "shard_rows": shard_rows(cfg), "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="masksae-bench-data-") as folder:
        shards = sharded_set(Path(folder), acts_ND, shard_rows=shard_rows(cfg), chunk=int(cfg.activations.context_length) - 1)
        reads = {"in_memory": lambda: in_memory_batches(acts_ND, batch, 0, 1.0)}
        for block_rows in (1, 8):
            source = CachedBlocks(shards, block_rows)
            reads[f"sharded_block{block_rows}"] = lambda source=source: ShuffledBatches(source, batch, buffer_rows(cfg), n_batches, lambda: 0, 0, 1.0)
        rates: dict[str, list[float]] = {name: [] for name in reads}
        for _ in range(repeats):
            for name, batches in reads.items():
                rates[name].append(_batches_per_s(batches(), n_batches))
    figures.update({f"{name}_batches_per_s": round(max(values), 1) for name, values in rates.items()})
    per_round = [ours / theirs for ours, theirs in zip(rates["sharded_block1"], rates["in_memory"], strict=True)]
    figures["ratio"] = round(statistics.median(per_round), 3)
    figures["ratio_of_best"] = round(figures["sharded_block1_batches_per_s"] / figures["in_memory_batches_per_s"], 3)
    figures["ratio_per_repeat"] = [round(ratio, 3) for ratio in per_round]
    return figures


def run_measured(command: list[str], log: Path) -> tuple[int, float, float]:
    """Run `command` (output to `log`); its exit code, wall seconds and peak RSS in GB (its own, from wait4)."""
    started = time.time()
    with open(log, "w") as output:
        returncode, peak_gb = wait_with_peak_rss(subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT))
    return returncode, time.time() - started, peak_gb


def training_job_rss(train_tokens: int) -> dict:
    """Peak RSS and wall time of `python -m train activations.train_tokens=N eval.evals=[]` (training only: the evals'
    memory does not depend on the training set), in a fresh process, with the training set's cache built if absent."""
    with tempfile.TemporaryDirectory(prefix="masksae-bench-rss-") as folder:
        command = [sys.executable, "-m", "train", f"activations.train_tokens={train_tokens}", "eval.evals=[]",
                   f"paths.output_dir={folder}", f"tracking.uri=sqlite:///{folder}/mlflow.db", f"hydra.run.dir={folder}/hydra"]
        returncode, wall_s, peak_gb = run_measured(command, Path(folder) / "log")
        log = (Path(folder) / "log").read_text()
    if returncode != 0:
        raise RuntimeError(f"training job ({train_tokens} tokens) failed:\n{log[-3000:]}")
    return {"train_tokens": train_tokens, "peak_rss_gb": round(peak_gb, 3), "wall_s": round(wall_s, 1),
            "built_cache": "LLM activations (train" in log}


def measure(sizes: tuple[int, ...] = (200_000, 1_000_000)) -> dict:
    figures: dict = {"read": read_throughput(400_000)}
    print(f"[bench] sharded read: {json.dumps(figures['read'])}", flush=True)
    figures["rss"] = []
    for tokens in sizes:
        figures["rss"].append(training_job_rss(tokens))
        print(f"[bench] training job: {json.dumps(figures['rss'][-1])}", flush=True)
    if len({job["built_cache"] for job in figures["rss"]}) > 1:  # compare like with like: a build also loads the LLM
        figures["rss"] += [training_job_rss(job["train_tokens"]) for job in figures["rss"] if job["built_cache"]]
        print(f"[bench] again on the built caches: {json.dumps(figures['rss'][len(sizes):])}", flush=True)
    on_cache = {job["train_tokens"]: job["peak_rss_gb"] for job in figures["rss"] if not job["built_cache"]}
    built = {job["train_tokens"]: job["peak_rss_gb"] for job in figures["rss"] if job["built_cache"]}
    compared = on_cache if len(on_cache) == len(sizes) else built
    figures["rss_ratio"] = compared[sizes[-1]] / compared[sizes[0]]
    return figures


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
