"""A sweep's plan: each grid point's run key and MLflow run, what a launch does with it, failures nobody reported, the summary."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from masksae.launch import slurm
from masksae.launch.heartbeat import STALE_AFTER_S, dead_reason
from masksae.tracking import experiment_id_for

# What a launch does with a grid point.
SKIP, RUNNING, RESUME, RERUN, NEW = "skip", "running", "resume", "rerun", "new"
SUBMITTED = (RESUME, RERUN, NEW)
ENDED = ("FINISHED", "FAILED", "KILLED")


@dataclass
class Point:
    """One grid point of a sweep and what became of it."""

    index: int
    overrides: list[str]
    run_key: str
    name: str
    checkpoint: str
    action: str = NEW
    task: int | None = None
    slurm_job_id: str | None = None
    run_id: str | None = None
    status: str | None = None
    reason: str | None = None
    run_folder: str | None = None

    def resumable(self) -> bool:
        """Whether a job of this point continues earlier work: a checkpoint, or an SAE trained before its evals."""
        from masksae.checkpoints import TRAINED, has_checkpoint

        trained = self.run_folder is not None and (Path(self.run_folder) / TRAINED).is_file()
        return trained or has_checkpoint(Path(self.checkpoint).parent)


@dataclass
class Plan:
    """Every point of one launch, where its jobs were submitted, and the MLflow store they log to."""

    sweep_id: str
    tracking_uri: str
    experiment: str
    launcher: str
    sweep_dir: str
    points: list[Point] = field(default_factory=list)

    @property
    def submitit_root(self) -> Path:
        return Path(self.sweep_dir) / ".submitit"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Plan:
        raw = json.loads(path.read_text())
        return cls(**{**raw, "points": [Point(**p) for p in raw["points"]]})


def client_and_experiment(plan: Plan) -> tuple[Any, str]:
    """The MLflow client of the plan's store and its experiment id (created if missing)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=plan.tracking_uri)
    return client, experiment_id_for(client, plan.experiment, plan.tracking_uri)


def newest_runs(client: Any, experiment_id: str) -> dict[str, Any]:
    """{run key: newest run carrying it} over the whole experiment (paged)."""
    newest: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], order_by=["attribute.start_time DESC"], max_results=5000, page_token=token)
        for run in page:
            newest.setdefault(run.data.tags.get("run_key"), run)
        token = page.token
        if not token:
            return newest


def refresh(plan: Plan, client: Any, experiment_id: str) -> dict[str, Any]:
    """Fill each point's MLflow run and status and its SLURM job id; returns {run key: run}."""
    runs = newest_runs(client, experiment_id)
    tasks = slurm.submitted_tasks(plan.submitit_root) if plan.launcher == "slurm" else {}
    for point in plan.points:
        run = runs.get(point.run_key)
        point.run_id = run.info.run_id if run else None
        point.status = run.info.status if run else None
        if point.task is not None and point.task in tasks:
            point.slurm_job_id = tasks[point.task]
        elif run is not None and point.action != SKIP:
            point.slurm_job_id = run.data.tags.get("slurm_job_id") or point.slurm_job_id
    return runs


def mark_failed(client: Any, experiment_id: str, plan: Plan, point: Point, reason: str) -> None:
    """End the point's run FAILED with `reason` (creating the run when the job died before opening it)."""
    from mlflow.entities import RunTag

    if point.run_id is None:
        tags = {"run_key": point.run_key, "sweep_id": plan.sweep_id}
        point.run_id = client.create_run(experiment_id, run_name=point.name, tags=tags).info.run_id
    if point.slurm_job_id:
        client.log_batch(point.run_id, tags=[RunTag("slurm_job_id", point.slurm_job_id)])
    client.set_tag(point.run_id, "error", reason[:5000])
    client.set_terminated(point.run_id, status="FAILED")
    point.status, point.reason = "FAILED", reason
    print(f"[masksae] run {point.run_key} ({point.name}) marked FAILED: {reason}", file=sys.stderr)


def reconcile(plan: Plan, stale_after_s: float = STALE_AFTER_S) -> list[Point]:
    """Refresh the plan from MLflow and SLURM; end FAILED every run whose job died silently. Returns points still live."""
    client, experiment_id = client_and_experiment(plan)
    runs = refresh(plan, client, experiment_id)
    candidates = [p for p in plan.points if p.action != SKIP]
    states = slurm.job_states([p.slurm_job_id for p in candidates if p.slurm_job_id])
    still: list[Point] = []
    for point in candidates:
        state = states.get(point.slurm_job_id or "")
        job_over = state in slurm.TERMINAL or point.slurm_job_id is None
        if point.status in ENDED and job_over:  # a KILLED run whose job is requeued is not over
            continue
        reason = dead_reason(runs.get(point.run_key), point.slurm_job_id, states.get(point.slurm_job_id or ""), stale_after_s)
        if reason and point.status not in ENDED:
            mark_failed(client, experiment_id, plan, point, reason)
        else:
            still.append(point)
    for point in plan.points:
        if point.status in ("FAILED", "KILLED") and point.reason is None and point.run_key in runs:
            point.reason = runs[point.run_key].data.tags.get("error")
    return still


def wait(plan: Plan, poll_s: float = 5.0, stale_after_s: float = STALE_AFTER_S) -> None:
    """Block until every submitted point's run has ended, marking silent deaths FAILED on the way."""
    while [p for p in reconcile(plan, stale_after_s) if p.action in SUBMITTED]:
        time.sleep(poll_s)


def summary(plan: Plan) -> dict[str, int]:
    """Counts: finished (ran to the end now), skipped (FINISHED before), resumed, failed, and still running/pending."""
    counts = dict.fromkeys(("finished", "skipped", "resumed", "failed", "running"), 0)
    for point in plan.points:
        if point.action == SKIP:
            counts["skipped"] += 1
        elif point.status == "FINISHED":
            counts["resumed" if point.action == RESUME else "finished"] += 1
        elif point.status in ("FAILED", "KILLED"):
            counts["failed"] += 1
        else:
            counts["running"] += 1
    return counts


def summary_line(plan: Plan) -> str:
    counts = summary(plan)
    return f"[masksae] sweep {plan.sweep_id}: " + " / ".join(f"{n} {name}" for name, n in counts.items())
