"""The sweep driver inside `python -m train -m`: plan the grid, launch what needs running, wait for SLURM, summarise."""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from masksae.launch import plan as plans
from masksae.launch import slurm
from masksae.launch.heartbeat import STALE_AFTER_S, dead_reason
from masksae.launch.memory import memory_problem
from masksae.launch.pins import pin_caches, unpin_caches
from masksae.launch.plan import Plan, Point
from masksae.errors import ConfigError, OfflineError
from masksae.summary import SweepRow, print_sweep_summary
from masksae.tracking import SWEEP_ID_ENV, run_key, tracking_uri

# Smallest allowed value of each resource under `launcher.`.
LAUNCHER_MINIMUM = {"gpus": 0, "cpus": 1, "mem_gb": 1, "time_min": 1, "parallel": 1}


class SweepFailed(RuntimeError):
    """Some runs of the sweep ended FAILED or KILLED (the summary says which)."""


class SubmissionRefused(RuntimeError):
    """The scheduler refused the job array: nothing was submitted."""


# Launchers whose jobs are separate processes, often on other nodes, all writing to the tracking store at once.
PARALLEL_LAUNCHERS = ("slurm", "submitit_local")


def task_config(full: DictConfig) -> DictConfig:
    """A composed sweep config without its `hydra` node: what the job's task function receives."""
    task = copy.deepcopy(full)
    with open_dict(task):
        task.pop("hydra", None)
    return task


def validate_launcher(cfg: DictConfig) -> None:
    """Resources under `launcher.` are integers with sensible minimums; ConfigError names the first bad one."""
    for name, low in LAUNCHER_MINIMUM.items():
        value = cfg.launcher.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"launcher.{name}", value, f"an integer >= {low}")


def launcher_kind(config: DictConfig) -> str:
    """'slurm', 'submitit_local' or 'basic', from the Hydra launcher's target class."""
    target = str(config.hydra.launcher.get("_target_", ""))
    return {"SlurmLauncher": "slurm", "LocalLauncher": "submitit_local"}.get(target.rsplit(".", 1)[-1], "basic")


def plan_path(cfg: DictConfig, sweep_id: str) -> Path:
    """<output root>/sweeps/<sweep_id>/plan.json: the newest launch's plan, read by `make sweep-status`."""
    from masksae.resources import run_dir

    return run_dir(cfg, "x").parent.parent / "sweeps" / sweep_id / "plan.json"


def build_plan(config: DictConfig, configs: list[DictConfig], jobs: Sequence[Sequence[str]]) -> Plan:
    """One Point per grid point with its run key, run name and checkpoint path."""
    from masksae.pipeline import describe
    from masksae.resources import run_dir

    first = configs[0]
    plan = Plan(sweep_id=os.environ.get(SWEEP_ID_ENV, ""), tracking_uri=tracking_uri(first.tracking.get("uri")),
                experiment=str(first.tracking.experiment), launcher=launcher_kind(config), sweep_dir=str(config.hydra.sweep.dir))
    for index, (cfg, job) in enumerate(zip(configs, jobs, strict=True)):
        key = run_key(cfg)
        plan.points.append(Point(index=index, overrides=list(job), run_key=key, name=describe(cfg), run_folder=str(run_dir(cfg, key)),
                                 checkpoint=str(run_dir(cfg, key) / "checkpoints" / "last.ckpt")))
    return plan


def classify(plan: Plan) -> None:
    """Decide each point's action from its newest MLflow run and checkpoint; runs whose job died silently end FAILED first."""
    client, experiment_id = plans.client_and_experiment(plan)
    runs = plans.refresh(plan, client, experiment_id)
    states = slurm.job_states([p.slurm_job_id for p in plan.points if p.status == "RUNNING" and p.slurm_job_id])
    for point in plan.points:
        if point.status == "RUNNING":
            reason = dead_reason(runs.get(point.run_key), point.slurm_job_id, states.get(point.slurm_job_id or ""), STALE_AFTER_S)
            if reason is None:
                point.action = plans.RUNNING
                continue
            plans.mark_failed(client, experiment_id, plan, point, reason)
        if point.status == "FINISHED":
            point.action = plans.SKIP
        else:
            point.action = plans.RESUME if point.resumable() else plans.RERUN if point.status else plans.NEW
        point.slurm_job_id, point.reason = None, None


