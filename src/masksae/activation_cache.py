"""Activation cache shared by every job of a grid: build once, atomic and checksummed, LRU within a disk budget.

Layout under `<cache_dir>/activations/`:
    <key>/manifest.json, acts.safetensors, used   a complete cache (`used`: its mtime is the last use)
    .claims/<key>                                 the build claim of <key>; it carries the bytes reserved
    .claims/_budget                               held briefly while deciding what to evict
    .leases/<key>/<holder>                        <key> is being read, or pinned for a queued job
    .staging-<key>-<token>/  .trash-<id>/         being written / being removed
Claims and leases are O_EXCL / heartbeat files (`masksae.locks.Lease`), so this works where file locks do not
(NFS, Lustre). Whatever happens to them, a cache appears by one rename of a complete, checksummed folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load, save

from masksae.activations import ActivationSet, ActivationSpec
from masksae.locks import Lease, live_leases, read_lease

log = logging.getLogger(__name__)
BUDGET_CLAIM = "_budget"


def _checksum(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _folder_bytes(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file())


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
    def load(self, spec: ActivationSpec) -> ActivationSet | None:
        """The cached set, or None when absent, incomplete or corrupt (removed later, under the build claim)."""
        folder = self.folder(spec)
        manifest_path = folder / "manifest.json"
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            data = (folder / "acts.safetensors").read_bytes()  # one read: checksummed, then parsed
            if manifest["spec"] != asdict(spec) or _checksum(data) != manifest["checksum"]:
                raise ValueError("manifest does not match the data")
            tensors = load(data)
            if tensors["acts_ND"].shape[0] != manifest["n_rows"]:
                raise ValueError("row count differs from the manifest")
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
            log.warning("activation cache %s is incomplete or corrupt (%s): it will be rebuilt", folder, error)
            return None
        with suppress(OSError):
            (folder / "used").touch()
        return ActivationSet(acts_ND=tensors["acts_ND"], masked_N=tensors["masked_N"], spec=spec)

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
    def get_or_build(self, spec: ActivationSpec, build: Callable[[], ActivationSet], n_bytes: int) -> ActivationSet | None:
        """The cached set for `spec`, built once by `build()` however many processes ask at once; None when a
        cache of `n_bytes` would not fit the budget even after evicting what no one needs (the caller streams)."""
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
                    self._discard(spec.key())
                    if not self.make_room(n_bytes, spec.key()):
                        log.warning("activation cache %s (%.2f GB) would not fit activations.cache_budget_gb=%s: streaming",
                                    spec.key(), n_bytes / 1e9, self.budget_bytes and self.budget_bytes / 1e9)
                        return None
                    activations = build()
                    self.store(activations)
                    return activations

    def store(self, activations: ActivationSet) -> None:
        """Write into a staging folder, then rename it into place: readers never see half a cache."""
        key = activations.spec.key()
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".staging-{key}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        data = save({"acts_ND": activations.acts_ND.contiguous(), "masked_N": activations.masked_N.contiguous()})
        (staging / "acts.safetensors").write_bytes(data)
        (staging / "used").touch()
        manifest = {
            "spec": asdict(activations.spec),
            "n_rows": activations.acts_ND.shape[0],
            "checksum": _checksum(data),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        self._discard_folder(self.root / key)
        os.replace(staging, self.root / key)

    def _discard(self, key: str) -> None:
        """Remove an incomplete or corrupt cache of `key` and staging folders left by crashed builders."""
        self._discard_folder(self.root / key)
        for leftover in self.root.glob(f".staging-{key}-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def _discard_folder(self, folder: Path) -> None:
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

    def usage_bytes(self, exclude_claim: str | None = None) -> int:
        """Bytes of complete caches plus the reservations of live build claims (other than `exclude_claim`)."""
        used = sum(_folder_bytes(folder) for folder in self.complete_caches())
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
            candidates = sorted(
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
                self._discard_folder(folder)
                free += size
            return free >= n_bytes
