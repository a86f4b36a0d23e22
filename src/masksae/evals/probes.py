"""Probe building blocks shared by sparse probing and OOD: balanced one-vs-rest tasks, top-k selection, logistic fits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class BinaryTask:
    """One class against the rest, as balanced row indices into a task's examples."""

    name: str
    train: np.ndarray
    train_y: np.ndarray
    test: np.ndarray
    test_y: np.ndarray
    ood: np.ndarray
    ood_y: np.ndarray


def _balanced(rows: np.ndarray, is_positive: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """All positives and as many randomly drawn negatives (fewer positives if negatives run short)."""
    positives, negatives = rows[is_positive], rows[~is_positive]
    n = min(len(positives), len(negatives))
    chosen = np.concatenate([rng.permutation(positives)[:n], rng.permutation(negatives)[:n]])
    return chosen, np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])


def one_vs_rest_tasks(dataset: str, labels: Sequence[str], splits: Sequence[str], seed: int) -> list[BinaryTask]:
    """A balanced binary task per class with train and test examples (and OOD examples where the data has them)."""
    labels_N, splits_N = np.asarray(labels), np.asarray(splits)
    rng = np.random.default_rng(seed)
    tasks = []
    for label in sorted(set(labels_N[splits_N == "train"])):
        parts = []
        for split in ("train", "test", "ood"):
            rows = np.flatnonzero(splits_N == split)
            parts += _balanced(rows, labels_N[rows] == label, rng)
        if min(len(parts[0]), len(parts[2])) >= 2:
            tasks.append(BinaryTask(f"{dataset}/{label}", *parts))
    return tasks


def top_k_by_mean_difference(x_NF: np.ndarray, y_N: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k features with the largest |mean over positives - mean over negatives|."""
    difference_F = np.abs(x_NF[y_N == 1].mean(axis=0) - x_NF[y_N == 0].mean(axis=0))
    return np.argsort(-difference_F, kind="stable")[:k]


def fit_probe(x_NF: np.ndarray, y_N: np.ndarray, c: float = 1.0, l1: bool = False) -> object:
    """Standardised logistic regression, L2 (lbfgs) or L1 (liblinear)."""
    model = LogisticRegression(C=c, l1_ratio=1.0, solver="liblinear") if l1 else LogisticRegression(C=c, max_iter=2000)
    return make_pipeline(StandardScaler(), model).fit(x_NF, y_N)


def accuracy(probe: object, x_NF: np.ndarray, y_N: np.ndarray) -> float:
    return float((probe.predict(x_NF) == y_N).mean())


def auc(probe: object, x_NF: np.ndarray, y_N: np.ndarray) -> float:
    """ROC AUC of the probe's decision function (nan when only one class is present)."""
    if len(set(y_N.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(y_N, probe.decision_function(x_NF)))


def fit_with_validation(x_NF: np.ndarray, y_N: np.ndarray, c_grid: Sequence[float], l1: bool, seed: int) -> object:
    """Choose C on a 20% validation split by AUC, then refit on all training rows."""
    order = np.random.default_rng(seed).permutation(len(y_N))
    n_val = max(2, len(order) // 5)
    val, fit = order[:n_val], order[n_val:]
    scores = [auc(fit_probe(x_NF[fit], y_N[fit], c, l1), x_NF[val], y_N[val]) for c in c_grid]
    best = c_grid[int(np.nanargmax(scores))] if not np.all(np.isnan(scores)) else 1.0
    return fit_probe(x_NF, y_N, best, l1)
