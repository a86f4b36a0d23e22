"""eval_seconds_per_sae (issue 14): wall time of all evals of one SAE at default sizes, the SAE-independent set-up
(absorption prompts and probes, task activations, zero-ablation CE) already cached, as every SAE after a layer's first
finds it. The SAE is a freshly initialised default TopK (timings do not depend on what it learnt)."""

from __future__ import annotations

import time

import torch

from masksae.config import compose_config, plain
from masksae.datamodule import estimate_scale
from masksae.evals.runner import run_evals
from masksae.resources import clean_validation_activations, shared_model
from masksae.saes import build_sae


def eval_seconds_per_sae(repeats: int = 1) -> dict:
    """Best of `repeats` timed runs of every default eval suite, after one untimed run that builds the shared set-up."""
    cfg = compose_config("train")
    model = shared_model(cfg)
    acts_ND = clean_validation_activations(cfg, model).acts_ND.float()
    scale = estimate_scale(acts_ND, 20000, seed=0)
    torch.manual_seed(0)
    sae = build_sae(plain(cfg.sae), int(cfg.model.d_model)).eval()
    sae.fold_activation_scale(scale)
    run_evals(cfg, model, sae, scale, acts_ND)  # builds (or reads) the cached set-up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = run_evals(cfg, model, sae, scale, acts_ND)
        timings.append((time.perf_counter() - started, {k: round(v, 1) for k, v in result.metrics.items() if k.startswith("eval_time/")}))
    wall_s, suites = min(timings, key=lambda timing: timing[0])
    return {"eval_seconds_per_sae": round(wall_s, 1), "suites": suites, "evals": list(cfg.eval.evals),
            "sae": cfg.sae.architecture, "d_sae": sae.d_sae}


if __name__ == "__main__":
    import json

    print(json.dumps(eval_seconds_per_sae(), indent=2))
