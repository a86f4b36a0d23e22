"""Packing: which grid points share a job, and the member configs a packed job reads back."""

from __future__ import annotations

from pathlib import Path

import pytest
from masksae.config import compose_config
from masksae.errors import ConfigError
from masksae.packing import group_by_pack_key, pack_key, pack_members, write_pack
from masksae.tracking import run_key


def _cfg(tmp_path: Path, *overrides: str):
    return compose_config("train", [f"paths.output_dir={tmp_path}", *overrides])


def test_points_that_differ_only_in_the_sae_share_a_pack(tmp_path: Path) -> None:
    grid = [_cfg(tmp_path, f"mask_prob={p}", f"sae={a}") for p in (0, 0.1) for a in ("topk", "jumprelu", "batchtopk")]
    assert group_by_pack_key(grid, pack_size=8) == [[0, 1, 2], [3, 4, 5]]
    assert group_by_pack_key(grid, pack_size=2) == [[0, 1], [2], [3, 4], [5]]
    assert group_by_pack_key(grid, pack_size=1) == [[i] for i in range(6)]
    # a different SAE seed changes the batch order, so it cannot share the stream
    assert pack_key(_cfg(tmp_path, "seed=1")) != pack_key(_cfg(tmp_path, "seed=0"))
    assert pack_key(_cfg(tmp_path, "sae.k=32")) == pack_key(_cfg(tmp_path, "sae.k=64"))


def test_run_key_ignores_the_pack_and_the_cache_budget(tmp_path: Path) -> None:
    plain = _cfg(tmp_path)
    assert run_key(_cfg(tmp_path, "+pack=/somewhere")) == run_key(plain)
    assert run_key(_cfg(tmp_path, "activations.cache_budget_gb=0")) == run_key(plain)
    assert run_key(_cfg(tmp_path, "activations.train_tokens=1000")) != run_key(plain)


def test_a_pack_folder_round_trips_its_members(tmp_path: Path) -> None:
    members = [_cfg(tmp_path, f"sae={a}") for a in ("topk", "jumprelu")]
    folder = write_pack(members)
    job_cfg = _cfg(tmp_path, "sae=topk", f"+pack={folder}")
    loaded = pack_members(job_cfg)
    assert [run_key(cfg) for cfg in loaded] == [run_key(cfg) for cfg in members]
    assert pack_members(members[0]) == [members[0]]


def test_a_pack_with_members_that_differ_outside_the_sae_is_refused(tmp_path: Path) -> None:
    folder = write_pack([_cfg(tmp_path, "mask_prob=0"), _cfg(tmp_path, "mask_prob=0.1")])
    with pytest.raises(ConfigError, match="pack"):
        pack_members(_cfg(tmp_path, f"+pack={folder}"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="member-<i>.yaml"):
        pack_members(_cfg(tmp_path, f"+pack={empty}"))