def assign_jobs(plan: Plan, configs: list[DictConfig], pack_size: int, write: bool) -> list[list[str]]:
    """Number the points to run by job (`task`) and return each job's overrides. With pack_size > 1, up to that many
    points that differ only in `sae` share one job, which trains them from one activation stream (`+pack=<folder>`
    with their configs, written when `write`); a pack resumes from its own checkpoint."""
    from masksae.packing import group_by_pack_key, pack_dir, write_pack

    todo = [i for i, point in enumerate(plan.points) if point.action in plans.SUBMITTED]
    jobs: list[list[str]] = []
    for group in group_by_pack_key([configs[i] for i in todo], pack_size):
        members = [todo[g] for g in group]
        overrides = list(plan.points[members[0]].overrides)
        if len(members) > 1:
            member_cfgs = [configs[i] for i in members]
            folder = write_pack(member_cfgs) if write else pack_dir(member_cfgs[0], [plan.points[i].run_key for i in members])
            overrides.append(f"+pack='{folder}'")
            for i in members:
                plan.points[i].checkpoint = str(folder / "checkpoints" / "last.ckpt")
                if plan.points[i].resumable():
                    plan.points[i].action = plans.RESUME
        for i in members:
            plan.points[i].task = len(jobs)
        jobs.append(overrides)
    return jobs


def tracking_store_problem(launcher: str, cfg: DictConfig) -> ConfigError | None:
    """Jobs of a parallel launcher must not write to a sqlite file (many writers on a network file system corrupt it)
    unless `tracking.allow_sqlite` says so."""
    uri = tracking_uri(cfg.tracking.get("uri"))
    if launcher not in PARALLEL_LAUNCHERS or not uri.startswith("sqlite:") or cfg.tracking.get("allow_sqlite"):
        return None
    return ConfigError("tracking.uri", uri, f"an MLflow server for launcher={launcher} jobs, which write from many processes and "
                       "nodes at once (a sqlite file on a shared file system corrupts): start one with make mlflow-server and set "
                       "MLFLOW_TRACKING_URI=http://<host>:<port>, or accept the risk with tracking.allow_sqlite=true")


def slurm_check(cfg: DictConfig) -> tuple[list[str], str]:
    """Problems of the requested resources against sinfo, and one line on what the partition offers."""
    found = slurm.partitions()
    partition, problems = slurm.resource_problems(cfg.launcher, found)
    if not found:
        return [], "sinfo gave nothing here: resources not checked"
    if partition is None:
        return problems, "no partition to check against"
    limit = "no time limit" if partition.time_limit_min is None else f"time limit {partition.time_limit_min:.0f} min"
    return problems, (f"partition {partition.name}{' (default)' if partition.default else ''}: nodes with up to {partition.cpus} CPUs, "
                      f"{partition.mem_mb // 1024} GB, {partition.gpus} GPUs, {limit}")


def _launch(plan: Plan, launcher: Any, config: DictConfig, jobs: list[list[str]]) -> list[str]:
    """Launch the jobs as one array; returns the error of each job that failed in Python. SubmissionRefused when the
    scheduler took none of them (nothing to wait for)."""
    if not jobs:
        return []
    if plan.launcher == "submitit_local":  # slurm jobs get it from the launcher's `setup` lines
        os.environ["OMP_NUM_THREADS"] = str(config.hydra.launcher.get("cpus_per_task") or 1)
    errors: list[str] = []
    try:
        results = launcher.launch(jobs, initial_job_idx=0)
        errors = [str(r._return_value) for r in results if r.status.name == "FAILED"]
    except Exception as error:  # a job that died without a result (SLURM kill, OOM): the wait below names it
        if plan.launcher == "slurm" and not slurm.submitted_tasks(plan.submitit_root):
            raise SubmissionRefused(slurm.refusal_message(error)) from error
        print(f"[masksae] launcher: {type(error).__name__}: {str(error)[:500]}", file=sys.stderr)
        errors = [str(error)]
    if plan.launcher == "slurm":
        plans.wait(plan)
    else:
        plans.reconcile(plan)
    return errors


