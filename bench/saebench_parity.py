"""`make saebench-parity`: SAEBench 0.6.0's own absorption eval and ours on one exported SAE, the same seeded words
and the same model copy, letter by letter (issue 13, point 4).

SAEBench runs in its own venv (bench/saebench_env.sh; bench/saebench_absorption.py); ours runs here with
`eval=saebench`'s absorption settings on SAEBench's exact train/test words, with its ICL pools (train words from the
train split, test words from the test split, the re-prompted scored words from the whole subset).
Writes bench/results_saebench_parity.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from masksae.api import load_sae
from masksae.config import compose_config
from masksae.evals.absorption import absorption_on_words
from masksae.models import load_model
from masksae.resources import cache_root

REPO = Path(__file__).resolve().parents[1]
SAEBENCH_PYTHON = REPO / ".venv-saebench" / "bin" / "python"
TOLERANCE = 0.02  # issue 13: agreement on the mean full-absorption score


def run_saebench(sae: Path, n_words: int, seed: int, out: Path) -> dict:
    """SAEBench's side, in its venv; its JSON (per-letter results and the exact words)."""
    command = [str(SAEBENCH_PYTHON), str(REPO / "bench" / "saebench_absorption.py"), "--sae", str(sae), "--n-words", str(n_words),
               "--seed", str(seed), "--out", str(out)]
    subprocess.run(command, check=True, cwd=REPO)
    return json.loads(out.read_text())


def run_ours(sae_folder: Path, theirs: dict, seed: int) -> tuple[dict, dict, float, float]:
    """Our absorption eval on SAEBench's words: per-letter rows, metrics, seconds, and the probe-F1 gate it used."""
    cfg = compose_config("train", ["eval=saebench", f"layer={theirs['layer']}"])
    started = time.perf_counter()
    model = load_model(cfg.model, cache_root(cfg))
    sae = load_sae(sae_folder)
    pools = (theirs["train_words"], theirs["test_words"], theirs["words"])
    letters, metrics, _ = absorption_on_words(model, int(theirs["layer"]), sae, theirs["train_words"], theirs["test_words"],
                                              cfg.eval.absorption, seed, int(cfg.eval.llm_batch_size), pools)
    return {row.letter: row for row in letters}, metrics, time.perf_counter() - started, float(cfg.eval.absorption.min_probe_f1)


def _number(value: float | None) -> float:
    """SAEBench writes None where a letter has no probe true positive."""
    return float("nan") if value is None else float(value)


def compare(theirs: dict, ours: dict, our_metrics: dict, min_f1: float) -> dict:
    """Per-letter and mean differences (ours - SAEBench's); means over the letters both gates pass, and each side's own."""
    rows, both = [], []
    for letter in theirs["letters"]:
        mine = ours[letter["letter"]]
        row = {"letter": letter["letter"], "saebench_probe_f1": letter["probe_f1"], "ours_probe_f1": mine.probe_f1,
               "saebench_passed": letter["passed_gate"], "ours_passed": mine.probe_f1 > min_f1 and mine.n_probe_true_positives > 0,
               "saebench_full": _number(letter["mean_full_absorption_score"]), "ours_full": mine.full_absorption_rate,
               "saebench_fraction": _number(letter["mean_absorption_fraction"]), "ours_fraction": mine.mean_absorption_fraction,
               "saebench_main_latents": letter["main_latents"], "ours_main_latents": mine.main_latents,
               "saebench_true_positives": letter["num_probe_true_positives"], "ours_true_positives": mine.n_probe_true_positives}
        row["full_difference"] = row["ours_full"] - row["saebench_full"]
        row["fraction_difference"] = row["ours_fraction"] - row["saebench_fraction"]
        rows.append(row)
        if row["saebench_passed"] and row["ours_passed"]:
            both.append(row)
    mean = lambda key: float(np.mean([row[key] for row in both])) if both else float("nan")  # noqa: E731
    summary = {
        "letters_passing_both": len(both),
        "saebench_mean_full": theirs["means"]["mean_full_absorption_score"], "ours_mean_full": our_metrics.get("absorption/mean_full_absorption_score"),
        "saebench_mean_fraction": theirs["means"]["mean_absorption_fraction_score"],
        "ours_mean_fraction": our_metrics.get("absorption/mean_absorption_fraction_score"),
        "both_gates_saebench_mean_full": mean("saebench_full"), "both_gates_ours_mean_full": mean("ours_full"),
        "both_gates_mean_full_difference": mean("full_difference"), "both_gates_mean_fraction_difference": mean("fraction_difference"),
        "both_gates_mean_abs_full_difference": float(np.mean([abs(row["full_difference"]) for row in both])) if both else float("nan"),
        "same_main_latents": sum(row["saebench_main_latents"] == row["ours_main_latents"] for row in rows),
    }
    summary["mean_full_difference"] = summary["ours_mean_full"] - summary["saebench_mean_full"]
    summary["within_tolerance"] = abs(summary["mean_full_difference"]) <= TOLERANCE
    return {"summary": summary, "letters": rows}


