"""Giving freed memory back to the system between a job's phases (training, then evals), so a capped job's
resident memory follows what it holds rather than what it once held."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)


def resident_gb() -> float:
    """This process's resident memory (GB), from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096 / 1e9
    except OSError:
        return 0.0


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