def _validate(configs: list[DictConfig], dry_run: bool) -> str | None:
    """Check every point before anything is submitted: a bad one stops the sweep with a one-line error (exit 2).
    A dry run only warns when a hub model is not reachable (returned), since it runs where the model may not be yet."""
    from masksae.cli import EXIT_BAD_INPUT
    from masksae.pipeline import validate_settings

    for cfg in configs:
        try:
            validate_launcher(cfg)
            validate_settings(cfg)
        except OfflineError as error:
            if dry_run:
                return str(error)
            print(f"error: {error}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    return None


def _print_sweep_table(plan: Plan) -> None:
    """Every grid point with its status and headline metrics, read back from MLflow."""
    client, experiment_id = plans.client_and_experiment(plan)
    runs = plans.newest_runs(client, experiment_id)
    rows = []
    for point in plan.points:
        run = runs.get(point.run_key)
        status = "skipped (finished before)" if point.action == plans.SKIP else point.status or "not started"
        rows.append(SweepRow(point.name, status, run.data.metrics if run is not None else {}))
    print_sweep_summary(plan.sweep_id, rows, plan.tracking_uri, experiment_id)


def validate_pack_size(pack_size: object) -> int:
    if isinstance(pack_size, bool) or not isinstance(pack_size, int) or pack_size < 1:
        raise ConfigError("hydra.sweeper.pack_size", pack_size, "an integer >= 1 (1: one SAE per job)")
    return pack_size


def run_sweep(config: DictConfig, jobs: Sequence[Sequence[str]], compose: Callable[[Sequence[str]], DictConfig],
              launcher: Any, dry_run: bool, pack_size: int = 1) -> list[Any]:
    """Plan every grid point, print or launch, wait, write the plan and print the summary; raise SweepFailed on failures."""
    from masksae.cli import EXIT_BAD_INPUT

    try:
        validate_pack_size(pack_size)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    configs = [task_config(compose(job)) for job in jobs]
    offline = _validate(configs, dry_run)
    plan = build_plan(config, configs, jobs)
    classify(plan)
    for point in plan.points:
        if point.action == plans.SKIP:
            print(f"[masksae] run {point.run_key} already FINISHED as MLflow run {point.run_id}: skipped", file=sys.stderr)
    job_overrides = assign_jobs(plan, configs, pack_size, write=not dry_run)
    store_problem = tracking_store_problem(plan.launcher, configs[0]) if job_overrides else None
    slurm_problems, offered = slurm_check(configs[0]) if plan.launcher == "slurm" and job_overrides else ([], "")
    if dry_run:
        from masksae.launch.estimate import report

        print(report(plan, configs, config.hydra.launcher))
        if offered:
            print(f"[dry run] SLURM (sinfo): {offered}: " + ("; ".join(f"ERROR {p}" for p in slurm_problems) or "the request fits"))
        for warning in (offline, store_problem):  # the memory check is in the report
            if warning:
                print(f"[dry run] WARNING: {warning}")
        return []
    if store_problem or slurm_problems:
        print(f"error: {store_problem or '; '.join(slurm_problems)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    memory = next(filter(None, map(memory_problem, configs)), None) if job_overrides and plan.launcher != "basic" else None
    if memory:
        print(f"[masksae] WARNING: {memory}", file=sys.stderr)
    path = plan_path(configs[0], plan.sweep_id)
    Path(plan.sweep_dir).mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, Path(plan.sweep_dir) / "multirun.yaml")
    plan.save(path)
    pins = pin_caches(plan, configs)
    try:
        errors = _launch(plan, launcher, config, job_overrides)
    except SubmissionRefused as refused:
        print(f"error: {refused}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    finally:
        unpin_caches(pins)
    plan.save(path)
    print(plans.summary_line(plan))
    _print_sweep_table(plan)
    for point in plan.points:
        if point.status in ("FAILED", "KILLED"):
            print(f"[masksae]   FAILED {point.name} (run key {point.run_key}, SLURM {point.slurm_job_id}): {point.reason}")
    if plans.summary(plan)["failed"]:
        raise SweepFailed(f"{plans.summary_line(plan)}; first error: {errors[0][:300] if errors else 'see above'}")
    return [plan]
