"""Training batches from blocks of rows (runs of a cached shard, or whole sequences the LLM computes) through a seeded
shuffle buffer. Each epoch visits the blocks in a seeded order; buffer i holds rows [i*R, (i+1)*R) of that order, shuffled.
Every row count is known beforehand, so a resumed run reads (or recomputes) only the buffer it stopped in."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Protocol

import torch
from torch.utils.data import IterableDataset

from masksae.shards import ShardedActivations


class BufferRows(Protocol):
    """A shuffle buffer's rows: `len()` of them, in an order that depends only on what was read; `take(positions_B)`
    copies those rows out, in any order (a batch is a set). `batches(order_R, batch_size)`: a gather a batch, batch i
    taking the rows at order_R[i * batch_size : (i + 1) * batch_size] (worked out when the buffer is read, so that a
    gather only copies)."""

    def __len__(self) -> int: ...

    def take(self, positions_B: torch.Tensor) -> torch.Tensor: ...

    def batches(self, order_R: torch.Tensor, batch_size: int) -> list[Callable[[], torch.Tensor]]: ...


class BlockSource(Protocol):
    """Rows in blocks: `rows_per_block_K` rows each (known without reading them). `read(blocks_K, skip, take)`: rows
    [skip, skip + take) of those blocks' rows taken in block order (a buffer is shuffled afterwards, so a source may
    order them as is cheapest to read)."""

    rows_per_block_K: torch.Tensor

    def read(self, blocks_K: torch.Tensor, skip: int, take: int) -> BufferRows: ...


class RowsInMemory:
    """A buffer computed into memory (rows_RD)."""

    def __init__(self, rows_RD: torch.Tensor) -> None:
        self.rows_RD = rows_RD

    def __len__(self) -> int:
        return self.rows_RD.shape[0]

    def take(self, positions_B: torch.Tensor) -> torch.Tensor:
        return self.rows_RD[positions_B]

    def batches(self, order_R: torch.Tensor, batch_size: int) -> list[Callable[[], torch.Tensor]]:
        return [partial(self.take, positions_B) for positions_B in order_R.split(batch_size)]


class MappedRows:
    """A buffer of a sharded set as its row indices (ascending): each batch is gathered straight from the shards (one
    copy a row, in file order), through mappings held while the buffer is in use (each gather drops its page-table
    entries, so resident memory holds one batch's pages at most, whatever the set's size)."""

    def __init__(self, shards: ShardedActivations, rows_R: torch.Tensor) -> None:
        self.shards = shards
        self.rows_R = rows_R
        self._mapped: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.rows_R)

    def take(self, positions_B: torch.Tensor) -> torch.Tensor:
        return self.shards.gather(self.rows_R[positions_B].sort().values, self._mapped)

    def batches(self, order_R: torch.Tensor, batch_size: int) -> list[Callable[[], torch.Tensor]]:
        """Each batch's rows sorted into file order and split by shard, for the whole buffer at once."""
        rows_KB = self.rows_R[order_R].view(-1, batch_size).sort(dim=1).values
        return [partial(self.shards.gather_local, local_B, spans, self._mapped) for local_B, spans in self.shards.by_shard(rows_KB)]


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class ShuffledBatches(IterableDataset):
    """Exactly n_rows // batch_size batches an epoch, from `start_step()` (read when iteration starts) to `total_steps`.
    The next buffer is read (and its batches' gathers worked out) in a background thread while the current one is
    trained on."""

    def __init__(self, source: BlockSource, batch_size: int, buffer_rows: int, total_steps: int, start_step: Callable[[], int],
                 seed: int, scale: float) -> None:
        self.source = source
        self.batch_size = batch_size
        self.buffer_batches = max(1, buffer_rows // batch_size)
        self.n_rows = int(source.rows_per_block_K.sum())
        self.batches_per_epoch = self.n_rows // batch_size
        self.total_steps = total_steps
        self.start_step = start_step
        self.seed = seed
        self.scale = scale
        self._layout: tuple[int, torch.Tensor, torch.Tensor] | None = None
        self._lock = threading.Lock()

    def _epoch_layout(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's block order and the cumulative row count at the end of each block in that order."""
        with self._lock:
            if self._layout is None or self._layout[0] != epoch:
                generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
                order_K = torch.randperm(len(self.source.rows_per_block_K), generator=generator, dtype=torch.int32)
                self._layout = (epoch, order_K, self.source.rows_per_block_K[order_K].cumsum(0, dtype=torch.long))
            return self._layout[1], self._layout[2]

    def _gathers(self, epoch: int, index: int) -> list[Callable[[], torch.Tensor]]:
        """Buffer `index` of `epoch` read: a gather for each of its batches, in the seeded order training draws them."""
        order_K, ends_K = self._epoch_layout(epoch)
        rows_per_buffer = self.buffer_batches * self.batch_size
        start = index * rows_per_buffer
        stop = min(start + rows_per_buffer, self.batches_per_epoch * self.batch_size)
        first = int(torch.searchsorted(ends_K, start, right=True))
        last = int(torch.searchsorted(ends_K, stop - 1, right=True))
        block_start = int(ends_K[first - 1]) if first else 0
        rows = self.source.read(order_K[first : last + 1].long(), start - block_start, stop - start)
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch) * 65_537 + index)
        return rows.batches(torch.randperm(len(rows), generator=generator), self.batch_size)  # len(rows): whole batches

    def buffer(self, epoch: int, index: int) -> torch.Tensor:
        """Buffer `index` of `epoch`, its batches in the order training draws them."""
        return torch.cat([gather() for gather in self._gathers(epoch, index)])

    def __iter__(self) -> Iterator[torch.Tensor]:
        step = self.start_step()
        if step >= self.total_steps:
            return
        buffers_per_epoch = -(-self.batches_per_epoch // self.buffer_batches)
        epoch, position = divmod(step, self.batches_per_epoch)
        index, skip = divmod(position, self.buffer_batches)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="masksae-read") as reader:
            pending: Future[list[Callable[[], torch.Tensor]]] = reader.submit(self._gathers, epoch, index)
            while step < self.total_steps:
                gathers = pending.result()
                index += 1
                if index == buffers_per_epoch:
                    epoch, index = epoch + 1, 0
                if step + len(gathers) - skip < self.total_steps:
                    pending = reader.submit(self._gathers, epoch, index)
                for gather in gathers[skip:]:
                    yield gather().float().mul_(self.scale)  # a gather copies: scaled in place, no second batch
                    step += 1
                    if step >= self.total_steps:
                        return
                skip = 0


