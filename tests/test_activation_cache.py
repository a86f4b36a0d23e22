"""Activation cache: one build under real racing processes, stale claims taken over (the new builder going on from the
dead one's shards), corrupt shards rebuilt, LRU eviction within the disk budget that spares leased and pinned caches,
and None (stream) when nothing fits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from masksae.activation_cache import ActivationCache
from masksae.activations import ActivationSpec
from masksae.locks import Lease, read_lease
from masksae.shards import ShardWriter

N_ROWS, D, CHUNK, SHARD_ROWS = 1000, 16, 50, 200
CACHE_BYTES = N_ROWS * (D * 4 + 1) + 4096  # what resources.cache_bytes would reserve


def spec(index: int = 0) -> ActivationSpec:
    return ActivationSpec("tiny", None, 1, "test", "train", N_ROWS, 10, 0.1 * index, 4, 0, "float32")


def synthetic(s: ActivationSpec) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(int(s.key(), 16) % 2**31)
    return torch.randn(N_ROWS, D, generator=generator), torch.rand(N_ROWS, generator=generator) < 0.1


def write_synthetic(s: ActivationSpec, writer: ShardWriter, pause: float = 0.0) -> None:
    """What an LLM pass would append: one chunk of CHUNK rows per 'sequence', from where the writer stands."""
    acts_ND, masked_N = synthetic(s)
    for sequence in range(writer.sequences_done, N_ROWS // CHUNK):
        time.sleep(pause)
        rows = slice(sequence * CHUNK, (sequence + 1) * CHUNK)
        writer.append(acts_ND[rows], masked_N[rows], sequence + 1)


def get(cache: ActivationCache, s: ActivationSpec, build, n_bytes: int = CACHE_BYTES):
    return cache.get_or_build(s, build, n_bytes, d_model=D, shard_rows=SHARD_ROWS)


def counting_build(cache_root: Path, s: ActivationSpec):
    log = cache_root / "builds.log"

    def build(writer: ShardWriter) -> None:
        with open(log, "a") as handle:
            handle.write(f"{s.key()} from {writer.sequences_done}\n")
        write_synthetic(s, writer)

    return build, log


RACER = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    from masksae.activation_cache import ActivationCache
    from tests.test_activation_cache import D, SHARD_ROWS, spec, write_synthetic
    root, pause = Path(sys.argv[1]), float(sys.argv[2])
    def build(writer):
        with open(root / "builds.log", "a") as handle:
            handle.write("build\\n")
        write_synthetic(spec(), writer, pause)  # a slow LLM pass: the others must wait, not build too
    got = ActivationCache(root, claim_ttl_s=float(sys.argv[3]), poll_s=0.1).get_or_build(spec(), build, 10**6, d_model=D, shard_rows=SHARD_ROWS)
    print(float(got.to_memory()[0].sum()))
""")


def _racers(root: Path, n: int, pause: float, ttl: float) -> list[subprocess.Popen]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return [subprocess.Popen([sys.executable, "-c", RACER, str(root), str(pause), str(ttl)], env=env, cwd=root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]


def test_racing_processes_build_once_and_all_read_the_same(tmp_path: Path) -> None:
    procs = _racers(tmp_path, 3, pause=0.08, ttl=30.0)
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    assert (tmp_path / "builds.log").read_text().count("build") == 1
    assert len({out.strip() for out, _ in outputs}) == 1
    assert float(synthetic(spec())[0].sum()) == pytest.approx(float(outputs[0][0]), rel=1e-6)


def test_sets_are_written_in_shards_and_read_back_exactly(tmp_path: Path) -> None:
    cache = ActivationCache(tmp_path)
    got = get(cache, spec(), counting_build(tmp_path, spec())[0])
    assert got.rows_per_shard == [SHARD_ROWS] * (N_ROWS // SHARD_ROWS)  # a shard closes at the first chunk boundary past SHARD_ROWS
    acts_ND, masked_N = got.to_memory()
    assert torch.equal(acts_ND, synthetic(spec())[0]) and torch.equal(masked_N, synthetic(spec())[1])
    rows = 2 * SHARD_ROWS + torch.tensor([0, 3, 199, 200, 411])  # within shard 2 and across into shard 3
    assert torch.equal(got.gather(rows), acts_ND[rows])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_sets_round_trip_through_the_shards_and_the_batches(tmp_path: Path, dtype: torch.dtype) -> None:
    from masksae.batching import CachedBlocks, ShuffledBatches
    from tests.activation_sets import sharded_set

    acts_ND = torch.randn(1000, D, generator=torch.Generator().manual_seed(0)).to(dtype)
    shards = sharded_set(tmp_path, acts_ND, shard_rows=300, chunk=100)
    assert shards.to_memory()[0].dtype == dtype and torch.equal(shards.to_memory()[0], acts_ND)
    (batch_BD,) = list(ShuffledBatches(CachedBlocks(shards, 1), 1000, 1000, 1, lambda: 0, seed=0, scale=1.0))
    assert batch_BD.dtype == torch.float32 and torch.equal(batch_BD.sort(0).values, acts_ND.float().sort(0).values)


def _resident_bytes(path: Path) -> int:
    """How much of the file is in the page cache (util-linux fincore)."""
    return int(subprocess.check_output(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)]))


