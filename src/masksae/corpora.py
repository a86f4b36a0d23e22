"""Text sources for SAE training: offline English (man pages + pydoc), Hugging Face streams, local files.

Every document gets a split from a stable hash of its `source` id (train 80% / validation 10% /
probe_reserve 10%), so later probing and OOD tasks can draw on text the SAE never saw. The Hydra group
`data` selects the source; `validate_data_config` checks it before any compute, `corpus_fingerprint` names
the produced text for the activation-cache key, and `iter_documents` yields documents lazily.
"""

from __future__ import annotations

import bz2
import contextlib
import fcntl
import glob
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masksae.errors import ConfigError, OfflineError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "probe_reserve")
SOURCES = ("offline_english", "hf_stream", "local_files")
# Bump when the text a source produces for the same inputs changes (it enters the fingerprint).
BUILDER_VERSIONS = {"offline_english": 1, "hf_stream": 1, "local_files": 1}
LOCAL_EXTENSIONS = (".txt", ".md", ".jsonl")
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

_OFFLINE_DEFAULTS: dict[str, Any] = {
    "man_root": "/usr/share/man",
    "sections": [1, 2, 3, 4, 5, 6, 7, 8],
    "include_pydoc": True,
    "min_chars": 200,
    "max_per_family": 300,
    "workers": None,
    "max_documents": None,
}
_GROFF_CMD = ["groff", "-k", "-t", "-mandoc", "-Tutf8", "-P", "-cbou", "-rHY=0", "-rLL=1000n"]
_GROFF_TIMEOUT_S = 60
_BATCH = 32  # man pages per groff run (see _render_man_batch)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class Document:
    """One text document; `source` is a stable id of where it came from (e.g. "man1/ls.1")."""

    text: str
    source: str


def _bucket(source: str, salt: str = "") -> int:
    digest = hashlib.sha1((salt + source).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


def split_of(source: str) -> str:
    """Split of a document id: sha1 bucket 0-79 train, 80-89 validation, 90-99 probe_reserve."""
    b = _bucket(source)
    return "train" if b < 80 else "validation" if b < 90 else "probe_reserve"


def _select_key(source: str) -> bytes:
    """Order used to pick a capped subset; independent of the split hash so caps keep the 80/10/10 mix."""
    return hashlib.sha1(("select:" + source).encode("utf-8")).digest()


# ----------------------------------------------------------------------------------------------- config
def _plain(cfg: Any) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ConfigError("data", cfg, "a mapping (the Hydra group `data`)")


def _with_defaults(cfg: Any) -> dict[str, Any]:
    c = _plain(cfg)
    if c.get("source") == "offline_english":
        c = {**_OFFLINE_DEFAULTS, **c}
    c.setdefault("max_documents", None)
    return c


def _as_list(value: Any) -> list:
    return [value] if isinstance(value, (str, int)) else list(value)


def validate_data_config(cfg: Any) -> None:
    """Cheap checks before any compute; raises ConfigError naming the key, the value and what is allowed."""
    c = _with_defaults(cfg)
    source = c.get("source")
    if source not in SOURCES:
        raise ConfigError("data.source", source, f"one of {', '.join(SOURCES)}")
    name = c.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError("data.name", name, "a short name of letters, digits, '_', '.', '-' (used in run names)")
    md = c.get("max_documents")
    if md is not None and (isinstance(md, bool) or not isinstance(md, int) or md < 1):
        raise ConfigError("data.max_documents", md, "null (all documents) or a positive integer")
    if source == "offline_english":
        _validate_offline(c)
    elif source == "hf_stream":
        _validate_hf(c)
    else:
        _local_files(c)  # raises on bad paths / text_field


# ------------------------------------------------------------------------------------- offline English
def _validate_offline(c: dict[str, Any]) -> None:
    sections = c["sections"]
    try:
        ok = all(str(s) in {str(i) for i in range(1, 9)} for s in _as_list(sections)) and _as_list(sections)
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
    looked = [root / f"man{s}" for s in _as_list(c["sections"])]
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
    pages.sort(key=lambda t: _select_key(t[0]))
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


def _groff_version() -> str:
    exe = shutil.which("groff")
    if exe is None:
        return "no-groff"
    try:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
        return r.stdout.splitlines()[0] if r.stdout else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _pydoc_topics() -> dict[str, str]:
    from pydoc_data import topics

    return dict(topics.topics)


def _read_compressed(path: str) -> bytes:
    if path.endswith(".gz"):
        return gzip.decompress(Path(path).read_bytes())
    if path.endswith(".xz"):
        return lzma.decompress(Path(path).read_bytes())
    if path.endswith(".bz2"):
        return bz2.decompress(Path(path).read_bytes())
    return Path(path).read_bytes()


def _is_so_stub(raw: bytes) -> bool:
    """A page whose first request is `.so other/page`: an alias, rendered under its target's name."""
    for line in raw.splitlines()[:50]:
        s = line.strip()
        if not s or s.startswith((b'.\\"', b"'\\\"", b'\\"')) or s == b".":
            continue
        return s.startswith(b".so ") or s.startswith(b".so\t")
    return False


_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACE_RE = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f]+")


