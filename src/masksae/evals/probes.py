"""Probe building blocks shared by sparse probing and OOD: balanced one-vs-rest tasks, top-k selection, logistic fits
(on the features as they are: neither SAEBench nor sae-probes standardises them)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold


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


def fit_probe(x_NF: np.ndarray, y_N: np.ndarray, c: float = 1.0, l1: bool = False) -> LogisticRegression:
    """Logistic regression, L2 (lbfgs) or L1 (liblinear, its coordinate order seeded: unseeded it draws from numpy's
    global generator and the same fit differs between processes; sae-probes's saga reaches the same optimum), 1000
    iterations at most as in both references."""
    l1_probe = LogisticRegression(C=c, l1_ratio=1.0, solver="liblinear", max_iter=1000, random_state=0)
    model = l1_probe if l1 else LogisticRegression(C=c, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # unscaled residuals, as in the references: reported, not fatal
        return model.fit(x_NF, y_N)


def accuracy(probe: object, x_NF: np.ndarray, y_N: np.ndarray) -> float:
    return float((probe.predict(x_NF) == y_N).mean())


def auc(probe: object, x_NF: np.ndarray, y_N: np.ndarray) -> float:
    """ROC AUC of the probe's decision function (nan when only one class is present)."""
    if len(set(y_N.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(y_N, probe.decision_function(x_NF)))


def validation_splits(y_N: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit, validation) row splits as sae-probes chooses them: 6 stratified folds below 128 rows, else one held-out
    set of min(20%, 100) rows; splits whose validation rows hold one class only are dropped."""
    order = np.random.default_rng(seed).permutation(len(y_N))
    if len(y_N) < 128:
        folds = StratifiedKFold(n_splits=min(6, int(np.bincount(y_N).min())), shuffle=True, random_state=seed)
        splits = [(order[fit], order[val]) for fit, val in folds.split(order, y_N[order])]
    else:
        n_val = min(len(y_N) // 5, 100)
        splits = [(order[:-n_val], order[-n_val:])]
    return [(fit, val) for fit, val in splits if len(set(y_N[val].tolist())) == 2]


def fit_with_validation(x_NF: np.ndarray, y_N: np.ndarray, c_grid: Sequence[float], l1: bool, seed: int) -> LogisticRegression:
    """Choose C by mean validation AUC over sae-probes's splits, then refit on all training rows."""
    splits = validation_splits(y_N, seed)
    scores = [np.mean([auc(fit_probe(x_NF[fit], y_N[fit], c, l1), x_NF[val], y_N[val]) for fit, val in splits]) if splits else np.nan
              for c in c_grid]
    best = c_grid[int(np.nanargmax(scores))] if not np.all(np.isnan(scores)) else 1.0
    return fit_probe(x_NF, y_N, best, l1)
