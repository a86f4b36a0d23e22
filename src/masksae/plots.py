"""Matplotlib figures logged as run artifacts (training curves)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVES = ("train/loss", "train/mse", "train/l0", "train/dead_frac", "val/explained_variance", "train/lr")


def training_curves(client: Any, run_id: str, path: Path) -> Path:
    """One panel per training metric of the run, read back from MLflow, saved as PNG."""
    figure, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for axis, name in zip(axes.flat, CURVES):
        history = sorted(client.get_metric_history(run_id, name), key=lambda metric: metric.step)
        axis.plot([m.step for m in history], [m.value for m in history], marker="." if len(history) < 30 else None)
        axis.set_title(name)
        axis.set_xlabel("step")
        if name in ("train/loss", "train/mse") and history and min(m.value for m in history) > 0:
            axis.set_yscale("log")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
