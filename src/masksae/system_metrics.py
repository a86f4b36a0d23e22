"""MLflow's system metrics (CPU, memory, disk, network; GPU utilisation and memory where NVML finds one) sampled into
a run while it is open: `system/*` in the run's charts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def system_metrics(run_id: str, uri: str, interval_s: float | None, resumed: bool) -> Iterator[None]:
    """Sample every `interval_s` seconds (None or 0: off) until the block ends; a resumed run continues its steps."""
    if not interval_s:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    # its start/stop lines are INFO; on a machine without NVML its GPU monitor's failure is a WARNING, not ours
    for name in ("mlflow.system_metrics.system_metrics_monitor", "mlflow.system_metrics.metrics.gpu_monitor"):
        logging.getLogger(name).setLevel(logging.ERROR)
    monitor = SystemMetricsMonitor(run_id, sampling_interval=float(interval_s), resume_logging=resumed, tracking_uri=uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
