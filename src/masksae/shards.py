"""Activation sets on disk as safetensors shards: written as the LLM runs (memory bounded by one shard), checksummed,
read memory-mapped (a set larger than RAM is never loaded whole)."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from masksae.files import write_bytes_atomically

SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "BOOL": torch.bool}


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


@contextmanager
def mapped_shard(path: Path) -> Iterator[dict[str, torch.Tensor]]:
    """The tensors of a safetensors file (8-byte header size, JSON header, data) as views of a read-only private mapping,
    unmapped on exit: nothing stays resident and no file descriptor stays open (a set may have thousands of shards)."""
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    mapping.madvise(mmap.MADV_RANDOM)  # reads are scattered rows: no readahead of pages nobody asked for
    tensors: dict[str, torch.Tensor] = {}
    try:
        (header_size,) = struct.unpack("<Q", mapping[:8])
        header = json.loads(mapping[8 : 8 + header_size])
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            begin, end = info["data_offsets"]
            count = (end - begin) // dtype.itemsize
            flat = torch.frombuffer(mapping, dtype=dtype, count=count, offset=8 + header_size + begin) if count else torch.empty(0, dtype=dtype)
            tensors[name] = flat.view(info["shape"])
        yield tensors
    finally:
        tensors.clear()
        with suppress(BufferError):  # a view still referenced elsewhere: unmapped when it is collected
            mapping.close()


class ShardedActivations:
    """A complete sharded set on disk. Rows are gathered shard by shard from short-lived memory mappings (copies come
    back), so resident memory holds what was asked for, never the set."""

    def __init__(self, folder: Path, entries: list[ShardEntry], d_model: int, dtype: torch.dtype) -> None:
        self.folder = folder
        self.entries = entries
        self.d_model = d_model
        self.dtype = dtype
        self.rows_per_shard = [entry.rows for entry in entries]
        self.n_rows = sum(self.rows_per_shard)

    def gather(self, shard: int, rows_R: torch.Tensor, out_RD: torch.Tensor | None = None) -> torch.Tensor:
        """Rows `rows_R` (indices within shard `shard`) of its activations, copied (into `out_RD` if given)."""
        with mapped_shard(self.folder / self.entries[shard].file) as tensors:
            if out_RD is None:
                return tensors["acts_ND"].index_select(0, rows_R)
            return torch.index_select(tensors["acts_ND"], 0, rows_R, out=out_RD)

    def _whole(self, name: str) -> torch.Tensor:
        parts = []
        for entry in self.entries:
            with mapped_shard(self.folder / entry.file) as tensors:
                parts.append(tensors[name].clone())
        return torch.cat(parts)

    def masked_N(self) -> torch.Tensor:
        """Which rows were masked, for the whole set (one byte a row, in memory)."""
        return self._whole("masked_N")

    def to_memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole set in memory (acts_ND, masked_N): for sets known to be small (validation, tests)."""
        return self._whole("acts_ND"), self.masked_N()
