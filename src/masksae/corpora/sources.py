"""Dispatch on `data.source`: check, fingerprint and read whichever text source the config names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from masksae.corpora import hf_stream, local_files, offline_english, store
from masksae.corpora.config import check_common, check_source, fingerprint, with_defaults
from masksae.corpora.splits import SPLITS, Document
from masksae.errors import ConfigError


def validate_data_config(cfg: Any) -> None:
    """Cheap checks before any compute; raises ConfigError naming the key, the value and what is allowed."""
    c = with_defaults(cfg)
    check_common(c)
    if c["source"] == "offline_english":
        offline_english.validate(c)
    elif c["source"] == "hf_stream":
        hf_stream.validate(c)
    else:
        local_files.find_files(c)  # raises on bad paths / text_field


def corpus_fingerprint(cfg: Any) -> str:
    """Short id that changes when the produced text would change (source, builder version, inputs, cfg)."""
    c = with_defaults(cfg)
    check_source(c)
    if c["source"] == "offline_english":
        payload = offline_english.fingerprint_payload(c)
    elif c["source"] == "hf_stream":
        payload = hf_stream.fingerprint_payload(c)
    else:
        payload = local_files.fingerprint_payload(c)
    return fingerprint(c["source"], payload)


def iter_documents(cfg: Any, split: str, cache_root: Path) -> Iterator[Document]:
    """Documents of one split in a deterministic order (sorted by source; stream order for hf_stream).

    Checks, builds (offline_english) and opens the source eagerly, so errors surface at the call;
    the documents themselves are read lazily.
    """
    if split not in SPLITS:
        raise ConfigError("split", split, f"one of {', '.join(SPLITS)}")
    validate_data_config(cfg)
    c = with_defaults(cfg)
    if c["source"] == "offline_english":
        return store.iter_split(offline_english.build_offline_corpus(Path(cache_root), c), split)
    if c["source"] == "hf_stream":
        return hf_stream.documents(c, split)
    return local_files.documents(c, split)
