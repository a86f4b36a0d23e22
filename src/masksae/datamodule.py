"""LightningDataModules over cached or streamed activations: normalisation, seeded resumable shuffling, held-out validation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler


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


class ActivationStream(Protocol):
    """Activations computed as they are needed: `n_rows` per epoch, delivered in chunks in an epoch-seeded order."""

    n_rows: int

    def epoch_chunks(self, epoch: int) -> Iterator[torch.Tensor]: ...


class StreamedBatches(IterableDataset):
    """Training batches from an ActivationStream through a seeded shuffle buffer; exactly n_rows // batch_size
    batches an epoch. A resumed run regenerates the stream and skips the steps already done."""

    def __init__(self, stream: ActivationStream, batch_size: int, total_steps: int, start_step: Callable[[], int],
                 seed: int, scale: float, buffer_rows: int) -> None:
        self.stream = stream
        self.batch_size = batch_size
        self.batches_per_epoch = stream.n_rows // batch_size
        self.total_steps = total_steps
        self.start_step = start_step
        self.seed = seed
        self.scale = scale
        self.buffer_rows = max(buffer_rows, batch_size)

    def _epoch_batches(self, epoch: int) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        pending: list[torch.Tensor] = []
        n_pending = 0
        for chunk_TD in self.stream.epoch_chunks(epoch):
            pending.append(chunk_TD)
            n_pending += chunk_TD.shape[0]
            if n_pending >= self.buffer_rows:
                buffer_ND = torch.cat(pending)
                buffer_ND = buffer_ND[torch.randperm(n_pending, generator=generator)]
                n_full = n_pending // self.batch_size * self.batch_size
                yield from buffer_ND[:n_full].split(self.batch_size)
                pending, n_pending = [buffer_ND[n_full:]], n_pending - n_full
        if n_pending >= self.batch_size:
            buffer_ND = torch.cat(pending)[torch.randperm(n_pending, generator=generator)]
            yield from buffer_ND[: n_pending // self.batch_size * self.batch_size].split(self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        step = self.start_step()
        while step < self.total_steps:
            epoch, skip = divmod(step, self.batches_per_epoch)
            for index, batch_BD in enumerate(self._epoch_batches(epoch)):
                if index < skip:
                    continue
                yield batch_BD.float() * self.scale
                step += 1
                if step >= self.total_steps:
                    return


class _SAEDataModule(L.LightningDataModule):
    """What every source of training activations gives the run: scale, step count, an init sample, clean validation."""

    def __init__(self, val_acts_ND: torch.Tensor, source_ND: torch.Tensor, n_rows: int, *,
                 batch_size: int, epochs: int, seed: int, scale_sample: int) -> None:
        """`source_ND`: the training rows at hand (all of them, or a streamed sample) for the scale and the init sample."""
        super().__init__()
        self.val_acts_ND = val_acts_ND
        self.batch_size = batch_size
        self.seed = seed
        self.n_rows = n_rows
        self.total_steps = epochs * (n_rows // batch_size)
        self.sample_ND = source_ND[:scale_sample]
        self.scale = estimate_scale(source_ND, scale_sample, seed)

    def _current_step(self) -> int:
        return self.trainer.global_step if self.trainer else 0

    def val_dataloader(self) -> DataLoader:
        val_BD = [chunk.float() * self.scale for chunk in self.val_acts_ND.split(self.batch_size)]
        return DataLoader(val_BD, batch_size=None, shuffle=False, num_workers=0)


class ActivationDataModule(_SAEDataModule):
    """Normalised training batches from activations in memory (masked positions optionally dropped)."""

    def __init__(self, train_acts_ND: torch.Tensor, train_masked_N: torch.Tensor, val_acts_ND: torch.Tensor, *,
                 batch_size: int, epochs: int, seed: int, train_on_masked: bool, scale_sample: int) -> None:
        self.train_acts_ND = train_acts_ND if train_on_masked else train_acts_ND[~train_masked_N]
        super().__init__(val_acts_ND, self.train_acts_ND, self.train_acts_ND.shape[0],
                         batch_size=batch_size, epochs=epochs, seed=seed, scale_sample=scale_sample)

    def train_dataloader(self) -> DataLoader:
        batches = StepBatches(self.train_acts_ND, self.batch_size, self.seed, self.scale)
        sampler = ResumableStepSampler(self.total_steps, self._current_step)
        return DataLoader(batches, batch_size=None, sampler=sampler, num_workers=0)


class StreamingDataModule(_SAEDataModule):
    """Normalised training batches computed by the LLM during training (no cache): for sets that do not fit the disk budget."""

    def __init__(self, stream: ActivationStream, val_acts_ND: torch.Tensor, *,
                 batch_size: int, epochs: int, seed: int, scale_sample: int, buffer_rows: int) -> None:
        sample_ND = torch.cat(list(_first_rows(stream.epoch_chunks(0), scale_sample)))
        super().__init__(val_acts_ND, sample_ND, stream.n_rows, batch_size=batch_size, epochs=epochs, seed=seed, scale_sample=scale_sample)
        self.stream = stream
        self.buffer_rows = buffer_rows

    def train_dataloader(self) -> DataLoader:
        batches = StreamedBatches(self.stream, self.batch_size, self.total_steps, self._current_step, self.seed, self.scale, self.buffer_rows)
        return DataLoader(batches, batch_size=None, num_workers=0)


def _first_rows(chunks: Iterator[torch.Tensor], n_rows: int) -> Iterator[torch.Tensor]:
    """Chunks until `n_rows` rows have come (the last one cut), then stop (the LLM does no more work)."""
    for chunk_TD in chunks:
        yield chunk_TD[:n_rows]
        n_rows -= chunk_TD.shape[0]
        if n_rows <= 0:
            return
