"""The offline English corpus: man pages rendered by groff plus Python's pydoc topics, built once per machine."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from masksae.corpora.config import (
    BUILDER_VERSIONS,
    OFFLINE_DEFAULTS,
    as_list,
    check_common,
    fingerprint,
    with_defaults,
)
from masksae.corpora.man_render import GROFF_CMD, clean_lines, groff_version, render_man_pages
from masksae.corpora.splits import SPLITS, Document, select_key
from masksae.corpora.store import discard_partial, read_manifest, valid_manifest, write_manifest, write_splits
from masksae.errors import ConfigError
from masksae.locks import exclusive_lock
from masksae.progress import progress

log = logging.getLogger(__name__)


def validate(c: dict[str, Any]) -> None:
    """The offline_english keys: sections, numeric limits, man pages present, groff on PATH."""
    sections = c["sections"]
    try:
        ok = all(str(s) in {str(i) for i in range(1, 9)} for s in as_list(sections)) and as_list(sections)
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError("data.sections", sections, "a non-empty list of man sections from 1 to 8")
    for key, allowed in (("min_chars", "an integer >= 0"), ("max_per_family", "null (no cap) or an integer >= 1"),
                         ("workers", "null (all cores) or an integer >= 1")):
        v = c.get(key)
        lowest = 0 if key == "min_chars" else 1
        if (v is None and key == "min_chars") or (
            v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lowest)
        ):
            raise ConfigError(f"data.{key}", v, allowed)
    _man_dirs(c)  # raises if there are no English man pages
    if shutil.which("groff") is None:
        raise ConfigError(
            "data.source", "offline_english", "needs `groff` on PATH to render man pages (apt-get install groff-base), "
            "or choose data=local_files / data=hf_stream"
        )


def _man_dirs(c: dict[str, Any]) -> list[Path]:
    root = Path(str(c["man_root"])).expanduser()
    looked = [root / f"man{s}" for s in as_list(c["sections"])]
    found = [d for d in looked if d.is_dir() and any(True for _ in os.scandir(d))]
    if not found:
        raise ConfigError(
            "data.man_root", str(root),
            "a folder with English man pages in man1..man8; looked at "
            + ", ".join(str(p) for p in looked)
            + " and found none (install man pages, e.g. apt-get install man-db manpages, or use data=local_files)",
        )
    return found


def _man_inventory(c: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(source id, absolute path, size) for every regular man page file; symlinks are duplicates and skipped."""
    out = []
    for d in _man_dirs(c):
        with os.scandir(d) as it:
            for e in it:
                if e.is_symlink() or not e.is_file():
                    continue
                stem = e.name
                for ext in (".gz", ".xz", ".bz2"):
                    if stem.endswith(ext):
                        stem = stem[: -len(ext)]
                        break
                out.append((f"{d.name}/{stem}", e.path, e.stat().st_size))
    out.sort()
    return out


def _family(source: str) -> str:
    base = source.split("/", 1)[-1]
    return re.split(r"[_.\-]", base, maxsplit=1)[0].lower()


