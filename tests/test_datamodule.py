"""Training batches: normalisation to E||x||^2 = d_in, every row once an epoch from sharded caches and streams alike,
seeded order, masked rows dropped, a resume that reads only the buffer it stopped in, and mixing across sequences and
shards at least as good as a full in-memory shuffle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from masksae.batching import CachedBlocks, RowsInMemory, ShuffledBatches
from masksae.datamodule import ActivationDataModule, estimate_scale
from tests.activation_sets import sharded_set


def _acts(n: int = 5000, d: int = 16) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0)) * 37.0 + 5.0


class CountingBlocks:
    """A streamed source: block k is a 'sequence' of `length` rows [row id, ...]; every read is recorded."""

    def __init__(self, n_blocks: int, length: int) -> None:
        self.length = length
        self.rows_per_block_K = torch.full((n_blocks,), length)
        self.reads: list[int] = []

    def read(self, blocks_K: torch.Tensor, skip: int, take: int) -> RowsInMemory:
        self.reads.append(len(blocks_K))
        ids_R = (blocks_K.unsqueeze(1) * self.length + torch.arange(self.length)).flatten()[skip : skip + take]
        return RowsInMemory(ids_R.float().unsqueeze(1).repeat(1, 3))


def sharded(tmp_path: Path, acts_ND: torch.Tensor, masked_N: torch.Tensor, shard_rows: int, chunk: int):
    return sharded_set(tmp_path, acts_ND, masked_N, shard_rows=shard_rows, chunk=chunk)


def test_scale_normalises_mean_squared_norm_to_d_in() -> None:
    acts_ND = _acts()
    scale = estimate_scale(acts_ND, n_sample=5000, seed=0)
    assert abs((acts_ND * scale).pow(2).sum(1).mean().item() - 16.0) < 1e-3


@pytest.mark.parametrize("keep_masked", [True, False])
def test_cached_batches_cover_each_epoch_once_seeded_and_resume_where_they_stopped(tmp_path: Path, keep_masked: bool) -> None:
    ids_ND = torch.arange(1030, dtype=torch.float32).unsqueeze(1).repeat(1, 2)
    masked_N = torch.rand(1030, generator=torch.Generator().manual_seed(1)) < 0.2
    shards = sharded(tmp_path, ids_ND, masked_N, shard_rows=200, chunk=70)
    source = CachedBlocks(shards, block_rows=8, keep_N=None if keep_masked else ~masked_N)
    state = {"step": 0}
    batches = ShuffledBatches(source, batch_size=100, buffer_rows=300, total_steps=25, start_step=lambda: state["step"], seed=3, scale=2.0)
    steps = list(batches)
    n_kept = 1030 if keep_masked else int((~masked_N).sum())
    assert batches.batches_per_epoch == n_kept // 100 and len(steps) == 25
    per_epoch = batches.batches_per_epoch
    for epoch in (0, 1):
        rows = (torch.cat(steps[per_epoch * epoch : per_epoch * (epoch + 1)])[:, 0] / 2.0).long()
        assert len(set(rows.tolist())) == per_epoch * 100  # no row twice in an epoch
        assert keep_masked or not masked_N[rows].any()
    assert not torch.equal(steps[0], steps[per_epoch])
    again = ShuffledBatches(source, 100, 300, 25, lambda: 0, seed=3, scale=2.0)
    assert all(torch.equal(a, b) for a, b in zip(list(again), steps, strict=True))
    other_seed = ShuffledBatches(source, 100, 300, 25, lambda: 0, seed=4, scale=2.0)
    assert not torch.equal(next(iter(other_seed)), steps[0])
    for resume_at in (1, 7, 17, 24):
        state["step"] = resume_at
        assert all(torch.equal(a, b) for a, b in zip(list(batches), steps[resume_at:], strict=True))


def test_a_resumed_stream_recomputes_only_the_buffer_it_stopped_in() -> None:
    source = CountingBlocks(n_blocks=200, length=10)  # 2000 rows: 20 batches an epoch, buffers of 4 batches
    state = {"step": 0}
    batches = ShuffledBatches(source, batch_size=100, buffer_rows=400, total_steps=40, start_step=lambda: state["step"], seed=0, scale=1.0)
    steps = list(batches)
    assert source.reads == [40] * 10  # every block once an epoch, one buffer (40 sequences) at a time
    source.reads.clear()
    state["step"] = 27  # epoch 1 (steps 20..39), buffer 1 (steps 24..27), 3 batches into it
    resumed = list(batches)
    assert all(torch.equal(a, b) for a, b in zip(resumed, steps[27:], strict=True)) and len(resumed) == 13
    assert source.reads == [40] * 4  # buffers 1..4 of epoch 1: nothing before the buffer it stopped in is recomputed


@pytest.mark.parametrize(("block_rows", "at_least"), [(1, 0.99), (8, 0.93)])
def test_batches_mix_sequences_and_shards_like_a_full_shuffle(tmp_path: Path, block_rows: int, at_least: float) -> None:
    """Default-like proportions: sequences of 127 rows, a buffer of 24 batches, 16 shards. The mean number of distinct
    sequences per batch, against a full in-memory permutation of the same rows: equal (within sampling noise) with
    the default blocks of one row, a little lower with blocks of 8."""
    n_seq, length, batch = 800, 127, 1024
    seq_ND = torch.arange(n_seq).repeat_interleave(length).float().unsqueeze(1)
    shards = sharded(tmp_path, seq_ND, torch.zeros(len(seq_ND), dtype=torch.bool), shard_rows=len(seq_ND) // 16, chunk=length)
    batches = ShuffledBatches(CachedBlocks(shards, block_rows), batch, 24 * batch, 60, lambda: 0, seed=0, scale=1.0)
    distinct = [len(b[:, 0].unique()) for b in batches]
    order_N = torch.randperm(len(seq_ND), generator=torch.Generator().manual_seed(0))
    full = [len(seq_ND[rows_B, 0].unique()) for rows_B in order_N.split(batch)[:60]]
    assert sum(distinct) / len(distinct) >= at_least * sum(full) / len(full)
    shard_of = (torch.cat(list(ShuffledBatches(CachedBlocks(shards, block_rows), batch, 24 * batch, 1, lambda: 0, 0, 1.0)))[:, 0] * length
                // (len(seq_ND) // 16))
    assert len(shard_of.unique()) == 16  # one batch draws from every shard


def test_masked_positions_can_be_dropped_from_training(tmp_path: Path) -> None:
    acts_ND = _acts(1000)
    masked_N = torch.zeros(1000, dtype=torch.bool)
    masked_N[::4] = True
    shards = sharded(tmp_path, acts_ND, masked_N, shard_rows=300, chunk=50)
    common = dict(batch_size=50, epochs=2, seed=0, scale_sample=1000, buffer_rows=200)
    kept = ActivationDataModule(CachedBlocks(shards, 8), acts_ND[:100], **common)
    dropped = ActivationDataModule(CachedBlocks(shards, 8, ~masked_N), acts_ND[:100], **common)
    assert (kept.n_rows, dropped.n_rows) == (1000, 750)
    assert (kept.total_steps, dropped.total_steps) == (40, 30)
    sample_rows = torch.cdist(dropped.sample_ND, acts_ND).argmin(1)
    assert len(dropped.sample_ND) == 750 and not masked_N[sample_rows].any()


def test_the_datamodule_counts_steps_and_estimates_the_scale_from_one_buffer() -> None:
    source = CountingBlocks(n_blocks=500, length=10)
    data = ActivationDataModule(source, _acts(100, 3), batch_size=256, epochs=2, seed=0, scale_sample=500, buffer_rows=1024)
    assert (data.n_rows, data.total_steps) == (5000, 2 * (5000 // 256))
    assert data.sample_ND.shape == (500, 3) and sum(source.reads) <= 1024 // 10 + 1  # one buffer read, not the epoch
    expected = (3 / data.sample_ND.pow(2).sum(1).mean()).sqrt().item()
    assert abs(data.scale - expected) < 1e-6 * expected
    first = next(iter(data.train_dataloader()))
    assert first.shape == (256, 3) and torch.allclose(first, data.sample_ND[:256] * data.scale)
