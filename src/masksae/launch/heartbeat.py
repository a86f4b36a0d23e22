"""A job's heartbeat: an MLflow tag refreshed by a daemon thread, so a job killed without a word shows as silent."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

HEARTBEAT_TAG = "heartbeat"
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
