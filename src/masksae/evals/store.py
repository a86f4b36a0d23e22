"""Shared eval artifacts (LLM activations, ground-truth probes): one checksummed safetensors file per key, built once."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from masksae.locks import exclusive_lock
from masksae.mapped_files import map_safetensors, read_header

log = logging.getLogger(__name__)
STORE_FORMAT_VERSION = 2  # 2: safetensors with the info and checksum in its metadata, read memory-mapped
Artifact = tuple[dict[str, torch.Tensor], dict[str, Any]]
# The artifacts read last in this process, by path, with the file's (mtime, size) when read: a multirun evaluates
# one SAE after another with the same set-up, and re-reading (and re-checksumming) them per run is wasted. They are
# mappings (reclaimable page-cache pages), still bounded in bytes: a job's memory must not grow with the number of
# probing tasks.
_RECENT: OrderedDict[Path, tuple[tuple[int, int], Artifact]] = OrderedDict()
RECENT_BYTES = 384_000_000


def artifact_key(kind: str, payload: Mapping[str, Any]) -> str:
    """Short hash naming an artifact: its kind plus everything that determines its content."""
    text = json.dumps({"kind": kind, "format": STORE_FORMAT_VERSION, **payload}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """blake2b-128 of the tensors' bytes in name order (read in place: no copy)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _read(path: Path, *, verify: bool = True) -> Artifact | None:
    """Tensors (views of a private mapping of the file: page-cache pages, not a copy) and JSON info of a stored
    artifact, or None when absent; a corrupt file is removed. `verify=False`: skip the checksum (a file this process
    has just written from the tensors it was computed on)."""
    if not path.exists():
        return None
    try:
        metadata = read_header(path)[1].get("__metadata__", {})
        if metadata.get("format") != str(STORE_FORMAT_VERSION):
            raise ValueError(f"format {metadata.get('format')}, not {STORE_FORMAT_VERSION}")
        tensors = map_safetensors(path, random_access=False)
        if verify and _checksum(tensors) != metadata.get("checksum"):
            raise ValueError("checksum mismatch")
        info = json.loads(metadata["info"])
    except (OSError, ValueError, KeyError, RuntimeError, UnicodeDecodeError, struct.error) as error:
        log.warning("eval artifact %s is corrupt (%s): rebuilding it", path, error)
        path.unlink(missing_ok=True)
        return None
    return tensors, info


def _write(path: Path, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    """A safetensors file whose metadata holds the JSON info and the tensors' checksum, written beside `path` and
    renamed (serialising holds one copy of the tensors)."""
    tensors = {name: value.contiguous() for name, value in tensors.items()}
    metadata = {"format": str(STORE_FORMAT_VERSION), "checksum": _checksum(tensors), "info": json.dumps(info, default=str)}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, staging, metadata=metadata)
        os.replace(staging, path)
    finally:
        Path(staging).unlink(missing_ok=True)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _nbytes(artifact: Artifact) -> int:
    return sum(tensor.nbytes for tensor in artifact[0].values())


def _remember(path: Path, artifact: Artifact) -> Artifact:
    stamp = _stamp(path)
    if stamp is not None:
        _RECENT[path] = (stamp, artifact)
        _RECENT.move_to_end(path)
        while len(_RECENT) > 1 and sum(_nbytes(kept) for _, kept in _RECENT.values()) > RECENT_BYTES:
            _RECENT.popitem(last=False)
    return artifact


def cached_artifact(root: Path, key: str, build: Callable[[], Artifact]) -> Artifact:
    """The artifact `key` under `root/evals`, built by `build()` once even when several processes ask at once.
    Callers share the returned tensors: they must not modify them."""
    path = root / "evals" / f"{key}.safetensors"
    recent = _RECENT.get(path)
    if recent is not None and recent[0] == _stamp(path):
        _RECENT.move_to_end(path)
        return recent[1]
    found = _read(path)
    if found is not None:
        return _remember(path, found)
    with exclusive_lock(path.with_name(f".{key}.lock")):
        found = _read(path)
        if found is None:
            _write(path, *build())  # the built tensors are dropped: callers get the file's mapping
            found = _read(path, verify=False)
    if found is None:
        raise OSError(f"eval artifact {path} was written but does not read back")
    return _remember(path, found)
