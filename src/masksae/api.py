"""Python API for shells and notebooks: load a run's SAE, get residual activations, encode/decode, evaluate.

    from masksae import api
    sae = api.load_sae("<mlflow run id>")            # or a folder holding cfg.json + sae_weights.safetensors
    acts_ND = api.residuals(["Paris is the capital of France."], run="<mlflow run id>")
    f_NF = sae.encode(acts_ND); xhat_ND = sae.decode(f_NF)
    metrics = api.evaluate("<mlflow run id>")        # re-runs the evals and logs them into that run
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from masksae.activations import special_positions
from masksae.config import compose_config
from masksae.export import load_sae as load_sae_folder
from masksae.resources import shared_model
from masksae.saes import SparseAutoencoder
from masksae.tracking import tracking_uri


def _client(configured_uri: str | None) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri(configured_uri))


def load_sae(source: str | Path, *, tracking_uri: str | None = None) -> SparseAutoencoder:
    """The SAE of an MLflow run id, or of a saved folder; it acts on raw (unnormalised) activations."""
    if Path(source).is_dir():
        return load_sae_folder(source)[0]
    with tempfile.TemporaryDirectory() as scratch:
        return load_sae_folder(_client(tracking_uri).download_artifacts(str(source), "sae", scratch))[0]


def run_config(run_id: str, *, tracking_uri: str | None = None) -> DictConfig:
    """The resolved training config that an MLflow run logged."""
    with tempfile.TemporaryDirectory() as scratch:
        return OmegaConf.load(_client(tracking_uri).download_artifacts(run_id, "config.yaml", scratch))


def config(*overrides: str) -> DictConfig:
    """The training config composed with command-line style overrides, e.g. config("layer=4")."""
    return compose_config("train", overrides)


def residuals(texts: list[str], *, run: str | None = None, cfg: DictConfig | None = None, tracking_uri: str | None = None) -> torch.Tensor:
    """Clean residual activations at the run's (or config's) layer, non-special positions of all texts, [N, d_model]."""
    cfg = run_config(run, tracking_uri=tracking_uri) if run else (cfg or config())
    model = shared_model(cfg)
    rows = []
    for text in texts:
        ids_1S = model.tokenizer(text, return_tensors="pt").input_ids
        resid_1SD = model.residual_at(ids_1S, int(cfg.layer)).float().cpu()
        rows.append(resid_1SD[~special_positions(ids_1S, model.special_ids())])
    return torch.cat(rows)


def evaluate(run_id: str, *overrides: str, tracking_uri: str | None = None) -> dict[str, float]:
    """Re-run the evals (eval group overrides allowed, e.g. "eval.core.ce_sequences=8") and log them into the run."""
    from masksae.evaluation import evaluate_main

    eval_cfg = compose_config("evaluate", [f"run_id={run_id}", *overrides])
    if tracking_uri:
        eval_cfg.tracking.uri = tracking_uri
    (run,) = evaluate_main(eval_cfg)
    return dict(run.metrics)
