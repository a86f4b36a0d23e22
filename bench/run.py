"""`make bench`: every figure of issue 5 measured in one run on this machine -> bench/results.json and results.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from bench import data
from bench.evals import eval_seconds_per_sae
from bench.grid import compare_grid
from bench.llm import compare_forwards, stop_at_layer_tokens_per_s
from bench.sae_step import compare_with_saelens, dense_step_flops, matmul_peak_flops
from masksae.config import compose_config, plain
from masksae.datamodule import estimate_scale
from masksae.models import load_model
from masksae.progress import duration
from masksae.resources import cache_root, clean_validation_activations, shared_model, split_sequences

D_SAE, K, BATCH = 16384, 64, 4096
GRID_SIZES = {  # --grid small: the default run shrunk (~20x fewer LLM tokens, the smoke eval sizes), labelled as such
    "default": [],
    "small": ["activations.train_tokens=20480", "activations.val_tokens=4096", "eval.core.ce_sequences=4",
              "eval.absorption.words_per_letter=24", "eval.sparse_probing.train_per_class=24", "eval.sparse_probing.test_per_class=12",
              "eval.sparse_probing.context_length=32", "eval.ood.ood_per_class=12", "eval.inspection.sequences=8"],
}


def real_batch(cfg, model) -> torch.Tensor:
    """A seeded batch of real layer activations (clean held-out text), normalised to E||x||^2 = d_in."""
    acts_ND = clean_validation_activations(cfg, model).acts_ND.float()
    rows_B = torch.randperm(acts_ND.shape[0], generator=torch.Generator().manual_seed(0))[:BATCH]
    return acts_ND[rows_B] * estimate_scale(acts_ND, 20000, seed=0)


class Stages:
    """`[bench] stage i/n: what (time so far)` as each stage starts: a bench runs for minutes to hours."""

    def __init__(self, names: list[str]) -> None:
        self.names, self.started = names, time.time()

    def start(self, name: str) -> None:
        print(f"[bench] stage {self.names.index(name) + 1}/{len(self.names)}: {name} ({duration(time.time() - self.started)} so far)",
              flush=True)


def measure(args: argparse.Namespace) -> dict:
    results: dict = {"machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                                 "processor": platform.processor() or platform.machine(), "load_avg_start": os.getloadavg()}}
    started = time.time()
    names = ["matmul peak", "LLM forwards (full vs stop-at-layer, fp32 and bf16)", "SAE steps vs SAELens (TopK, JumpReLU, dense)"]
    names += ["evals of one SAE (set-up cached)"] if args.evals else []
    names += ["data path: sharded read vs in-memory, training jobs' peak RSS"] if args.data != "skip" else []
    names += [f"16-run grid ({args.grid}): naive vs ours"] if args.grid != "skip" else []
    stages = Stages(names)
    stages.start(names[0])
    peak = matmul_peak_flops(4096, args.repeats)
    results["matmul_peak_flops_fp32_4096"] = peak

    stages.start(names[1])
    cfg = compose_config("train")
    model = shared_model(cfg)
    layer = int(cfg.layer)
    ids_BS = split_sequences(cfg, model, "validation", 16 * int(cfg.activations.context_length))
    llm = compare_forwards(model, ids_BS, layer, args.repeats)
    bf16_model = load_model({**plain(cfg.model), "dtype": "bfloat16"}, cache_root(cfg))
    llm["stop_at_layer_bf16_tokens_per_s"] = stop_at_layer_tokens_per_s(bf16_model, ids_BS, layer, args.repeats)
    del bf16_model
    results["llm"] = {**llm, "model": cfg.model.name, "layer": layer, "batch": list(ids_BS.shape)}
    results["stop_at_layer_speedup"] = llm["ratio"]

    stages.start(names[2])
    x_BD = real_batch(cfg, model)
    for architecture in ("topk", "jumprelu"):
        step = compare_with_saelens(architecture, x_BD, D_SAE, K, args.repeats, with_compile=args.compile)
        results[f"sae_step_{architecture}"] = step
        results[f"sae_step_vs_saelens_{architecture}"] = step["ratio"]
    dense = dense_step_flops(x_BD, D_SAE, args.repeats)
    results["sae_step_dense_relu"] = dense
    results["sae_step_peak_fraction"] = dense["dense_step_flops"] / peak
    results["sae_step_sizes"] = {"d_in": x_BD.shape[1], "d_sae": D_SAE, "k": K, "batch": BATCH, "dtype": "float32", "device": "cpu"}

    if args.evals:
        stages.start("evals of one SAE (set-up cached)")
        results["evals"] = eval_seconds_per_sae()
        results["eval_seconds_per_sae"] = results["evals"]["eval_seconds_per_sae"]
    if args.data != "skip":
        stages.start("data path: sharded read vs in-memory, training jobs' peak RSS")
        results["data"] = data.measure() if args.data == "full" else {"read": data.read_throughput(400_000)}
        results["sharded_read_vs_in_memory"] = results["data"]["read"]["ratio"]
        if "rss_ratio" in results["data"]:
            results["peak_rss_1m_over_200k_tokens"] = results["data"]["rss_ratio"]
    if args.grid != "skip":
        stages.start(names[-1])
        with tempfile.TemporaryDirectory(prefix="masksae-bench-") as workdir:
            grid = compare_grid(GRID_SIZES[args.grid], Path(workdir))
        results["grid"] = {**grid, "sizes": args.grid, "overrides": GRID_SIZES[args.grid]}
        results["grid_speedup_vs_naive"] = grid["ratio"]
    results["machine"]["load_avg_end"] = os.getloadavg()
    results["wall_s"] = time.time() - started
    return results


TARGETS = {
    "sae_step_vs_saelens_topk": (">=", 1.5, "SAE step tokens/s vs SAELens, TopK (d_in 640, d_sae 16384, k 64, batch 4096, fp32 CPU)"),
    "sae_step_vs_saelens_jumprelu": (">=", 1.0, "SAE step tokens/s vs SAELens, JumpReLU (same sizes, SAELens defaults)"),
    "stop_at_layer_speedup": (">=", 2.5, "LLM activations tokens/s, stop-at-layer vs full forward with output_hidden_states"),
    "grid_speedup_vs_naive": (">=", 2.0, "16-run grid wall time, naive / ours"),
    "sae_step_peak_fraction": (">=", 0.5, "dense SAE step FLOP/s / measured 4096^2 fp32 matmul peak"),
    "sharded_read_vs_in_memory": (">=", 0.8, "training batches/s, sharded memory-mapped cache / whole set in memory (warm page cache)"),
    "eval_seconds_per_sae": ("<=", 45.0, "seconds for all default evals of one SAE, the layer's eval set-up cached (2-core CPU)"),
    "peak_rss_1m_over_200k_tokens": ("<=", 1.10, "training job peak RSS at 1M training tokens / at 200k (eval.evals=[])"),
}


def markdown(results: dict) -> str:
    lines = ["| figure | measured | target | met |", "|---|---|---|---|"]
    for key, (direction, target, label) in TARGETS.items():
        value = results.get(key)
        shown = "not run" if value is None else f"{value:.2f}"
        met = "" if value is None else ("yes" if (value >= target if direction == ">=" else value <= target) else "no")
        lines.append(f"| {label} (`{key}`) | {shown} | {direction} {target} | {met} |")
    llm, topk, jump = results["llm"], results["sae_step_topk"], results["sae_step_jumprelu"]
    lines += [
        "",
        f"- matmul peak (fp32, 4096^2): {results['matmul_peak_flops_fp32_4096'] / 1e9:.1f} GFLOP/s; dense ReLU SAE step: "
        f"{results['sae_step_dense_relu']['dense_step_flops'] / 1e9:.1f} GFLOP/s",
        f"- LLM ({llm['model']}, layer {llm['layer']}, batch {llm['batch']}): stop-at-layer {llm['stop_at_layer_tokens_per_s']:.0f} tok/s, "
        f"full forward {llm['full_forward_tokens_per_s']:.0f} tok/s, stop-at-layer bf16 {llm['stop_at_layer_bf16_tokens_per_s']:.0f} tok/s",
        f"- TopK step: ours {topk['ours_tokens_per_s']:.0f} tok/s, SAELens {topk['saelens_tokens_per_s']:.0f} tok/s"
        + (f", ours compiled {topk['ours_compiled_tokens_per_s']:.0f} tok/s" if "ours_compiled_tokens_per_s" in topk else ""),
        f"- JumpReLU step: ours {jump['ours_tokens_per_s']:.0f} tok/s, SAELens {jump['saelens_tokens_per_s']:.0f} tok/s"
        + (f", ours compiled {jump['ours_compiled_tokens_per_s']:.0f} tok/s" if "ours_compiled_tokens_per_s" in jump else ""),
    ]
    if "evals" in results:
        lines.append(f"- evals of one SAE ({results['evals']['sae']}, d_sae {results['evals']['d_sae']}, {', '.join(results['evals']['evals'])}): "
                     + ", ".join(f"{name.removeprefix('eval_time/').removesuffix('_s')} {seconds:.0f} s" for name, seconds in results["evals"]["suites"].items()))
    if "data" in results:
        read = results["data"]["read"]
        lines.append(f"- data read ({read['rows']} rows x d 640 fp32, batch {read['batch']}, buffer {read['buffer_rows']} rows): in memory "
                     f"{read['in_memory_batches_per_s']:.0f} batches/s, sharded {read['sharded_block1_batches_per_s']:.0f} (blocks of 1 row), "
                     f"{read['sharded_block8_batches_per_s']:.0f} (blocks of 8)")
        for job in results["data"].get("rss", []):
            lines.append(f"- training job, {job['train_tokens']} tokens (eval.evals=[]{', cache built' if job['built_cache'] else ''}): "
                         f"peak RSS {job['peak_rss_gb']:.2f} GB, {job['wall_s']:.0f} s")
    if "grid" in results:
        grid = results["grid"]
        lines.append(f"- grid ({grid['n_runs']} runs, sizes: {grid['sizes']} {grid['overrides']}): ours {grid['ours_s']:.0f} s, naive {grid['naive_s']:.0f} s")
    load = results["machine"]
    lines.append(f"- {load['cpu_threads']} torch threads; load average at start {load['load_avg_start'][0]:.1f}, at end {load['load_avg_end'][0]:.1f} "
                 "(other processes on the machine inflate every figure: re-run on a quiet machine)")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions of each measurement (median reported)")
    parser.add_argument("--grid", choices=[*GRID_SIZES, "skip"], default="default", help="size of the 16-run grid, or skip it")
    parser.add_argument("--compile", action="store_true", help="also time our steps under torch.compile")
    parser.add_argument("--data", choices=["full", "read", "skip"], default="full",
                        help="data-path figures: read throughput and training jobs' peak RSS at 200k and 1M tokens (full), the read only, or none")
    parser.add_argument("--no-evals", dest="evals", action="store_false", help="skip eval_seconds_per_sae")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results.json")
    args = parser.parse_args()
    results = measure(args)
    args.out.write_text(json.dumps(results, indent=2))
    args.out.with_suffix(".md").write_text(markdown(results))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
