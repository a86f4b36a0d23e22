"""A job's heartbeat: an MLflow tag refreshed by a daemon thread, so a job killed without a word shows as silent, and
a live job's run is never taken over by another."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

HEARTBEAT_TAG = "heartbeat"
# host:pid of the process that sends the heartbeat.
OWNER_TAG = "heartbeat_owner"
# A run whose heartbeat is older than this (seconds) while MLflow says RUNNING is taken for dead.
STALE_AFTER_S = 600.0


@contextlib.contextmanager
def heartbeat(client: Any, run_id: str, every_s: float = 60.0) -> Iterator[None]:
    """Set the tag `heartbeat` (unix seconds) now and every `every_s` seconds until the block ends."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat must never break training
                client.set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.0f}")
            if stop.wait(every_s):
                return

    thread = threading.Thread(target=beat, name="masksae-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def silent_for(run: Any, now: float | None = None) -> float | None:
    """Seconds since the run's last heartbeat, or None when it never sent one."""
    value = run.data.tags.get(HEARTBEAT_TAG)
    return None if value is None else (now or time.time()) - float(value)


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def process_gone(holder: str) -> bool:
    """Whether `holder` (host:pid) names a process of this host that no longer runs."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def live_holder(run: Any, this_slurm_job: str | None, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Who still holds a RUNNING run (a description for the refusal), or None when this process may take it over:
    its heartbeat is stale or absent, its SLURM job is over or is this very job (a requeue), or, outside SLURM, its
    process on this host is gone."""
    from masksae.launch import slurm

    silent = silent_for(run)
    if silent is None or silent > stale_after_s:
        return None
    tags = run.data.tags
    job, holder = tags.get("slurm_job_id"), tags.get(OWNER_TAG, "")
    if job:  # SLURM decides: a requeued job's process is gone while the job is still to run again
        if job == this_slurm_job or slurm.job_states([job]).get(job) in slurm.TERMINAL:
            return None
    elif holder and process_gone(holder):
        return None
    where = f"process {holder}" if holder else "another process"
    return f"{where}{f' (SLURM job {job})' if job else ''}, heartbeat {silent:.0f} s ago"
