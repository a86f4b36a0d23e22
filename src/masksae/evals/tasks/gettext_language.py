"""Task source `gettext_language`: which natural language a text is in; gettext UI strings -> man pages."""

from __future__ import annotations

import gettext
from pathlib import Path
from typing import Any

from masksae.corpora.splits import select_key
from masksae.errors import ConfigError
from masksae.evals.tasks.base import ID, OOD, LabelledText, PoolItem, check_int, check_str_list, chunk_text, \
    inventory_hash, key, spread
from masksae.evals.tasks.man_pages import cap_pages, check_groff, list_pages, render_items, renderer_fingerprint

VERSION = 1
OOD_SHIFT = "gettext UI strings -> man pages"
DEFAULTS: dict[str, Any] = {
    "languages": ["de", "fr", "es", "it", "nl", "pl", "pt", "ru", "sv"],
    "locale_root": "/usr/share/locale",
    "man_root": "/usr/share/man",
    "ood_sections": [1, 5, 7, 8],
    "max_catalogues_per_class": 150,
    "max_pages_per_class": 100,  # translated man pages rendered per language (OOD)
    "min_string_chars": 15,  # shorter translations ("Datei", "_OK") are skipped
    "chunk_chars": 1000,  # consecutive strings of one catalogue joined up to this length
    "max_chunks_per_source": 3,
    "min_per_class": 20,
}


def _catalogues(locale_root: Path, lang: str) -> list[Path]:
    """The .mo catalogues of one language, without the iso_* code lists."""
    return sorted(p for p in (locale_root / lang / "LC_MESSAGES").glob("*.mo") if not p.name.startswith("iso_"))


def validate(name: str, c: dict[str, Any]) -> None:
    """Languages that have catalogues, sane sections and caps, groff for the OOD pages."""
    root = Path(str(c["locale_root"]))
    if not root.is_dir():
        raise ConfigError(key(name, "locale_root"), str(root), "needs a folder with gettext catalogues "
                          "(<lang>/LC_MESSAGES/*.mo), e.g. /usr/share/locale")
    available = [d.name for d in root.iterdir() if _catalogues(root, d.name)]
    check_str_list(name, c, "languages", available, f"languages with gettext catalogues under {root}")
    check_str_list(name, c, "ood_sections", [str(i) for i in range(1, 9)], "man sections")
    for field in ("max_catalogues_per_class", "max_pages_per_class", "min_string_chars", "chunk_chars"):
        check_int(name, c, field, 1)
    check_groff(name)


def _pages(c: dict[str, Any]) -> list[tuple[str, str, int]]:
    root = Path(str(c["man_root"]))
    return [p for lang in c["languages"] for p in list_pages(root / str(lang), c["ood_sections"], f"man-{lang}/")]


def fingerprint_inputs(c: dict[str, Any]) -> dict[str, Any]:
    """The catalogue files and translated man pages of the languages (paths and sizes) and the renderer."""
    root = Path(str(c["locale_root"]))
    cats = [(str(p), p.stat().st_size) for lang in c["languages"] for p in _catalogues(root, str(lang))]
    pages = [(p[1], p[2]) for p in _pages(c)]
    return {"catalogues": inventory_hash(cats), "pages": inventory_hash(pages), **renderer_fingerprint()}


def _translations(path: Path, min_chars: int) -> list[str]:
    """The translated strings of one catalogue in file order (first plural form; untranslated and short ones
    skipped); [] when the catalogue cannot be read."""
    try:
        with open(path, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog
    except (OSError, UnicodeDecodeError, LookupError, ValueError):
        return []
    out = []
    for msgid, msgstr in catalog.items():
        if isinstance(msgid, tuple):
            msgid, form = msgid
            if form != 0:
                continue
        text = msgstr.strip()
        if msgid and msgstr != msgid and len(text) >= min_chars:
            out.append(text)
    return out


def _catalogue_items(c: dict[str, Any], lang: str) -> list[PoolItem]:
    root = Path(str(c["locale_root"]))
    cats = sorted(_catalogues(root, lang), key=lambda p: select_key(f"{lang}/{p.stem}"))[: c["max_catalogues_per_class"]]
    items = []
    for path in sorted(cats):
        source = f"locale/{lang}/{path.stem}"
        text = "\n\n".join(_translations(path, c["min_string_chars"]))
        for chunk in spread(chunk_text(text, max_chars=c["chunk_chars"]), c["max_chunks_per_source"]):
            items.append(PoolItem(LabelledText(text=chunk, label=lang, source=source), ID))
    return items


def _lang_of_page(source: str) -> str:
    return source.split("/", 1)[0].removeprefix("man-")


def collect(c: dict[str, Any], cache_root: Path) -> list[PoolItem]:
    """ID: chunks of translated UI strings per catalogue; OOD: the same languages' translated man pages."""
    items = [it for lang in c["languages"] for it in _catalogue_items(c, str(lang))]
    pages = cap_pages(_pages(c), None, c["max_pages_per_class"], _lang_of_page)
    return items + render_items(pages, _lang_of_page, OOD, c["max_chunks_per_source"])