def expand_ranges(starts_K: torch.Tensor, lengths_K: torch.Tensor) -> torch.Tensor:
    """The indices start_k .. start_k + length_k - 1 of every range, concatenated in order."""
    total = int(lengths_K.sum())
    offsets_K = lengths_K.cumsum(0) - lengths_K
    return starts_K.repeat_interleave(lengths_K) + torch.arange(total) - offsets_K.repeat_interleave(lengths_K)


def _block_sums(flags_N: torch.Tensor, block_rows: int) -> torch.Tensor:
    """How many flags are set in each run of `block_rows` (the last run may be shorter)."""
    padded_N = torch.nn.functional.pad(flags_N.long(), (0, -len(flags_N) % block_rows))
    return padded_N.view(-1, block_rows).sum(1)


class CachedBlocks:
    """Blocks of `block_rows` consecutive rows of a sharded set (never across shards; block geometry computed when read,
    so only a 4-byte row count per block is held); with `keep_N`, only the rows it flags count and come back. With
    `read_ahead` (sets larger than memory), reading a buffer asks the kernel to fetch its rows from disk meanwhile."""

    def __init__(self, shards: ShardedActivations, block_rows: int, keep_N: torch.Tensor | None = None, *, read_ahead: bool = False) -> None:
        self.shards = shards
        self.block_rows = block_rows
        self.keep_N = keep_N
        self.read_ahead = read_ahead
        self.shard_rows_S = torch.tensor(shards.rows_per_shard, dtype=torch.long)
        self.shard_starts_S = shards.shard_starts_S
        blocks_S = (self.shard_rows_S + block_rows - 1) // block_rows
        self.block_ends_S = blocks_S.cumsum(0)
        self.rows_per_block_K = torch.cat([
            _block_sums(torch.ones(rows, dtype=torch.bool) if keep_N is None else keep_N[start : start + rows], block_rows)
            for start, rows in zip(self.shard_starts_S.tolist(), shards.rows_per_shard, strict=True)]).to(torch.int32)

    def _rows(self, blocks_K: torch.Tensor) -> torch.Tensor:
        """The set's row indices of these blocks, in block order (masked rows left out if asked)."""
        if self.block_rows == 1:  # block k is row k
            rows_R = blocks_K
        else:
            shard_K = torch.searchsorted(self.block_ends_S, blocks_K, right=True)
            first_block_K = self.block_ends_S[shard_K] - (self.shard_rows_S[shard_K] + self.block_rows - 1) // self.block_rows
            offset_K = (blocks_K - first_block_K) * self.block_rows
            lengths_K = torch.clamp(self.shard_rows_S[shard_K] - offset_K, max=self.block_rows)
            rows_R = expand_ranges(self.shard_starts_S[shard_K] + offset_K, lengths_K)
        return rows_R if self.keep_N is None else rows_R[self.keep_N[rows_R]]

    def read(self, blocks_K: torch.Tensor, skip: int, take: int) -> MappedRows:
        """The rows as indices in file order; their bytes are copied only batch by batch, when training takes them."""
        rows_R = self._rows(blocks_K)[skip : skip + take].sort().values
        if self.read_ahead:
            self.shards.read_ahead(rows_R)
        return MappedRows(self.shards, rows_R)
