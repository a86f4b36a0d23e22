"""SAEBench 0.6.0's own absorption eval on one SAE exported by masksae, offline, on a seeded word subset.

The SAEBench side of `make saebench-parity` (issue 13, point 4). Run it with the SAEBench venv's python
(bench/saebench_env.sh builds it):

    .venv-saebench/bin/python bench/saebench_absorption.py --sae outputs/runs/<key>/sae \
        --n-words 3000 --seed 0 --out bench/saebench_absorption.json

What is SAEBench's and what is ours:
- SAEBench's functions do the work, unchanged and in `run_eval`'s order (sae_bench/evals/absorption/main.py):
  the ground-truth probe (common.load_or_train_probe -> train_and_save_probes), the k-sparse probing experiment
  (k_sparse_probing.run_k_sparse_probing_experiment), the absorption experiment
  (feature_absorption.run_feature_absortion_experiment) and main._aggregate_results_df, with
  AbsorptionEvalConfig's defaults. The SAE goes through general_utils.load_and_format_sae as a custom SAE object
  (decoder norms checked, not folded), as run_eval does with SAE objects.
- Ours: (1) the vocabulary. SAEBench calls vocab.get_alpha_tokens(tokenizer) (every alphabetic single token, with or
  without a leading space); here that list is sorted, words whose prompt does not tokenize as one word token in
  context are removed (they make prompts of another length: SAEBench would read the wrong position, or raise in
  FeatureAbsorptionCalculator._validate_prompts_are_same_length), and a seeded sample of --n-words is drawn. The
  sample replaces get_alpha_tokens in the `common` and `feature_absorption` modules, so it is both the probe's word
  set and the absorption calculator's ICL pool (SAEBench's full vocabulary otherwise). (2) Seeds: python random,
  numpy and torch are seeded with --seed before each of the three stages (SAEBench seeds nothing). (3) Every
  artefact (probe, its data, parquet files) goes to --work-dir instead of the installed package's folder; the probe
  is cached per (model, layer, word list, seed) and reused by later SAEs. (4) Speed only: run_with_cache stops after
  the hooked block (stop_at_layer; the cached activation is checked identical to a full forward on a batch) and
  torch.set_flush_denormal(True), as the main project does on CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import saebench_model_cache  # noqa: E402  (stdlib only: safe before HF_HOME is set)

TEMPLATE_SUFFIX = " has the first letter:"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae", type=Path, required=True, help="SAELens-format folder (cfg.json + sae_weights.safetensors)")
    parser.add_argument("--hook-name", default=None, help="blocks.L.hook_resid_post (default: the SAE's cfg.json)")
    parser.add_argument("--layer", type=int, default=None, help="L of blocks.L.hook_resid_post (default: from the hook name)")
    parser.add_argument("--n-words", type=int, default=3000, help="seeded vocabulary subset size (0: all words)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="output JSON")
    parser.add_argument("--model", default="google/gemma-3-270m", help="TransformerLens / hub model id")
    parser.add_argument("--hf-home", type=Path, default=saebench_model_cache.DEFAULT_HF_HOME)
    parser.add_argument("--model-source", type=Path, default=saebench_model_cache.DEFAULT_SOURCE,
                        help="masksae's converted HF folder of the model (gemma-3-270m only)")
    parser.add_argument("--work-dir", type=Path, default=saebench_model_cache.CACHE_ROOT / "saebench-absorption",
                        help="SAEBench's artefacts: ground-truth probes (reused across SAEs), parquet files")
    parser.add_argument("--llm-batch-size", type=int, default=32, help="absorption-stage LLM batch (config.llm_batch_size)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--full-forward", action="store_true", help="no stop_at_layer (as SAEBench runs it; slower)")
    parser.add_argument("--retrain-probe", action="store_true", help="ignore a cached ground-truth probe")
    return parser.parse_args(argv)


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_offline_model(args: argparse.Namespace) -> None:
    """Hub-cache entry for the model from masksae's converted folder; HF offline from here on."""
    if args.model == "google/gemma-3-270m":
        source = args.model_source.expanduser()
        if not all((source / name).exists() for name in saebench_model_cache.REQUIRED):
            saebench_model_cache.build_converted(source, REPO / ".venv" / "bin" / "python")
        saebench_model_cache.materialise(source, args.hf_home.expanduser(), args.model)
    os.environ["HF_HOME"] = str(args.hf_home.expanduser())
    os.environ["HF_HUB_CACHE"] = str(args.hf_home.expanduser() / "hub")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def split_word_tokens(tokenizer, words: list[str]) -> tuple[list[str], list[str]]:
    """Words that tokenize as exactly one token inside a prompt line ("\\n{word} has the first letter: X"), and the rest.

    A prompt line is how every word appears in SAEBench's prompts (as ICL example and as the probed word, each after
    the separator "\\n"); a word that merges with its neighbours changes the prompt length.
    """
    reference = tokenizer("\nword" + TEMPLATE_SUFFIX + " X", add_special_tokens=False)["input_ids"]
    kept, dropped = [], []
    batch = tokenizer(["\n" + w + TEMPLATE_SUFFIX + " X" for w in words], add_special_tokens=False)["input_ids"]
    for word, ids in zip(words, batch):
        ok = len(ids) == len(reference) and ids[0] == reference[0] and ids[2:] == reference[2:]
        ok = ok and tokenizer.decode([ids[1]]) == word
        (kept if ok else dropped).append(word)
    return kept, dropped