def _clean_lines(lines: Iterable[str], keep_indent: bool) -> str:
    """Collapse whitespace runs inside lines, collapse blank-line runs to one blank line, trim the ends."""
    out: list[str] = []
    blank = False
    for line in lines:
        line = _CTRL_RE.sub("", line).replace("\u2010", "-").rstrip()
        if keep_indent:
            stripped = line.lstrip(" ")
            indent = line[: len(line) - len(stripped)]
            line = indent + _SPACE_RE.sub(" ", stripped)
        else:
            line = _SPACE_RE.sub(" ", line).strip()
        if not line:
            blank = bool(out)
            continue
        if blank:
            out.append("")
            blank = False
        out.append(line)
    return "\n".join(out)


def clean_man_text(rendered: str) -> str:
    """Rendered man page -> plain text: header and footer lines dropped, whitespace collapsed."""
    lines = rendered.splitlines()
    idx = [i for i, line in enumerate(lines) if line.strip()]
    if len(idx) >= 2:  # nroff output has exactly one header (first) and one footer (last) line
        lines = lines[idx[0] + 1 : idx[-1]]
    else:
        lines = []
    return _clean_lines(lines, keep_indent=False)


def _groff(data: bytes, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "GROFF_NO_SGR": "1"}
    return subprocess.run(_GROFF_CMD, input=data, capture_output=True, timeout=timeout, env=env)


def _load_page(path: str) -> tuple[bytes | None, str]:
    try:
        raw = _read_compressed(path)
    except (OSError, EOFError, lzma.LZMAError, ValueError) as e:
        return None, f"unreadable ({type(e).__name__})"
    if _is_so_stub(raw):
        return None, "alias (.so)"
    return raw, "ok"


