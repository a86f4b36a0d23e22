"""This process's memory: what it holds, what it may still use (machine or cgroup, whichever is tighter), and giving
freed memory back between a job's phases (training, then evals), so a capped job's resident memory follows what it
holds rather than what it once held."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


def resident_gb() -> float:
    """This process's resident memory (GB), from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096 / 1e9
    except OSError:
        return 0.0


def _cgroup_headroom() -> float | None:
    """Bytes this process's memory cgroup (v2 or v1, as SLURM sets them up) may still charge before its own limit or an
    ancestor's is reached; None where no limit applies."""
    headrooms = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root, limit_name, usage_name = Path("/sys/fs/cgroup"), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            root, limit_name, usage_name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        group = root / path.lstrip("/")
        for folder in [group, *group.parents]:
            try:
                limit, usage = (folder / limit_name).read_text().strip(), int((folder / usage_name).read_text())
            except (OSError, ValueError):
                continue
            if limit != "max" and int(limit) < 2**62:
                headrooms.append(float(int(limit) - usage))
            if folder == root:
                break
    return min(headrooms) if headrooms else None


def available_bytes() -> float:
    """Memory this process could still use: the machine's available memory, or its cgroup's headroom where smaller."""
    headroom = _cgroup_headroom()
    available = float(psutil.virtual_memory().available)
    return available if headroom is None else min(available, headroom)


def release_memory() -> None:
    """Collect reference cycles, then ask glibc to return the free parts of its heap (malloc_trim); elsewhere a no-op."""
    before = resident_gb()
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    log.info("memory released between phases: resident %.2f GB -> %.2f GB", before, resident_gb())