def choose_words(tokenizer, n_words: int, seed: int) -> dict:
    from sae_bench.evals.absorption.vocab import get_alpha_tokens

    vocab = sorted(get_alpha_tokens(tokenizer))  # tokenizer.vocab's order is not stable: sort first
    kept, dropped = split_word_tokens(tokenizer, vocab)
    subset = kept if n_words <= 0 or n_words >= len(kept) else sorted(random.Random(seed).sample(kept, n_words))
    return {"full_vocab_size": len(vocab), "dropped_tokenization": dropped, "eligible": len(kept), "words": subset}


def patch_vocab(words: list[str]) -> None:
    """Make SAEBench's absorption code see `words` wherever it builds its vocabulary."""
    import sae_bench.evals.absorption.common as common
    import sae_bench.evals.absorption.feature_absorption as feature_absorption

    def subset_alpha_tokens(tokenizer, allow_leading_space: bool = True, replace_special_chars: bool = True):
        return list(words)

    common.get_alpha_tokens = subset_alpha_tokens
    feature_absorption.get_alpha_tokens = subset_alpha_tokens


def stop_after_layer(model, layer: int) -> None:
    """run_with_cache of blocks.<layer>.hook_resid_post runs blocks 0..layer only (the cached values are unchanged)."""
    full = model.run_with_cache

    def run_with_cache(*a, **kw):
        names = kw.get("names_filter")
        if isinstance(names, list) and names == [f"blocks.{layer}.hook_resid_post"] and "stop_at_layer" not in kw:
            kw["stop_at_layer"] = layer + 1
        return full(*a, **kw)

    model.run_with_cache = run_with_cache
    model._full_run_with_cache = full


def check_stop_after_layer(model, layer: int, prompts: list[str]) -> float:
    import torch

    hook = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        fast = model.run_with_cache(prompts, names_filter=[hook])[1][hook]
        slow = model._full_run_with_cache(prompts, names_filter=[hook])[1][hook]
    return float((fast - slow).abs().max())


