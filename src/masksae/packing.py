"""Packs: grid points that differ only in their SAE settings, trained from one activation stream in one job."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from masksae.errors import ConfigError
from masksae.tracking import digest, key_config, run_key

# What members of a pack may differ in: the SAE (and `l0`, the sweep presets' sparsity shortcut that only `sae` reads).
# Everything else (model, layer, data, mask rate, seeds, training) is shared.
MEMBER_KEYS = ("sae", "l0")


def pack_key(cfg: DictConfig) -> str:
    """Hash of what a pack's members share: the run key's config without MEMBER_KEYS."""
    return digest(key_config(cfg, left_out=MEMBER_KEYS))


def group_by_pack_key(configs: Sequence[DictConfig], pack_size: int) -> list[list[int]]:
    """Indices of `configs` grouped by pack key in grid order, at most `pack_size` per group."""
    groups: dict[str, list[list[int]]] = {}
    for index, cfg in enumerate(configs):
        chunks = groups.setdefault(pack_key(cfg), [[]])
        if len(chunks[-1]) == pack_size:
            chunks.append([])
        chunks[-1].append(index)
    return sorted((chunk for chunks in groups.values() for chunk in chunks), key=lambda chunk: chunk[0])


def pack_dir(cfg: DictConfig, run_keys: Sequence[str]) -> Path:
    """<output root>/packs/<hash of the members' run keys>: member configs and the pack's checkpoints."""
    from masksae.resources import run_dir

    return run_dir(cfg, "x").parent.parent / "packs" / digest(sorted(run_keys))


def write_pack(configs: Sequence[DictConfig]) -> Path:
    """Save the members' (unresolved) configs as member-<i>.yaml in their pack folder; returns the folder."""
    folder = pack_dir(configs[0], [run_key(cfg) for cfg in configs])
    folder.mkdir(parents=True, exist_ok=True)
    for index, cfg in enumerate(configs):
        handle, staging = tempfile.mkstemp(dir=folder, suffix=".yaml.tmp")
        os.close(handle)
        OmegaConf.save(cfg, staging)
        os.replace(staging, folder / f"member-{index}.yaml")
    return folder


def pack_members(cfg: DictConfig) -> list[DictConfig]:
    """The configs a job trains: its pack's members when `pack` names a pack folder, else the job's own config."""
    folder = cfg.get("pack")
    if not folder:
        return [cfg]
    paths = sorted(Path(folder).glob("member-*.yaml"), key=lambda path: int(path.stem.split("-")[1]))
    if not paths:
        raise ConfigError("pack", folder, "a pack folder written by the sweeper (member-<i>.yaml files)")
    members = [OmegaConf.load(path) for path in paths]
    keys = {pack_key(member) for member in members}
    if len(keys) != 1:
        raise ConfigError("pack", folder, f"members that differ only in {' / '.join(MEMBER_KEYS)} (found {len(keys)} different shared configs)")
    return members
