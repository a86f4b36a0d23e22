"""Progress reports: log lines at every ~10% (or minute) without a terminal, a rich bar on one."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from masksae import progress as progress_module
from masksae.progress import ProgressReport, duration, progress


def test_without_a_terminal_a_line_every_tenth_with_time_left(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="masksae.progress"):
        assert list(progress(range(1000), 1000, "LLM activations", "batches")) == list(range(1000))
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 10, lines
    assert lines[0].startswith("LLM activations: 100/1000 batches (10%), ") and "left" in lines[0]
    assert lines[-1].startswith("LLM activations: 1000/1000 batches (100%), ") and lines[-1].endswith("done")


def test_a_line_once_a_minute_between_tenths(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    clock = iter(range(0, 10_000, 30))  # each call 30 s later
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    read: list[int] = []
    with caplog.at_level(logging.INFO, logger="masksae.progress"), ProgressReport("training", 1000, "steps", start=400) as report:
        for step in range(401, 405):
            report.update(step, lambda step=step: read.append(step) or "loss 0.5")
    assert read == [402, 404]  # the loss is read only for the lines printed
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["training: 402/1000 steps (40%), 1m00s, about 4h59m left, loss 0.5",
                     "training: 404/1000 steps (40%), 2m00s, about 4h58m left, loss 0.5"]  # resumed at 400: rate from there


def test_on_a_terminal_a_bar_and_no_log_lines(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(progress_module, "on_terminal", lambda: True)
    monkeypatch.setattr(progress_module, "Console", lambda **_: Console(file=screen, force_terminal=True, width=120))
    with caplog.at_level(logging.INFO, logger="masksae.progress"):
        assert sum(progress(range(50), 50, "task activations", "batches")) == sum(range(50))
    assert not caplog.records
    assert "task activations" in screen.getvalue() and "50/50" in screen.getvalue()


def test_durations_read_like_a_person_writes_them() -> None:
    assert [duration(s) for s in (7, 185, 7620, float("nan"))] == ["7s", "3m05s", "2h07m", "?"]
