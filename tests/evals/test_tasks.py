"""The offline probing tasks: built from this machine's real files, deterministic, split by source, cached safely."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from masksae.corpora.sources import corpus_fingerprint, iter_documents
from masksae.corpora.splits import split_of
from masksae.corpora.store import valid_manifest
from masksae.errors import ConfigError
from masksae.evals.tasks import TASK_SOURCES, TaskData, build_task, task_fingerprint, validate_task_spec
from masksae.evals.tasks.pool import MANIFEST_FILE, POOL_FILE, pool_dir

MAN = Path("/usr/share/man")
LOCALE = Path("/usr/share/locale")
DEFAULT_CORPUS = {"source": "offline_english", "name": "offline_english"}
# When the machine has not built the default training corpus yet, a 300-document one stands in (seconds to build).
SMALL_CORPUS = {**DEFAULT_CORPUS, "name": "offline_english_small", "max_documents": 300}


def _need(path: Path, what: str) -> None:
    if not path.is_dir() or not any(path.iterdir()):
        pytest.skip(f"{what} not on this machine (no files under {path})")


def _train_corpus(test_cache: Path) -> dict[str, Any]:
    fp = corpus_fingerprint(DEFAULT_CORPUS)
    return DEFAULT_CORPUS if valid_manifest(test_cache / "corpora" / f"offline_english-{fp}", fp) else SMALL_CORPUS


def _spec(source: str, test_cache: Path) -> dict[str, Any]:
    if source == "gettext_language":
        _need(LOCALE / "de" / "LC_MESSAGES", "gettext catalogues")
        _need(MAN / "de" / "man1", "translated man pages")
        return {"source": source, "languages": ["de", "fr", "es"], "max_catalogues_per_class": 30,
                "max_pages_per_class": 12}
    if source == "man_section":
        _need(MAN / "man1", "English man pages")
        _need(MAN / "de" / "man1", "translated man pages")
        return {"source": source, "sections": [1, 8], "ood_languages": ["de", "fr"], "max_pages_per_class": 40,
                "min_per_class": 5, "train_corpus": _train_corpus(test_cache)}
    return {"source": source, "max_files_per_class": 25}


OFFLINE_SOURCES = [source for source in TASK_SOURCES if source != "hf_dataset"]  # hf_dataset needs the hub


@pytest.fixture(scope="module", params=OFFLINE_SOURCES)
def built(request: pytest.FixtureRequest, test_cache: Path) -> tuple[dict[str, Any], TaskData]:
    """Each source's task built once (seed 0) into the session's cache."""
    spec = _spec(request.param, test_cache)
    return spec, build_task(request.param, spec, n_train=30, n_test=15, n_ood=15, seed=0, cache_root=test_cache)


def _sources(examples: list) -> set[str]:
    return {e.source for e in examples}


def test_task_is_well_formed(built: tuple[dict[str, Any], TaskData]) -> None:
    spec, data = built
    assert len(data.classes) >= 2 and data.classes == sorted(data.classes) and data.ood_shift
    assert {e.label for e in data.train} == set(data.classes) == {e.label for e in data.test}
    assert {e.label for e in data.ood} <= set(data.classes) and data.ood
    assert not _sources(data.train) & _sources(data.test)
    assert not _sources(data.ood) & (_sources(data.train) | _sources(data.test))
    for label, n in Counter(e.label for e in data.train).items():
        assert spec.get("min_per_class", 20) <= n <= 30, label
    per_source = Counter(e.source for e in data.train + data.test + data.ood)
    assert max(per_source.values()) <= 3
    assert all(200 <= len(e.text.strip()) and len(e.text) <= 1500 for e in data.train + data.test + data.ood)


def test_deterministic_per_seed(built: tuple[dict[str, Any], TaskData], test_cache: Path) -> None:
    spec, data = built
    name = spec["source"]
    assert build_task(name, spec, 30, 15, 15, seed=0, cache_root=test_cache) == data
    other = build_task(name, spec, 30, 15, 15, seed=1, cache_root=test_cache)
    assert other.classes == data.classes and (other.train, other.test) != (data.train, data.test)
    assert task_fingerprint(name, spec) == task_fingerprint(name, dict(spec))
    assert task_fingerprint(name, {**spec, "max_chunks_per_source": 2}) != task_fingerprint(name, spec)


def test_man_section_id_text_never_trained_on(test_cache: Path) -> None:
    spec = _spec("man_section", test_cache)
    data = build_task("man_section", spec, 200, 100, 0, seed=0, cache_root=test_cache)
    id_examples = data.train + data.test
    assert {split_of(s) for s in _sources(id_examples)} == {"probe_reserve"}
    assert all(e.source.startswith("man-") for e in data.ood)
    training = "\0".join(d.text for split in ("train", "validation")
                         for d in iter_documents(spec["train_corpus"], split, test_cache))
    assert not [e.source for e in id_examples if e.text in training]


@pytest.mark.parametrize(("spec", "field"), [
    ({"source": "wordnet"}, "source"),
    ({"source": "gettext_language", "languages": ["de", "xx-notalanguage"]}, "languages"),
    ({"source": "gettext_language", "languages": []}, "languages"),
    ({"source": "man_section", "sections": []}, "sections"),
    ({"source": "man_section", "sections": [1, 9]}, "sections"),
    ({"source": "man_section", "ood_languages": ["klingon"]}, "ood_languages"),
    ({"source": "man_section", "train_corpus": {"source": "hf_stream"}}, "train_corpus"),
    ({"source": "code_language", "max_chunks_per_source": 0}, "max_chunks_per_source"),
    ({"source": "code_language", "classes": {"python": {"id": ["relative/*.py"]}}}, "classes.python"),
    ({"source": "code_language", "classes": {"own": {"id": [f"{Path(__file__).parents[2]}/src/**/*.py"]},
                                             "c": {"id": ["/usr/include/*.h"]}}}, "classes.own"),
    ({"source": "code_language", "lenguages": 3}, "lenguages"),
])
def test_bad_spec_names_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_task_spec("t", spec)
    assert info.value.key == f"eval.tasks.t.{field}"


def test_corrupt_pool_is_rebuilt(tmp_path: Path) -> None:
    _need(LOCALE / "de" / "LC_MESSAGES", "gettext catalogues")
    spec = {"source": "gettext_language", "languages": ["de", "fr"], "max_catalogues_per_class": 12,
            "max_pages_per_class": 2, "min_per_class": 5}
    first = build_task("lang", spec, 10, 5, 5, seed=0, cache_root=tmp_path)
    folder = pool_dir(tmp_path, "lang", task_fingerprint("lang", spec))
    built_at = (folder / MANIFEST_FILE).stat().st_mtime_ns
    assert build_task("lang", spec, 10, 5, 5, seed=0, cache_root=tmp_path) == first
    assert (folder / MANIFEST_FILE).stat().st_mtime_ns == built_at  # reused, not rebuilt
    pool = folder / POOL_FILE
    pool.write_bytes(pool.read_bytes().replace(b'"label": "de"', b'"label": "fr"', 1))
    assert build_task("lang", spec, 10, 5, 5, seed=0, cache_root=tmp_path) == first
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["sha256"] and manifest["counts"]["id/de"] > 0
    (folder / MANIFEST_FILE).write_text("{not json")
    assert build_task("lang", spec, 10, 5, 5, seed=0, cache_root=tmp_path) == first
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name]


def test_hub_task_unreachable_offline_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub here: with the hub switched off and nothing cached, validation names the key and says what to do."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = {"source": "hf_dataset", "path": "fancyzhx/ag_news", "text_field": "text", "label_field": "label"}
    with pytest.raises(ConfigError, match=r"eval\.tasks\.news\.path.*make prefetch"):
        validate_task_spec("news", spec)
