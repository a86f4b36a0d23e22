"""Files written crash-safe: through a staging file beside the target (same file system), fsynced, renamed into place."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO


def previous_path(path: Path) -> Path:
    """Where the file that `path` replaced is kept (`last.ckpt.previous`: not a `*.ckpt` name, so Lightning ignores it)."""
    return path.with_name(path.name + ".previous")


def staging_path(target: Path, role: str = "") -> Path:
    """A hidden name beside `target`, unique to this writer: `.<name>[.<role>].tmp-<pid>-<random>` (the pattern
    `.*.tmp-*` finds what a killed writer left)."""
    return target.with_name(f".{target.name}{'.' + role if role else ''}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some network file systems do not sync directories
        pass
    finally:
        os.close(fd)


def write_atomically(target: Path, write: Callable[[IO[bytes]], None], *, keep_previous: bool = False, mode: int = 0o644) -> None:
    """Write `target` through `write(handle)` into a staging file beside it (created with `mode`), fsync, then rename it
    into place: readers see the old file or the new one, never half. With `keep_previous`, the file it replaces stays
    as previous_path(target), hard-linked first so that `target` never goes missing (renamed where the file system has
    no hard links)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(target)
    try:
        with os.fdopen(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_previous and target.exists():
            kept = staging_path(target, "previous")
            try:
                os.link(target, kept)
                os.replace(kept, previous_path(target))
            except OSError:
                kept.unlink(missing_ok=True)
                os.replace(target, previous_path(target))
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def write_bytes_atomically(target: Path, data: bytes, *, mode: int = 0o644) -> None:
    write_atomically(target, lambda handle: handle.write(data), mode=mode)
