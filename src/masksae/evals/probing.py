"""Sparse probing (SAEBench): one-vs-rest tasks on mean-pooled text representations, top-k latents vs residual probes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from masksae.evals.probes import BinaryTask, accuracy, fit_probe, top_k_by_mean_difference


def top_k_accuracies(x_NF: np.ndarray, task: BinaryTask, ks: Sequence[int], prefix: str) -> dict[str, float]:
    """Test accuracy of an L2 probe on the k features with the largest train mean difference, for each k."""
    x_train, x_test = x_NF[task.train], x_NF[task.test]
    scores = {}
    for k in ks:
        chosen = top_k_by_mean_difference(x_train, task.train_y, k)
        probe = fit_probe(x_train[:, chosen], task.train_y)
        scores[f"{prefix}_top_{k}_test_accuracy"] = accuracy(probe, x_test[:, chosen], task.test_y)
    return scores


def residual_scores(pooled_ND: np.ndarray, task: BinaryTask, ks: Sequence[int]) -> dict[str, float]:
    """SAE-independent baselines: a dense probe on the whole residual and top-k residual dimensions."""
    dense = fit_probe(pooled_ND[task.train], task.train_y)
    return {"llm_test_accuracy": accuracy(dense, pooled_ND[task.test], task.test_y), **top_k_accuracies(pooled_ND, task, ks, "llm")}


def sae_scores(latents_NF: np.ndarray, task: BinaryTask, ks: Sequence[int]) -> dict[str, float]:
    """Top-k SAE latent probes."""
    return top_k_accuracies(latents_NF, task, ks, "sae")
