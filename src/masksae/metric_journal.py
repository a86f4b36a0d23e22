"""Training metrics journaled in the run folder and sent to MLflow by a background thread: an MLflow outage never stops
training, a killed job loses no metric, and a resumed job never logs a step twice."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from masksae.files import write_bytes_atomically

log = logging.getLogger(__name__)
BATCH_METRICS = 1000  # MLflow's limit per log_batch request
RETRY_MAX_S = 30.0


class MetricJournal:
    """The `train/*` and `val/*` metrics of one MLflow run, one JSON line per (step, metrics) in `path`.

    A line is written before it is sent; `<path>.sent` records how far the run has received it. A step whose metric is
    already in the journal is not written again: a resumed job recomputes the steps after its checkpoint with the same
    values (batches are a function of (seed, step)), so they are dropped rather than logged twice. Lines a killed job
    did not send are sent by the next job that opens the journal; MLflow stores an identical (key, step, timestamp,
    value) once, so a line sent twice across a crash is not duplicated either."""

    def __init__(self, path: Path, client: Any, run_id: str) -> None:
        self.path = path
        self.cursor_path = path.with_name(path.name + ".sent")
        self.client = client
        self.run_id = run_id
        self.last_step: dict[str, int] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sent = self._read_existing()
        self._writer = open(path, "a")
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self.outage_since: float | None = None
        self._thread = threading.Thread(target=self._send_loop, name=f"masksae-metrics-{run_id[:8]}", daemon=True)
        self._thread.start()

    def _read_existing(self) -> int:
        """Load the last step of each metric from the journal; return the byte offset MLflow has received (0 when the
        cursor is missing, torn or for another run). A torn last line (a kill mid-write) is cut off."""
        offset, good_end = 0, 0
        if self.path.exists():
            with open(self.path, "rb") as handle:
                for raw in handle:
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        break
                    if not raw.endswith(b"\n"):
                        break
                    for name in entry["metrics"]:
                        self.last_step[name] = max(self.last_step.get(name, -1), int(entry["step"]))
                    good_end += len(raw)
            if good_end < self.path.stat().st_size:
                os.truncate(self.path, good_end)
        try:
            cursor = json.loads(self.cursor_path.read_text())
            if cursor["run_id"] == self.run_id:
                offset = min(int(cursor["offset"]), good_end)
        except (OSError, ValueError, KeyError, TypeError):
            offset = 0
        return offset

    def append(self, metrics: Mapping[str, float], step: int) -> None:
        """Journal the metrics of `step` that the journal does not hold yet, and wake the sender."""
        fresh = {name: float(value) for name, value in metrics.items() if step > self.last_step.get(name, -1)}
        if not fresh:
            return
        line = json.dumps({"step": int(step), "timestamp": int(time.time() * 1000), "metrics": fresh}) + "\n"
        with self._lock:
            self._writer.write(line)
            self._writer.flush()
        for name in fresh:
            self.last_step[name] = int(step)
        self._wake.set()

    def _pending(self) -> tuple[list[Any], int]:
        """Up to BATCH_METRICS unsent metrics (whole lines) and the offset after them."""
        from mlflow.entities import Metric

        metrics: list[Any] = []
        end = self._sent
        with open(self.path, "rb") as handle:
            handle.seek(self._sent)
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                entry = json.loads(raw)
                if metrics and len(metrics) + len(entry["metrics"]) > BATCH_METRICS:
                    break
                metrics += [Metric(name, value, entry["timestamp"], entry["step"]) for name, value in entry["metrics"].items()]
                end += len(raw)
        return metrics, end

    def _send_once(self) -> bool:
        """Send what is pending; True when nothing is left."""
        metrics, end = self._pending()
        if not metrics:
            return True
        self.client.log_batch(self.run_id, metrics=metrics)
        self._sent = end
        write_bytes_atomically(self.cursor_path, json.dumps({"run_id": self.run_id, "offset": end}).encode())
        return False

    def _send_loop(self) -> None:
        delay = 1.0
        while True:
            try:
                while not self._send_once():
                    pass
                if self.outage_since is not None:
                    log.warning("MLflow reachable again after %.0f s: queued metrics of run %s sent", time.time() - self.outage_since, self.run_id)
                self.outage_since, delay = None, 1.0
            except Exception as error:  # the server is down, restarting or refusing: keep the lines, retry later
                if self.outage_since is None:
                    self.outage_since = time.time()
                    log.warning("MLflow unreachable (%s: %s): training goes on, metrics wait in %s", type(error).__name__,
                                str(error).splitlines()[0][:200] if str(error) else "", self.path)
                if self._closing.wait(delay):
                    return
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if self._closing.is_set():
                return
            self._wake.wait(5.0)
            self._wake.clear()

    def unsent(self) -> int:
        """Bytes of journal that MLflow has not received."""
        return self.path.stat().st_size - self._sent

    def close(self, timeout_s: float) -> int:
        """Send what is left (retrying for up to `timeout_s`), stop the sender and return the bytes still unsent (they
        stay in the journal for the next job of this run)."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while self.unsent() and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.1)
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout=max(0.0, min(10.0, deadline - time.monotonic())))
        self._writer.close()
        return self.unsent()
