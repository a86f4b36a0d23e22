"""Hugging Face datasets streamed record by record; offline failures become one-line OfflineErrors."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from masksae.corpora.splits import Document, split_of
from masksae.errors import ConfigError, OfflineError

_TRUE = {"1", "ON", "YES", "TRUE"}


def validate(c: dict[str, Any]) -> None:
    """The hf_stream keys: a dataset path, a text field, optional string names of splits, config, revision."""
    if not isinstance(c.get("path"), str) or not c["path"]:
        raise ConfigError("data.path", c.get("path"), "a Hugging Face dataset id, e.g. monology/pile-uncopyrighted")
    if not isinstance(c.get("text_field", "text"), str) or not c.get("text_field", "text"):
        raise ConfigError("data.text_field", c.get("text_field"), "the name of the record field holding the text")
    for key in ("split", "validation_split", "config_name", "revision", "cache_dir"):
        v = c.get(key)
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"data.{key}", v, "null or a string")


def fingerprint_payload(c: dict[str, Any]) -> dict[str, Any]:
    """What decides the streamed text: the dataset, its splits and revision, the text field, the cap."""
    return {k: c.get(k) for k in ("path", "config_name", "split", "validation_split", "text_field", "revision",
                                  "max_documents")}


def _env_offline() -> str | None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in _TRUE:
            return var
    return None


def _is_connection_error(e: BaseException) -> bool:
    names = {"OfflineModeIsEnabled", "ConnectError", "ConnectTimeout", "TimeoutException", "ConnectionError",
             "LocalEntryNotFoundError", "MaxRetryError", "NewConnectionError"}
    seen = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (ConnectionError, TimeoutError)) or type(cur).__name__ in names:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


@contextlib.contextmanager
def _hf_offline_flags(offline: bool) -> Iterator[None]:
    """Make `datasets`/`huggingface_hub` honour an offline env var set after they were imported."""
    if not offline:
        yield
        return
    import datasets.config as dcfg
    import huggingface_hub.constants as hcst

    saved = (dcfg.HF_HUB_OFFLINE, hcst.HF_HUB_OFFLINE)
    dcfg.HF_HUB_OFFLINE = hcst.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        dcfg.HF_HUB_OFFLINE, hcst.HF_HUB_OFFLINE = saved


def _open_hf_stream(c: dict[str, Any], hf_split: str) -> Iterator[dict]:
    """Open a streaming split and fetch its first record, turning offline failures into OfflineError."""
    env_var = _env_offline()
    path, config_name = c["path"], c.get("config_name")
    what = f"{path}" + (f" ({config_name})" if config_name else "") + f" split {hf_split!r}"
    try:
        with _hf_offline_flags(env_var is not None):
            import datasets

            ds = datasets.load_dataset(
                path, config_name, split=hf_split, streaming=True,
                revision=c.get("revision"), cache_dir=c.get("cache_dir"),
            )
            it = iter(ds)
            first = next(it, None)
    except Exception as e:  # noqa: BLE001 - classified below, re-raised otherwise
        if env_var is not None or _is_connection_error(e):
            why = f"{env_var}=1 is set" if env_var else f"the Hugging Face hub is unreachable ({type(e).__name__})"
            raise OfflineError(
                f"cannot stream dataset {what}: {why} and no usable cached copy was found; run `make prefetch` "
                "on a machine with internet or set HF_HOME to a filled cache (or use data=offline_english)"
            ) from None
        raise
    return _chain_first(first, it)


def _chain_first(first: dict | None, it: Iterator[dict]) -> Iterator[dict]:
    if first is not None:
        yield first
        yield from it


def documents(c: dict[str, Any], split: str) -> Iterator[Document]:
    """Documents of one split in stream order; the stream is opened now, its records read lazily.

    With a `validation_split`, validation takes all of that split; otherwise each split takes its hash share
    of the training split's records.
    """
    train_split = c.get("split") or "train"
    val_split = c.get("validation_split")
    text_field = c.get("text_field") or "text"
    hf_split = val_split if (split == "validation" and val_split) else train_split
    records = _open_hf_stream(c, hf_split)
    prefix = f"{c['path']}:{c.get('config_name') or 'default'}:{hf_split}"
    take_all = split == "validation" and bool(val_split)
    return _hf_documents(records, prefix, split, take_all, text_field, c.get("max_documents"))


def _hf_documents(records: Iterator[dict], prefix: str, split: str, take_all: bool, text_field: str,
                  max_documents: int | None) -> Iterator[Document]:
    for i, rec in enumerate(records):
        if max_documents is not None and i >= max_documents:
            return
        source = f"{prefix}:{i}"
        if not take_all and split_of(source) != split:
            continue
        if text_field not in rec:
            raise ConfigError("data.text_field", text_field, f"a field of the records; found {sorted(rec)}")
        text = rec[text_field]
        if isinstance(text, str) and text.strip():
            yield Document(text=text, source=source)
