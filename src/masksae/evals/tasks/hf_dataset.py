"""Task source `hf_dataset`: a labelled Hugging Face dataset (SAEBench's probing sets on clusters), streamed and capped."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

from masksae.errors import ConfigError
from masksae.evals.tasks.base import ID, MAX_CHARS, MIN_CHARS, OOD, LabelledText, PoolItem, check_int, key

VERSION = 1
OOD_SHIFT = "none (a hub task has no shifted split unless `ood` names one)"
DEFAULTS: dict[str, Any] = {
    "path": None,  # hub id, e.g. LabHC/bias_in_bios
    "config_name": None,
    "revision": None,
    "split": "train",
    "text_field": "text",
    "label_field": "label",
    "classes": None,  # label values to keep (as written in the data, compared as strings); null = all
    "ood": None,  # optional {path, config_name, split, text_field, label_field}: the shifted split
    "max_examples": 20000,  # rows streamed per part
    "max_chunks_per_source": 1,
    "min_per_class": 20,
}
PART_FIELDS = ("path", "config_name", "revision", "split", "text_field", "label_field")


def _offline() -> bool:
    return any(os.environ.get(var, "0").lower() in ("1", "true", "yes") for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _check_reachable(name: str, path: str) -> None:
    """The dataset is in the local Hugging Face cache or the hub answers; else a ConfigError that says what to do."""
    from huggingface_hub import dataset_info, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "README.md", repo_type="dataset"), str):
        return
    advice = f"a dataset in the Hugging Face cache or reachable on the hub; run `make prefetch DATA={path}` on a machine with network"
    if _offline():
        raise ConfigError(key(name, "path"), path, advice)
    try:
        dataset_info(path, timeout=10)
    except Exception as error:  # any failure to reach the hub means the same thing to the user
        raise ConfigError(key(name, "path"), path, f"{advice} ({type(error).__name__})") from None


def validate(name: str, c: dict[str, Any]) -> None:
    """Field names given, caps sane, the dataset reachable."""
    for field in ("path", "split", "text_field", "label_field"):
        if not isinstance(c.get(field), str) or not c[field]:
            raise ConfigError(key(name, field), c.get(field), "a non-empty string")
    if c["classes"] is not None and not (isinstance(c["classes"], list) and len(c["classes"]) >= 2):
        raise ConfigError(key(name, "classes"), c["classes"], "null (all labels) or a list of at least 2 label values")
    if c["ood"] is not None and not (isinstance(c["ood"], dict) and set(c["ood"]) <= set(PART_FIELDS)):
        raise ConfigError(key(name, "ood"), c["ood"], f"null or a mapping with keys among {', '.join(PART_FIELDS)}")
    check_int(name, c, "max_examples", 1)
    _check_reachable(name, c["path"])


def fingerprint_inputs(c: dict[str, Any]) -> dict[str, Any]:
    """Hub datasets are named by id and revision; nothing local to inventory."""
    return {"path": c["path"], "revision": c["revision"], "ood": c["ood"]}


def _rows(c: dict[str, Any], part: dict[str, Any]) -> list[PoolItem]:
    """Up to max_examples rows of one split, text cut to the chunk bound, kept where the label is one of `classes`."""
    from datasets import load_dataset

    stream = load_dataset(part["path"], part.get("config_name"), split=part["split"], revision=part.get("revision"), streaming=True)
    wanted = None if c["classes"] is None else {str(v) for v in c["classes"]}
    items = []
    for index, row in enumerate(itertools.islice(stream, int(c["max_examples"]))):
        text, label = str(row[part["text_field"]])[:MAX_CHARS], str(row[part["label_field"]])
        if len(text) >= MIN_CHARS // 2 and (wanted is None or label in wanted):
            source = f"{part['path']}:{part['split']}:{index}"
            items.append(PoolItem(LabelledText(text=text, label=label, source=source), part["kind"]))
    return items


def collect(c: dict[str, Any], cache_root: Path) -> list[PoolItem]:
    """ID rows from `split`; OOD rows from `ood` when given (same label field unless it says otherwise)."""
    in_distribution = {**{field: c[field] for field in PART_FIELDS}, "kind": ID}
    items = _rows(c, in_distribution)
    if c["ood"] is not None:
        items += _rows(c, {**in_distribution, **c["ood"], "kind": OOD})
    return items
