"""Runs the configured evaluation suites (`eval.evals`) on one raw-space SAE: metrics, per-item tables and tags."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from masksae.evals import absorption, ood, probing
from masksae.evals.core import evaluate_core
from masksae.evals.probes import one_vs_rest_tasks
from masksae.evals.shared import ce_loss_zero, core_reference, spelling_setup, task_activations
from masksae.evals.suites import tasks_in_use
from masksae.evals.task_activations import latents, pooled_latents
from masksae.models import LoadedModel
from masksae.progress import duration
from masksae.resources import split_sequences
from masksae.saes import SparseAutoencoder

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """What the evals produce for one SAE: MLflow metrics, JSON tables (artifacts) and tags."""

    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def _mean_and_se(prefix: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    """SAEBench's averaging: every score's mean over the binary tasks of each data set (task "<data set>/<class>"), then
    the mean over data sets, with its standard error over data sets."""
    out: dict[str, float] = {}
    datasets = sorted({row["task"].split("/", 1)[0] for row in rows})
    for name in (key for key in (rows[0] if rows else {}) if key != "task"):
        per_dataset = np.array([np.nanmean([row[name] for row in rows if row["task"].split("/", 1)[0] == dataset] or [np.nan])
                                for dataset in datasets], dtype=float)
        values = per_dataset[~np.isnan(per_dataset)]
        out[f"{prefix}/{name}"] = float(values.mean()) if len(values) else float("nan")
        out[f"{prefix}/{name}_se"] = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return out


def _core(cfg: DictConfig, model: LoadedModel, sae: SparseAutoencoder, scale: float, val_acts_ND: torch.Tensor, result: EvalResult) -> None:
    n_tokens = int(cfg.eval.core.ce_sequences) * int(cfg.activations.context_length)
    ce_sequences_NS = split_sequences(cfg, model, "validation", n_tokens)
    result.metrics.update(evaluate_core(model, sae, int(cfg.layer), val_acts_ND, ce_sequences_NS, scale, int(cfg.eval.core.batch_size),
                                        ce_loss_zero(cfg, model, ce_sequences_NS), core_reference(cfg, model, ce_sequences_NS)))


def _absorption(cfg: DictConfig, model: LoadedModel, sae: SparseAutoencoder, result: EvalResult) -> None:
    settings = absorption.AbsorptionSettings.from_config(cfg.eval.absorption)
    letters = absorption.letter_results(sae, spelling_setup(cfg, model), settings, int(cfg.eval.seed))
    metrics, status = absorption.summarise(letters, settings)
    result.metrics.update(metrics)
    result.tags["absorption_status"] = status
    result.tables["absorption_per_letter.json"] = [asdict(letter) for letter in letters]
    if status != "ok":
        log.warning("absorption: %s", status)


def _probing(cfg: DictConfig, model: LoadedModel, sae: SparseAutoencoder, result: EvalResult) -> None:
    """Sparse probing and OOD share each task's activations and the SAE's pooled latents."""
    eval_cfg, seed = cfg.eval, int(cfg.eval.seed)
    probing_rows, ood_rows = [], []
    for name in tasks_in_use(eval_cfg):
        activations = task_activations(cfg, model, name)
        latents_NF = pooled_latents(sae, activations).numpy()
        ood_latents_NF = latents(sae, activations, str(eval_cfg.ood.representation)).numpy()
        for task in one_vs_rest_tasks(name, activations.labels, activations.splits, seed):
            if "sparse_probing" in eval_cfg.evals and name in eval_cfg.sparse_probing.tasks:
                scores = probing.sae_scores(latents_NF, task, list(eval_cfg.sparse_probing.ks))
                probing_rows.append({"task": task.name, **scores, **activations.info["residual"][task.name]})
            if "ood" in eval_cfg.evals and name in eval_cfg.ood.tasks and len(task.ood):
                scores = ood.sae_scores(ood_latents_NF, task, int(eval_cfg.ood.k), list(eval_cfg.ood.c_grid), seed)
                dense = activations.info["dense_ood"][task.name]
                ood_rows.append({"task": task.name, **scores, **dense, "gap_to_dense": dense["dense_auc_ood"] - scores["sae_auc_ood"]})
    for prefix, rows in (("sparse_probing", probing_rows), ("ood", ood_rows)):
        if prefix in eval_cfg.evals:
            result.metrics.update(_mean_and_se(prefix, rows))
            result.metrics[f"{prefix}/n_tasks"] = float(len(rows))
            result.tables[f"{prefix}_per_task.json"] = rows


def run_evals(cfg: DictConfig, model: LoadedModel, sae: SparseAutoencoder, scale: float, val_acts_ND: torch.Tensor) -> EvalResult:
    """Every suite named in `cfg.eval.evals`, on clean text; `eval_time/*` records what each took."""
    result = EvalResult()
    suites = {
        "core": lambda: _core(cfg, model, sae, scale, val_acts_ND, result),
        "absorption": lambda: _absorption(cfg, model, sae, result),
        "probing": lambda: _probing(cfg, model, sae, result),
    }
    wanted = [name for name in ("core", "absorption") if name in cfg.eval.evals]
    wanted += ["probing"] if {"sparse_probing", "ood"} & set(cfg.eval.evals) else []
    for index, name in enumerate(wanted, start=1):
        log.info("eval %d/%d: %s", index, len(wanted), name)
        started = time.perf_counter()
        suites[name]()
        result.metrics[f"eval_time/{name}_s"] = time.perf_counter() - started
        log.info("eval %d/%d: %s done in %s", index, len(wanted), name, duration(result.metrics[f"eval_time/{name}_s"]))
    return result
