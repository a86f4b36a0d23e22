"""A built corpus on disk: one JSONL file per split under a manifest of sizes and sha256 sums, written atomically."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from masksae.corpora.splits import SPLITS, Document, split_of
from masksae.files import write_bytes_atomically

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

_VALIDATED: dict[str, tuple] = {}  # manifest path -> stat signature already checksummed in this process


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stat_sig(paths: list[Path]) -> tuple:
    return tuple((str(p), st.st_size, st.st_mtime_ns, st.st_ino) for p in paths for st in [p.stat()])


def read_manifest(corpus_dir: Path) -> dict[str, Any]:
    """The manifest of a corpus folder, as written."""
    return json.loads((corpus_dir / MANIFEST_NAME).read_text(encoding="utf-8"))


def valid_manifest(corpus_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest if it and every split file it names are intact (size + sha256), else None."""
    mpath = corpus_dir / MANIFEST_NAME
    try:
        manifest = read_manifest(corpus_dir)
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("fingerprint") != fingerprint:
            return None
        files = [corpus_dir / manifest["splits"][s]["file"] for s in SPLITS]
        sig = _stat_sig([mpath, *files])
        if _VALIDATED.get(str(mpath)) == sig:
            return manifest
        for s, f in zip(SPLITS, files):
            info = manifest["splits"][s]
            if f.stat().st_size != info["bytes"] or _sha256_file(f) != info["sha256"]:
                log.warning("corpus file %s is corrupt (size/checksum mismatch); rebuilding", f)
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    _VALIDATED[str(mpath)] = sig
    return manifest


def discard_partial(corpus_dir: Path) -> None:
    """Remove temp files of crashed builders and the manifest; call only while holding the build lock."""
    for stale in corpus_dir.glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
    (corpus_dir / MANIFEST_NAME).unlink(missing_ok=True)


def write_splits(corpus_dir: Path, docs: list[Document]) -> dict[str, dict[str, Any]]:
    """Write one JSONL file per split; returns the manifest's `splits` entry (file, counts, bytes, sha256)."""
    splits: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        lines = [
            json.dumps({"source": d.source, "text": d.text}, ensure_ascii=False)
            for d in docs
            if split_of(d.source) == split
        ]
        data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
        fname = f"{split}.jsonl"
        write_bytes_atomically(corpus_dir / fname, data)
        splits[split] = {
            "file": fname,
            "documents": len(lines),
            "characters": sum(len(d.text) for d in docs if split_of(d.source) == split),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    return splits


def write_manifest(corpus_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last, atomically: its presence marks the corpus complete."""
    write_bytes_atomically(corpus_dir / MANIFEST_NAME, json.dumps({"format": MANIFEST_FORMAT, **manifest},
                                                         indent=1).encode("utf-8"))


def iter_split(corpus_dir: Path, split: str) -> Iterator[Document]:
    """The documents of one split of a built corpus, read lazily in file order."""
    path = corpus_dir / read_manifest(corpus_dir)["splits"][split]["file"]
    return _iter_jsonl(path)


def _iter_jsonl(path: Path) -> Iterator[Document]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                yield Document(text=rec["text"], source=rec["source"])