def _evict(paths: list[Path]) -> None:
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(descriptor)
    assert all(_resident_bytes(path) == 0 for path in paths)


def test_a_buffer_reads_no_bytes_until_its_batches_are_taken_and_read_ahead_fetches_only_its_rows(tmp_path: Path) -> None:
    from masksae.batching import CachedBlocks
    from tests.activation_sets import sharded_set

    acts_ND = torch.randn(4000, 256, generator=torch.Generator().manual_seed(0))  # 4 shards of 1 MB: page-cache sized
    shards = sharded_set(tmp_path, acts_ND, shard_rows=1000, chunk=100)
    paths = [shards.folder / entry.file for entry in shards.entries]
    second_shard_R = torch.arange(1000, 2000)

    _evict(paths)
    rows = CachedBlocks(shards, 1).read(second_shard_R, 0, 1000)
    assert _resident_bytes(paths[1]) == 0  # reading a buffer names its rows; the bytes come batch by batch
    assert torch.equal(rows.take(torch.arange(500, 1000)), acts_ND[1500:2000])
    assert _resident_bytes(paths[1]) >= 500 * 256 * 4 and _resident_bytes(paths[2]) == 0
    del rows  # its mappings go with it (a mapped page cannot be evicted)

    _evict(paths)
    CachedBlocks(shards, 1, read_ahead=True).read(second_shard_R, 0, 1000)
    deadline = time.time() + 10
    while _resident_bytes(paths[1]) < 1000 * 256 * 4 and time.time() < deadline:  # the kernel reads asynchronously
        time.sleep(0.05)
    assert _resident_bytes(paths[1]) >= 1000 * 256 * 4
    assert [_resident_bytes(path) for path in (paths[0], paths[2], paths[3])] == [0, 0, 0]


def _mapped_bytes(path: Path) -> int:
    """How much of the file this process has mapped in its page tables (its mappings' Rss in /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0]:  # a mapping's header line: address range, perms, offset, dev, inode, path
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


def test_a_buffer_keeps_its_mappings_but_drops_their_page_table_entries_after_each_batch(tmp_path: Path) -> None:
    """A batch's rows lie all over the set: pages left mapped between batches would add up to most of the set in RSS
    (what a SLURM job's memory accounting samples), though they are only page cache."""
    from masksae.batching import CachedBlocks
    from tests.activation_sets import sharded_set

    acts_ND = torch.randn(4000, 256, generator=torch.Generator().manual_seed(0))
    shards = sharded_set(tmp_path, acts_ND, shard_rows=4000, chunk=100)
    path = shards.folder / shards.entries[0].file
    rows = CachedBlocks(shards, 1).read(torch.arange(4000), 0, 4000)
    for positions_B in torch.arange(4000).split(500)[:4]:
        assert torch.equal(rows.take(positions_B), acts_ND[positions_B])
        assert str(path) in Path("/proc/self/maps").read_text()  # mapped once for the buffer, not per batch
        assert _mapped_bytes(path) == 0


def test_a_killed_builder_is_taken_over_and_its_shards_are_kept(tmp_path: Path) -> None:
    (victim,) = _racers(tmp_path, 1, pause=0.3, ttl=1.0)
    progress = tmp_path / "activations" / f".staging-{spec().key()}" / "progress.json"
    deadline = time.time() + 60
    while victim.poll() is None and time.time() < deadline and len(json.loads(progress.read_text() if progress.exists() else "[]")) < 2:
        time.sleep(0.05)
    assert victim.poll() is None, victim.stderr.read()[-2000:]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    written = json.loads(progress.read_text())
    assert read_lease(tmp_path / "activations" / ".claims" / spec().key()) is not None  # still looks held, until stale
    build, log = counting_build(tmp_path, spec())
    started = time.time()
    got = ActivationCache(tmp_path, claim_ttl_s=1.0, poll_s=0.1).get_or_build(spec(), build, 10**6, d_model=D, shard_rows=SHARD_ROWS)
    assert torch.equal(got.to_memory()[0], synthetic(spec())[0]) and time.time() - started < 10
    assert log.read_text().splitlines() == ["build", f"{spec().key()} from {written[-1]['sequences_done']}"]  # went on, not from 0
    assert written[-1]["sequences_done"] >= 2 * SHARD_ROWS // CHUNK
    assert not list((tmp_path / "activations").glob(".staging-*"))


def test_a_live_claim_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "claim"
    with Lease.claim(path, ttl_s=0.4) as first:
        time.sleep(1.0)  # several ttl: the heartbeat keeps it live
        assert Lease.claim(path, ttl_s=0.4) is None and not first.lost
    second = Lease.claim(path, ttl_s=0.4)
    assert second is not None
    second.release()
    assert not path.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "missing_shard", "manifest", "no_manifest"])
