"""Out-of-distribution probing (Kantamneni et al. 2025): train in-distribution, test on a shifted split, ROC AUC."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from masksae.evals.probes import BinaryTask, auc, fit_with_validation, top_k_by_mean_difference


def _aucs(probe: object, x_NF: np.ndarray, task: BinaryTask, prefix: str) -> dict[str, float]:
    return {f"{prefix}_auc_id": auc(probe, x_NF[task.test], task.test_y), f"{prefix}_auc_ood": auc(probe, x_NF[task.ood], task.ood_y)}


def dense_scores(pooled_ND: np.ndarray, task: BinaryTask, c_grid: Sequence[float], seed: int) -> dict[str, float]:
    """The dense "oracle": L2 probe on the full residual, C chosen on validation AUC."""
    return _aucs(fit_with_validation(pooled_ND[task.train], task.train_y, c_grid, l1=False, seed=seed), pooled_ND, task, "dense")


def sae_scores(latents_NF: np.ndarray, task: BinaryTask, k: int, c_grid: Sequence[float], seed: int) -> dict[str, float]:
    """L1 probe on the top-k latents by |mean difference| on in-distribution training texts, C chosen on validation AUC."""
    chosen = top_k_by_mean_difference(latents_NF[task.train], task.train_y, k)
    probe = fit_with_validation(latents_NF[task.train][:, chosen], task.train_y, c_grid, l1=True, seed=seed)
    return _aucs(probe, latents_NF[:, chosen], task, "sae")
