"""Shared eval artifacts (LLM activations, ground-truth probes): one checksummed safetensors file per key, built once."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from masksae.locks import exclusive_lock

log = logging.getLogger(__name__)
STORE_FORMAT_VERSION = 1
Artifact = tuple[dict[str, torch.Tensor], dict[str, Any]]
# The artifacts read last in this process, by path, with the file's (mtime, size) when read: a multirun evaluates
# one SAE after another with the same set-up, and re-reading (and re-checksumming) them per run is wasted. Bounded
# in bytes: a job's memory must not grow with the number of probing tasks.
_RECENT: OrderedDict[Path, tuple[tuple[int, int], Artifact]] = OrderedDict()
RECENT_BYTES = 384_000_000


def artifact_key(kind: str, payload: Mapping[str, Any]) -> str:
    """Short hash naming an artifact: its kind plus everything that determines its content."""
    text = json.dumps({"kind": kind, "format": STORE_FORMAT_VERSION, **payload}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _digest(tensor_bytes: bytes) -> str:
    return hashlib.blake2b(tensor_bytes, digest_size=16).hexdigest()


def _read(path: Path) -> Artifact | None:
    """Tensors and JSON info of a stored artifact, or None when absent; a corrupt file is removed."""
    if not path.exists():
        return None
    try:
        blob = path.read_bytes()
        header_length = int.from_bytes(blob[:8], "little")
        checksum, body = blob[8 + header_length :][:32].decode(), blob[8 + header_length + 32 :]
        if _digest(body) != checksum:
            raise ValueError("checksum mismatch")
        tensors = load(body)
        info = json.loads(blob[8 : 8 + header_length].decode())
    except (OSError, ValueError, UnicodeDecodeError, SafetensorError, json.JSONDecodeError) as error:
        log.warning("eval artifact %s is corrupt (%s): rebuilding it", path, error)
        path.unlink(missing_ok=True)
        return None
    return tensors, info


def _write(path: Path, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    """[header length][JSON info][checksum of body][safetensors body], written to a temp file then renamed."""
    body = save({name: value.contiguous() for name, value in tensors.items()})
    header = json.dumps(info, default=str).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(handle, "wb") as out:
        out.write(len(header).to_bytes(8, "little") + header + _digest(body).encode() + body)
    os.replace(staging, path)


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
    path = root / "evals" / f"{key}.bin"
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
            tensors, info = build()
            _write(path, tensors, info)
            found = tensors, dict(info)
    return _remember(path, found)