def test_incomplete_or_corrupt_caches_are_detected_and_rebuilt(tmp_path: Path, damage: str) -> None:
    cache = ActivationCache(tmp_path, poll_s=0.05)
    build, log = counting_build(tmp_path, spec())
    first = get(cache, spec(), build).to_memory()[0]
    folder = cache.folder(spec())
    shard_file, manifest_file = folder / "shard-00003.safetensors", folder / "manifest.json"
    if damage == "truncate":
        shard_file.write_bytes(shard_file.read_bytes()[:1000])  # a crash mid-copy, a full disk
    elif damage == "flip":
        data = bytearray(shard_file.read_bytes())
        data[-5] ^= 0xFF  # silent corruption of one value
        shard_file.write_bytes(bytes(data))
    elif damage == "missing_shard":
        shard_file.unlink()
    elif damage == "manifest":
        manifest_file.write_text(manifest_file.read_text()[:40])
    else:
        manifest_file.unlink()  # shards written, manifest never: an interrupted writer
    assert cache.load(spec()) is None
    again = get(cache, spec(), build)
    assert torch.equal(again.to_memory()[0], first) and log.read_text().count(spec().key()) == 2
    assert torch.equal(cache.load(spec()).to_memory()[0], first)
    assert not list((tmp_path / "activations").glob(".staging-*"))


def test_an_abandoned_build_counts_against_the_budget_and_goes_first(tmp_path: Path) -> None:
    cache = ActivationCache(tmp_path, budget_bytes=int(2.5 * CACHE_BYTES), poll_s=0.05)
    get(cache, spec(0), counting_build(tmp_path, spec(0))[0])
    abandoned = cache.root / f".staging-{spec(7).key()}"
    abandoned.mkdir()
    (abandoned / "shard-00000.safetensors").write_bytes(b"x" * CACHE_BYTES)  # its builder died; no live claim
    assert cache.usage_bytes() >= 2 * CACHE_BYTES - 4096
    get(cache, spec(1), counting_build(tmp_path, spec(1))[0])
    assert not abandoned.exists() and {p.name for p in cache.complete_caches()} == {spec(0).key(), spec(1).key()}


def test_lru_eviction_keeps_the_budget_and_spares_leased_and_pinned_caches(tmp_path: Path) -> None:
    cache = ActivationCache(tmp_path, budget_bytes=int(2.5 * CACHE_BYTES), poll_s=0.05)
    for index in (0, 1):
        get(cache, spec(index), counting_build(tmp_path, spec(index))[0])
        time.sleep(0.05)
    cache.load(spec(0))  # 0 is now the most recently used: 1 goes first
    get(cache, spec(2), counting_build(tmp_path, spec(2))[0])
    assert {p.name for p in cache.complete_caches()} == {spec(0).key(), spec(2).key()}
    assert cache.usage_bytes() <= cache.budget_bytes
    pin = cache.lease(spec(0), holder="queued-job-17", ttl_s=3600)  # a queued job needs 0
    with cache.lease(spec(2)):  # a job is reading 2
        assert get(cache, spec(3), counting_build(tmp_path, spec(3))[0]) is None  # nothing may go: stream
        assert {p.name for p in cache.complete_caches()} == {spec(0).key(), spec(2).key()}
    get(cache, spec(3), counting_build(tmp_path, spec(3))[0])  # 2 is free now: evicted
    assert {p.name for p in cache.complete_caches()} == {spec(0).key(), spec(3).key()}
    pin.release()
    get(cache, spec(4), counting_build(tmp_path, spec(4))[0])
    assert {p.name for p in cache.complete_caches()} == {spec(3).key(), spec(4).key()}
    assert get(cache, spec(5), counting_build(tmp_path, spec(5))[0], 3 * CACHE_BYTES) is None  # larger than the budget


def test_lapsed_pins_and_live_build_reservations_count_right(tmp_path: Path) -> None:
    cache = ActivationCache(tmp_path, budget_bytes=int(2.5 * CACHE_BYTES), poll_s=0.05)
    get(cache, spec(0), counting_build(tmp_path, spec(0))[0])
    cache.lease(spec(0), holder="crashed-sweep", ttl_s=0.2)
    time.sleep(0.4)  # the pin lapses by itself
    with Lease.claim(cache.root / ".claims" / spec(9).key(), ttl_s=30, payload={"bytes": CACHE_BYTES}):
        assert cache.usage_bytes() >= 2 * CACHE_BYTES - 4096  # another job's build in progress is reserved
        get(cache, spec(1), counting_build(tmp_path, spec(1))[0])
    assert {p.name for p in cache.complete_caches()} == {spec(1).key()}
    assert json.loads((cache.folder(spec(1)) / "manifest.json").read_text())["n_rows"] == N_ROWS
