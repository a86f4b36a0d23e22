"""Crash-safe training state: checkpoints written beside their target, fsynced and renamed into place with the one they
replace kept; resume from the newest readable one; each trained SAE saved before its evals."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from masksae.files import previous_path, write_atomically

log = logging.getLogger(__name__)
LAST = "last.ckpt"
TRAINED = "trained.pt"
# Keys every Lightning training checkpoint has; one without them cannot resume.
CHECKPOINT_KEYS = ("state_dict", "global_step", "loops", "optimizer_states")


def checkpoint_step(path: Path) -> int:
    """The optimizer steps a training checkpoint holds; ValueError says why it cannot be resumed from (truncated,
    unreadable, not a training checkpoint). Memory-mapped: tensors are not read, a truncated archive fails at once."""
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as error:  # torch raises RuntimeError, EOFError, pickle errors... for damaged files
        raise ValueError(f"unreadable ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from error
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"not a training checkpoint (no {', '.join(missing)})")
    return int(checkpoint["global_step"])


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a job resumes from and the optimizer steps it holds."""

    path: Path
    step: int


def resume_point(folder: Path) -> ResumePoint | None:
    """The newest readable checkpoint in `folder`: last.ckpt, else the one it replaced, each unreadable one named in a
    warning. Leftover staging files of a killed writer are removed. None: nothing to resume from (start at step 0)."""
    for leftover in folder.glob(".*.tmp-*") if folder.is_dir() else ():
        leftover.unlink(missing_ok=True)
    last = folder / LAST
    for candidate in (last, previous_path(last)):
        if not candidate.is_file():
            continue
        try:
            return ResumePoint(candidate, checkpoint_step(candidate))
        except ValueError as problem:
            set_aside = candidate.with_name(candidate.name + ".unreadable")
            os.replace(candidate, set_aside)  # never kept as the fallback of the next checkpoint
            log.warning("checkpoint %s is %s (moved to %s): %s", candidate, problem, set_aside.name,
                        "falling back to the one it replaced" if candidate == last else "starting from step 0")
    return None


def has_checkpoint(folder: Path) -> bool:
    """Whether `folder` holds a checkpoint file to resume from (cheap: readability is checked when the job starts)."""
    last = folder / LAST
    return last.is_file() or previous_path(last).is_file()


@dataclass
class TrainedSAE:
    """One SAE at the end of training, in training space: its weights, the activation scale and the final step."""

    state_dict: dict[str, torch.Tensor]
    scale: float
    step: int


def save_trained(folder: Path, trained: TrainedSAE) -> None:
    """Save a trained SAE in its run folder before its evals, so that a job stopped during evals never trains again."""
    payload = {"state_dict": trained.state_dict, "scale": trained.scale, "step": trained.step}
    write_atomically(folder / TRAINED, lambda handle: torch.save(payload, handle))


def load_trained(folder: Path) -> TrainedSAE | None:
    """The run's trained SAE, or None when there is none or it cannot be read (then it is trained again)."""
    path = folder / TRAINED
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return TrainedSAE(payload["state_dict"], float(payload["scale"]), int(payload["step"]))
    except Exception as error:
        log.warning("trained SAE %s is unreadable (%s: %s): training again", path, type(error).__name__, error)
        return None
