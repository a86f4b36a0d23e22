"""Re-evaluate SAEs after training: runs logged in MLflow (by run or sweep id) or SAELens-format folders."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from masksae.config import compose_config, model_named
from masksae.errors import ConfigError
from masksae.evals.runner import EvalResult, run_evals
from masksae.evals.validate import validate_eval_config
from masksae.export import load_sae
from masksae.plots import log_eval_figures
from masksae.resources import clean_validation_activations, shared_model
from masksae.saes import SparseAutoencoder
from masksae.summary import RunSummary
from masksae.tracking import latest_step, log_eval_result, tracked_run, tracking_uri


def evaluate_sae(train_cfg: DictConfig, sae: SparseAutoencoder, scale: float) -> EvalResult:
    """Run `train_cfg.eval` on a raw-space SAE over clean held-out text of its model and layer."""
    validate_eval_config(train_cfg.eval)
    model = shared_model(train_cfg)
    val = clean_validation_activations(train_cfg, model)
    return run_evals(train_cfg, model, sae, scale, val.acts_ND)


def _log_figures(client: Any, run_id: str, evaluated: EvalResult, train_cfg: DictConfig) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        log_eval_figures(client, run_id, evaluated.tables, float(train_cfg.eval.absorption.min_probe_f1), Path(scratch))


def _with_eval_settings(train_cfg: DictConfig, eval_cfg: DictConfig) -> DictConfig:
    merged = OmegaConf.merge(train_cfg, {"eval": eval_cfg.eval, "paths": eval_cfg.paths})
    return merged


def evaluate_logged_run(eval_cfg: DictConfig, client: Any, run_id: str) -> RunSummary:
    """Re-run the evals on the SAE of one MLflow run and write the metrics into that run."""
    with tempfile.TemporaryDirectory() as scratch:
        train_cfg = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", scratch))
        sae, saved = load_sae(client.download_artifacts(run_id, "sae", scratch))
    train_cfg = _with_eval_settings(train_cfg, eval_cfg)
    evaluated = evaluate_sae(train_cfg, sae, float(saved["metadata"]["activation_scale_folded"]))
    # at the step training logged its evals, or the UI and every reader would keep showing the training-time values
    log_eval_result(client, run_id, evaluated, step=latest_step(client, run_id, evaluated.metrics))
    _log_figures(client, run_id, evaluated, train_cfg)
    info = client.get_run(run_id).info
    return RunSummary(info.run_name, evaluated.metrics, run_id, info.experiment_id)


def runs_to_evaluate(eval_cfg: DictConfig, client: Any) -> list[str]:
    """Run ids named by `run_id=` or every FINISHED run of `sweep_id=`."""
    if eval_cfg.run_id:
        return [str(eval_cfg.run_id)]
    experiment = client.get_experiment_by_name(eval_cfg.tracking.experiment)
    runs = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], f"tags.sweep_id = '{eval_cfg.sweep_id}' and attributes.status = 'FINISHED'")
    runs = [run for run in runs if run.data.tags.get("report") != "true"]  # the sweep's report run (experiments.report) holds no SAE
    if not runs:
        raise ConfigError("sweep_id", eval_cfg.sweep_id, f"a sweep with FINISHED runs in experiment {eval_cfg.tracking.experiment}")
    return [run.info.run_id for run in runs]


def train_config_for_folder(eval_cfg: DictConfig, saved: dict[str, Any]) -> DictConfig:
    """The training config (model, layer, context) that matches a saved SAE's metadata."""
    metadata = saved.get("metadata") or saved  # SAELens before 6 kept these fields at the top level
    hook = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", str(metadata.get("hook_name")))
    if hook is None:
        raise ConfigError("sae_path", eval_cfg.sae_path, f"an SAE of a residual stream hook blocks.<layer>.hook_resid_post "
                          f"(its cfg.json says hook_name {metadata.get('hook_name')!r})")
    try:
        model = model_named(str(metadata.get("model_name")))
    except ValueError as error:
        raise ConfigError("sae_path", eval_cfg.sae_path, f"an SAE of a configured model: its cfg.json's model_name {error}") from None
    overrides = [f"model={model}", f"layer={hook.group(1)}", f"activations.context_length={metadata.get('context_size') or 128}"]
    train_cfg = compose_config("train", overrides)
    return _with_eval_settings(train_cfg, eval_cfg)


def evaluate_folder(eval_cfg: DictConfig, folder: Path) -> RunSummary:
    """Evaluate an SAE saved in SAELens format and log the result as a new MLflow run."""
    if not (folder / "cfg.json").exists():
        raise ConfigError("sae_path", str(folder), "a folder holding cfg.json and sae_weights.safetensors")
    sae, saved = load_sae(folder)
    train_cfg = train_config_for_folder(eval_cfg, saved)
    train_cfg.tracking.uri = eval_cfg.tracking.uri
    train_cfg.tracking.experiment = eval_cfg.tracking.experiment
    train_cfg.tracking.skip_finished = False  # every evaluation of a folder is a new run
    key = f"folder:{folder.resolve()}"
    name = f"eval-{folder.name}"
    with tracked_run(train_cfg, key, name) as opened:
        client, run = opened
        client.set_tag(run.run_id, "sae_path", str(folder.resolve()))
        evaluated = evaluate_sae(train_cfg, sae, float((saved.get("metadata") or {}).get("activation_scale_folded", 1.0)))
        log_eval_result(client, run.run_id, evaluated, step=0)
        _log_figures(client, run.run_id, evaluated, train_cfg)
    return RunSummary(name, evaluated.metrics, run.run_id, run.experiment_id, folder.resolve())


def evaluate_main(eval_cfg: DictConfig) -> list[RunSummary]:
    """Dispatch on run_id / sweep_id / sae_path; returns each evaluated run's metrics and where it is logged."""
    from mlflow import MlflowClient

    chosen = [name for name in ("run_id", "sweep_id", "sae_path") if eval_cfg.get(name)]
    if len(chosen) != 1:
        raise ConfigError("run_id|sweep_id|sae_path", chosen or None, "exactly one of run_id=, sweep_id= or sae_path=")
    if eval_cfg.sae_path:
        return [evaluate_folder(eval_cfg, Path(eval_cfg.sae_path))]
    client = MlflowClient(tracking_uri=tracking_uri(eval_cfg.tracking.uri))
    return [evaluate_logged_run(eval_cfg, client, run_id) for run_id in runs_to_evaluate(eval_cfg, client)]
