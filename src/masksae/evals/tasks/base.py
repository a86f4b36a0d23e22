"""Shared pieces of the labelled probing tasks: the data types, spec checks, text chunking, file inventories."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from masksae.errors import ConfigError

ID, OOD = "id", "ood"  # the two parts of a task's example pool
MIN_CHARS, MAX_CHARS = 200, 1500  # chunk length bounds (characters)


@dataclass(frozen=True)
class LabelledText:
    """One labelled chunk of text; `source` is a stable id of the file / catalogue / page it came from."""

    text: str
    label: str
    source: str


@dataclass
class TaskData:
    """A probing task: in-distribution train/test (disjoint sources) and a shifted OOD split of the same classes."""

    name: str
    classes: list[str]
    train: list[LabelledText]
    test: list[LabelledText]
    ood: list[LabelledText]
    ood_shift: str


@dataclass(frozen=True)
class PoolItem:
    """One example of a task's cached pool: a labelled chunk and the part (ID or OOD) it belongs to."""

    example: LabelledText
    part: str


def key(name: str, field: str) -> str:
    """The config key of a task field, as ConfigError names it."""
    return f"eval.tasks.{name}.{field}"


def check_int(name: str, c: Mapping[str, Any], field: str, lowest: int) -> None:
    """Raise ConfigError unless c[field] is an integer >= lowest."""
    v = c.get(field)
    if isinstance(v, bool) or not isinstance(v, int) or v < lowest:
        raise ConfigError(key(name, field), v, f"an integer >= {lowest}")


def check_str_list(name: str, c: Mapping[str, Any], field: str, allowed: Iterable[str], what: str) -> list[str]:
    """c[field] as a non-empty list of strings, each one of `allowed`; else ConfigError naming `what` is allowed."""
    v = c.get(field)
    items = [str(x) for x in v] if isinstance(v, (list, tuple)) else []
    ok = set(allowed)
    if not items:
        raise ConfigError(key(name, field), v, f"a non-empty list of {what}")
    bad = [x for x in items if x not in ok]
    if bad:
        raise ConfigError(key(name, field), bad[0] if len(bad) == 1 else bad, f"{what}: {', '.join(sorted(ok))}")
    return items


def cpu_workers() -> int:
    """Cores this process may use (parallel groff runs)."""
    return max(1, len(os.sched_getaffinity(0)))


def inventory_hash(files: Iterable[tuple[str, int]]) -> str:
    """Cheap hash of input files: sorted (path, size) pairs, no file contents read."""
    blob = "\n".join(f"{p}\t{size}" for p, size in sorted(files))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    """A paragraph longer than max_chars cut at line ends (or hard, for one overlong line)."""
    pieces: list[str] = []
    cur = ""
    for line in paragraph.split("\n"):
        while len(line) > max_chars:
            pieces.append(line[:max_chars])
            line = line[max_chars:]
        if cur and len(cur) + 1 + len(line) > max_chars:
            pieces.append(cur)
            cur = ""
        cur = f"{cur}\n{line}" if cur else line
    return [*pieces, cur] if cur else pieces


def chunk_text(text: str, max_chars: int = MAX_CHARS, min_chars: int = MIN_CHARS) -> list[str]:
    """Blank-line paragraphs packed greedily into chunks of at most max_chars; chunks under min_chars dropped."""
    paragraphs = [p.strip("\n") for p in text.replace("\r\n", "\n").split("\n\n")]
    chunks: list[str] = []
    cur = ""
    for para in paragraphs:
        for piece in _split_long(para, max_chars) if para.strip() else []:
            if cur and len(cur) + 2 + len(piece) > max_chars:
                chunks.append(cur)
                cur = ""
            cur = f"{cur}\n\n{piece}" if cur else piece
    if cur:
        chunks.append(cur)
    return [c for c in chunks if len(c.strip()) >= min_chars]


def spread(items: list[str], k: int) -> list[str]:
    """At most k items spread evenly over the list (so one file's chunks come from its whole length)."""
    if len(items) <= k:
        return list(items)
    return [items[int((i + 0.5) * len(items) / k)] for i in range(k)]


def drop_shared_chunks(items: list[PoolItem]) -> tuple[list[PoolItem], int]:
    """Remove every chunk whose text occurs under two or more sources (boilerplate: it could leak across splits)."""
    sources: dict[str, set[str]] = {}
    for it in items:
        sources.setdefault(it.example.text, set()).add(it.example.source)
    kept = [it for it in items if len(sources[it.example.text]) == 1]
    return kept, len(items) - len(kept)
