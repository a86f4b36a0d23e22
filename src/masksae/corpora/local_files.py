"""Local .txt/.md files (one document each) and .jsonl files (one document per record) matched by globs."""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from masksae.corpora.config import as_list
from masksae.corpora.splits import Document, split_of
from masksae.errors import ConfigError

log = logging.getLogger(__name__)

LOCAL_EXTENSIONS = (".txt", ".md", ".jsonl")


def find_files(c: dict[str, Any]) -> tuple[Path, list[Path]]:
    """(common root, sorted files) matched by `paths`; raises ConfigError if nothing usable matches."""
    paths = c.get("paths")
    if paths == "???":
        raise ConfigError("data.paths", None, "set data.paths to a glob or a list of globs of .txt/.md/.jsonl files")
    if not paths or not (isinstance(paths, str) or all(isinstance(p, str) for p in paths)):
        raise ConfigError("data.paths", paths, "a glob or a list of globs of .txt/.md/.jsonl files")
    matched: set[Path] = set()
    for pattern in as_list(paths):
        for p in glob.glob(os.path.expanduser(pattern), recursive=True):
            if os.path.isfile(p):
                matched.add(Path(p).resolve())
    files = sorted(p for p in matched if p.name.endswith(LOCAL_EXTENSIONS))
    if not files:
        extra = f" ({len(matched)} files matched but none ends in {', '.join(LOCAL_EXTENSIONS)})" if matched else ""
        raise ConfigError(
            "data.paths", paths, f"globs matching at least one {'/'.join(LOCAL_EXTENSIONS)} file; none matched "
            f"(relative to {os.getcwd()}){extra}",
        )
    skipped = len(matched) - len(files)
    if skipped:
        log.warning("data.paths: ignoring %d files without a %s extension", skipped, "/".join(LOCAL_EXTENSIONS))
    jsonl = [f for f in files if f.suffix == ".jsonl"]
    if jsonl:
        field = c.get("text_field") or "text"
        with open(jsonl[0], encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), None)
        if first is not None:
            try:
                rec = json.loads(first)
            except ValueError:
                raise ConfigError("data.paths", str(jsonl[0]), "JSON lines files (first line is not JSON)") from None
            if not isinstance(rec, dict) or field not in rec:
                keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
                raise ConfigError("data.text_field", field, f"a key of the JSON records in {jsonl[0]}; found {keys}")
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    return root, files


def fingerprint_payload(c: dict[str, Any]) -> dict[str, Any]:
    """What decides the local text: the text field, the cap, and each file's relative path, size and mtime."""
    root, files = find_files(c)
    return {
        "text_field": c.get("text_field") or "text",
        "max_documents": c.get("max_documents"),
        "files": [(f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()]],
    }


def documents(c: dict[str, Any], split: str) -> Iterator[Document]:
    """Documents of one split, files in sorted order; the files are matched now and read lazily."""
    root, files = find_files(c)
    return _local_documents(root, files, split, c.get("text_field") or "text", c.get("max_documents"))


def _local_documents(root: Path, files: list[Path], split: str, field: str,
                     max_documents: int | None) -> Iterator[Document]:
    """The split's share of the first `max_documents` non-empty texts (all of them when None)."""
    for n, (source, text) in enumerate(_texts(root, files, field)):
        if max_documents is not None and n >= max_documents:
            return
        if split_of(source) == split:
            yield Document(text=text, source=source)


def _texts(root: Path, files: list[Path], field: str) -> Iterator[tuple[str, str]]:
    """(source, text) for every non-empty text: a whole .txt/.md file, or one .jsonl record (`path#line`)."""
    for f in files:
        rel = f.relative_to(root).as_posix()
        if f.suffix != ".jsonl":
            text = f.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                yield rel, text
            continue
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)[field]
                except (ValueError, KeyError, TypeError):
                    raise ConfigError(
                        "data.paths", f"{f}:{lineno}", f"JSON lines with a string field {field!r}"
                    ) from None
                if isinstance(text, str) and text.strip():
                    yield f"{rel}#{lineno}", text
