"""Documents and their stable splits: a sha1 bucket of the source id, independent of Python's hash seed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

SPLITS = ("train", "validation", "probe_reserve")


@dataclass(frozen=True)
class Document:
    """One text document; `source` is a stable id of where it came from (e.g. "man1/ls.1")."""

    text: str
    source: str


def _bucket(source: str, salt: str = "") -> int:
    digest = hashlib.sha1((salt + source).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


def split_of(source: str) -> str:
    """Split of a document id: sha1 bucket 0-79 train, 80-89 validation, 90-99 probe_reserve.

    Later probing and OOD tasks draw on probe_reserve, text the SAE never saw.
    """
    b = _bucket(source)
    return "train" if b < 80 else "validation" if b < 90 else "probe_reserve"


def select_key(source: str) -> bytes:
    """Order used to pick a capped subset; independent of the split hash so caps keep the 80/10/10 mix."""
    return hashlib.sha1(("select:" + source).encode("utf-8")).digest()
