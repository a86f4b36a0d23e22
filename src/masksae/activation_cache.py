"""Activation cache shared by every job of a grid: build once, atomic and checksummed, LRU within a disk budget.

Layout under `<cache_dir>/activations/`:
    <key>/manifest.json, shard-NNNNN.safetensors, used   a complete cache (`used`: its mtime is the last use)
    .claims/<key>                                 the build claim of <key>; it carries the bytes reserved
    .claims/_budget                               held briefly while deciding what to evict
    .leases/<key>/<holder>                        <key> is being read, or pinned for a queued job
    .staging-<key>/progress.json, shards          being written: a builder that takes over a stale claim keeps
                                                  the verified shards of the one before and goes on from there
    .trash-<id>/                                  being removed
Claims and leases are O_EXCL / heartbeat files (`masksae.locks.Lease`), so this works where file locks do not
(NFS, Lustre). Whatever happens to them, a cache appears by one rename of a complete folder of checksummed shards,
written while the LLM runs (a builder holds one shard in memory, never the set).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path

import torch

from masksae.activations import ActivationSpec
from masksae.files import write_bytes_atomically
from masksae.locks import Lease, live_leases, read_lease
from masksae.shards import ShardedActivations, ShardEntry, ShardWriter

log = logging.getLogger(__name__)
BUDGET_CLAIM = "_budget"
PROGRESS = "progress.json"


def _folder_bytes(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file())


def verify_entries(folder: Path, entries: list[ShardEntry]) -> int:
    """How many leading shards are intact (size and checksum; checked in parallel threads)."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        intact = list(pool.map(lambda entry: entry.intact(folder), entries))
    return intact.index(False) if False in intact else len(entries)


