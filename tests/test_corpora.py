"""Tests for masksae.corpora: stable splits, the offline English corpus cache, local files, HF streams offline."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from masksae.corpora import (
    SPLITS,
    Document,
    build_offline_corpus,
    corpus_fingerprint,
    iter_documents,
    split_of,
    validate_data_config,
)
from masksae.corpora import config, hf_stream, man_render, offline_english
from masksae.errors import ConfigError, OfflineError

REPO = Path(__file__).resolve().parents[1]
MAN_ROOT = Path("/usr/share/man")
MAN_DIRS = [MAN_ROOT / f"man{i}" for i in range(1, 9)]


def _english_man_reason() -> str | None:
    if shutil.which("groff") is None:
        return "groff is not installed, offline_english cannot render man pages"
    if not any(d.is_dir() and any(d.iterdir()) for d in MAN_DIRS):
        return f"no English man pages in {', '.join(map(str, MAN_DIRS))}"
    return None


needs_man = pytest.mark.skipif(_english_man_reason() is not None, reason=_english_man_reason() or "")


def small_offline_cfg(**over) -> dict:
    cfg = {"source": "offline_english", "name": "offline_small", "max_documents": 40, "include_pydoc": True}
    cfg.update(over)
    return cfg


def read_all(cfg, cache_root) -> dict[str, list[Document]]:
    return {s: list(iter_documents(cfg, s, cache_root)) for s in SPLITS}


# ------------------------------------------------------------------------------------------------ splits
def test_split_of_is_a_stable_sha1_bucket():
    for source in ("man1/ls.1", "pydoc/assert", "notes/a.txt#3", "x"):
        bucket = int.from_bytes(hashlib.sha1(source.encode()).digest()[:8], "big") % 100
        expected = "train" if bucket < 80 else "validation" if bucket < 90 else "probe_reserve"
        assert split_of(source) == expected == split_of(source)


def test_split_of_independent_of_python_hash_seed():
    code = "from masksae.corpora import split_of; print([split_of(f'doc{i}') for i in range(50)])"
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    assert outs.pop().strip() == str([split_of(f"doc{i}") for i in range(50)])


def test_split_of_is_roughly_80_10_10():
    n = 20_000
    counts = Counter(split_of(f"man{i % 8 + 1}/page{i}.{i % 8 + 1}") for i in range(n))
    assert set(counts) == set(SPLITS)
    for split, share in zip(SPLITS, (0.8, 0.1, 0.1)):
        assert abs(counts[split] / n - share) < 0.015, counts


# ------------------------------------------------------------------------------------ offline English
@needs_man
def test_offline_small_build_reuse_and_disjoint_splits(tmp_path):
    cfg = small_offline_cfg()
    validate_data_config(cfg)
    corpus_dir = build_offline_corpus(tmp_path, cfg)
    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    assert corpus_dir.parent == tmp_path / "corpora"
    assert corpus_dir.name == f"offline_small-{corpus_fingerprint(cfg)}"

    docs = read_all(cfg, tmp_path)
    again = json.loads((corpus_dir / "manifest.json").read_text())
    assert again["built_by"] == manifest["built_by"]  # reused, not rebuilt
    assert docs == read_all(cfg, tmp_path)  # deterministic

    sources = {s: [d.source for d in docs[s]] for s in SPLITS}
    for s in SPLITS:
        assert sources[s] == sorted(sources[s])
        assert all(split_of(src) == s for src in sources[s])
        assert len(docs[s]) == manifest["splits"][s]["documents"]
    assert not set(sources["train"]) & set(sources["validation"])
    assert not set(sources["train"]) & set(sources["probe_reserve"])
    assert not set(sources["validation"]) & set(sources["probe_reserve"])
    n_man = sum(src.startswith("man") for s in SPLITS for src in sources[s])
    assert 30 <= n_man <= 40  # max_documents caps rendered man pages (a few may be aliases/short)
    assert any(src.startswith("pydoc/") for s in SPLITS for src in sources[s])
    assert all(len(d.text) >= 200 for s in SPLITS for d in docs[s])


@needs_man
def test_offline_corrupt_cache_is_detected_and_rebuilt(tmp_path):
    cfg = small_offline_cfg(max_documents=20, include_pydoc=False)
    corpus_dir = build_offline_corpus(tmp_path, cfg)
    reference = read_all(cfg, tmp_path)
    train = corpus_dir / "train.jsonl"
    size = train.stat().st_size
    with open(train, "r+b") as f:  # a half-written file: truncated mid-record
        f.truncate(size // 2)
    assert read_all(cfg, tmp_path) == reference
    assert train.stat().st_size == size

    data = bytearray(train.read_bytes())  # same size, flipped bytes: the checksum catches it
    data[10:14] = b"XXXX"
    train.write_bytes(bytes(data))
    assert read_all(cfg, tmp_path) == reference

    (corpus_dir / "manifest.json").write_text("{not json")
    assert read_all(cfg, tmp_path) == reference
    (corpus_dir / "manifest.json").unlink()
    assert read_all(cfg, tmp_path) == reference
    assert json.loads((corpus_dir / "manifest.json").read_text())["splits"]["train"]["bytes"] == size


@needs_man
def test_offline_half_built_temp_files_are_ignored(tmp_path):
    cfg = small_offline_cfg(max_documents=20, include_pydoc=False)
    corpus_dir = tmp_path / "corpora" / f"{cfg['name']}-{corpus_fingerprint(cfg)}"
    corpus_dir.mkdir(parents=True)
    stale = corpus_dir / ".train.jsonl.tmp-99999-deadbeef"  # a builder that crashed before os.replace
    stale.write_text('{"source": "man1/half", "te')
    docs = read_all(cfg, tmp_path)
    assert not stale.exists()  # cleaned by the next builder, which held the lock
    assert all(d.source != "man1/half" for s in SPLITS for d in docs[s])

    built_by = json.loads((corpus_dir / "manifest.json").read_text())["built_by"]
    stale.write_text("garbage left by a builder that died just now")
    assert read_all(cfg, tmp_path) == docs
    assert json.loads((corpus_dir / "manifest.json").read_text())["built_by"] == built_by  # no rebuild


@needs_man
def test_offline_concurrent_builders_build_once(tmp_path):
    cfg = small_offline_cfg(max_documents=20, include_pydoc=False)
    code = (
        "import json, sys; from masksae.corpora import build_offline_corpus; "
        f"d = build_offline_corpus(sys.argv[1], {cfg!r}); "
        "m = json.loads((d / 'manifest.json').read_text()); print(json.dumps(m['built_by']))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    built = {o[0].strip() for o in outs}
    assert len(built) == 1  # both see the one build made under the lock
    assert read_all(cfg, tmp_path)["train"]


@needs_man
def test_batched_groff_rendering_equals_one_page_per_run():
    inv = [p for p in offline_english._man_inventory(config.with_defaults({"source": "offline_english", "name": "x"}))]
    raws = []
    for _, path, _ in inv[:: max(1, len(inv) // 400)]:
        raw, _ = man_render._load_page(path)
        if raw is not None and man_render._batchable(raw):
            raws.append(raw)
        if len(raws) == 24:
            break
    assert len(raws) >= 2
    together = man_render._render_together(raws)
    assert together is not None
    assert together == [man_render._render_raw(r) for r in raws]


@pytest.mark.parametrize(
    ("key", "value"),
    [("sections", [9]), ("sections", []), ("min_chars", None), ("max_per_family", 0), ("workers", 0),
     ("max_documents", -1)],
)
def test_offline_bad_keys_are_named(key, value):
    with pytest.raises(ConfigError) as e:
        validate_data_config(small_offline_cfg(**{key: value}))
    assert e.value.key == f"data.{key}" and e.value.value == value


def test_offline_missing_man_pages_names_the_paths(tmp_path):
    cfg = small_offline_cfg(man_root=str(tmp_path / "nothing"))
    with pytest.raises(ConfigError) as e:
        validate_data_config(cfg)
    assert e.value.key == "data.man_root"
    assert str(tmp_path / "nothing" / "man1") in str(e.value)


def test_offline_fingerprint_tracks_text_not_workers(tmp_path):
    if _english_man_reason():
        pytest.skip(_english_man_reason())
    base = corpus_fingerprint(small_offline_cfg())
    assert re.fullmatch(r"[0-9a-f]{12}", base)
    assert corpus_fingerprint(small_offline_cfg(workers=1, name="other")) == base
    assert corpus_fingerprint(small_offline_cfg(min_chars=100)) != base
    assert corpus_fingerprint(small_offline_cfg(max_documents=41)) != base
    assert corpus_fingerprint(small_offline_cfg(include_pydoc=False)) != base


def test_clean_man_text_drops_header_footer_and_collapses_spaces():
    rendered = (
        "LS(1)            User Commands            LS(1)\n\n\n\nNAME\n       ls  -  list   directory contents\n\n\n"
        "DESCRIPTION\n       List\tinformation.\n\nGNU coreutils 9.1     September 2022     LS(1)\n"
    )
    assert man_render.clean_man_text(rendered) == "NAME\nls - list directory contents\n\nDESCRIPTION\nList information."


@pytest.fixture(scope="session")
def full_offline(tmp_path_factory):
    reason = _english_man_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("offline_cache")
    cfg = OmegaConf.load(REPO / "conf" / "data" / "offline_english.yaml")
    t0 = time.monotonic()
    corpus_dir = build_offline_corpus(root, cfg)
    return root, cfg, corpus_dir, time.monotonic() - t0


@pytest.mark.slow
def test_offline_english_full_build(full_offline):
    root, cfg, corpus_dir, build_s = full_offline
    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    print(f"\nfull build {build_s:.1f} s: " + ", ".join(
        f"{s} {manifest['splits'][s]['documents']} docs / {manifest['splits'][s]['characters']:,} chars" for s in SPLITS
    ))
    t0 = time.monotonic()
    assert build_offline_corpus(root, cfg) == corpus_dir
    assert time.monotonic() - t0 < max(5.0, build_s / 4)  # reused

    docs = read_all(cfg, root)
    assert docs == read_all(cfg, root)
    sources = {s: {d.source for d in docs[s]} for s in SPLITS}
    assert not sources["train"] & sources["validation"]
    assert not (sources["train"] | sources["validation"]) & sources["probe_reserve"]
    assert sum(map(len, sources.values())) >= 500
    assert len(docs["validation"]) >= 30 and len(docs["probe_reserve"]) >= 30
    assert any(s.startswith("man1/") for s in sources["train"]) and any(s.startswith("pydoc/") for s in
                                                                         set().union(*sources.values()))
    words = Counter(w for d in docs["validation"] for w in re.findall(r"[a-z]+", d.text.lower()))
    for common in ("the", "and", "of", "to", "is", "file"):
        assert words[common] > 100, common
    man = [d for d in docs["validation"] if d.source.startswith("man")]
    assert all("\u2010" not in d.text and "  " not in d.text for d in man)  # no hyphenation breaks / runs
    assert not any(re.search(r"\(\d\)\s*$", d.text.splitlines()[-1]) for d in man[:50])  # footer dropped


# ----------------------------------------------------------------------------------------- local files
def write_local_files(root: Path) -> None:
    (root / "notes" / "deep").mkdir(parents=True)
    for i in range(60):
        (root / "notes" / f"note{i:02d}.txt").write_text(f"Note number {i}. The quick brown fox jumps.\n")
    (root / "notes" / "deep" / "readme.md").write_text("# Title\n\nSome markdown text.\n")
    (root / "notes" / "empty.txt").write_text("   \n")
    (root / "notes" / "skip.csv").write_text("a,b\n")
    lines = [json.dumps({"text": f"record {i}", "id": i}) for i in range(40)]
    (root / "recs.jsonl").write_text("\n".join(lines) + "\n")


def test_local_files_splits_and_sources(tmp_path):
    write_local_files(tmp_path)
    cfg = {"source": "local_files", "name": "local",
           "paths": [str(tmp_path / "notes" / "**" / "*"), str(tmp_path / "*.jsonl")], "text_field": "text"}
    validate_data_config(cfg)
    docs = read_all(cfg, tmp_path / "cache")
    assert docs == read_all(cfg, tmp_path / "cache")
    everything = [d for s in SPLITS for d in docs[s]]
    assert len(everything) == 60 + 1 + 40  # empty.txt and the .csv are skipped
    assert len({d.source for d in everything}) == len(everything)
    assert all(len(docs[s]) > 0 for s in SPLITS)
    assert {d.source for d in everything} >= {"notes/note00.txt", "notes/deep/readme.md", "recs.jsonl#1"}
    assert all(split_of(d.source) == s for s in SPLITS for d in docs[s])
    by_source = {d.source: d.text for d in everything}
    assert by_source["recs.jsonl#3"] == "record 2"
    assert by_source["notes/deep/readme.md"].startswith("# Title")

    capped = read_all({**cfg, "max_documents": 10}, tmp_path / "cache")
    assert sum(map(len, capped.values())) == 10

    fp = corpus_fingerprint(cfg)
    assert corpus_fingerprint(OmegaConf.create(cfg)) == fp
    (tmp_path / "notes" / "note07.txt").write_text("changed text, longer than before\n")
    assert corpus_fingerprint(cfg) != fp


def test_local_files_config_from_yaml(tmp_path):
    write_local_files(tmp_path)
    cfg = OmegaConf.load(REPO / "conf" / "data" / "local_files.yaml")
    with pytest.raises(ConfigError) as e:
        validate_data_config(cfg)
    assert e.value.key == "data.paths"
    cfg.paths = str(tmp_path / "notes" / "*.txt")
    validate_data_config(cfg)
    assert len(list(iter_documents(cfg, "train", tmp_path))) > 30


def test_local_files_validation_errors(tmp_path):
    write_local_files(tmp_path)
    pattern = str(tmp_path / "nowhere" / "*.txt")
    with pytest.raises(ConfigError) as e:
        validate_data_config({"source": "local_files", "name": "local", "paths": pattern})
    assert e.value.key == "data.paths" and pattern in str(e.value)

    with pytest.raises(ConfigError) as e:
        validate_data_config({"source": "local_files", "name": "local", "paths": str(tmp_path / "notes" / "*.csv")})
    assert e.value.key == "data.paths" and ".txt" in str(e.value)

    with pytest.raises(ConfigError) as e:
        validate_data_config({"source": "local_files", "name": "local", "paths": str(tmp_path / "*.jsonl"),
                              "text_field": "body"})
    assert e.value.key == "data.text_field" and "'body'" in str(e.value) and "id" in str(e.value)


def test_unknown_source_and_bad_keys():
    with pytest.raises(ConfigError) as e:
        validate_data_config({"source": "pile_offline", "name": "x"})
    assert e.value.key == "data.source" and e.value.value == "pile_offline"
    for allowed in ("offline_english", "hf_stream", "local_files"):
        assert allowed in str(e.value)
    with pytest.raises(ConfigError) as e:
        corpus_fingerprint({"source": "nope", "name": "x"})
    assert e.value.key == "data.source"
    with pytest.raises(ConfigError) as e:
        validate_data_config({"source": "hf_stream", "name": "x", "path": "a/b", "max_documents": 0})
    assert e.value.key == "data.max_documents"
    with pytest.raises(ConfigError) as e:
        validate_data_config({"source": "hf_stream", "name": "bad name!", "path": "a/b"})
    assert e.value.key == "data.name"
    with pytest.raises(ConfigError) as e:
        iter_documents({"source": "hf_stream", "name": "x", "path": "a/b"}, "test", Path("."))
    assert e.value.key == "split"


# ------------------------------------------------------------------------------------------- HF stream
def test_hf_stream_offline_raises_one_line_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = OmegaConf.load(REPO / "conf" / "data" / "hf_stream.yaml")
    cfg.cache_dir = str(tmp_path / "hf" / "datasets")
    validate_data_config(cfg)
    assert re.fullmatch(r"[0-9a-f]{12}", corpus_fingerprint(cfg))
    import datasets.config

    before = datasets.config.HF_HUB_OFFLINE
    t0 = time.monotonic()
    with pytest.raises(OfflineError) as e:
        iter_documents(cfg, "train", tmp_path)
    assert time.monotonic() - t0 < 30
    msg = str(e.value)
    assert "\n" not in msg
    assert "monology/pile-uncopyrighted" in msg and "make prefetch" in msg and "HF_HOME" in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no chained traceback
    assert datasets.config.HF_HUB_OFFLINE == before  # library flags restored


def test_hf_stream_splits_by_document_index():
    records = iter([{"text": f"doc {i}"} for i in range(300)] + [{"text": ""}])
    docs = list(hf_stream._hf_documents(records, "ds:default:train", "validation", False, "text", 200))
    assert docs and all(split_of(d.source) == "validation" for d in docs)
    assert all(int(d.source.rsplit(":", 1)[1]) < 200 for d in docs)
    assert docs[0].text == f"doc {docs[0].source.rsplit(':', 1)[1]}"
    with pytest.raises(ConfigError) as e:
        list(hf_stream._hf_documents(iter([{"content": "x"}]), "p", "train", True, "text", None))
    assert e.value.key == "data.text_field" and "content" in str(e.value)