def _select_pages(c: dict[str, Any], inventory: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Deterministic subset: at most `max_per_family` pages per name family, then at most `max_documents`."""
    seen: set[str] = set()
    pages = []
    for item in inventory:  # two compressions of one page: keep the first
        if item[0] not in seen:
            seen.add(item[0])
            pages.append(item)
    pages.sort(key=lambda t: select_key(t[0]))
    cap = c.get("max_per_family")
    if cap:
        counts: dict[str, int] = {}
        kept = []
        for item in pages:
            f = _family(item[0])
            counts[f] = counts.get(f, 0) + 1
            if counts[f] <= cap:
                kept.append(item)
        pages = kept
    if c.get("max_documents"):
        pages = pages[: c["max_documents"]]
    return pages


def _pydoc_topics() -> dict[str, str]:
    from pydoc_data import topics

    return dict(topics.topics)


def fingerprint_payload(c: dict[str, Any]) -> dict[str, Any]:
    """What decides the offline text: the selection keys, the man page inventory, groff, the pydoc topics."""
    inv = _man_inventory(c)
    inv_hash = hashlib.sha1("\n".join(f"{s}\t{size}" for s, _, size in inv).encode()).hexdigest()
    payload: dict[str, Any] = {
        "man_root": str(c["man_root"]),
        "sections": sorted(str(s) for s in as_list(c["sections"])),
        "min_chars": c["min_chars"],
        "max_per_family": c["max_per_family"],
        "max_documents": c["max_documents"],
        "include_pydoc": bool(c["include_pydoc"]),
        "man_inventory": inv_hash,
        "groff": groff_version(),
        "groff_cmd": GROFF_CMD,
    }
    if c["include_pydoc"]:
        topics = _pydoc_topics()
        payload["pydoc"] = hashlib.sha1(json.dumps(topics, sort_keys=True).encode()).hexdigest()
    return payload


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _collect_offline_documents(c: dict[str, Any]) -> tuple[list[Document], dict[str, int]]:
    pages = sorted(_select_pages(c, _man_inventory(c)))
    workers = c.get("workers") or _default_workers()
    stats: dict[str, int] = {"man_pages_selected": len(pages)}
    docs: list[Document] = []
    rendered = progress(render_man_pages([p[1] for p in pages], workers), len(pages), "corpus build: man pages rendered", "pages", log)
    for (source, _, _), (text, status) in zip(pages, rendered):
        key = status if text is None else ("too short" if len(text) < c["min_chars"] else "ok")
        stats[key] = stats.get(key, 0) + 1
        if key == "ok":
            docs.append(Document(text=text, source=source))
    if c["include_pydoc"]:
        for topic, body in sorted(_pydoc_topics().items()):
            text = clean_lines(body.splitlines(), keep_indent=True)
            if len(text) >= c["min_chars"]:
                docs.append(Document(text=text, source=f"pydoc/{topic}"))
                stats["pydoc_topics"] = stats.get("pydoc_topics", 0) + 1
    docs.sort(key=lambda d: d.source)
    unique: list[Document] = []
    seen: set[str] = set()
    for d in docs:  # hard links and copied pages render identically: keep the first source
        h = hashlib.sha1(d.text.encode("utf-8")).hexdigest()
        if h in seen:
            stats["duplicate"] = stats.get("duplicate", 0) + 1
            continue
        seen.add(h)
        unique.append(d)
    return unique, stats


def build_offline_corpus(cache_root: Path, cfg: Any) -> Path:
    """Build (or reuse) the offline English corpus; returns its folder holding one JSONL file per split.

    Safe against concurrent builders (fcntl lock + atomic replace) and against crashed ones (temp files
    are ignored, the manifest is written last and validated with sizes and sha256 checksums).
    """
    c = with_defaults(cfg)
    if c.get("source") != "offline_english":
        raise ConfigError("data.source", c.get("source"), "offline_english (build_offline_corpus builds only that)")
    check_common(c)
    validate(c)
    fp = fingerprint("offline_english", fingerprint_payload(c))
    corpus_dir = Path(cache_root) / "corpora" / f"{c['name']}-{fp}"
    if valid_manifest(corpus_dir, fp):
        return corpus_dir
    with exclusive_lock(corpus_dir / ".lock"):
        if valid_manifest(corpus_dir, fp):  # another process finished it while we waited
            return corpus_dir
        discard_partial(corpus_dir)  # temp files left by a crashed builder; we hold the lock
        t0 = time.monotonic()
        docs, stats = _collect_offline_documents(c)
        if not docs:
            raise ConfigError("data.man_root", str(c["man_root"]), "man pages that render to text; none did")
        splits = write_splits(corpus_dir, docs)
        manifest = {
            "fingerprint": fp,
            "source": "offline_english",
            "builder_version": BUILDER_VERSIONS["offline_english"],
            "config": {k: c[k] for k in sorted(OFFLINE_DEFAULTS) if k != "workers"},
            "splits": splits,
            "stats": stats,
            "build_seconds": round(time.monotonic() - t0, 2),
            "built_by": {"host": os.uname().nodename, "pid": os.getpid(), "time": time.time()},
            "workers": c.get("workers") or _default_workers(),
        }
        write_manifest(corpus_dir, manifest)
        log.info(
            "built offline corpus %s: %s documents in %.1f s",
            corpus_dir, {s: splits[s]["documents"] for s in SPLITS}, manifest["build_seconds"],
        )
    return corpus_dir


def corpus_stats(cache_root: Path, cfg: Any) -> dict[str, Any]:
    """The manifest of a built offline corpus (documents/characters per split, build time)."""
    return read_manifest(build_offline_corpus(Path(cache_root), cfg))
