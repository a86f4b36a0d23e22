"""One training run end to end: validate, activations, Lightning fit, evals, MLflow logging and export."""

from __future__ import annotations

import copy
import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from masksae import corpora
from masksae.errors import ConfigError
from masksae.checkpoints import TrainedSAE, load_trained, resume_point, save_trained
from masksae.evals.validate import validate_eval_config
from masksae.export import run_metadata, save_sae
from masksae.masking import resolve_mask_token_id, validate_mask_prob
from masksae.models import validate_model_config
from masksae.resources import activation_spec, clean_validation_activations, run_dir, shared_model, tokenizer_for, training_data, validate_cache_budget
from masksae.auto_settings import with_auto_settings
from masksae.saes import build_sae, resolve_d_sae, validate_sae_config
from masksae.packing import pack_dir, pack_members
from masksae.memory import release_memory
from masksae.metric_journal import MetricJournal
from masksae.summary import RunSummary
from masksae.tracking import TrackedRun, lightning_logger, log_eval_result, prior_run, refuse_live_run, run_key, set_tags, tracked_run

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
                "activations.llm_batch_size", "activations.read_block_rows", "training.batch_size", "training.epochs"):
        _positive_int(cfg, key)
    for key in ("activations.shard_mb", "activations.shuffle_buffer_mb"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(key, value, "a positive number of MB")
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


@dataclass
class OpenRun:
    """A run this job trains: its config, run key, MLflow run and the tracked_run context that ends it."""

    cfg: DictConfig
    key: str
    client: Any
    run: TrackedRun
    context: AbstractContextManager[Any]
    ended: bool = False

    def end(self, error: BaseException | None = None) -> None:
        """End the MLflow run FINISHED, or FAILED/KILLED with `error` (tracked_run records it); once."""
        if self.ended:
            return
        self.ended = True
        if error is None:
            self.context.__exit__(None, None, None)
        else:
            self.context.__exit__(type(error), error, error.__traceback__)


def _open_runs(members: list[DictConfig]) -> list[OpenRun]:
    """Open the members' runs, leaving out those that already FINISHED; none is touched when a live job holds one."""
    keys = [run_key(cfg) for cfg in members]
    priors = [prior_run(cfg, key) for cfg, key in zip(members, keys, strict=True)]
    for cfg, key, prior in zip(members, keys, priors, strict=True):
        refuse_live_run(prior, key, describe(cfg))
    opened: list[OpenRun] = []
    try:
        for cfg, key, prior in zip(members, keys, priors, strict=True):
            context = tracked_run(cfg, key, describe(cfg), prior)
            entered = context.__enter__()
            if entered is None:
                context.__exit__(None, None, None)
                continue
            opened.append(OpenRun(cfg, key, *entered, context))
    except BaseException as error:
        for run in opened:
            run.end(error)
        raise
    return opened


def train_one(cfg: DictConfig) -> dict[str, RunSummary]:
    """Train and evaluate this job's SAEs (its own, or its pack's); {run name: its final metrics and where} of those that ran
    (runs that already FINISHED are skipped). One SAE's failed evals fail its run only; the job still fails."""
    members = [with_auto_settings(member) for member in pack_members(cfg)]
    mask_token_id = validate_config(members[0])
    for member in members[1:]:
        validate_settings(member)
    runs = _open_runs(members)
    results: dict[str, RunSummary] = {}
    failures: list[Exception] = []
    try:
        for run in runs:
            run.client.set_tag(run.run.run_id, "mask_token_id", str(mask_token_id))
            if len(members) > 1:
                run.client.set_tag(run.run.run_id, "pack", str(cfg.pack))
        fitted = _fit(runs, mask_token_id) if runs else None
        for run, sae in zip(runs, fitted.saes if fitted else [], strict=True):
            try:
                metrics = _evaluate_and_export(run, fitted, sae, mask_token_id)
            except Exception as error:
                run.end(error)
                failures.append(error)
                continue
            run.end()
            name = describe(run.cfg)
            results[name] = RunSummary(name, metrics, run.run.run_id, run.run.experiment_id, run_dir(run.cfg, run.key))
    except BaseException as error:  # training failed or the job is being stopped: every run still open says so
        for run in runs:
            run.end(error)
        raise
    if failures:
        raise failures[0]
    return results


@dataclass
class Fitted:
    """What training leaves for the evals: clean validation activations, the activation scale, the SAEs, the final step."""

    val_acts_ND: torch.Tensor
    scale: float
    saes: list[Any]
    step: int


def _trained_before(runs: list[OpenRun], trained: list[TrainedSAE], val_acts_ND: torch.Tensor) -> Fitted:
    """The SAEs saved at the end of an earlier attempt's training (it stopped during evals): no step is trained again."""
    saes = []
    for run, saved in zip(runs, trained, strict=True):
        sae = build_sae(run.cfg.sae, int(run.cfg.model.d_model))
        sae.load_state_dict(saved.state_dict)
        saes.append(sae)
        set_tags(run.client, run.run.run_id, {"resumed_from_step": str(saved.step), "first_step_after_resume": "none: trained before its evals"})
    log.info("the SAEs of this job were trained by an earlier attempt (step %d, saved before evals): training skipped", trained[0].step)
    return Fitted(val_acts_ND, trained[0].scale, saes, trained[0].step)


def _close_journals(journals: list[MetricJournal], timeout_s: float) -> None:
    """Send the journals' last metrics; an MLflow still unreachable after `timeout_s` fails the job (they stay
    journaled: a re-launch sends them without training again)."""
    unsent = {journal.path: journal.close(timeout_s) for journal in journals}
    if any(unsent.values()):
        raise RuntimeError(f"MLflow unreachable for {timeout_s:.0f} s after training; unsent metrics kept in "
                           + ", ".join(str(path) for path, n in unsent.items() if n) + " (a re-launch sends them)")


def _fit(runs: list[OpenRun], mask_token_id: int) -> Fitted:
    """Train the runs' SAEs side by side on one activation stream (normalised by one shared scale), resuming from the
    newest readable checkpoint, or take the SAEs an earlier attempt trained; each trained SAE is saved before its evals.
    Training metrics go through each run's MetricJournal: on failure what is unsent stays journaled for the next attempt."""
    cfg = runs[0].cfg  # every setting but `sae` is shared by a pack's members
    folders = [run_dir(run.cfg, run.key) for run in runs]
    for run, folder in zip(runs, folders, strict=True):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(OmegaConf.to_yaml(run.cfg, resolve=True))
        run.client.log_artifact(run.run.run_id, str(folder / "config.yaml"))
    val = clean_validation_activations(cfg)  # the LLM is loaded only where activations must be computed
    journals = [MetricJournal(folder / "metrics.jsonl", run.client, run.run.run_id) for run, folder in zip(runs, folders, strict=True)]
    try:
        trained = [load_trained(folder) for folder in folders]
        must_train = any(saved is None for saved in trained)
        fitted = _train(runs, mask_token_id, journals, val.acts_ND) if must_train else _trained_before(runs, trained, val.acts_ND)
    except BaseException:
        for journal in journals:
            journal.close(timeout_s=5.0)
        raise
    _close_journals(journals, float(cfg.tracking.flush_timeout_s))
    if must_train:
        for folder, sae in zip(folders, fitted.saes, strict=True):
            save_trained(folder, TrainedSAE(sae.state_dict(), fitted.scale, fitted.step))
    return fitted


def _train(runs: list[OpenRun], mask_token_id: int, journals: list[MetricJournal], val_acts_ND: torch.Tensor) -> Fitted:
    """Lightning training of the runs' SAEs from the newest readable checkpoint; tags say where it continued."""
    import lightning as L

    from masksae.module import SAETrainingModule
    from masksae.trainer import build_trainer

    cfg = runs[0].cfg
    train_spec = activation_spec(cfg, "train", int(cfg.activations.train_tokens), cfg.mask_prob, mask_token_id)
    data = training_data(cfg, None, train_spec, val_acts_ND)
    total_steps = data.total_steps
    if total_steps < 1:
        raise ConfigError("training.batch_size", cfg.training.batch_size, f"at most the number of training tokens ({data.n_rows})")
    saes = []
    for run in runs:  # each SAE starts exactly as it would alone
        L.seed_everything(int(run.cfg.seed), workers=True, verbose=False)
        sae = build_sae(run.cfg.sae, int(cfg.model.d_model))
        with torch.no_grad():
            sae.init_from_data(data.sample_ND.float() * data.scale)
        saes.append(sae)
    data.release_sample()
    module = SAETrainingModule(saes, [run.cfg.sae for run in runs], cfg.training, total_steps)
    folder = run_dir(cfg, runs[0].key) if len(runs) == 1 else pack_dir(cfg, [run.key for run in runs])
    options = {**OmegaConf.to_container(cfg.trainer, resolve=True), "default_root_dir": str(folder),
               "val_check_interval": min(int(cfg.training.val_every_steps), total_steps)}
    trainer, recorder = build_trainer(folder / "checkpoints", total_steps, int(cfg.training.checkpoint_every_steps),
                                      lightning_logger(journals), options)
    resume = resume_point(folder / "checkpoints")
    for run in runs:
        set_tags(run.client, run.run.run_id, {"resumed_from_step": str(resume.step if resume else 0),
                                              "checkpoint_used": resume.path.name if resume else "none"})
    trainer.fit(module, datamodule=data, ckpt_path=str(resume.path) if resume else None)
    first = "none: the checkpoint was at the last step" if recorder.first_step is None else str(recorder.first_step)
    for run in runs:
        run.client.set_tag(run.run.run_id, "first_step_after_resume", first)
    fitted = Fitted(val_acts_ND, data.scale, saes, trainer.global_step)
    del trainer, module, data
    release_memory()  # before evals: the buffers and optimizer state (Lightning's trainer, module and data form a cycle)
    return fitted


def _evaluate_and_export(opened: OpenRun, fitted: Fitted, sae: Any, mask_token_id: int) -> dict[str, float]:
    """Evals, metrics, SAELens export, training curves and the inspection page of one trained SAE."""
    from masksae.evals.runner import EvalResult, run_evals  # the eval stack (scikit-learn...) only where evals run
    from masksae.inspection import write_inspection
    from masksae.plots import log_eval_figures, training_curves

    cfg, client, run_id = opened.cfg, opened.client, opened.run.run_id
    folder = run_dir(cfg, opened.key)
    raw_sae = copy.deepcopy(sae).eval()
    raw_sae.fold_activation_scale(fitted.scale)
    calibrated = raw_sae.calibrate(fitted.val_acts_ND)  # (Matryoshka) BatchTopK: inference threshold at L0 = k on held-out rows
    model = shared_model(cfg) if cfg.eval.evals else None
    evaluated = run_evals(cfg, model, raw_sae, fitted.scale, fitted.val_acts_ND) if model is not None else EvalResult()
    evaluated.metrics["train/activation_scale"] = fitted.scale
    evaluated.metrics.update({f"calibration/{name}": value for name, value in calibrated.items()})
    log_eval_result(client, run_id, evaluated, fitted.step)
    export_dir = save_sae(raw_sae, folder / "sae", cfg.sae, run_metadata(cfg, opened.key, mask_token_id, fitted.scale))
    client.log_artifacts(run_id, str(export_dir), artifact_path="sae")
    plot = training_curves(client, run_id, folder / "training_curves.png")
    client.log_artifact(run_id, str(plot))
    log_eval_figures(client, run_id, evaluated.tables, float(cfg.eval.absorption.min_probe_f1), folder)
    if model is not None:  # eval.evals=[]: trained and exported only (python -m evaluate later)
        page = write_inspection(cfg, model, raw_sae, evaluated.tables.get("absorption_per_letter.json"), folder / "inspection.html", opened.key)
        client.log_artifact(run_id, str(page))
    log.info("run %s finished: %d metrics logged to MLflow run %s", opened.key, len(evaluated.metrics), run_id)
    return evaluated.metrics
