"""The eval artifact store: built once, kept in memory while unchanged on disk, rebuilt when corrupt."""

from __future__ import annotations

from pathlib import Path

import torch

from masksae.evals import store


def _builder(calls: list[int], value: float):
    def build() -> store.Artifact:
        calls.append(1)
        return {"x_N": torch.full((1000,), value)}, {"value": value}

    return build


def test_an_artifact_is_built_once_and_served_from_memory_while_unchanged(tmp_path: Path) -> None:
    calls: list[int] = []
    first = store.cached_artifact(tmp_path, "thing-1", _builder(calls, 1.0))
    second = store.cached_artifact(tmp_path, "thing-1", _builder(calls, 2.0))
    assert calls == [1] and second is first and second[1] == {"value": 1.0}
    store._RECENT.clear()  # a fresh process reads it from disk, checksummed
    third = store.cached_artifact(tmp_path, "thing-1", _builder(calls, 2.0))
    assert calls == [1] and torch.equal(third[0]["x_N"], first[0]["x_N"])


def test_a_corrupt_artifact_is_rebuilt_even_when_it_was_in_memory(tmp_path: Path) -> None:
    calls: list[int] = []
    store.cached_artifact(tmp_path, "thing-2", _builder(calls, 1.0))
    path = tmp_path / "evals" / "thing-2.bin"
    path.write_bytes(path.read_bytes()[:-100])  # truncated by a crash or a full disk
    rebuilt = store.cached_artifact(tmp_path, "thing-2", _builder(calls, 3.0))
    assert calls == [1, 1] and rebuilt[1] == {"value": 3.0}