class ActivationCache:
    """One folder per activation key; `get_or_build` is the entry point for jobs."""

    def __init__(self, root: Path, budget_bytes: int | None = None, *, claim_ttl_s: float = 120.0, poll_s: float = 1.0) -> None:
        self.root = root / "activations"
        self.budget_bytes = budget_bytes
        self.claim_ttl_s = claim_ttl_s
        self.poll_s = poll_s

    def folder(self, spec: ActivationSpec) -> Path:
        return self.root / spec.key()

    # --- reading ------------------------------------------------------------------------------
    def load(self, spec: ActivationSpec) -> ShardedActivations | None:
        """The cached set, or None when absent, incomplete or corrupt (removed later, under the build claim)."""
        folder = self.folder(spec)
        manifest_path = folder / "manifest.json"
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest["spec"] != asdict(spec):
                raise ValueError("its manifest is for another activation spec")
            entries = [ShardEntry(**entry) for entry in manifest["shards"]]
            intact = verify_entries(folder, entries)
            if intact < len(entries):
                raise ValueError(f"shard {entries[intact].file} is missing, truncated or altered")
            if sum(entry.rows for entry in entries) != manifest["n_rows"]:
                raise ValueError("row count differs from the manifest")
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
            log.warning("activation cache %s is incomplete or corrupt (%s): it will be rebuilt", folder, error)
            return None
        with suppress(OSError):
            (folder / "used").touch()
        return ShardedActivations(folder, entries, int(manifest["d_model"]), getattr(torch, spec.dtype))

    def lease(self, spec: ActivationSpec, holder: str | None = None, ttl_s: float | None = None) -> Lease:
        """Mark `spec`'s cache as needed: never evicted while the lease lives. Without `ttl_s`, a heartbeat keeps
        it alive until released (a job reading it); with `ttl_s`, it is a pin that lapses by itself (queued jobs)."""
        path = self.root / ".leases" / spec.key() / (holder or f"reader-{uuid.uuid4().hex}")
        if ttl_s is None:
            return Lease(path, self.claim_ttl_s).hold()
        lease = Lease(path, ttl_s, refresh=False)
        lease.hold()
        return lease

    def unpin(self, spec: ActivationSpec, holder: str) -> None:
        (self.root / ".leases" / spec.key() / holder).unlink(missing_ok=True)

    # --- building -----------------------------------------------------------------------------
    def get_or_build(self, spec: ActivationSpec, build: Callable[[ShardWriter], None], n_bytes: int, *, d_model: int,
                     shard_rows: int) -> ShardedActivations | None:
        """The cached set for `spec`, built once by `build(writer)` however many processes ask at once; None when a
        cache of `n_bytes` would not fit the budget even after evicting what no one needs (the caller streams).
        `build` appends rows from `writer.sequences_done` on (0, or where a builder that died stopped)."""
        with self.lease(spec):
            while True:
                cached = self.load(spec)
                if cached is not None:
                    return cached
                claim = Lease.claim(self.root / ".claims" / spec.key(), self.claim_ttl_s, {"bytes": n_bytes})
                if claim is None:
                    time.sleep(self.poll_s)  # someone else builds it: wait for the manifest or a stale claim
                    continue
                with claim:
                    cached = self.load(spec)
                    if cached is not None:
                        return cached
                    self.discard_folder(self.root / spec.key())
                    if not self.make_room(n_bytes, spec.key()):
                        log.warning("activation cache %s (%.2f GB) would not fit activations.cache_budget_gb=%s: streaming",
                                    spec.key(), n_bytes / 1e9, self.budget_bytes and self.budget_bytes / 1e9)
                        return None
                    return self._build(spec, build, d_model, shard_rows)

    def _build(self, spec: ActivationSpec, build: Callable[[ShardWriter], None], d_model: int, shard_rows: int) -> ShardedActivations:
        """Shards into `.staging-<key>` (going on from a dead builder's verified ones), then one rename into place."""
        key = spec.key()
        staging = self.root / f".staging-{key}"
        writer = ShardWriter(staging, shard_rows, self._resumable_entries(staging), progress=staging / PROGRESS)
        if writer.entries:
            log.info("activation cache %s: going on from %d shards (%d sequences) an interrupted build left",
                     key, len(writer.entries), writer.sequences_done)
        build(writer)
        writer.flush()
        manifest = {"spec": asdict(spec), "d_model": d_model, "n_rows": sum(entry.rows for entry in writer.entries),
                    "shards": [asdict(entry) for entry in writer.entries], "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (staging / "used").touch()
        write_bytes_atomically(staging / "manifest.json", json.dumps(manifest, indent=1).encode())
        (staging / PROGRESS).unlink(missing_ok=True)
        self.discard_folder(self.root / key)
        os.replace(staging, self.root / key)
        return ShardedActivations(self.root / key, writer.entries, d_model, getattr(torch, spec.dtype))

    def _resumable_entries(self, staging: Path) -> list[ShardEntry]:
        """The intact leading shards of an interrupted build in `staging` (the rest removed); a fresh folder otherwise."""
        entries: list[ShardEntry] = []
        with suppress(OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
            entries = [ShardEntry(**entry) for entry in json.loads((staging / PROGRESS).read_text())]
        entries = entries[: verify_entries(staging, entries)] if entries else []
        staging.mkdir(parents=True, exist_ok=True)
        kept = {entry.file for entry in entries} | {PROGRESS}
        for path in staging.iterdir():
            if path.name not in kept:
                path.unlink()
        return entries

    def discard_folder(self, folder: Path) -> None:
        """Rename out of the way (atomic), then delete at leisure."""
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    # --- disk budget --------------------------------------------------------------------------
    def complete_caches(self) -> list[Path]:
        return [p for p in self.root.iterdir() if not p.name.startswith(".") and (p / "manifest.json").exists()] if self.root.is_dir() else []

    def abandoned_builds(self, exclude_key: str | None = None) -> list[Path]:
        """Staging folders of builds whose builder is gone (no live claim): kept for a later build of their key to go
        on from, evicted first when room is needed."""
        if not self.root.is_dir():
            return []
        stagings = [path for path in self.root.glob(".staging-*") if path.is_dir() and path.name != f".staging-{exclude_key}"]
        return [path for path in stagings if read_lease(self.root / ".claims" / path.name.removeprefix(".staging-")) is None]

    def usage_bytes(self, exclude_claim: str | None = None) -> int:
        """Bytes of complete caches and abandoned builds, plus the reservations of live build claims (other than `exclude_claim`)."""
        used = sum(_folder_bytes(folder) for folder in self.complete_caches() + self.abandoned_builds(exclude_claim))
        claims = self.root / ".claims"
        if claims.is_dir():
            for path in claims.iterdir():
                if path.name not in (exclude_claim, BUDGET_CLAIM) and not path.name.startswith("."):
                    used += int((read_lease(path) or {}).get("bytes", 0))
        return used

    def make_room(self, n_bytes: int, key: str) -> bool:
        """Evict least-recently-used caches that no lease holds until `n_bytes` more fit; False if they cannot."""
        if self.budget_bytes is None:
            return True
        if n_bytes > self.budget_bytes:
            return False
        while True:
            budget_claim = Lease.claim(self.root / ".claims" / BUDGET_CLAIM, self.claim_ttl_s)
            if budget_claim is not None:
                break
            time.sleep(self.poll_s / 10)
        with budget_claim:
            for leftover in self.root.glob(".trash-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            free = self.budget_bytes - self.usage_bytes(exclude_claim=key)
            candidates = self.abandoned_builds(key) + sorted(
                (folder for folder in self.complete_caches() if folder.name != key),
                key=lambda folder: (folder / "used").stat().st_mtime if (folder / "used").exists() else 0.0,
            )
            for folder in candidates:
                if free >= n_bytes:
                    break
                if live_leases(self.root / ".leases" / folder.name):
                    continue
                size = _folder_bytes(folder)
                log.info("activation cache: evicting %s (%.2f GB, least recently used)", folder.name, size / 1e9)
                self.discard_folder(folder)
                free += size
            return free >= n_bytes
