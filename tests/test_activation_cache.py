"""Activation cache: one build under real racing processes, stale claims taken over, corrupt caches rebuilt, LRU
eviction within the disk budget that spares leased and pinned caches, and None (stream) when nothing fits."""

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
from masksae.activations import ActivationSet, ActivationSpec
from masksae.locks import Lease, read_lease

N_ROWS, D = 1000, 16
CACHE_BYTES = N_ROWS * (D * 4 + 1) + 4096  # what resources.cache_bytes would reserve


def spec(index: int = 0) -> ActivationSpec:
    return ActivationSpec("tiny", None, 1, "test", "train", N_ROWS, 10, 0.1 * index, 4, 0, "float32")


def synthetic(s: ActivationSpec) -> ActivationSet:
    generator = torch.Generator().manual_seed(int(s.key(), 16) % 2**31)
    return ActivationSet(torch.randn(N_ROWS, D, generator=generator), torch.rand(N_ROWS, generator=generator) < 0.1, s)


def counting_build(cache_root: Path, s: ActivationSpec):
    log = cache_root / "builds.log"

    def build() -> ActivationSet:
        with open(log, "a") as handle:
            handle.write(s.key() + "\n")
        return synthetic(s)

    return build, log


RACER = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    from masksae.activation_cache import ActivationCache
    from tests.test_activation_cache import spec, synthetic
    root, pause = Path(sys.argv[1]), float(sys.argv[2])
    def build():
        with open(root / "builds.log", "a") as handle:
            handle.write("build\\n")
        time.sleep(pause)  # a slow LLM pass: the others must wait, not build too
        return synthetic(spec())
    got = ActivationCache(root, claim_ttl_s=float(sys.argv[3]), poll_s=0.1).get_or_build(spec(), build, 10**6)
    print(float(got.acts_ND.sum()))
