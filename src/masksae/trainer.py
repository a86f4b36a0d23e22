"""The Lightning Trainer of a training job: crash-safe checkpoints every N steps, the resume it continued from,
a checkpoint on SLURM's preemption warning, and SLURM requeueing left to submitit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment

from masksae.callbacks import PreemptionCheckpoint, ResumeRecorder, TrainingProgress
from masksae.checkpoints import LAST
from masksae.files import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made crash-safe on shared file systems: Lightning's own goes through an fsspec
    transaction whose temporary file is in $TMPDIR, so on a cluster its final move is a copy that a kill can truncate."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        write_atomically(Path(path), lambda handle: torch.save(checkpoint, handle), keep_previous=True)

    def remove_checkpoint(self, path: str | Path) -> None:
        Path(path).unlink(missing_ok=True)


def build_trainer(checkpoint_dir: Path, total_steps: int, checkpoint_every: int, logger: Any,
                  options: dict[str, Any]) -> tuple[L.Trainer, ResumeRecorder]:
    """A Trainer for `total_steps` optimizer steps that checkpoints to `checkpoint_dir/last.ckpt` every
    `checkpoint_every` steps (and on SIGUSR2) through AtomicCheckpointIO; `options` are further Trainer arguments
    (`enable_progress_bar` shows TrainingProgress instead of Lightning's bar)."""
    recorder = ResumeRecorder()
    options = dict(options)
    shown: list[Any] = [TrainingProgress()] if options.pop("enable_progress_bar", True) else []
    checkpoints = ModelCheckpoint(dirpath=checkpoint_dir, save_last=True, save_top_k=0, every_n_train_steps=checkpoint_every)
    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # submitit owns requeueing: Lightning's own SIGUSR1 requeue stays off
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = L.Trainer(**options, max_steps=total_steps, max_epochs=1, logger=logger, plugins=plugins, enable_progress_bar=False,
                        callbacks=[recorder, PreemptionCheckpoint(checkpoint_dir / LAST), checkpoints, *shown], num_sanity_val_steps=0)
    return trainer, recorder
