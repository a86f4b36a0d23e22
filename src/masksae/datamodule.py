"""LightningDataModule over cached activations: normalisation, seeded resumable shuffling, held-out validation."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def estimate_scale(acts_ND: torch.Tensor, n_sample: int, seed: int) -> float:
    """Scalar s with E||s x||^2 = d_in over a seeded sample of rows (dictionary_learning/SAELens convention)."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(acts_ND.shape[0], generator=generator)[:n_sample]
    mean_sq_norm = acts_ND[rows].double().pow(2).sum(dim=1).mean().item()
    return float((acts_ND.shape[1] / mean_sq_norm) ** 0.5)


class StepBatches(Dataset):
    """Item `step` is the training batch of that global step: epoch-wise permutations seeded by (seed, epoch)."""

    def __init__(self, acts_ND: torch.Tensor, batch_size: int, seed: int, scale: float) -> None:
        self.acts_ND = acts_ND
        self.batch_size = batch_size
        self.seed = seed
        self.scale = scale
        self.batches_per_epoch = acts_ND.shape[0] // batch_size
        self._epoch = -1
        self._order_N = torch.empty(0, dtype=torch.long)

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order_N = torch.randperm(self.acts_ND.shape[0], generator=generator)
            self._epoch = epoch
        return self._order_N

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __getitem__(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.batches_per_epoch)
        rows_B = self._order(epoch)[position * self.batch_size : (position + 1) * self.batch_size]
        return self.acts_ND[rows_B].float() * self.scale


class ResumableStepSampler(Sampler[int]):
    """Yields global steps from wherever training stands (read when iteration starts) up to `total_steps`."""

    def __init__(self, total_steps: int, start_step: Callable[[], int]) -> None:
        self.total_steps = total_steps
        self.start_step = start_step

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start_step(), self.total_steps))

    def __len__(self) -> int:
        return self.total_steps


class ActivationDataModule(L.LightningDataModule):
    """Normalised training batches (masked positions optionally dropped) and clean validation batches."""

    def __init__(
        self,
        train_acts_ND: torch.Tensor,
        train_masked_N: torch.Tensor,
        val_acts_ND: torch.Tensor,
        *,
        batch_size: int,
        epochs: int,
        seed: int,
        train_on_masked: bool,
        scale_sample: int,
    ) -> None:
        super().__init__()
        self.train_acts_ND = train_acts_ND if train_on_masked else train_acts_ND[~train_masked_N]
        self.val_acts_ND = val_acts_ND
        self.batch_size = batch_size
        self.total_steps = epochs * (self.train_acts_ND.shape[0] // batch_size)
        self.seed = seed
        self.scale = estimate_scale(self.train_acts_ND, scale_sample, seed)

    def train_dataloader(self) -> DataLoader:
        batches = StepBatches(self.train_acts_ND, self.batch_size, self.seed, self.scale)
        sampler = ResumableStepSampler(self.total_steps, lambda: self.trainer.global_step if self.trainer else 0)
        return DataLoader(batches, batch_size=None, sampler=sampler, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        val_BD = [chunk.float() * self.scale for chunk in self.val_acts_ND.split(self.batch_size)]
        return DataLoader(val_BD, batch_size=None, shuffle=False, num_workers=0)
