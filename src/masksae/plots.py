"""Matplotlib figures logged as run artifacts: training curves, absorption per letter, probing accuracy per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from masksae.evals.absorption import passes_probe_gate  # noqa: E402

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
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def draw_absorption_per_letter(axis: plt.Axes, letters: Sequence[Mapping[str, Any]], min_probe_f1: float) -> None:
    """Full-absorption rate and mean absorption fraction per first letter; letters whose probe failed the F1 gate (left
    out of the means) are drawn grey and hatched, with their F1."""
    positions = range(len(letters))
    passed = [passes_probe_gate(letter["probe_f1"], letter["n_probe_true_positives"], min_probe_f1) for letter in letters]
    for offset, key, color, label in ((-0.2, "full_absorption_rate", "tab:red", "full absorption rate"),
                                      (0.2, "mean_absorption_fraction", "tab:blue", "mean absorption fraction")):
        bars = axis.bar([p + offset for p in positions], [letter[key] for letter in letters], width=0.4, label=label,
                        color=[color if ok else "lightgrey" for ok in passed])
        for bar, ok in zip(bars, passed, strict=True):
            if not ok:
                bar.set_hatch("//")
    for position, letter, ok in zip(positions, letters, passed, strict=True):
        if not ok:
            axis.annotate(f"F1 {letter['probe_f1']:.2f}", (position, 0), xytext=(0, 3), textcoords="offset points",
                          rotation=90, ha="center", va="bottom", fontsize=7, color="dimgrey")
    axis.set_xticks(list(positions), [letter["letter"] for letter in letters])
    axis.set_ylim(0, 1)
    axis.set_xlabel("first letter")
    axis.set_title(f"Absorption per letter: {sum(passed)} of {len(letters)} letters pass the probe gate", pad=28)
    legend = [Patch(color="tab:red", label="full absorption rate"), Patch(color="tab:blue", label="mean absorption fraction"),
              Patch(facecolor="lightgrey", hatch="//", label=f"probe F1 <= {min_probe_f1}: not counted")]
    axis.legend(handles=legend, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, fontsize=8, frameon=False)


def absorption_per_letter(letters: Sequence[Mapping[str, Any]], min_probe_f1: float, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(max(8.0, 0.42 * len(letters)), 4.2))
    draw_absorption_per_letter(axis, letters, min_probe_f1)
    return _save(figure, path)


def probing_per_task(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Test accuracy per binary task: the SAE's top-k latent probes next to the dense residual probe."""
    columns = sorted((key for key in rows[0] if key.startswith("sae_top_")), key=lambda key: int(key.split("_")[2]))
    columns.append("llm_test_accuracy")
    figure, axis = plt.subplots(figsize=(8.5, max(3.0, 0.32 * len(rows) * len(columns) / 2)))
    height = 0.8 / len(columns)
    for index, key in enumerate(columns):
        label = "dense residual probe" if key == "llm_test_accuracy" else f"SAE top-{key.split('_')[2]} latents"
        axis.barh([row_index + index * height for row_index in range(len(rows))], [row[key] for row in rows], height=height, label=label)
    axis.set_yticks([row_index + 0.4 - height / 2 for row_index in range(len(rows))], [row["task"] for row in rows], fontsize=7)
    axis.invert_yaxis()
    axis.axvline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (balanced tasks)")
    axis.set_xlim(0.0, 1.0)
    axis.set_xlabel("test accuracy")
    axis.set_title("Sparse probing per task")
    axis.legend(loc="lower right", fontsize=7)
    return _save(figure, path)


def eval_figures(tables: Mapping[str, Any], min_probe_f1: float, folder: Path) -> list[Path]:
    """The figures of an eval result's per-item tables (those it has), saved in `folder`."""
    figures = []
    if tables.get("absorption_per_letter.json"):
        figures.append(absorption_per_letter(tables["absorption_per_letter.json"], min_probe_f1, folder / "absorption_per_letter.png"))
    if tables.get("sparse_probing_per_task.json"):
        figures.append(probing_per_task(tables["sparse_probing_per_task.json"], folder / "sparse_probing_per_task.png"))
    return figures


def log_eval_figures(client: Any, run_id: str, tables: Mapping[str, Any], min_probe_f1: float, folder: Path) -> list[Path]:
    """eval_figures saved in `folder` and logged into the run under evals/, beside the tables they draw."""
    figures = eval_figures(tables, min_probe_f1, folder)
    for figure in figures:
        client.log_artifact(run_id, str(figure), artifact_path="evals")
    return figures
