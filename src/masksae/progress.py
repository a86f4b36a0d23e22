"""Progress of anything a person waits on: a rich bar with rate and time left on a terminal; elsewhere (SLURM logs, CI)
a log line at every ~10% or once a minute, whichever comes first, never a carriage-return flood."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

Item = TypeVar("Item")
LOG_EVERY_S = 60.0
NOTE_EVERY_S = 0.5  # a bar's note (e.g. the loss) is refreshed at most this often
log = logging.getLogger("masksae.progress")


def on_terminal() -> bool:
    """Whether a person watches this process's stderr live (bars), rather than a log file (lines)."""
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`; `?` for nan (no rate yet)."""
    if seconds != seconds:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressReport:
    """How far along `total` a piece of work is, from `start` (work done before, e.g. by the run it resumes). Use as a
    context manager and call `update(done)`; on a terminal a bar on stderr, elsewhere log lines."""

    def __init__(self, what: str, total: int, unit: str = "items", start: int = 0, logger: logging.Logger | None = None) -> None:
        self.what, self.total, self.unit, self.start = what, max(total, 1), unit, start
        self.logger = logger or log
        self.started = self.last_time = self.last_note = time.perf_counter()
        self.last_tenth = start * 10 // self.total
        self.bar: Progress | None = None

    def __enter__(self) -> ProgressReport:
        if on_terminal():
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit),
                       TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
            self.bar = Progress(*columns, console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task(self.what, total=self.total, completed=self.start)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, done: int, note: str | Callable[[], str] = "") -> None:
        """`done` of `total` are done; `note` (e.g. the current loss) goes beside the description. A callable note is
        called only when it is shown (reading a loss on a GPU waits for the step: not every step)."""
        now = time.perf_counter()
        if self.bar is not None:
            if done < self.total and now - self.last_note < NOTE_EVERY_S:
                self.bar.update(self.task, completed=done)
                return
            self.last_note = now
            self.bar.update(self.task, completed=done, description=f"{self.what} {_text(note)}".rstrip())
            return
        tenth = done * 10 // self.total
        if done < self.total and tenth <= self.last_tenth and now - self.last_time < LOG_EVERY_S:
            return
        self.last_tenth, self.last_time = tenth, now
        elapsed = now - self.started
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        left = "done" if done >= self.total else f"about {duration((self.total - done) / rate if rate else float('nan'))} left"
        shown = _text(note)
        self.logger.info("%s: %d/%d %s (%d%%), %s, %s%s", self.what, done, self.total, self.unit, 100 * done // self.total,
                         duration(elapsed), left, f", {shown}" if shown else "")


def _text(note: str | Callable[[], str]) -> str:
    return note() if callable(note) else note


def progress(items: Iterable[Item], total: int, what: str, unit: str = "items", logger: logging.Logger | None = None) -> Iterator[Item]:
    """`items` as they come, showing how far along `total` they are."""
    with ProgressReport(what, total, unit, logger=logger) as report:
        for done, item in enumerate(items, start=1):
            yield item
            report.update(done)
