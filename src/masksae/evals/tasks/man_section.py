"""Task source `man_section`: which section a man page belongs to; English probe_reserve pages -> translations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
}
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


def _translated(c: dict[str, Any]) -> list[tuple[str, str, int]]:
    root = Path(str(c["man_root"]))
    return [p for lang in c["ood_languages"] for p in list_pages(root / str(lang), c["sections"], f"man-{lang}/")]


def fingerprint_inputs(c: dict[str, Any]) -> dict[str, Any]:
    """The English and translated page files of the sections (paths and sizes) and the renderer."""
    pages = list_pages(Path(str(c["man_root"])), c["sections"]) + _translated(c)
    return {"pages": inventory_hash((p[1], p[2]) for p in pages), **renderer_fingerprint()}


def collect(c: dict[str, Any]) -> list[PoolItem]:
    """ID: English pages in probe_reserve (never trained on), families capped; OOD: translated pages."""
    english = [p for p in list_pages(Path(str(c["man_root"])), c["sections"]) if split_of(p[0]) == "probe_reserve"]
    per_class = c["max_pages_per_class"]
    id_pages = cap_pages(english, c["max_per_family"], per_class, section_of)
    ood_pages = cap_pages(_translated(c), None, per_class, section_of)
    k = c["max_chunks_per_source"]
    return render_items(id_pages, section_of, ID, k) + render_items(ood_pages, section_of, OOD, k)
