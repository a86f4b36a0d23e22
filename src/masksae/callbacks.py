"""Lightning callbacks of a training job: its progress, the step a resume continued from, and a checkpoint when the job
is told to stop: SLURM's warning before the time limit or a preemption (USR2, on which submitit requeues the job) or
SIGTERM."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L

from masksae.progress import ProgressReport

log = logging.getLogger(__name__)


class TrainingProgress(L.Callback):
    """Optimizer steps out of max_steps (from where a resume started) with the current loss: a bar on a terminal, a
    log line every ~10% or minute elsewhere. Replaces Lightning's bar, which floods logs and knows no total here."""

    def __init__(self) -> None:
        self.report: ProgressReport | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.report = ProgressReport("training", trainer.max_steps, "steps", start=trainer.global_step, logger=log).__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if self.report is not None:
            self.report.update(trainer.global_step, (lambda: f"loss {float(loss):.4g}") if loss is not None else "")

    def _close(self) -> None:
        if self.report is not None:
            self.report.__exit__(None, None, None)
            self.report = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close()


class ResumeRecorder(L.Callback):
    """Records the optimizer steps the job started from (those of the checkpoint it resumed, 0 otherwise) and the
    number of the first optimizer step it then took: `start_step + 1` when the resume really continued."""

    def __init__(self) -> None:
        self.start_step: int | None = None
        self.first_step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.first_step is None:
            self.first_step = trainer.global_step


class PreemptionCheckpoint(L.Callback):
    """A checkpoint at the end of the step during which the job was told to stop, so that it resumes from there:
    - SIGUSR2 (SLURM's warning before a time limit or preemption, on which submitit requeues the job and exits) is held
      until the step ends, the checkpoint is saved to `path`, then submitit's handler runs;
    - SIGTERM (a preemption, scancel) makes Lightning stop after the step: the checkpoint is saved just before.
    Saving inside a signal handler could catch the optimizer mid-update; at the end of the step the state is whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.previous: Any = None
        self.pending: tuple[int, FrameType | None] | None = None

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        self.pending = (signum, frame)  # no logging here: a signal handler may run inside a logging call

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        current = signal.getsignal(signal.SIGUSR2)
        if callable(current):  # a handler that acts on it (submitit's): hold the signal in front of it
            self.previous = current
            signal.signal(signal.SIGUSR2, self._hold)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.pending is not None or trainer.received_sigterm:
            cause = signal.Signals(self.pending[0]).name if self.pending else "SIGTERM"
            log.warning("signal %s: checkpointing at the end of this step before the job stops", cause)
            trainer.save_checkpoint(self.path)
            log.warning("checkpoint at step %d saved to %s before the job stops", trainer.global_step, self.path)
            self._release()

    def _release(self, deliver: bool = True) -> None:
        """Give SIGUSR2 back to its handler and, with `deliver`, run it for a held signal (submitit requeues, exits)."""
        if self.previous is None:
            return
        signal.signal(signal.SIGUSR2, self.previous)
        handler, self.previous = self.previous, None
        pending, self.pending = self.pending, None
        if deliver and pending is not None:
            handler(*pending)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._release()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._release(deliver=False)  # the job is ending anyway; a requeue would only repeat the failure
