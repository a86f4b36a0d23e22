"""A job's heartbeat: an MLflow tag refreshed by a daemon thread, so a job killed without a word shows as silent, and
a live job's run is never taken over by another."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from masksae.locks import holder_gone

HEARTBEAT_TAG = "heartbeat"
# locks.holder_id() of the process that sends the heartbeat (host, pid, random part).
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


def dead_reason(run: Any, job_id: str | None, job_state: str | None, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the job of a run that has not ended is dead, or None while it may be alive: its SLURM job ended; outside
    SLURM, its process on this host is gone (a requeued SLURM job's process is gone too, so SLURM decides there); its
    heartbeat is stale."""
    from masksae.launch import slurm

    if job_state in slurm.TERMINAL:
        return f"SLURM job {job_id} ended {job_state} without ending its MLflow run (killed or crashed before it could say so)"
    holder = run.data.tags.get(OWNER_TAG, "") if run is not None else ""
    if not job_id and holder and holder_gone(holder):
        return f"its process {holder} is gone without ending its MLflow run (killed or crashed before it could say so)"
    silent = silent_for(run) if run is not None else None
    if silent is not None and silent > stale_after_s:
        return f"no heartbeat for {silent:.0f} s (> {stale_after_s:.0f} s): job lost (SIGKILL, node failure)"
    return None


def live_holder(run: Any, this_slurm_job: str | None) -> str | None:
    """Who still holds a RUNNING run (a description for the refusal), or None when this process may take it over: it
    never sent a heartbeat, it is this very SLURM job's earlier attempt (a requeue), or its job is dead."""
    from masksae.launch import slurm

    silent = silent_for(run)
    job = run.data.tags.get("slurm_job_id")
    if silent is None or (job and job == this_slurm_job):
        return None
    if dead_reason(run, job, slurm.job_states([job]).get(job) if job else None) is not None:
        return None
    holder = run.data.tags.get(OWNER_TAG)
    return f"process {holder or '?'}{f' (SLURM job {job})' if job else ''}, heartbeat {silent:.0f} s ago"
