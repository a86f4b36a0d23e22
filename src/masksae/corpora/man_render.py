"""Man pages to plain text: groff renders them, batching pages that share no troff state into one run."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GROFF_CMD = ["groff", "-k", "-t", "-mandoc", "-Tutf8", "-P", "-cbou", "-rHY=0", "-rLL=1000n"]
_GROFF_TIMEOUT_S = 60
_BATCH = 32  # man pages per groff run (see _render_man_batch)


def groff_version() -> str:
    """First line of `groff --version` ("no-groff" / "unknown" when it cannot be run)."""
    exe = shutil.which("groff")
    if exe is None:
        return "no-groff"
    try:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
        return r.stdout.splitlines()[0] if r.stdout else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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


def clean_lines(lines: Iterable[str], keep_indent: bool) -> str:
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
    return clean_lines(lines, keep_indent=False)


def _groff(data: bytes, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "GROFF_NO_SGR": "1"}
    return subprocess.run(GROFF_CMD, input=data, capture_output=True, timeout=timeout, env=env)


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
        out.append((None, "empty rendering") if first is None else (clean_lines(lines[first + 1 :], False), "ok"))
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


def render_man_pages(paths: list[str], workers: int) -> Iterator[tuple[str | None, str]]:
    """(text, status) per man page file, in order; `workers` groff runs at a time, `_BATCH` pages each."""
    # Threads only dispatch: the rendering runs in `groff` child processes, `workers` of them at a time.
    # (A thread pool avoids forking a parent that may already hold torch and its threads.)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        batches = [paths[i : i + _BATCH] for i in range(0, len(paths), _BATCH)]
        for batch in pool.map(_render_man_batch, batches):
            yield from batch
