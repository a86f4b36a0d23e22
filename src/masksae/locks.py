"""Inter-process coordination on a shared filesystem: flock for local builds, and lease files (claims, pins) that
need no working file locks (NFS, Lustre): created with O_EXCL, kept alive by a heartbeat, taken over once stale."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` (created if needed) for the duration of the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def holder_id() -> str:
    """Who holds a lease (or a run): host, process and a random part (pids repeat across hosts and restarts)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    """Whether a process of this host runs (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_gone(holder: str) -> bool:
    """Whether a holder_id() names a process of this host that no longer runs (False for other hosts: unknowable)."""
    host_pid_random = holder.rsplit("-", 2)
    if len(host_pid_random) != 3 or host_pid_random[0] != socket.gethostname() or not host_pid_random[1].isdigit():
        return False
    return not pid_alive(int(host_pid_random[1]))


def read_lease(path: Path) -> dict[str, Any] | None:
    """The lease's content while it is live (its `expires` is in the future), else None.

    A file caught between its O_EXCL creation and its first write has no content yet: it counts as live for
    a grace period measured from its mtime."""
    try:
        text = path.read_text()
        modified = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        content = json.loads(text)
        expires = float(content["expires"])
    except (ValueError, KeyError, TypeError):
        content, expires = {}, modified + 60.0
    return content if expires > time.time() else None


class Lease:
    """A file that says "held by <token> until <expires>". While `refresh` is on, a daemon thread pushes the
    expiry forward every ttl/4, so a holder that dies leaves a lease that goes stale within `ttl_s`.

    Correctness never rests on a lease alone: what a lease guards is written by atomic rename, so a lost race
    costs duplicate work, never a torn result."""

    def __init__(self, path: Path, ttl_s: float, payload: dict[str, Any] | None = None, *, refresh: bool = True) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self.payload = dict(payload or {})
        self.token = holder_id()
        self.refresh = refresh
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> str:
        return json.dumps({**self.payload, "token": self.token, "expires": time.time() + self.ttl_s})

    def _write(self) -> None:
        """Replace the file's content atomically (readers see the old or the new expiry, never half)."""
        temporary = self.path.with_name(f".{self.path.name}.{self.token}.tmp")
        temporary.write_text(self._content())
        os.replace(temporary, self.path)

    @classmethod
    def claim(cls, path: Path, ttl_s: float, payload: dict[str, Any] | None = None) -> Lease | None:
        """Create the lease at `path` only if no live one is there (O_EXCL); a stale one is taken over."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lease = cls(path, ttl_s, payload)
        for _ in range(2):
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if read_lease(path) is not None or not _take_over_stale(path):
                    return None
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(lease._content())
            lease._start()
            return lease
        return None

    def hold(self) -> Lease:
        """Write a lease that any number of holders may have side by side (one file each), and keep it alive."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write()
        self._start()
        return self

    def _start(self) -> None:
        if self.refresh:
            self._thread = threading.Thread(target=self._heartbeat, name=f"lease-{self.path.name}", daemon=True)
            self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            current = read_lease(self.path)
            if current is None or current.get("token") != self.token:
                self.lost = True  # taken over after a stall longer than ttl_s: stop pretending to hold it
                return
            self._write()

    def release(self) -> None:
        """Stop the heartbeat and remove the file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = read_lease(self.path)
        if current is not None and current.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _take_over_stale(path: Path) -> bool:
    """Move a stale lease out of the way; only one of several racing takers wins the rename."""
    graveyard = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, graveyard)
    except FileNotFoundError:
        return True  # someone else removed it: try to create ours
    if read_lease(graveyard) is not None:  # it was refreshed between our read and the rename: put it back
        with contextlib.suppress(FileExistsError):
            os.link(graveyard, path)
        graveyard.unlink(missing_ok=True)
        return False
    graveyard.unlink(missing_ok=True)
    return True


def live_leases(folder: Path) -> list[dict[str, Any]]:
    """The live leases among the files of `folder`; stale ones are removed on the way."""
    if not folder.is_dir():
        return []
    live = []
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        content = read_lease(path)
        if content is None:
            path.unlink(missing_ok=True)
        else:
            live.append(content)
    return live
