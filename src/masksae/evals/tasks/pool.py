"""A task's example pool on disk: one JSONL file under a checksummed manifest, built once per machine, atomically."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from masksae.evals.tasks.base import LabelledText, PoolItem
from masksae.locks import exclusive_lock

log = logging.getLogger(__name__)

POOL_FILE, MANIFEST_FILE = "pool.jsonl", "manifest.json"


def pool_dir(cache_root: Path, name: str, fingerprint: str) -> Path:
    """Where the pool of task `name` with this fingerprint lives."""
    return Path(cache_root) / "tasks" / f"{name}-{fingerprint}"


def _encode(items: list[PoolItem]) -> bytes:
    lines = [json.dumps({"part": it.part, "label": it.example.label, "source": it.example.source,
                         "text": it.example.text}, ensure_ascii=False) for it in items]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _decode(data: bytes) -> list[PoolItem]:
    out = []
    for line in data.decode("utf-8").splitlines():
        r = json.loads(line)
        out.append(PoolItem(LabelledText(text=r["text"], label=r["label"], source=r["source"]), r["part"]))
    return out


def read_pool(directory: Path, fingerprint: str) -> list[PoolItem] | None:
    """The pool if its manifest matches the fingerprint and the JSONL's size, sha256 and count; else None."""
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        data = (directory / POOL_FILE).read_bytes()
        if manifest["fingerprint"] != fingerprint or manifest["bytes"] != len(data) \
                or manifest["sha256"] != hashlib.sha256(data).hexdigest():
            raise ValueError("manifest does not match the pool file")
        items = _decode(data)
        if len(items) != manifest["examples"]:
            raise ValueError("example count differs from the manifest")
        return items
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("task pool %s is corrupt (%s); rebuilding", directory, e)
        return None


def _write(directory: Path, fingerprint: str, items: list[PoolItem], extra: dict[str, Any]) -> None:
    """Write pool + manifest into a temp folder beside `directory`, then move it into place."""
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir(parents=True)
    try:
        data = _encode(items)
        (tmp / POOL_FILE).write_bytes(data)
        counts = Counter(f"{it.part}/{it.example.label}" for it in items)
        manifest = {"fingerprint": fingerprint, "examples": len(items), "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(), "counts": dict(sorted(counts.items())), **extra}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if directory.exists():  # a corrupt earlier build; we hold the lock
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)


def load_or_build(directory: Path, fingerprint: str, build: Callable[[], list[PoolItem]]) -> list[PoolItem]:
    """The cached pool, built with `build()` under an exclusive lock when missing or corrupt (concurrent
    builders build once: the others wait for the lock and then read the result)."""
    items = read_pool(directory, fingerprint)
    if items is not None:
        return items
    with exclusive_lock(directory.with_name(f".{directory.name}.lock")):
        items = read_pool(directory, fingerprint)
        if items is not None:
            return items
        t0 = time.monotonic()
        items = build()
        seconds = round(time.monotonic() - t0, 2)
        _write(directory, fingerprint, items, {"build_seconds": seconds, "built_by": os.uname().nodename})
        log.info("built task pool %s: %d examples in %.1f s", directory, len(items), seconds)
    return items
