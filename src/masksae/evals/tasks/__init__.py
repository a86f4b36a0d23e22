"""Offline labelled text tasks for sparse probing and OOD probing: spec checks, cached example pools, sampling."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from masksae.config import plain
from masksae.errors import ConfigError
from masksae.evals.tasks import code_language, gettext_language, hf_dataset, man_section
from masksae.evals.tasks.base import ID, OOD, LabelledText, PoolItem, TaskData, check_int, drop_shared_chunks, key
from masksae.evals.tasks.pool import load_or_build, pool_dir

log = logging.getLogger(__name__)

_SOURCES: dict[str, ModuleType] = {
    "gettext_language": gettext_language,
    "man_section": man_section,
    "code_language": code_language,
    "hf_dataset": hf_dataset,
}
TASK_SOURCES: tuple[str, ...] = tuple(_SOURCES)
POOL_VERSION = 1  # bump when the shared pool logic (chunking, dedup) changes its output

__all__ = ["TASK_SOURCES", "LabelledText", "TaskData", "build_task", "task_fingerprint", "validate_task_spec"]


def _resolve(name: str, spec: Mapping[str, Any]) -> tuple[ModuleType, dict[str, Any]]:
    """The source module and the spec with its defaults filled in, checked (ConfigError before any compute)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"eval.tasks.{name}", spec, "a mapping with at least `source`")
    c = plain(spec)
    source = c.get("source")
    if source not in _SOURCES:
        raise ConfigError(key(name, "source"), source, f"one of {', '.join(TASK_SOURCES)}")
    module = _SOURCES[source]
    c = {**module.DEFAULTS, **c}
    unknown = sorted(set(c) - set(module.DEFAULTS) - {"source"})
    if unknown:
        raise ConfigError(key(name, unknown[0]), c[unknown[0]],
                          f"a {source} field: {', '.join(sorted(module.DEFAULTS))}")
    check_int(name, c, "max_chunks_per_source", 1)
    check_int(name, c, "min_per_class", 1)
    module.validate(name, c)
    return module, c


def validate_task_spec(name: str, spec: Mapping[str, Any]) -> None:
    """Cheap checks before any compute: known source, sane params, the machine has the files. Raises ConfigError
    with key f"eval.tasks.{name}.<field>", the bad value and what is allowed."""
    _resolve(name, spec)


def _fingerprint(module: ModuleType, c: dict[str, Any]) -> str:
    payload = {"pool": POOL_VERSION, "builder": module.VERSION, "spec": c, "inputs": module.fingerprint_inputs(c)}
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:12]


def task_fingerprint(name: str, spec: Mapping[str, Any]) -> str:
    """Short stable hash that changes whenever the produced data would change (spec with defaults, builder
    versions, and the paths and sizes of the input files)."""
    module, c = _resolve(name, spec)
    return _fingerprint(module, c)


def _build_pool(module: ModuleType, c: dict[str, Any], cache_root: Path) -> list[PoolItem]:
    items, dropped = drop_shared_chunks(module.collect(c, Path(cache_root)))
    if dropped:
        log.info("%s: dropped %d chunks whose text occurs in two or more sources", c["source"], dropped)
    return items


def _sample(items: list[LabelledText], n: int, rng: random.Random) -> list[LabelledText]:
    return rng.sample(items, min(n, len(items)))


def _split_class(items: list[PoolItem], n_train: int, n_test: int, n_ood: int,
                 rng: random.Random) -> tuple[list[LabelledText], list[LabelledText], list[LabelledText]]:
    """(train, test, ood) of one class: ID sources shuffled and split in the n_test : n_train ratio."""
    by_source: dict[str, list[LabelledText]] = {}
    for it in items:
        if it.part == ID:
            by_source.setdefault(it.example.source, []).append(it.example)
    sources = sorted(by_source)
    rng.shuffle(sources)
    n_test_src = max(1, round(len(sources) * n_test / (n_train + n_test))) if len(sources) > 1 else 0
    test = [ex for s in sources[:n_test_src] for ex in by_source[s]]
    train = [ex for s in sources[n_test_src:] for ex in by_source[s]]
    ood = [it.example for it in items if it.part == OOD]
    return _sample(train, n_train, rng), _sample(test, n_test, rng), _sample(ood, n_ood, rng)


def build_task(name: str, spec: Mapping[str, Any], n_train: int, n_test: int, n_ood: int, seed: int,
               cache_root: Path) -> TaskData:
    """Deterministic given (spec, sizes, seed, machine files). n_* are per-class caps. The example pool is built
    once per machine under cache_root/tasks/<name>-<fingerprint>/; classes with fewer than min_per_class train
    examples (or no test example) are dropped with a warning; fewer than 2 left raises ConfigError."""
    module, c = _resolve(name, spec)
    for field, n in (("n_train", n_train), ("n_test", n_test), ("n_ood", n_ood)):
        if isinstance(n, bool) or not isinstance(n, int) or n < (0 if field == "n_ood" else 1):
            raise ConfigError(key(name, field), n, "an integer >= 1 (n_ood >= 0)")
    fp = _fingerprint(module, c)
    items = load_or_build(pool_dir(cache_root, name, fp), fp, lambda: _build_pool(module, c, cache_root))
    by_class: dict[str, list[PoolItem]] = {}
    for it in items:
        by_class.setdefault(it.example.label, []).append(it)
    data = TaskData(name=name, classes=[], train=[], test=[], ood=[], ood_shift=module.OOD_SHIFT)
    for label in sorted(by_class):
        train, test, ood = _split_class(by_class[label], n_train, n_test, n_ood, random.Random(f"{seed}:{label}"))
        if len(train) < c["min_per_class"] or not test:
            log.warning("task %s: class %r dropped: %d train / %d test examples (min_per_class=%d)",
                        name, label, len(train), len(test), c["min_per_class"])
            continue
        data.classes.append(label)
        data.train += train
        data.test += test
        data.ood += ood
    if len(data.classes) < 2:
        raise ConfigError(key(name, "min_per_class"), c["min_per_class"],
                          f"a value that leaves at least 2 classes; only {data.classes or 'none'} had enough examples")
    return data