def markdown(result: dict) -> str:
    summary = result["summary"]
    lines = ["# Absorption: SAEBench 0.6.0 vs masksae on the same SAE and words", "",
             f"SAE `{result['sae']}`, {result['n_words']} words (seed {result['seed']}), {result['model']} {result['hook_name']}.", "",
             "| | SAEBench | ours | ours - SAEBench |", "|---|---|---|---|",
             f"| mean full absorption (own gate) | {summary['saebench_mean_full']:.4f} | {summary['ours_mean_full']:.4f} | {summary['mean_full_difference']:+.4f} |",
             f"| mean absorption fraction (own gate) | {summary['saebench_mean_fraction']:.4f} | {summary['ours_mean_fraction']:.4f} | "
             f"{summary['ours_mean_fraction'] - summary['saebench_mean_fraction']:+.4f} |",
             f"| mean full absorption ({summary['letters_passing_both']} letters passing both gates) | {summary['both_gates_saebench_mean_full']:.4f} | "
             f"{summary['both_gates_ours_mean_full']:.4f} | {summary['both_gates_mean_full_difference']:+.4f} |", "",
             f"Within {TOLERANCE} on the mean full-absorption score: {summary['within_tolerance']}. Same main latents in "
             f"{summary['same_main_latents']} of 26 letters.", "",
             "| letter | F1 SAEBench | F1 ours | full SAEBench | full ours | fraction SAEBench | fraction ours | main SAEBench | main ours |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in result["letters"]:
        lines.append(f"| {row['letter']} | {row['saebench_probe_f1']:.3f}{'' if row['saebench_passed'] else '*'} | "
                     f"{row['ours_probe_f1']:.3f}{'' if row['ours_passed'] else '*'} | {row['saebench_full']:.3f} | {row['ours_full']:.3f} | "
                     f"{row['saebench_fraction']:.3f} | {row['ours_fraction']:.3f} | {row['saebench_main_latents']} | {row['ours_main_latents']} |")
    lines += ["", "`*`: below the probe-F1 gate (0.6)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae", type=Path, required=True, help="an SAE folder exported by masksae (cfg.json + sae_weights.safetensors)")
    parser.add_argument("--n-words", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results_saebench_parity.json")
    parser.add_argument("--saebench-json", type=Path, help="reuse this SAEBench result (same SAE) instead of running SAEBench again")
    args = parser.parse_args(argv)
    if not (args.sae / "cfg.json").is_file():
        print(f"saebench-parity: --sae {args.sae} has no cfg.json (an exported SAE folder, e.g. outputs/runs/<key>/sae)", file=sys.stderr)
        return 2
    if not SAEBENCH_PYTHON.exists():
        print(f"saebench-parity: {SAEBENCH_PYTHON} missing: run bench/saebench_env.sh first", file=sys.stderr)
        return 2
    theirs = (json.loads(args.saebench_json.read_text()) if args.saebench_json else
              run_saebench(args.sae.resolve(), args.n_words, args.seed, args.out.with_name(args.out.stem + "_saebench.json")))
    ours, metrics, seconds, min_f1 = run_ours(args.sae, theirs, args.seed)
    result = {"sae": str(args.sae), "n_words": theirs["n_words"], "seed": args.seed, "model": theirs["model"], "hook_name": theirs["hook_name"],
              "saebench_seconds": theirs["timings_s"]["wall_s"], "ours_seconds": seconds,
              **compare(theirs, ours, metrics, min_f1)}
    args.out.write_text(json.dumps(result, indent=2, default=float))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
