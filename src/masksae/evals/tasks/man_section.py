"""Task source `man_section`: which section a man page belongs to; English probe_reserve pages -> translations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from masksae.corpora.sources import corpus_fingerprint, iter_documents, validate_data_config
from masksae.corpora.splits import split_of
from masksae.errors import ConfigError
from masksae.evals.tasks.base import ID, OOD, PoolItem, check_int, check_str_list, inventory_hash, key
from masksae.evals.tasks.man_pages import cap_pages, check_groff, list_pages, render_items, renderer_fingerprint, \
    section_of

VERSION = 1
OOD_SHIFT = "English -> translated man pages"
DEFAULTS: dict[str, Any] = {
    "sections": [1, 5, 8],
    "ood_languages": ["de", "fr", "es", "it", "nl", "pl", "pt", "ru"],
    "man_root": "/usr/share/man",
    # The training corpus caps name families ("gcloud_*") at 300 pages over all splits; probe_reserve holds
    # ~10% of them, so 10 per family keeps the same share here.
    "max_per_family": 10,
    "max_pages_per_class": 150,  # pages rendered per section (ID, and again OOD)
    "max_chunks_per_source": 3,
    "min_per_class": 20,
    # The SAE training corpus (a `data` config, offline_english only) whose train and validation text the ID
    # chunks must not repeat; built or reused under <cache_root>/corpora. null: no such filter.
    "train_corpus": {"source": "offline_english", "name": "offline_english"},
}
_SHARED_LINE_CHARS = 80  # a chunk repeating a line (a paragraph, as rendered) this long of training text is dropped
_SECTIONS = [str(i) for i in range(1, 9)]


def validate(name: str, c: dict[str, Any]) -> None:
    """Sections with English pages, translated folders for the OOD languages, numeric caps, groff."""
    root = Path(str(c["man_root"]))
    for s in check_str_list(name, c, "sections", _SECTIONS, "man sections"):
        if not list_pages(root, [s]):
            raise ConfigError(key(name, "sections"), s, f"sections with English man pages under {root}/man<s>")
    translated = sorted(d.name for d in root.glob("*") if d.is_dir() and not d.name.startswith("man"))
    check_str_list(name, c, "ood_languages", translated, f"languages with translated man pages under {root}")
    check_int(name, c, "max_per_family", 1)
    check_int(name, c, "max_pages_per_class", 1)
    check_groff(name)
    _check_corpus(name, c["train_corpus"])


def _check_corpus(name: str, corpus: Any) -> None:
    if corpus is None:
        return
    if not isinstance(corpus, dict) or corpus.get("source") != "offline_english":
        raise ConfigError(key(name, "train_corpus"), corpus, "null or an offline_english data config")
    try:
        validate_data_config(corpus)
    except ConfigError as e:
        raise ConfigError(key(name, "train_corpus." + e.key.removeprefix("data.")), e.value, e.allowed) from None


def _translated(c: dict[str, Any]) -> list[tuple[str, str, int]]:
    root = Path(str(c["man_root"]))
    return [p for lang in c["ood_languages"] for p in list_pages(root / str(lang), c["sections"], f"man-{lang}/")]


def fingerprint_inputs(c: dict[str, Any]) -> dict[str, Any]:
    """The English and translated page files of the sections (paths and sizes) and the renderer."""
    pages = list_pages(Path(str(c["man_root"])), c["sections"]) + _translated(c)
    corpus = c["train_corpus"] and corpus_fingerprint(c["train_corpus"])
    return {"pages": inventory_hash((p[1], p[2]) for p in pages), "train_corpus": corpus, **renderer_fingerprint()}


def _unseen(items: list[PoolItem], corpus: dict[str, Any] | None, cache_root: Path) -> list[PoolItem]:
    """Items whose text the training corpus's train/validation splits do not hold: a chunk is dropped when one
    of its lines of >= _SHARED_LINE_CHARS characters, or every line, occurs as a line of that text."""
    if corpus is None:
        return items
    seen = {line for split in ("train", "validation") for doc in iter_documents(corpus, split, cache_root)
            for line in doc.text.split("\n") if line}
    kept = []
    for it in items:
        lines = [line for line in it.example.text.split("\n") if line]
        shared = [line in seen for line in lines]
        if not all(shared) and not any(s and len(line) >= _SHARED_LINE_CHARS for s, line in zip(shared, lines)):
            kept.append(it)
    return kept


def collect(c: dict[str, Any], cache_root: Path) -> list[PoolItem]:
    """ID: English pages in probe_reserve, families capped, chunks repeating training text dropped;
    OOD: translated pages."""
    english = [p for p in list_pages(Path(str(c["man_root"])), c["sections"]) if split_of(p[0]) == "probe_reserve"]
    per_class = c["max_pages_per_class"]
    id_pages = cap_pages(english, c["max_per_family"], per_class, section_of)
    ood_pages = cap_pages(_translated(c), None, per_class, section_of)
    k = c["max_chunks_per_source"]
    id_items = _unseen(render_items(id_pages, section_of, ID, k), c["train_corpus"], cache_root)
    return id_items + render_items(ood_pages, section_of, OOD, k)
