"""Activation sets on disk as safetensors shards: written as the LLM runs (memory bounded by one shard), checksummed,
read memory-mapped (a set larger than RAM is never loaded whole)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from masksae.files import write_bytes_atomically
from masksae.mapped_files import map_safetensors, release_pages, tensor_offset


def file_checksum(path: Path) -> str:
    """blake2b-128 of the file, read in chunks (constant memory; the GIL is released while hashing)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest records it: its file, rows, bytes, checksum, and the sequences written up to its end."""

    file: str
    rows: int
    bytes: int
    checksum: str
    sequences_done: int

    def intact(self, folder: Path) -> bool:
        """The file exists with the recorded size and checksum."""
        path = folder / self.file
        return path.is_file() and path.stat().st_size == self.bytes and file_checksum(path) == self.checksum


class ShardWriter:
    """Appends (activations, masked flags) chunks; every `shard_rows` rows (at a chunk boundary) they go to disk as one
    shard, fsynced and checksummed, and `progress` (a JSON list of the shards so far) is rewritten atomically.
    `entries`: shards an interrupted build left (verified), which this one goes on from."""

    def __init__(self, folder: Path, shard_rows: int, entries: list[ShardEntry] | None = None, *, progress: Path | None = None) -> None:
        self.folder = folder
        self.shard_rows = max(1, shard_rows)
        self.entries = list(entries or [])
        self.progress = progress
        self.sequences_pending = self.sequences_done
        self._acts: list[torch.Tensor] = []
        self._masked: list[torch.Tensor] = []
        self._rows = 0

    @property
    def sequences_done(self) -> int:
        """Sequences whose rows are in written shards (a build appends from there)."""
        return self.entries[-1].sequences_done if self.entries else 0

    def append(self, acts_TD: torch.Tensor, masked_T: torch.Tensor, sequences_done: int) -> ShardEntry | None:
        """Add the rows of the sequences up to `sequences_done`; returns the shard written, if this chunk completed one."""
        self._acts.append(acts_TD)
        self._masked.append(masked_T)
        self._rows += acts_TD.shape[0]
        self.sequences_pending = sequences_done
        return self.flush() if self._rows >= self.shard_rows else None

    def flush(self) -> ShardEntry | None:
        """Write what is pending as a shard (nothing when nothing is); at most twice a shard's bytes are held meanwhile."""
        if not self._rows:
            return None
        path = self.folder / f"shard-{len(self.entries):05d}.safetensors"
        acts_ND, masked_N = torch.cat(self._acts), torch.cat(self._masked)
        self._acts, self._masked, self._rows = [], [], 0
        save_file({"acts_ND": acts_ND, "masked_N": masked_N}, str(path))
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        entry = ShardEntry(path.name, acts_ND.shape[0], path.stat().st_size, file_checksum(path), self.sequences_pending)
        self.entries.append(entry)
        if self.progress is not None:
            write_bytes_atomically(self.progress, json.dumps([asdict(e) for e in self.entries]).encode())
        return entry


class ShardedActivations:
    """A complete sharded set on disk. Rows are gathered shard by shard from memory mappings held only while they are
    used (copies come back), so resident memory holds what was asked for, never the set."""

    def __init__(self, folder: Path, entries: list[ShardEntry], d_model: int, dtype: torch.dtype) -> None:
        self.folder = folder
        self.entries = entries
        self.d_model = d_model
        self.dtype = dtype
        self.rows_per_shard = [entry.rows for entry in entries]
        self.n_rows = sum(self.rows_per_shard)
        rows_S = torch.tensor(self.rows_per_shard, dtype=torch.long)
        self.shard_starts_S = rows_S.cumsum(0) - rows_S
        self.n_bytes = self.n_rows * d_model * dtype.itemsize

    def by_shard(self, rows_KR: torch.Tensor) -> list[tuple[torch.Tensor, list[tuple[int, slice]]]]:
        """For set rows ascending along each line of rows_KR: per line, each row's index within its shard and the
        (shard, span of the line) of every shard that holds some of them, worked out for all lines at once."""
        shard_KR = torch.searchsorted(self.shard_starts_S, rows_KR, right=True) - 1
        counts_KS = torch.zeros(rows_KR.shape[0], len(self.entries), dtype=torch.long)
        counts_KS.scatter_add_(1, shard_KR, torch.ones_like(shard_KR))
        ends_KS = counts_KS.cumsum(1)
        local_KR = rows_KR - self.shard_starts_S[shard_KR]
        plans = []
        for local_R, counts_S, ends_S in zip(local_KR, counts_KS, ends_KS, strict=True):
            shards_U = counts_S.nonzero().squeeze(1)
            ends_U, counts_U = ends_S[shards_U].tolist(), counts_S[shards_U].tolist()
            plans.append((local_R, [(shard, slice(end - count, end)) for shard, end, count in zip(shards_U.tolist(), ends_U, counts_U, strict=True)]))
        return plans

    def gather_local(self, local_R: torch.Tensor, spans: list[tuple[int, slice]], mapped: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Rows given by shard (as `by_shard` splits them) copied out of the shards' mappings: one copy a row. `mapped`
        keeps the mappings for later calls (they are unmapped when it is dropped); without it they are unmapped on return."""
        mapped = {} if mapped is None else mapped
        out_RD = torch.empty(len(local_R), self.d_model, dtype=self.dtype)
        for shard, span in spans:
            if shard not in mapped:
                mapped[shard] = map_safetensors(self.folder / self.entries[shard].file)["acts_ND"]
            torch.index_select(mapped[shard], 0, local_R[span], out=out_RD[span])
            release_pages(mapped[shard])
        return out_RD

    def gather(self, rows_R: torch.Tensor, mapped: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Rows rows_R of the set (ascending indices), copied out (`mapped`: as for `gather_local`)."""
        ((local_R, spans),) = self.by_shard(rows_R.unsqueeze(0))
        return self.gather_local(local_R, spans, mapped)

    def read_ahead(self, rows_R: torch.Tensor) -> None:
        """Ask the kernel to start reading these rows (ascending) into the page cache, without waiting: for sets larger
        than memory, so that a buffer's reads overlap the training on the one before."""
        row_bytes = self.d_model * self.dtype.itemsize
        ((local_R, spans),) = self.by_shard(rows_R.unsqueeze(0))
        for shard, span in spans:
            local_T = local_R[span]
            path = self.folder / self.entries[shard].file
            _, lengths_T = torch.unique_consecutive(local_T - torch.arange(len(local_T)), return_counts=True)  # runs of consecutive rows
            starts_T = local_T[lengths_T.cumsum(0) - lengths_T]
            offset = tensor_offset(path, "acts_ND")
            descriptor = os.open(path, os.O_RDONLY)
            try:
                for start, length in zip(starts_T.tolist(), lengths_T.tolist(), strict=True):
                    os.posix_fadvise(descriptor, offset + start * row_bytes, length * row_bytes, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(descriptor)

    def _whole(self, name: str) -> torch.Tensor:
        return torch.cat([map_safetensors(self.folder / entry.file)[name].clone() for entry in self.entries])

    def masked_N(self) -> torch.Tensor:
        """Which rows were masked, for the whole set (one byte a row, in memory)."""
        return self._whole("masked_N")

    def to_memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole set in memory (acts_ND, masked_N): for sets known to be small (validation, tests)."""
        return self._whole("acts_ND"), self.masked_N()
