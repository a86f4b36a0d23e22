"""Man pages for the tasks: listed with the training corpus's own ids, rendered by its groff code, chunked."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from masksae.corpora.man_render import GROFF_CMD, groff_version, render_man_pages
from masksae.corpora.offline_english import _family, _man_inventory
from masksae.corpora.splits import select_key
from masksae.errors import ConfigError
from masksae.evals.tasks.base import LabelledText, PoolItem, chunk_text, cpu_workers, key, spread

Page = tuple[str, str, int]  # (source id, path, size in bytes)


def list_pages(man_root: Path, sections: Iterable[str], prefix: str = "") -> list[Page]:
    """Man page files in man_root/man<s>, ids as the offline corpus forms them ("man1/ls.1"), with `prefix`
    prepended; two compressions of one page keep the first; [] when none of the folders has pages."""
    try:
        inventory = _man_inventory({"man_root": str(man_root), "sections": [str(s) for s in sections]})
    except ConfigError:
        return []
    seen: set[str] = set()
    pages = []
    for source, path, size in inventory:
        if source not in seen:
            seen.add(source)
            pages.append((prefix + source, path, size))
    return pages


def section_of(source: str) -> str:
    """The section of a page id: "man-de/man1/ls.1" -> "1"."""
    return source.rsplit("/", 2)[-2][3:]


def cap_pages(pages: list[Page], per_family: int | None, per_group: int, group: Callable[[str], str]) -> list[Page]:
    """A stable subset (the corpus's selection order): at most per_family pages of a name family ("gcloud_*")
    and at most per_group pages per group (e.g. per section)."""
    families: dict[str, int] = {}
    groups: dict[str, int] = {}
    kept = []
    for page in sorted(pages, key=lambda p: select_key(p[0])):
        fam, grp = _family(page[0].rsplit("/", 1)[-1]), group(page[0])
        if (per_family and families.get(fam, 0) >= per_family) or groups.get(grp, 0) >= per_group:
            continue
        families[fam] = families.get(fam, 0) + 1
        groups[grp] = groups.get(grp, 0) + 1
        kept.append(page)
    return sorted(kept)


def render_items(pages: list[Page], label_of: Callable[[str], str], part: str, max_chunks: int) -> list[PoolItem]:
    """Render pages with groff and cut each into at most max_chunks chunks labelled label_of(source id)."""
    items = []
    for (source, _, _), (text, _status) in zip(pages, render_man_pages([p[1] for p in pages], cpu_workers())):
        for chunk in spread(chunk_text(text or ""), max_chunks):
            items.append(PoolItem(LabelledText(text=chunk, label=label_of(source), source=source), part))
    return items


def renderer_fingerprint() -> dict[str, object]:
    """What decides the rendered text besides the page files: the groff version and command line."""
    return {"groff": groff_version(), "groff_cmd": GROFF_CMD}


def check_groff(name: str) -> None:
    """Raise ConfigError before any work when groff, which renders the pages, is missing."""
    if shutil.which("groff") is None:
        raise ConfigError(key(name, "source"), "man pages", "needs `groff` on PATH (apt-get install groff-base)")
