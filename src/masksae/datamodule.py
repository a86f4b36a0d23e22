"""The LightningDataModule over training activations (cached shards or the LLM's stream): normalisation, seeded
resumable shuffling (masksae.batching), clean held-out validation."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from masksae.batching import BlockSource, ShuffledBatches


def estimate_scale(acts_ND: torch.Tensor, n_sample: int, seed: int) -> float:
    """Scalar s with E||s x||^2 = d_in over a seeded sample of rows (dictionary_learning/SAELens convention), summed
    in float64 a chunk at a time (no float64 copy of the sample)."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(acts_ND.shape[0], generator=generator)[:n_sample]
    sum_sq_norm = sum(float(acts_ND[chunk].double().pow(2).sum()) for chunk in rows.split(8192))
    return float((acts_ND.shape[1] * len(rows) / sum_sq_norm) ** 0.5)


class ScaledChunks(IterableDataset):
    """`acts_ND` in chunks of `batch_size` rows, each normalised when it is yielded (no normalised copy of the set)."""

    def __init__(self, acts_ND: torch.Tensor, batch_size: int, scale: float) -> None:
        self.acts_ND = acts_ND
        self.batch_size = batch_size
        self.scale = scale

    def __iter__(self) -> Iterator[torch.Tensor]:
        for chunk_BD in self.acts_ND.split(self.batch_size):
            yield chunk_BD.float() * self.scale


class ActivationDataModule(L.LightningDataModule):
    """Normalised training batches from a BlockSource through a shuffle buffer of `buffer_rows`; the scale and the SAEs'
    init sample come from the first `scale_sample` rows of epoch 0's shuffled order."""

    def __init__(self, source: BlockSource, val_acts_ND: torch.Tensor, *, batch_size: int, epochs: int, seed: int,
                 scale_sample: int, buffer_rows: int) -> None:
        super().__init__()
        self.val_acts_ND = val_acts_ND
        self.batch_size = batch_size
        self.n_rows = int(source.rows_per_block_K.sum())
        self.total_steps = epochs * (self.n_rows // batch_size)
        self.batches = ShuffledBatches(source, batch_size, buffer_rows, self.total_steps, self._current_step, seed, scale=1.0)
        self.sample_ND = self._first_rows(scale_sample)
        self.scale = estimate_scale(self.sample_ND, scale_sample, seed) if len(self.sample_ND) else 1.0
        self.batches.scale = self.scale

    def _first_rows(self, n_rows: int) -> torch.Tensor:
        """The first `n_rows` rows of epoch 0 (as training sees them), reading no more buffers than they span."""
        parts, index, have = [], 0, 0
        while have < n_rows and index * self.batches.buffer_batches < self.batches.batches_per_epoch:
            parts.append(self.batches.buffer(0, index)[: n_rows - have])
            have += parts[-1].shape[0]
            index += 1
        return torch.cat(parts) if parts else torch.empty(0, self.val_acts_ND.shape[1])

    def release_sample(self) -> None:
        """Drop the init sample once the SAEs are initialised (it is `scale_sample` rows: 256 MB at the defaults)."""
        self.sample_ND = self.sample_ND[:0]

    def _current_step(self) -> int:
        return self.trainer.global_step if self.trainer else 0

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(ScaledChunks(self.val_acts_ND, self.batch_size, self.scale), batch_size=None, num_workers=0)
