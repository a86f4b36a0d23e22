"""Runs the configured evaluation suites (`eval.evals`) on one raw-space SAE and gathers their metrics."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from masksae.evals.core import evaluate_core
from masksae.models import LoadedModel
from masksae.resources import split_sequences
from masksae.saes import SparseAutoencoder

KNOWN_EVALS = ("core",)


def run_evals(cfg: DictConfig, model: LoadedModel, sae: SparseAutoencoder, scale: float, val_acts_ND: torch.Tensor) -> dict[str, float]:
    """Metrics of every suite named in `cfg.eval.evals`, on clean held-out text."""
    metrics: dict[str, float] = {}
    if "core" in cfg.eval.evals:
        n_tokens = int(cfg.eval.core.ce_sequences) * int(cfg.activations.context_length)
        ce_sequences_NS = split_sequences(cfg, model, "validation", n_tokens)
        metrics.update(evaluate_core(model, sae, int(cfg.layer), val_acts_ND, ce_sequences_NS, scale, int(cfg.eval.core.batch_size)))
    return metrics
