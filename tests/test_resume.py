"""Resuming from a mid-training checkpoint continues at the checkpoint's step + 1, logs to MLflow the history of an
uninterrupted run (no step twice, none lost) and gives its weights bit for bit, for every architecture and for a pack;
a truncated last.ckpt falls back to the one it replaced; SIGTERM checkpoints the step it arrives in; an SAE trained in
a pack ends with exactly the weights it gets alone."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
import torch
from mlflow import MlflowClient

from masksae.batching import CachedBlocks
from masksae.checkpoints import LAST, resume_point
from masksae.auto_settings import with_auto_settings
from masksae.config import compose_config
from masksae.datamodule import ActivationDataModule
from masksae.files import previous_path
from masksae.metric_journal import MetricJournal
from masksae.module import SAETrainingModule
from masksae.saes import build_sae
from masksae.tracking import lightning_logger
from masksae.trainer import build_trainer
from tests.activation_sets import sharded_set

D_IN = 32


def _sae_cfg(sae_name: str):
    cfg = compose_config("train", [f"sae={sae_name}", "sae.d_sae=128", "training.lr_warmup_steps=3"])
    if "k" in cfg.sae:
        cfg.sae.k = 8
    if "target_l0" in cfg.sae:
        cfg.sae.target_l0 = 8
    return with_auto_settings(cfg)  # as training fills them in: lr from d_sae, the dead window from the run's length


@dataclass
class Fit:
    """Final weights of a (partial) fit, the step it resumed from (None: started at 0) and its first optimizer step."""

    weights: dict[str, torch.Tensor]
    resumed_from: int | None
    first_step: int | None


class TermAt(L.Callback):
    """Sends this process SIGTERM (as scancel or a preemption does) during the given optimizer step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _fit(sae_names: list[str], folder: Path, stop_at: int | None = None, term_at: int | None = None,
         runs: tuple[MlflowClient, list[str]] | None = None) -> Fit:
    """Train SAEs side by side on seeded synthetic activations with the pipeline's Trainer (atomic checkpoints every 5
    steps); stop after `stop_at` steps, or resume from the newest readable checkpoint. Each SAE is seeded as the
    pipeline does. With `runs` (a client and one MLflow run per SAE), every step's metrics go through the pipeline's
    journals (folder/journal-<i>.jsonl) to those runs."""
    cfgs = [_sae_cfg(name) for name in sae_names]
    acts_ND = torch.randn(4096, D_IN, generator=torch.Generator().manual_seed(1)) * 3 + 1
    shards = sharded_set(folder / "cache", acts_ND, shard_rows=700, chunk=100)
    data = ActivationDataModule(CachedBlocks(shards, block_rows=1), acts_ND[:256], batch_size=256, epochs=2, seed=0,
                                scale_sample=4096, buffer_rows=1024)  # buffers of 4 steps: step 15 stops inside one
    saes = []
    for cfg in cfgs:
        L.seed_everything(0, verbose=False)
        sae = build_sae(cfg.sae, D_IN)
        with torch.no_grad():
            sae.init_from_data(data.sample_ND.float() * data.scale)
        saes.append(sae)
    module = SAETrainingModule(saes, [cfg.sae for cfg in cfgs], cfgs[0].training, data.total_steps)
    options = dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, log_every_n_steps=1)
    journals = [MetricJournal(folder / f"journal-{i}.jsonl", runs[0], run_id) for i, run_id in enumerate(runs[1])] if runs else []
    trainer, recorder = build_trainer(folder, stop_at or data.total_steps, 5, lightning_logger(journals) if runs else False, options)
    if term_at is not None:
        trainer.callbacks.append(TermAt(term_at))
    resume = resume_point(folder) if stop_at is None and term_at is None else None
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(resume.path) if resume else None)
    finally:
        assert all(journal.close(timeout_s=60) == 0 for journal in journals)
    assert trainer.global_step == (stop_at or term_at or data.total_steps)
    assert recorder.start_step == (resume.step if resume else 0)
    return Fit({name: value.clone() for name, value in module.state_dict().items()}, resume.step if resume else None, recorder.first_step)


