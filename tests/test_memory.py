"""What a job may still use: the machine's available memory, or its memory cgroup's headroom where that is tighter (a
SLURM job's cgroup decides whether a cached set is read ahead from disk)."""

from __future__ import annotations

import subprocess
import sys

import psutil

from bench.memcap import MemoryCgroup
from masksae.memory import available_bytes

PRINT_AVAILABLE = "from masksae.memory import available_bytes; print(available_bytes())"


def test_outside_a_limited_cgroup_the_machine_s_available_memory_counts() -> None:
    assert abs(available_bytes() - psutil.virtual_memory().available) < 0.1 * psutil.virtual_memory().available


def test_inside_a_limited_cgroup_its_headroom_counts() -> None:
    """A real cgroup (root and the memory controller: as on the CI machine; the test fails where it cannot make one)."""
    cgroup = MemoryCgroup(1_000_000_000)
    try:
        output = subprocess.run([sys.executable, "-c", PRINT_AVAILABLE], preexec_fn=cgroup.join, capture_output=True, text=True, check=True)
    finally:
        cgroup.remove()
    assert 0 < float(output.stdout) < 1_000_000_000