def _render_raw(raw: bytes) -> tuple[str | None, str]:
    """(text, status) for one page's troff source rendered in its own groff run."""
    try:
        r = _groff(raw, _GROFF_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, "groff timeout"
    if not r.stdout:
        return None, f"groff failed (rc={r.returncode})"
    return clean_man_text(r.stdout.decode("utf-8", errors="replace")), "ok"


# Requests that change troff state beyond one page (macros, strings, translations, registers, escape
# characters, hyphenation, tabs, line length): pages using them get their own groff run.
_STATEFUL_RE = re.compile(
    rb"^[.'][ \t]*(?:de|de1|dei|dei1|am|am1|ami|ami1|als|rn|rm|tr|trin|trnt|char|fchar|schar|rchar|cc|c2|ec|eo"
    rb"|mso|so|do|ds|ds1|as|as1|ll|ev|cp|hc|shc|lc|fc|nr|rr|rnn|aln|hy|hla|hlm|hym|hys|hpf|hpfa|hcode|pso|sy"
    rb"|open|opena|write|ta|lt|pl|wh|ch|dt|it|itc|blm|lsm|em|nm|nn|ss|cs|cu|ul|uf|fp|ftr|fspecial|special"
    rb"|sty|tkf|bd|kern|pev|warn|nroff|troff|cf|trf|ig)(?![A-Za-z0-9])",
    re.M,
)


# Tables (tbl keeps them together across page traps) and escapes that draw or move vertically render
# slightly differently depending on the page position, so those pages get their own run as well.
_POSITIONAL_RE = re.compile(rb"^[.'][ \t]*TS|\\[bDlLvoxZXR]", re.M)


def _batchable(raw: bytes) -> bool:
    return _STATEFUL_RE.search(raw) is None and _POSITIONAL_RE.search(raw) is None


def _marker(j: int) -> str:
    return f"ZZMASKSAEPAGEEND{j:05d}ZZ"


def _render_together(raws: list[bytes]) -> list[tuple[str | None, str]] | None:
    """Render pages in one groff run, cut at marker lines; None if the markers do not all come back in order.

    nroff prints one header line per page and a single footer at the very end, so each piece loses its
    first non-empty line and the tail after the last marker (the footer) is dropped.
    """
    data = b"".join(raw + b"\n.br\n\\&" + _marker(j).encode() + b"\n.br\n" for j, raw in enumerate(raws))
    try:
        r = _groff(data, _GROFF_TIMEOUT_S * 2)
    except subprocess.TimeoutExpired:
        return None
    pieces: list[list[str]] = [[]]
    for line in r.stdout.decode("utf-8", errors="replace").splitlines():
        if line.strip() == _marker(len(pieces) - 1):
            pieces.append([])
        else:
            pieces[-1].append(line)
    if len(pieces) != len(raws) + 1:
        return None
    out: list[tuple[str | None, str]] = []
    for lines in pieces[:-1]:
        first = next((k for k, line in enumerate(lines) if line.strip()), None)
        out.append((None, "empty rendering") if first is None else (_clean_lines(lines[first + 1 :], False), "ok"))
    return out


def _render_man_batch(paths: list[str]) -> list[tuple[str | None, str]]:
    """(text, status) per page. groff's start-up (~30 ms) dominates small pages, so pages that change no
    troff state beyond themselves share one groff run; the others, or all if the shared run goes wrong,
    get their own. The result does not depend on how pages are grouped (checked by the tests)."""
    results: list[tuple[str | None, str] | None] = [None] * len(paths)
    shared: list[tuple[int, bytes]] = []
    for i, p in enumerate(paths):
        raw, status = _load_page(p)
        if raw is None:
            results[i] = (None, status)
        elif _batchable(raw):
            shared.append((i, raw))
        else:
            results[i] = _render_raw(raw)
    if shared:
        together = _render_together([raw for _, raw in shared]) if len(shared) > 1 else None
        for j, (i, raw) in enumerate(shared):
            results[i] = together[j] if together is not None else _render_raw(raw)
    return results  # type: ignore[return-value]


def _offline_fingerprint_payload(c: dict[str, Any]) -> dict[str, Any]:
    inv = _man_inventory(c)
    inv_hash = hashlib.sha1("\n".join(f"{s}\t{size}" for s, _, size in inv).encode()).hexdigest()
    payload: dict[str, Any] = {
        "man_root": str(c["man_root"]),
        "sections": sorted(str(s) for s in _as_list(c["sections"])),
        "min_chars": c["min_chars"],
        "max_per_family": c["max_per_family"],
        "max_documents": c["max_documents"],
        "include_pydoc": bool(c["include_pydoc"]),
        "man_inventory": inv_hash,
        "groff": _groff_version(),
        "groff_cmd": _GROFF_CMD,
    }
    if c["include_pydoc"]:
        topics = _pydoc_topics()
        payload["pydoc"] = hashlib.sha1(json.dumps(topics, sort_keys=True).encode()).hexdigest()
    return payload


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_VALIDATED: dict[str, tuple] = {}  # manifest path -> stat signature already checksummed in this process


def _stat_sig(paths: list[Path]) -> tuple:
    return tuple((str(p), st.st_size, st.st_mtime_ns, st.st_ino) for p in paths for st in [p.stat()])


def _valid_manifest(corpus_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest if it and every split file it names are intact (size + sha256), else None."""
    mpath = corpus_dir / MANIFEST_NAME
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
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


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


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
    # Threads only dispatch: the rendering runs in `groff` child processes, `workers` of them at a time.
    # (A thread pool avoids forking a parent that may already hold torch and its threads.)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        batches = [pages[i : i + _BATCH] for i in range(0, len(pages), _BATCH)]
        rendered = (r for batch in pool.map(lambda b: _render_man_batch([p[1] for p in b]), batches) for r in batch)
        for (source, _, _), (text, status) in zip(pages, rendered):
            key = status if text is None else ("too short" if len(text) < c["min_chars"] else "ok")
            stats[key] = stats.get(key, 0) + 1
            if key == "ok":
                docs.append(Document(text=text, source=source))
    if c["include_pydoc"]:
        for topic, body in sorted(_pydoc_topics().items()):
            text = _clean_lines(body.splitlines(), keep_indent=True)
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
    c = _with_defaults(cfg)
    if c.get("source") != "offline_english":
        raise ConfigError("data.source", c.get("source"), "offline_english (build_offline_corpus builds only that)")
    validate_data_config(c)
    fp = corpus_fingerprint(c)
    corpus_dir = Path(cache_root) / "corpora" / f"{c['name']}-{fp}"
    if _valid_manifest(corpus_dir, fp):
        return corpus_dir
    with _locked(corpus_dir / ".lock"):
        if _valid_manifest(corpus_dir, fp):  # another process finished it while we waited
            return corpus_dir
        for stale in corpus_dir.glob(".*.tmp-*"):  # left by a crashed builder; we hold the lock
            stale.unlink(missing_ok=True)
        (corpus_dir / MANIFEST_NAME).unlink(missing_ok=True)
        t0 = time.monotonic()
        docs, stats = _collect_offline_documents(c)
        if not docs:
            raise ConfigError("data.man_root", str(c["man_root"]), "man pages that render to text; none did")
        splits: dict[str, dict[str, Any]] = {}
        for split in SPLITS:
            lines = [
                json.dumps({"source": d.source, "text": d.text}, ensure_ascii=False)
                for d in docs
                if split_of(d.source) == split
            ]
            data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
            fname = f"{split}.jsonl"
            _atomic_write(corpus_dir / fname, data)
            splits[split] = {
                "file": fname,
                "documents": len(lines),
                "characters": sum(len(d.text) for d in docs if split_of(d.source) == split),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        manifest = {
            "format": MANIFEST_FORMAT,
            "fingerprint": fp,
            "source": "offline_english",
            "builder_version": BUILDER_VERSIONS["offline_english"],
            "config": {k: c[k] for k in sorted(_OFFLINE_DEFAULTS) if k != "workers"},
            "splits": splits,
            "stats": stats,
            "build_seconds": round(time.monotonic() - t0, 2),
            "built_by": {"host": os.uname().nodename, "pid": os.getpid(), "time": time.time()},
            "workers": c.get("workers") or _default_workers(),
        }
        _atomic_write(corpus_dir / MANIFEST_NAME, json.dumps(manifest, indent=1).encode("utf-8"))
        log.info(
            "built offline corpus %s: %s documents in %.1f s",
            corpus_dir, {s: splits[s]["documents"] for s in SPLITS}, manifest["build_seconds"],
        )
    return corpus_dir


def _iter_jsonl(path: Path) -> Iterator[Document]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                yield Document(text=rec["text"], source=rec["source"])


# ------------------------------------------------------------------------------------------- HF stream
def _validate_hf(c: dict[str, Any]) -> None:
    if not isinstance(c.get("path"), str) or not c["path"]:
        raise ConfigError("data.path", c.get("path"), "a Hugging Face dataset id, e.g. monology/pile-uncopyrighted")
    if not isinstance(c.get("text_field", "text"), str) or not c.get("text_field", "text"):
        raise ConfigError("data.text_field", c.get("text_field"), "the name of the record field holding the text")
    for key in ("split", "validation_split", "config_name", "revision", "cache_dir"):
        v = c.get(key)
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"data.{key}", v, "null or a string")


def _env_offline() -> str | None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in _TRUE:
            return var
    return None


def _is_connection_error(e: BaseException) -> bool:
    names = {"OfflineModeIsEnabled", "ConnectError", "ConnectTimeout", "TimeoutException", "ConnectionError",
             "LocalEntryNotFoundError", "MaxRetryError", "NewConnectionError"}
    seen = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (ConnectionError, TimeoutError)) or type(cur).__name__ in names:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


@contextlib.contextmanager
def _hf_offline_flags(offline: bool) -> Iterator[None]:
    """Make `datasets`/`huggingface_hub` honour an offline env var set after they were imported."""
    if not offline:
        yield
        return
    import datasets.config as dcfg
    import huggingface_hub.constants as hcst

    saved = (dcfg.HF_HUB_OFFLINE, hcst.HF_HUB_OFFLINE)
    dcfg.HF_HUB_OFFLINE = hcst.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        dcfg.HF_HUB_OFFLINE, hcst.HF_HUB_OFFLINE = saved


def _open_hf_stream(c: dict[str, Any], hf_split: str) -> Iterator[dict]:
    """Open a streaming split and fetch its first record, turning offline failures into OfflineError."""
    env_var = _env_offline()
    path, config_name = c["path"], c.get("config_name")
    what = f"{path}" + (f" ({config_name})" if config_name else "") + f" split {hf_split!r}"
    try:
        with _hf_offline_flags(env_var is not None):
            import datasets

            ds = datasets.load_dataset(
                path, config_name, split=hf_split, streaming=True,
                revision=c.get("revision"), cache_dir=c.get("cache_dir"),
            )
            it = iter(ds)
            first = next(it, None)
    except Exception as e:  # noqa: BLE001 - classified below, re-raised otherwise
        if env_var is not None or _is_connection_error(e):
            why = f"{env_var}=1 is set" if env_var else f"the Hugging Face hub is unreachable ({type(e).__name__})"
            raise OfflineError(
                f"cannot stream dataset {what}: {why} and no usable cached copy was found; run `make prefetch` "
                "on a machine with internet or set HF_HOME to a filled cache (or use data=offline_english)"
            ) from None
        raise
    return _chain_first(first, it)


def _chain_first(first: dict | None, it: Iterator[dict]) -> Iterator[dict]:
    if first is not None:
        yield first
        yield from it


def _iter_hf(c: dict[str, Any], split: str) -> Iterator[Document]:
    train_split = c.get("split") or "train"
    val_split = c.get("validation_split")
    text_field = c.get("text_field") or "text"
    hf_split = val_split if (split == "validation" and val_split) else train_split
    records = _open_hf_stream(c, hf_split)
    prefix = f"{c['path']}:{c.get('config_name') or 'default'}:{hf_split}"
    take_all = split == "validation" and bool(val_split)
    return _hf_documents(records, prefix, split, take_all, text_field, c.get("max_documents"))


def _hf_documents(records: Iterator[dict], prefix: str, split: str, take_all: bool, text_field: str,
                  max_documents: int | None) -> Iterator[Document]:
    for i, rec in enumerate(records):
        if max_documents is not None and i >= max_documents:
            return
        source = f"{prefix}:{i}"
        if not take_all and split_of(source) != split:
            continue
        if text_field not in rec:
            raise ConfigError("data.text_field", text_field, f"a field of the records; found {sorted(rec)}")
        text = rec[text_field]
        if isinstance(text, str) and text.strip():
            yield Document(text=text, source=source)


# ----------------------------------------------------------------------------------------- local files
def _local_files(c: dict[str, Any]) -> tuple[Path, list[Path]]:
    """(common root, sorted files) matched by `paths`; raises ConfigError if nothing usable matches."""
    paths = c.get("paths")
    if paths == "???":
        raise ConfigError("data.paths", None, "set data.paths to a glob or a list of globs of .txt/.md/.jsonl files")
    if not paths or not (isinstance(paths, str) or all(isinstance(p, str) for p in paths)):
        raise ConfigError("data.paths", paths, "a glob or a list of globs of .txt/.md/.jsonl files")
    matched: set[Path] = set()
    for pattern in _as_list(paths):
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


def _iter_local(c: dict[str, Any], split: str) -> Iterator[Document]:
    root, files = _local_files(c)
    return _local_documents(root, files, split, c.get("text_field") or "text", c.get("max_documents"))


def _local_documents(root: Path, files: list[Path], split: str, field: str,
                     max_documents: int | None) -> Iterator[Document]:
    n = 0
    for f in files:
        rel = f.relative_to(root).as_posix()
        if f.suffix == ".jsonl":
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
                    if not isinstance(text, str) or not text.strip():
                        continue
                    if max_documents is not None and n >= max_documents:
                        return
                    n += 1
                    source = f"{rel}#{lineno}"
                    if split_of(source) == split:
                        yield Document(text=text, source=source)
        else:
            text = f.read_text(encoding="utf-8", errors="replace")
            if not text.strip():
                continue
            if max_documents is not None and n >= max_documents:
                return
            n += 1
            if split_of(rel) == split:
                yield Document(text=text, source=rel)


# --------------------------------------------------------------------------------------------- public
def corpus_fingerprint(cfg: Any) -> str:
    """Short id that changes when the produced text would change (source, builder version, inputs, cfg)."""
    c = _with_defaults(cfg)
    source = c.get("source")
    if source not in SOURCES:
        raise ConfigError("data.source", source, f"one of {', '.join(SOURCES)}")
    payload: dict[str, Any] = {"source": source, "builder": BUILDER_VERSIONS[source]}
    if source == "offline_english":
        payload.update(_offline_fingerprint_payload(c))
    elif source == "hf_stream":
        for k in ("path", "config_name", "split", "validation_split", "text_field", "revision", "max_documents"):
            payload[k] = c.get(k)
    else:
        root, files = _local_files(c)
        payload.update(
            text_field=c.get("text_field") or "text",
            max_documents=c.get("max_documents"),
            files=[(f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()]],
        )
    blob = json.dumps(payload, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha1(blob).hexdigest()[:12]


def iter_documents(cfg: Any, split: str, cache_root: Path) -> Iterator[Document]:
    """Documents of one split in a deterministic order (sorted by source; stream order for hf_stream).

    Checks, builds (offline_english) and opens the source eagerly, so errors surface at the call;
    the documents themselves are read lazily.
    """
    if split not in SPLITS:
        raise ConfigError("split", split, f"one of {', '.join(SPLITS)}")
    validate_data_config(cfg)
    c = _with_defaults(cfg)
    if c["source"] == "offline_english":
        corpus_dir = build_offline_corpus(Path(cache_root), c)
        manifest = json.loads((corpus_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
        return _iter_jsonl(corpus_dir / manifest["splits"][split]["file"])
    if c["source"] == "hf_stream":
        return _iter_hf(c, split)
    return _iter_local(c, split)


def corpus_stats(cache_root: Path, cfg: Any) -> dict[str, Any]:
    """The manifest of a built offline corpus (documents/characters per split, build time)."""
    corpus_dir = build_offline_corpus(Path(cache_root), cfg)
    return json.loads((corpus_dir / MANIFEST_NAME).read_text(encoding="utf-8"))


if __name__ == "__main__":  # `python -m masksae.corpora CACHE_ROOT`: build the default offline corpus
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".cache")
    stats = corpus_stats(root, {"source": "offline_english", "name": "offline_english"})
    print(json.dumps({k: stats[k] for k in ("splits", "stats", "build_seconds", "workers")}, indent=1))
