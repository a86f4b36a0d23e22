"""The Hydra group `data` as a plain dict: per-source defaults, the checks all sources share, the fingerprint hash."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from masksae.config import plain
from masksae.errors import ConfigError

SOURCES = ("offline_english", "hf_stream", "local_files")
# Bump when the text a source produces for the same inputs changes (it enters the fingerprint).
BUILDER_VERSIONS = {"offline_english": 1, "hf_stream": 1, "local_files": 1}
OFFLINE_DEFAULTS: dict[str, Any] = {
    "man_root": "/usr/share/man",
    "sections": [1, 2, 3, 4, 5, 6, 7, 8],
    "include_pydoc": True,
    "min_chars": 200,
    "max_per_family": 300,
    "workers": None,
    "max_documents": None,
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _plain(cfg: Any) -> dict[str, Any]:
    if not isinstance(cfg, Mapping):
        raise ConfigError("data", cfg, "a mapping (the Hydra group `data`)")
    return plain(cfg)


def with_defaults(cfg: Any) -> dict[str, Any]:
    """A plain copy of the data config with the defaults of its source filled in."""
    c = _plain(cfg)
    if c.get("source") == "offline_english":
        c = {**OFFLINE_DEFAULTS, **c}
    c.setdefault("max_documents", None)
    return c


def as_list(value: Any) -> list:
    """A config value that may be one item or a list of them, as a list."""
    return [value] if isinstance(value, (str, int)) else list(value)


def check_source(c: dict[str, Any]) -> None:
    """Raise ConfigError unless `source` names a known source."""
    source = c.get("source")
    if source not in SOURCES:
        raise ConfigError("data.source", source, f"one of {', '.join(SOURCES)}")


def check_common(c: dict[str, Any]) -> None:
    """The checks every source shares: `source`, `name` and `max_documents`."""
    check_source(c)
    name = c.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError("data.name", name, "a short name of letters, digits, '_', '.', '-' (used in run names)")
    md = c.get("max_documents")
    if md is not None and (isinstance(md, bool) or not isinstance(md, int) or md < 1):
        raise ConfigError("data.max_documents", md, "null (all documents) or a positive integer")


def fingerprint(source: str, payload: dict[str, Any]) -> str:
    """Short hash of a source's builder version and the inputs (`payload`) that decide its text."""
    blob = json.dumps({"source": source, "builder": BUILDER_VERSIONS[source], **payload}, sort_keys=True,
                      default=str).encode("utf-8")
    return hashlib.sha1(blob).hexdigest()[:12]
