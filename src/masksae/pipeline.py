"""One training run end to end: validate, activations, Lightning fit, evals, MLflow logging and export."""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from masksae import corpora
from masksae.errors import ConfigError
from masksae.evals.runner import run_evals
from masksae.evals.validate import validate_eval_config
from masksae.export import run_metadata, save_sae
from masksae.inspection import write_inspection
from masksae.masking import resolve_mask_token_id, validate_mask_prob
from masksae.models import validate_model_config
from masksae.resources import activation_spec, clean_validation_activations, run_dir, shared_model, tokenizer_for, training_data, validate_cache_budget
from masksae.saes import build_sae, resolve_d_sae, validate_sae_config
from masksae.tracking import lightning_logger, log_eval_result, run_key, tracked_run

log = logging.getLogger(__name__)


def _positive_int(cfg: DictConfig, key: str) -> int:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, value, "a positive integer")
    return value


def validate_config(cfg: DictConfig) -> int:
    """Every check that needs no LLM compute; returns the mask token id. Raises ConfigError / OfflineError."""
    validate_settings(cfg)
    tokenizer = tokenizer_for(cfg)
    return resolve_mask_token_id(tokenizer, cfg.model.get("mask_token"), cfg.model.get("mask_token_id"))


def validate_settings(cfg: DictConfig) -> None:
    """The checks that need no tokenizer (a sweep runs them on every point before submitting); hub models must be reachable."""
    validate_mask_prob(cfg.mask_prob)
    validate_model_config(cfg.model, cfg.layer)
    validate_sae_config(cfg.sae, int(cfg.model.d_model))
    corpora.validate_data_config(cfg.data)
    validate_eval_config(cfg.eval)
    validate_cache_budget(cfg)
    for key in ("activations.train_tokens", "activations.val_tokens", "activations.context_length",
                "activations.llm_batch_size", "training.batch_size", "training.epochs"):
        _positive_int(cfg, key)
    if not isinstance(cfg.training.get("compile"), bool):
        raise ConfigError("training.compile", cfg.training.get("compile"), "true or false")
    for key in ("seed", "data_seed"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(key, value, "a non-negative integer")


def describe(cfg: DictConfig) -> str:
    """Human-readable run name: model, layer, architecture, sparsity, mask rate, seeds."""
    sparsity = f"k{cfg.sae.k}" if cfg.sae.get("k") is not None else cfg.sae.architecture
    return f"{cfg.model.name}-L{cfg.layer}-{cfg.sae.architecture}-{sparsity}-d{resolve_d_sae(cfg.sae, int(cfg.model.d_model))}-p{cfg.mask_prob}-s{cfg.seed}-ds{cfg.data_seed}"


def train_one(cfg: DictConfig) -> dict[str, float] | None:
    """Train and evaluate one SAE; returns its final metrics, or None when its run already finished."""
    mask_token_id = validate_config(cfg)
    key = run_key(cfg)
    with tracked_run(cfg, key, describe(cfg)) as opened:
        if opened is None:
            return None
        client, run = opened
        client.set_tag(run.run_id, "mask_token_id", str(mask_token_id))
        return _train_and_log(cfg, key, mask_token_id, client, run)


def _train_and_log(cfg: DictConfig, key: str, mask_token_id: int, client: Any, run: Any) -> dict[str, float]:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from masksae.module import SAETrainingModule
    from masksae.plots import training_curves

    folder = run_dir(cfg, key)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    client.log_artifact(run.run_id, str(folder / "config.yaml"))
    model = shared_model(cfg)
    val = clean_validation_activations(cfg, model)
    train_spec = activation_spec(cfg, "train", int(cfg.activations.train_tokens), cfg.mask_prob, mask_token_id)
    data = training_data(cfg, model, train_spec, val.acts_ND)
    total_steps = data.total_steps
    if total_steps < 1:
        raise ConfigError("training.batch_size", cfg.training.batch_size, f"at most the number of training tokens ({data.n_rows})")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    sae = build_sae(cfg.sae, model.d_model)
    with torch.no_grad():
        sae.init_from_data(data.sample_ND.float() * data.scale)
    module = SAETrainingModule(sae, cfg.sae, cfg.training, total_steps)
    checkpoints = ModelCheckpoint(dirpath=folder / "checkpoints", save_last=True, save_top_k=0,
                                  every_n_train_steps=int(cfg.training.checkpoint_every_steps))
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        max_steps=total_steps,
        max_epochs=1,
        val_check_interval=min(int(cfg.training.val_every_steps), total_steps),
        gradient_clip_val=cfg.training.grad_clip,
        logger=lightning_logger(run),
        callbacks=[checkpoints],
        plugins=[SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None,
        default_root_dir=str(folder),
        num_sanity_val_steps=0,
    )
    last = folder / "checkpoints" / "last.ckpt"
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.exists() else None)
    raw_sae = copy.deepcopy(sae).eval()
    raw_sae.fold_activation_scale(data.scale)
    evaluated = run_evals(cfg, model, raw_sae, data.scale, val.acts_ND)
    evaluated.metrics["train/activation_scale"] = data.scale
    log_eval_result(client, run.run_id, evaluated, trainer.global_step)
    metrics = evaluated.metrics
    export_dir = save_sae(raw_sae, folder / "sae", cfg.sae, run_metadata(cfg, key, mask_token_id, data.scale))
    client.log_artifacts(run.run_id, str(export_dir), artifact_path="sae")
    plot = training_curves(client, run.run_id, folder / "training_curves.png")
    client.log_artifact(run.run_id, str(plot))
    page = write_inspection(cfg, model, raw_sae, evaluated.tables.get("absorption_per_letter.json"), folder / "inspection.html", key)
    client.log_artifact(run.run_id, str(page))
    log.info("run %s finished: %s", key, {k: round(v, 4) for k, v in metrics.items()})
    return metrics