def _assert_same_weights(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        assert torch.equal(value, actual[name]), name


@pytest.mark.parametrize("sae_names", [["topk"], ["batchtopk"], ["jumprelu"], ["relu"], ["matryoshka_batchtopk"], ["topk", "jumprelu"]])
def test_resume_continues_at_the_checkpoint_step_and_is_bitwise_identical(sae_names: list[str], tmp_path: Path, mlflow_uri: str) -> None:
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("resume") or client.get_experiment(client.create_experiment("resume"))
    whole, split = ([client.create_run(experiment.experiment_id).info.run_id for _ in sae_names] for _ in range(2))
    uninterrupted = _fit(sae_names, tmp_path / "whole", runs=(client, whole))
    _fit(sae_names, tmp_path / "split", stop_at=19, runs=(client, split))  # checkpoint at 15, metrics logged up to 19
    assert (tmp_path / "split" / LAST).is_file() and previous_path(tmp_path / "split" / LAST).is_file()
    resumed = _fit(sae_names, tmp_path / "split", runs=(client, split))
    assert (resumed.resumed_from, resumed.first_step) == (15, 16)  # not a silent restart from step 0
    _assert_same_weights(uninterrupted.weights, resumed.weights)
    for name in ("train/loss", "train/lr"):  # steps 16-19 ran twice but were logged once: the same history as whole
        for ours, theirs in zip(split, whole, strict=True):
            history = [(m.step, m.value) for m in client.get_metric_history(ours, name)]
            assert sorted(history) == sorted((m.step, m.value) for m in client.get_metric_history(theirs, name)), name
            assert len(history) == 32


def test_truncated_last_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uninterrupted = _fit(["topk"], tmp_path / "whole")
    _fit(["topk"], tmp_path / "split", stop_at=15)  # checkpoints at steps 5, 10, 15: last.ckpt = 15, previous = 10
    last = tmp_path / "split" / LAST
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a kill in the middle of a copy
    with caplog.at_level(logging.WARNING, logger="masksae.checkpoints"):
        resumed = _fit(["topk"], tmp_path / "split")
    assert "last.ckpt is unreadable" in caplog.text and "falling back to the one it replaced" in caplog.text
    assert (resumed.resumed_from, resumed.first_step) == (10, 11)
    assert (tmp_path / "split" / "last.ckpt.unreadable").is_file()  # set aside, never kept as a fallback
    _assert_same_weights(uninterrupted.weights, resumed.weights)


def test_sigterm_checkpoints_the_step_it_arrived_in_and_resume_continues_there(tmp_path: Path) -> None:
    uninterrupted = _fit(["jumprelu"], tmp_path / "whole")
    with pytest.raises(SystemExit):  # Lightning stops after the step on SIGTERM
        _fit(["jumprelu"], tmp_path / "split", term_at=7)  # periodic checkpoints are at 5, 10, ...
    resumed = _fit(["jumprelu"], tmp_path / "split")
    assert (resumed.resumed_from, resumed.first_step) == (7, 8)
    _assert_same_weights(uninterrupted.weights, resumed.weights)


def test_each_sae_of_a_pack_trains_exactly_as_alone(tmp_path: Path) -> None:
    names = ["topk", "jumprelu", "batchtopk"]
    packed = _fit(names, tmp_path / "pack").weights
    for index, name in enumerate(names):
        alone = _fit([name], tmp_path / name).weights
        in_pack = {key: value for key, value in packed.items() if key.startswith(f"members.{index}.")}
        assert {key.replace("members.0.", f"members.{index}.", 1) for key in alone} == set(in_pack), name
        for key, value in alone.items():
            assert torch.equal(value, in_pack[key.replace("members.0.", f"members.{index}.", 1)]), (name, key)