def letter_counts(words: list[str]) -> dict[str, int]:
    from sae_bench.evals.absorption.vocab import LETTERS

    counts = {letter: 0 for letter in LETTERS}
    for word in words:
        first = [c for c in word.strip() if c.isalpha()][0].lower()
        counts[first] += 1
    return counts


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t_start = time.time()
    setup_offline_model(args)

    import numpy as np  # noqa: F401
    import pandas as pd
    import torch
    from importlib.metadata import version
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from sae_bench.evals.absorption import main as sb_main
    from sae_bench.evals.absorption.common import load_or_train_probe
    from sae_bench.evals.absorption.eval_config import AbsorptionEvalConfig
    from sae_bench.evals.absorption.feature_absorption import run_feature_absortion_experiment
    from sae_bench.evals.absorption.k_sparse_probing import run_k_sparse_probing_experiment
    from sae_bench.evals.absorption.vocab import LETTERS
    from sae_bench.sae_bench_utils import general_utils

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.set_flush_denormal(True)
    device = "cpu"
    timings: dict[str, float] = {}

    sae_dir = args.sae.expanduser().resolve()
    sae_cfg = json.loads((sae_dir / "cfg.json").read_text())
    hook_name = args.hook_name or sae_cfg.get("metadata", {}).get("hook_name") or sae_cfg.get("hook_name")
    layer = args.layer if args.layer is not None else int(re.search(r"blocks\.(\d+)\.", hook_name).group(1))
    if hook_name != f"blocks.{layer}.hook_resid_post":
        raise SystemExit(f"SAEBench's absorption eval reads blocks.L.hook_resid_post only; got {hook_name} / layer {layer}")

    config = AbsorptionEvalConfig(model_name=args.model, random_seed=args.seed, llm_batch_size=args.llm_batch_size,
                                  llm_dtype="float32")

    t = time.time()
    model = HookedTransformer.from_pretrained_no_processing(config.model_name, device=device, dtype=torch.float32)
    timings["load_model_s"] = time.time() - t
    if not args.full_forward:
        stop_after_layer(model, layer)

    words_info = choose_words(model.tokenizer, args.n_words, args.seed)
    words = words_info["words"]
    patch_vocab(words)
    word_hash = hashlib.sha1("\n".join(words).encode()).hexdigest()[:12]

    # The SAE, through SAEBench's own loading path for SAE objects (decoder norms checked, not folded).
    sae = SAE.load_from_disk(str(sae_dir), device=device)
    sae.cfg.metadata.model_name = config.model_name  # ours says "gemma3-270m"; SAEBench only needs it set
    dec_norms = sae.W_dec.detach().norm(dim=-1)
    release = f"masksae_{sae_cfg.get('metadata', {}).get('run_key') or sae_dir.parent.name}"
    sae_id, sae, _ = general_utils.load_and_format_sae(release, sae, device)
    sae = sae.to(device=device, dtype=torch.float32)
    sae_name = f"{release}_{sae_id}"

    work = args.work_dir.expanduser().resolve()
    probes_dir = work / "probes" / f"{config.model_name.replace('/', '--')}_L{layer}_n{len(words)}_seed{args.seed}_{word_hash}"
    k_sparse_dir = work / "k_sparse_probing"
    absorption_dir = work / "feature_absorption"
    # SAEBench's own layout: <probes_dir>/<model.cfg.model_name>/layer_<L>/ (TransformerLens's short name)
    layer_dir = probes_dir / model.cfg.model_name / f"layer_{layer}"
    probe_file = layer_dir / "probe.pth"
    if args.retrain_probe and probe_file.exists():
        probe_file.unlink()

    if not args.full_forward:
        sample = ["\nword" + TEMPLATE_SUFFIX + " W\ncat" + TEMPLATE_SUFFIX, "\nHouse" + TEMPLATE_SUFFIX]
        stop_check = check_stop_after_layer(model, layer, sample)
    else:
        stop_check = None

    # Stage 1: the ground-truth probe (train_and_save_probes through load_or_train_probe), cached per word list.
    seed_all(args.seed)
    t = time.time()
    probe_cached = probe_file.exists()
    load_or_train_probe(model=model, base_template=config.prompt_template, pos_idx=config.prompt_token_pos,
                        layer=layer, probes_dir=probes_dir, device=device)
    timings["ground_truth_probe_s"] = time.time() - t

    # Stage 2: k-sparse probes on SAE latents, main latents by the F1-jump rule (run_eval's call, our folders).
    seed_all(args.seed)
    t = time.time()
    k_df = run_k_sparse_probing_experiment(
        model=model, sae=sae, layer=layer, sae_name=sae_name, force=True, max_k_value=config.max_k_value,
        f1_jump_threshold=config.f1_jump_threshold, prompt_template=config.prompt_template,
        prompt_token_pos=config.prompt_token_pos, device=device, experiment_dir=k_sparse_dir, probes_dir=probes_dir,
        k_sparse_probe_l1_decay=config.k_sparse_probe_l1_decay, k_sparse_probe_batch_size=config.k_sparse_probe_batch_size,
        k_sparse_probe_num_epochs=config.k_sparse_probe_num_epochs, eval_batch_size=config.eval_k_sparse_probe_batch_size,
        precalc_k_sparse_probe_sae_acts=config.precalc_k_sparse_probe_sae_acts,
    )
    timings["k_sparse_probing_s"] = time.time() - t
    n_gated = int((k_df["f1_probe"] > config.min_GT_probe_f1).sum())
    saebench_would_stop = n_gated < config.min_feats_for_eval

    # Stage 3: absorption on the test words the probe gets right (run_eval runs it only when enough letters pass;
    # here it always runs, so that letters can be compared, and `saebench_would_stop` says what run_eval would do).
    seed_all(args.seed)
    t = time.time()
    raw_df = run_feature_absortion_experiment(
        model=model, sae=sae, layer=layer, sae_name=sae_name, force=True, max_k_value=config.max_k_value,
        feature_split_f1_jump_threshold=config.f1_jump_threshold, prompt_template=config.prompt_template,
        prompt_token_pos=config.prompt_token_pos, batch_size=config.llm_batch_size, device=device,
        experiment_dir=absorption_dir, sparse_probing_experiment_dir=k_sparse_dir, probes_dir=probes_dir,
    )
    timings["absorption_s"] = time.time() - t
    agg_df = sb_main._aggregate_results_df(raw_df) if len(raw_df) else pd.DataFrame(columns=["letter"])

    split_words = {split: pd.read_csv(layer_dir / f"{split}_df.csv", keep_default_na=False, na_values=[""])["token"].tolist()
                   for split in ("train", "test")}
    train_counts, test_counts = letter_counts(split_words["train"]), letter_counts(split_words["test"])

    letters = []
    for letter in LETTERS:
        k_row = k_df[k_df["letter"] == letter].iloc[0]
        agg = agg_df[agg_df["letter"] == letter]
        f1 = float(k_row["f1_probe"])
        entry = {
            "letter": letter,
            "probe_f1": f1, "probe_precision": float(k_row["precision_probe"]), "probe_recall": float(k_row["recall_probe"]),
            "passed_gate": f1 > config.min_GT_probe_f1,
            "n_train_words": train_counts[letter], "n_test_words": test_counts[letter],
            "main_latents": [int(x) for x in k_row["split_feats"]],
            "num_split_features": int(k_row["num_split_features"]),
            "k_sparse_f1": [float(k_row[f"f1_sparse_sae_{k}"]) for k in range(1, config.max_k_value + 1)],
        }
        if len(agg):
            row = agg.iloc[0]
            entry.update({
                "num_probe_true_positives": int(row["num_probe_true_positives"]),
                "num_full_absorption": int(row["num_full_absorption"]),
                "mean_full_absorption_score": float(row["full_absorption_rate"]),
                "mean_absorption_fraction": float(row["mean_absorption_fraction"]),
            })
        else:  # no test word of this letter was a probe true positive: SAEBench has no row for it
            entry.update({"num_probe_true_positives": 0, "num_full_absorption": 0,
                          "mean_full_absorption_score": None, "mean_absorption_fraction": None})
        letters.append(entry)

    scored = [e for e in letters if e["passed_gate"] and e["mean_full_absorption_score"] is not None]

    def mean_sd(key: str) -> tuple[float | None, float | None]:
        values = [e[key] for e in scored]
        return (statistics.mean(values) if values else None, statistics.stdev(values) if len(values) > 1 else None)

    (full_mean, full_sd), (frac_mean, frac_sd) = mean_sd("mean_full_absorption_score"), mean_sd("mean_absorption_fraction")
    split_values = [len(e["main_latents"]) for e in scored]
    result = {
        "what": "SAEBench 0.6.0 absorption eval (its own functions) on a masksae SAE, seeded word subset",
        "sae": str(sae_dir), "sae_architecture": sae_cfg["architecture"], "d_sae": sae_cfg["d_sae"],
        "model": config.model_name, "hook_name": hook_name, "layer": layer, "seed": args.seed,
        "n_words_requested": args.n_words, "n_words": len(words), "word_list_sha1_12": word_hash,
        "saebench_config": {k: getattr(config, k) for k in (
            "random_seed", "f1_jump_threshold", "max_k_value", "prompt_template", "prompt_token_pos", "llm_batch_size",
            "llm_dtype", "k_sparse_probe_l1_decay", "k_sparse_probe_batch_size", "k_sparse_probe_num_epochs",
            "min_GT_probe_f1", "min_feats_for_eval", "eval_k_sparse_probe_batch_size", "precalc_k_sparse_probe_sae_acts")},
        "means": {
            # run_eval's AbsorptionMeanMetrics: statistics.mean over letters with probe F1 > min_GT_probe_f1
            "mean_full_absorption_score": full_mean, "std_dev_full_absorption_score": full_sd,
            "mean_absorption_fraction_score": frac_mean, "std_dev_absorption_fraction_score": frac_sd,
            # run_eval's mean_num_split_features is len(split_feats) (main latents), not num_split_features (= len - 1)
            "mean_num_split_features": statistics.mean(split_values) if split_values else None,
            "n_letters_scored": len(scored), "n_letters_passing_gate": n_gated,
        },
        "saebench_would_stop": saebench_would_stop,
        "letters": letters,
        "decoder_row_norm_max_abs_dev": float((dec_norms - 1).abs().max()),
        "decoder_folded": False,
        "stop_at_layer": not args.full_forward, "stop_at_layer_max_abs_diff": stop_check,
        "probe_reused_from_cache": probe_cached, "probes_dir": str(probes_dir),
        "vocab": {"full_alpha_vocab_size": words_info["full_vocab_size"], "eligible_after_tokenization_filter": words_info["eligible"],
                  "dropped_tokenization": words_info["dropped_tokenization"]},
        "words": words, "train_words": split_words["train"], "test_words": split_words["test"],
        "timings_s": {**{k: round(v, 1) for k, v in timings.items()}, "wall_s": round(time.time() - t_start, 1)},
        "versions": {name: version(name) for name in ("sae-bench", "sae-lens", "transformer-lens", "torch", "transformers")},
        "threads": torch.get_num_threads(), "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    summary = {k: result["means"][k] for k in ("mean_full_absorption_score", "mean_absorption_fraction_score",
                                                "mean_num_split_features", "n_letters_scored")}
    print(f"[saebench-absorption] {summary} wall {result['timings_s']['wall_s']} s -> {args.out}")
    return result


if __name__ == "__main__":
    main()
