"""The eval artifact store: built once, served as a mapping of its file while unchanged on disk, rebuilt when corrupt."""

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
    path = tmp_path / "evals" / "thing-2.safetensors"
    path.write_bytes(path.read_bytes()[:-100])  # truncated by a crash or a full disk
    rebuilt = store.cached_artifact(tmp_path, "thing-2", _builder(calls, 3.0))
    assert calls == [1, 1] and rebuilt[1] == {"value": 3.0}


def test_a_flipped_byte_in_an_artifact_is_caught_by_its_checksum(tmp_path: Path) -> None:
    calls: list[int] = []
    store.cached_artifact(tmp_path, "thing-3", _builder(calls, 1.0))
    store._RECENT.clear()
    path = tmp_path / "evals" / "thing-3.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF  # same size, one data byte changed
    path.unlink()  # (a new file: the one read before may still be mapped)
    path.write_bytes(bytes(blob))
    rebuilt = store.cached_artifact(tmp_path, "thing-3", _builder(calls, 4.0))
    assert calls == [1, 1] and rebuilt[1] == {"value": 4.0} and torch.equal(rebuilt[0]["x_N"], torch.full((1000,), 4.0))


def test_an_artifact_is_served_as_a_mapping_of_its_file_not_a_copy(tmp_path: Path) -> None:
    """Built or read, the tensors are views of the file's pages (page cache, reclaimable under a memory cap): a task
    set's activations are hundreds of MB, and a private copy of each made the capped run's evals run out of memory."""
    calls: list[int] = []
    built = store.cached_artifact(tmp_path, "thing-4", _builder(calls, 5.0))
    store._RECENT.clear()
    read = store.cached_artifact(tmp_path, "thing-4", _builder(calls, 6.0))
    path = str(tmp_path / "evals" / "thing-4.safetensors")
    maps = Path("/proc/self/maps").read_text()
    for tensors, _ in (built, read):
        start = tensors["x_N"].untyped_storage().data_ptr()
        mapped = [line for line in maps.splitlines() if line.endswith(path)]
        assert any(int(line.split("-")[0], 16) <= start < int(line.split()[0].split("-")[1], 16) for line in mapped), mapped
    assert calls == [1] and torch.equal(read[0]["x_N"], torch.full((1000,), 5.0))