""")


def _racers(root: Path, n: int, pause: float, ttl: float) -> list[subprocess.Popen]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return [subprocess.Popen([sys.executable, "-c", RACER, str(root), str(pause), str(ttl)], env=env, cwd=root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]


def test_racing_processes_build_once_and_all_read_the_same(tmp_path: Path) -> None:
    procs = _racers(tmp_path, 3, pause=1.5, ttl=30.0)
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    assert (tmp_path / "builds.log").read_text().count("build") == 1
    assert len({out.strip() for out, _ in outputs}) == 1
    assert float(synthetic(spec()).acts_ND.sum()) == float(outputs[0][0])


def test_a_killed_builder_is_taken_over_after_its_claim_goes_stale(tmp_path: Path) -> None:
    (victim,) = _racers(tmp_path, 1, pause=600.0, ttl=1.0)
    claim = tmp_path / "activations" / ".claims" / spec().key()
    deadline = time.time() + 60
    while read_lease(claim) is None and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert read_lease(claim) is not None, victim.stderr.read()[-2000:] if victim.poll() is not None else "no claim"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    build, log = counting_build(tmp_path, spec())
    started = time.time()
    got = ActivationCache(tmp_path, claim_ttl_s=1.0, poll_s=0.1).get_or_build(spec(), build, 10**6)
    assert torch.equal(got.acts_ND, synthetic(spec()).acts_ND)
    assert log.read_text().count(spec().key()) == 1 and time.time() - started < 10


def test_a_live_claim_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "claim"
    with Lease.claim(path, ttl_s=0.4) as first:
        time.sleep(1.0)  # several ttl: the heartbeat keeps it live
        assert Lease.claim(path, ttl_s=0.4) is None and not first.lost
    second = Lease.claim(path, ttl_s=0.4)
    assert second is not None
    second.release()
    assert not path.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "no_manifest"])
def test_incomplete_or_corrupt_caches_are_detected_and_rebuilt(tmp_path: Path, damage: str) -> None:
    cache = ActivationCache(tmp_path, poll_s=0.05)
    build, log = counting_build(tmp_path, spec())
    first = cache.get_or_build(spec(), build, CACHE_BYTES)
    folder = cache.folder(spec())
    data_file, manifest_file = folder / "acts.safetensors", folder / "manifest.json"
    if damage == "truncate":
        data_file.write_bytes(data_file.read_bytes()[:1000])  # a crash mid-copy, a full disk
    elif damage == "flip":
        data = bytearray(data_file.read_bytes())
        data[-5] ^= 0xFF  # silent corruption of one float
        data_file.write_bytes(bytes(data))
    elif damage == "manifest":
        manifest_file.write_text(manifest_file.read_text()[:40])
    else:
        manifest_file.unlink()  # data written, manifest never: an interrupted writer
    (tmp_path / "activations" / f".staging-{spec().key()}-dead").mkdir()  # left by a crashed builder
    assert cache.load(spec()) is None
    again = cache.get_or_build(spec(), build, CACHE_BYTES)
    assert torch.equal(again.acts_ND, first.acts_ND) and log.read_text().count(spec().key()) == 2
    assert torch.equal(cache.load(spec()).acts_ND, first.acts_ND)
    assert not list((tmp_path / "activations").glob(".staging-*"))


def test_lru_eviction_keeps_the_budget_and_spares_leased_and_pinned_caches(tmp_path: Path) -> None:
    cache = ActivationCache(tmp_path, budget_bytes=int(2.5 * CACHE_BYTES), poll_s=0.05)
    for index in (0, 1):
        cache.get_or_build(spec(index), counting_build(tmp_path, spec(index))[0], CACHE_BYTES)
        time.sleep(0.05)
    cache.load(spec(0))  # 0 is now the most recently used: 1 goes first
    cache.get_or_build(spec(2), counting_build(tmp_path, spec(2))[0], CACHE_BYTES)
    assert {p.name for p in cache.complete_caches()} == {spec(0).key(), spec(2).key()}
    assert cache.usage_bytes() <= cache.budget_bytes
    pin = cache.lease(spec(0), holder="queued-job-17", ttl_s=3600)  # a queued job needs 0
    with cache.lease(spec(2)):  # a job is reading 2
        assert cache.get_or_build(spec(3), counting_build(tmp_path, spec(3))[0], CACHE_BYTES) is None  # nothing may go: stream
        assert {p.name for p in cache.complete_caches()} == {spec(0).key(), spec(2).key()}
    cache.get_or_build(spec(3), counting_build(tmp_path, spec(3))[0], CACHE_BYTES)  # 2 is free now: evicted
    assert {p.name for p in cache.complete_caches()} == {spec(0).key(), spec(3).key()}
    pin.release()
    cache.get_or_build(spec(4), counting_build(tmp_path, spec(4))[0], CACHE_BYTES)
    assert {p.name for p in cache.complete_caches()} == {spec(3).key(), spec(4).key()}
    assert cache.get_or_build(spec(5), counting_build(tmp_path, spec(5))[0], 3 * CACHE_BYTES) is None  # larger than the budget


def test_lapsed_pins_and_live_build_reservations_count_right(tmp_path: Path) -> None:
    cache = ActivationCache(tmp_path, budget_bytes=int(2.5 * CACHE_BYTES), poll_s=0.05)
    cache.get_or_build(spec(0), counting_build(tmp_path, spec(0))[0], CACHE_BYTES)
    cache.lease(spec(0), holder="crashed-sweep", ttl_s=0.2)
    time.sleep(0.4)  # the pin lapses by itself
    with Lease.claim(cache.root / ".claims" / spec(9).key(), ttl_s=30, payload={"bytes": CACHE_BYTES}):
        assert cache.usage_bytes() >= 2 * CACHE_BYTES - 4096  # another job's build in progress is reserved
        cache.get_or_build(spec(1), counting_build(tmp_path, spec(1))[0], CACHE_BYTES)
    assert {p.name for p in cache.complete_caches()} == {spec(1).key()}
    assert json.loads((cache.folder(spec(1)) / "manifest.json").read_text())["n_rows"] == N_ROWS
