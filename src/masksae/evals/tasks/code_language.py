"""Task source `code_language`: the programming language of a source file; one set of system folders -> others."""

from __future__ import annotations

import glob
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import masksae
from masksae.corpora.splits import select_key
from masksae.errors import ConfigError
from masksae.evals.tasks.base import ID, OOD, LabelledText, PoolItem, check_int, chunk_text, inventory_hash, key, \
    spread

log = logging.getLogger(__name__)

VERSION = 1
OOD_SHIFT = "one set of system source folders -> other folders (other projects, same languages)"
_SH = r"^#! ?(/usr)?/bin/(env +)?(ba|da)?sh\b"
# class -> in-distribution globs, OOD globs, optional regex the first line must match. Folders of a fresh
# Debian 12 (amd64); classes whose ID folders are missing are dropped with a warning.
DEFAULT_CLASSES: dict[str, dict[str, Any]] = {
    "python": {"id": ["/usr/lib/python3.11/**/*.py"], "ood": ["/usr/lib/python3/dist-packages/**/*.py"]},
    "c": {"id": ["/usr/include/*.h", "/usr/include/x86_64-linux-gnu/**/*.h"], "ood": ["/usr/include/linux/**/*.h"]},
    "perl": {"id": ["/usr/share/perl/5.*/**/*.pm"],
             "ood": ["/usr/lib/x86_64-linux-gnu/perl*/**/*.pm", "/usr/share/perl5/**/*.pm"]},
    "javascript": {"id": ["/usr/lib/node_modules/npm/lib/**/*.js"],
                   "ood": ["/usr/lib/node_modules/npm/node_modules/**/*.js", "/usr/lib/node_modules/corepack/**/*.js",
                           "/usr/share/javascript/**/*.js"]},
    "shell": {"id": ["/usr/bin/*"], "ood": ["/etc/**/*", "/usr/share/doc/**/*.sh", "/usr/share/debconf/*.sh"],
              "first_line": _SH},
    "cmake": {"id": ["/usr/share/cmake-*/Modules/**/*.cmake"],
              "ood": ["/usr/lib/x86_64-linux-gnu/cmake/**/*.cmake", "/usr/lib/llvm-*/lib/cmake/**/*.cmake"]},
    "tcl": {"id": ["/usr/share/tcltk/tcl8*/**/*.tcl"], "ood": ["/usr/share/tcltk/tk8*/**/*.tcl"]},
}
DEFAULTS: dict[str, Any] = {
    "classes": DEFAULT_CLASSES,
    "max_files_per_class": 200,  # per part (ID, OOD), picked by a stable hash of the path
    "max_file_bytes": 100_000,  # read at most this much of a file
    "max_chunks_per_source": 3,
    "min_per_class": 20,
}


def _forbidden() -> list[str]:
    """Folders never read: the project's checkout and the active virtual environment (the SAE's own code)."""
    checkout = Path(masksae.__file__).resolve().parents[2]
    roots = [str(checkout)] if (checkout / "pyproject.toml").exists() else []
    if sys.prefix != sys.base_prefix:
        roots.append(str(Path(sys.prefix).resolve()))
    return roots


def _allowed_path(path: str, forbidden: list[str]) -> bool:
    """Not inside a forbidden folder and not pydoc_data (the SAE training corpus reads pydoc_data.topics)."""
    return "pydoc_data" not in Path(path).parts and not any(path == r or path.startswith(r + "/") for r in forbidden)


def _static_prefix(pattern: str) -> str:
    """The folder part of a glob before its first wildcard."""
    head = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    return os.path.realpath(head.rsplit("/", 1)[0] or "/")


def _check_class(name: str, label: str, spec: Any, forbidden: list[str]) -> None:
    field = key(name, f"classes.{label}")
    if not isinstance(spec, dict) or not isinstance(spec.get("id"), list) or not spec["id"] \
            or not isinstance(spec.get("ood", []), list) or set(spec) - {"id", "ood", "first_line"}:
        raise ConfigError(field, spec, "a mapping {id: [globs], ood: [globs], first_line: optional regex}")
    for pattern in [*spec["id"], *spec.get("ood", [])]:
        if not isinstance(pattern, str) or not pattern.startswith("/"):
            raise ConfigError(field, pattern, "absolute glob patterns ('**' recurses)")
        if not _allowed_path(_static_prefix(pattern), forbidden):
            raise ConfigError(field, pattern, f"folders outside the project and its environment ({forbidden})")
    try:
        re.compile(spec.get("first_line") or "")
    except re.error as e:
        raise ConfigError(field, spec.get("first_line"), f"a Python regular expression ({e})") from None


