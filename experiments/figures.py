"""Report figures: each metric against mask_prob per setting, and against L0 (matched sparsity) per architecture."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.runs import Setting, SweepRun  # noqa: E402
from experiments.stats import mean_ci  # noqa: E402
from experiments.table import METRICS, Metric, by_setting  # noqa: E402

L0 = "core/l0"


def _panels(metrics: Sequence[Metric]) -> tuple[plt.Figure, list[plt.Axes]]:
    columns = 3
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False)
    for axis in axes.flat[len(metrics):]:
        axis.set_visible(False)
    return figure, list(axes.flat)


def _error(estimates: list) -> list[float]:
    return [est.high - est.mean if est.has_interval else 0.0 for est in estimates]


def _save(figure: plt.Figure, title: str, path: Path) -> Path:
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _no_data(axis: plt.Axes) -> None:
    axis.text(0.5, 0.5, "n/a", ha="center", va="center", transform=axis.transAxes, color="gray")


def against_mask_prob(setting: Setting, rates: dict[float, list[SweepRun]], confidence: float, path: Path) -> Path:
    """One panel per metric: every run as a dot, the mean over seeds with its interval as a line."""
    figure, axes = _panels(METRICS)
    for axis, metric in zip(axes, METRICS):
        points = [(p, run.metrics[metric.key]) for p, members in rates.items() for run in members if metric.key in run.metrics]
        estimates = {p: mean_ci((run.metrics.get(metric.key) for run in members), confidence) for p, members in rates.items()}
        kept = [p for p, est in estimates.items() if est.n]
        axis.set_title(metric.header, fontsize=10)
        axis.set_xlabel("mask_prob")
        if not kept:
            _no_data(axis)
            continue
        axis.scatter([x for x, _ in points], [y for _, y in points], s=12, color="gray", alpha=0.6, label="runs")
        axis.errorbar(kept, [estimates[p].mean for p in kept], yerr=_error([estimates[p] for p in kept]), marker="o",
                      capsize=3, label=f"mean, {confidence:.0%} CI")
    axes[0].legend(fontsize=8)
    return _save(figure, setting.label, path)


def against_l0(runs: list[SweepRun], title: str, confidence: float, path: Path) -> Path:
    """Matched sparsity: one panel per metric against L0, one curve per mask_prob through the means of each setting."""
    metrics = [m for m in METRICS if m.key != L0]
    figure, axes = _panels(metrics)
    curves: dict[float, list[list[SweepRun]]] = defaultdict(list)
    for rates in by_setting(runs).values():
        for p, members in rates.items():
            curves[p].append(members)
    colors = plt.get_cmap("viridis")
    for axis, metric in zip(axes, metrics):
        axis.set_title(metric.header, fontsize=10)
        axis.set_xlabel("L0")
        drawn = False
        for index, (p, groups) in enumerate(sorted(curves.items())):
            color = colors(index / max(len(curves) - 1, 1))
            pts = []
            for members in groups:
                l0 = mean_ci(r.metrics.get(L0) for r in members)
                est = mean_ci((r.metrics.get(metric.key) for r in members), confidence)
                if l0.n and est.n:
                    pts.append((l0.mean, est))
            pts.sort(key=lambda point: point[0])
            if not pts:
                continue
            drawn = True
            axis.errorbar([x for x, _ in pts], [est.mean for _, est in pts], yerr=_error([est for _, est in pts]), marker="o",
                          capsize=3, color=color, label=f"p={p:g}")
            dots = [(r.metrics[L0], r.metrics[metric.key]) for members in groups for r in members if L0 in r.metrics and metric.key in r.metrics]
            axis.scatter([x for x, _ in dots], [y for _, y in dots], s=10, color=color, alpha=0.4)
        if drawn:
            axis.legend(fontsize=8)
        else:
            _no_data(axis)
    return _save(figure, title, path)