def _present(spec: dict[str, Any]) -> bool:
    return any(next(glob.iglob(p, recursive=True), None) for p in spec["id"])


def validate(name: str, c: dict[str, Any]) -> None:
    """Well-formed class table with absolute globs outside the project; at least 2 classes present here."""
    classes = c["classes"]
    if not isinstance(classes, dict) or not classes:
        raise ConfigError(key(name, "classes"), classes, "a mapping class -> {id: [globs], ood: [globs]}")
    forbidden = _forbidden()
    for label, spec in classes.items():
        _check_class(name, str(label), spec, forbidden)
    present = [str(label) for label, spec in classes.items() if _present(spec)]
    if len(present) < 2:
        raise ConfigError(key(name, "classes"), sorted(classes), f"at least 2 classes whose ID files exist on this "
                          f"machine; found files for {present or 'none'}")
    for field in ("max_files_per_class", "max_file_bytes"):
        check_int(name, c, field, 1)


def _first_line_ok(path: str, regex: str | None) -> bool:
    if not regex:
        return True
    try:
        with open(path, "rb") as f:
            line = f.readline(256).decode("utf-8", errors="replace")
    except OSError:
        return False
    return re.match(regex, line) is not None


def _files(patterns: list[str], regex: str | None, exclude: set[str]) -> list[tuple[str, int]]:
    """(real path, size) of the regular, non-empty, allowed files the globs match, minus `exclude`."""
    forbidden = _forbidden()
    out: dict[str, int] = {}
    for pattern in patterns:
        for p in glob.iglob(pattern, recursive=True):
            real = os.path.realpath(p)
            if real in out or real in exclude or not os.path.isfile(real) or not _allowed_path(real, forbidden):
                continue
            size = os.path.getsize(real)
            if size > 0 and _first_line_ok(real, regex):
                out[real] = size
    return sorted(out.items())


def _class_files(spec: dict[str, Any]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(ID files, OOD files) of one class; a file matched by both stays ID only."""
    id_files = _files(spec["id"], spec.get("first_line"), set())
    ood_files = _files(spec.get("ood", []), spec.get("first_line"), {p for p, _ in id_files})
    return id_files, ood_files


def fingerprint_inputs(c: dict[str, Any]) -> dict[str, Any]:
    """Paths and sizes of every file each class's globs match."""
    return {str(label): [inventory_hash(files) for files in _class_files(spec)] for label, spec in c["classes"].items()}


def _read(path: str, limit: int) -> str | None:
    """A file's first `limit` bytes as UTF-8 text (a cut last character dropped); None if binary or unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8") if len(data) < limit else data.decode("utf-8", errors="ignore")
    except UnicodeDecodeError:
        return None


def _items(files: list[tuple[str, int]], label: str, part: str, c: dict[str, Any]) -> list[PoolItem]:
    """Chunks of up to max_files_per_class files (stable hash order) that read as text and give chunks."""
    items: list[PoolItem] = []
    used = 0
    for path, _ in sorted(files, key=lambda f: select_key(f[0])):
        if used >= c["max_files_per_class"]:
            break
        text = _read(path, c["max_file_bytes"])
        chunks = spread(chunk_text(text), c["max_chunks_per_source"]) if text else []
        used += bool(chunks)
        items += [PoolItem(LabelledText(text=ch, label=label, source=path), part) for ch in chunks]
    return items


def collect(c: dict[str, Any], cache_root: Path) -> list[PoolItem]:
    """ID chunks from each class's ID folders, OOD chunks from its other folders; absent classes logged."""
    items: list[PoolItem] = []
    for label, spec in sorted(c["classes"].items()):
        id_files, ood_files = _class_files(spec)
        if not id_files:
            log.warning("code_language: class %r dropped: no files match %s on this machine", label, spec["id"])
            continue
        if not ood_files:
            log.warning("code_language: class %r has no OOD files matching %s", label, spec.get("ood"))
        items += _items(id_files, str(label), ID, c) + _items(ood_files, str(label), OOD, c)
    return items
