"""MLflow tracking: run key, sweep id, git sha, flattened params, and runs that always end FINISHED or FAILED."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from masksae.errors import LiveRunError
from masksae.launch.heartbeat import OWNER_TAG, STALE_AFTER_S, heartbeat, live_holder
from masksae.locks import holder_id
from masksae.system_metrics import system_metrics
from masksae.ui_links import RUNS_VIEW_TAG, runs_view_state

REPO_ROOT = Path(__file__).resolve().parents[2]
# Config sections that do not change what a run computes: left out of the run key.
# `pack` only says which job trains the run.
NON_KEY_SECTIONS = ("paths", "launcher", "tracking", "eval", "hydra", "pack")
# Settings inside key sections that do not change what a run computes either.
NON_KEY_SETTINGS = (("activations", "cache_budget_gb"), ("activations", "shard_mb"), ("model", "params_m"), ("model", "vocab_size"))
SWEEP_ID_ENV = "MASKSAE_SWEEP_ID"


def digest(payload: object, length: int = 12) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:length]


def key_config(cfg: DictConfig, left_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """The resolved config that decides what a run computes (no paths, launcher, logging, eval or cache budget), with
    automatic settings filled in (a null learning rate keys as the value it resolves to)."""
    from masksae.auto_settings import with_auto_settings

    resolved = OmegaConf.to_container(with_auto_settings(cfg), resolve=True)
    for section, setting in NON_KEY_SETTINGS:
        resolved.get(section, {}).pop(setting, None)
    return {key: value for key, value in resolved.items() if key not in (*NON_KEY_SECTIONS, *left_out)}


def run_key(cfg: DictConfig) -> str:
    """Hash of key_config: equal configs share one MLflow run, checkpoints and export."""
    return digest(key_config(cfg))


def is_sweep_override(override: str) -> bool:
    """Overrides that shape the sweep (launcher and hydra settings excluded)."""
    key = override.lstrip("+~").split("=", 1)[0]
    return not (key.startswith("hydra") or key in ("launcher", "tracking.uri") or key.startswith("launcher."))


def sweep_id_from_argv(argv: list[str]) -> str:
    """Hash of the sorted sweep overrides of a command line (an `experiment=` preset is one of them)."""
    return digest(sorted(arg for arg in argv if "=" in arg and not arg.startswith("-") and is_sweep_override(arg)))


def ensure_sweep_id(argv: list[str]) -> str:
    """Set the sweep id for this launch in the environment (inherited by local and SLURM jobs) and return it."""
    if SWEEP_ID_ENV not in os.environ:
        os.environ[SWEEP_ID_ENV] = sweep_id_from_argv(argv)
    return os.environ[SWEEP_ID_ENV]


def git_sha() -> str:
    """Commit of the code that runs, with '-dirty' when the work tree has uncommitted changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {'sae.k': '64', ...}, the MLflow params."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def slurm_job_id() -> str | None:
    """This job's SLURM id as squeue/sacct show it: `<array>_<task>` for array tasks, else SLURM_JOB_ID."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


# MLflow 3's UI opens an experiment in its GenAI view (traces, evaluations) unless this tag names it a model-training one
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def tracking_uri(configured: str | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else the configured URI (`tracking.uri`), else sqlite:///<repo>/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or f"sqlite:///{REPO_ROOT / 'mlflow.db'}"


@dataclass
class TrackedRun:
    """An MLflow run that this process owns until it ends."""

    run_id: str
    resumed: bool
    experiment_id: str


def experiment_id_for(client: Any, name: str, uri: str) -> str:
    """The experiment's id, created if absent, set up for MLflow 3's UI: its kind a model-training one (see
    EXPERIMENT_KIND) and masksae's runs table stored as a shared view (ui_links.RUNS_VIEW_TAG)."""
    wanted = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, RUNS_VIEW_TAG: runs_view_state()}
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        artifact_location = (REPO_ROOT / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
        try:
            return client.create_experiment(name, artifact_location=artifact_location, tags=wanted)
        except Exception:  # another job created it first
            experiment = client.get_experiment_by_name(name)
    kind = experiment.tags.get(EXPERIMENT_KIND_TAG)
    if kind is not None and not kind.endswith("_inferred"):  # a kind a person chose stays; one the UI guessed does not
        del wanted[EXPERIMENT_KIND_TAG]
    for key, value in wanted.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def find_run(client: Any, experiment_id: str, key: str) -> Any | None:
    """The newest run carrying this run key, if any."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.run_key = '{key}'", order_by=["attribute.start_time DESC"], max_results=1)
    return runs[0] if runs else None


@dataclass
class PriorRun:
    """A run key's experiment and newest run, looked up once before a job opens (or refuses) it."""

    client: Any
    experiment_id: str
    previous: Any | None


def prior_run(cfg: DictConfig, key: str) -> PriorRun:
    from mlflow import MlflowClient

    uri = tracking_uri(cfg.tracking.get("uri"))
    client = MlflowClient(tracking_uri=uri)
    experiment_id = experiment_id_for(client, cfg.tracking.experiment, uri)
    return PriorRun(client, experiment_id, find_run(client, experiment_id, key))


def refuse_live_run(prior: PriorRun, key: str, run_name: str) -> None:
    """LiveRunError when the newest run of `key` is RUNNING in a job that is still alive (fresh heartbeat)."""
    previous = prior.previous
    if previous is None or previous.info.status != "RUNNING":
        return
    holder = live_holder(previous, slurm_job_id())
    if holder is not None:
        raise LiveRunError(
            f"run {key} ({run_name}, MLflow run {previous.info.run_id}) is being trained by {holder}: not taking it over; "
            f"wait for it to end or stop that job (if it died without a word, retry once its heartbeat is {STALE_AFTER_S:.0f} s old)")


@contextlib.contextmanager
def tracked_run(cfg: DictConfig, key: str, run_name: str, prior: PriorRun | None = None) -> Iterator[tuple[Any, TrackedRun] | None]:
    """Open (or re-open, for resume) the run of `key`; yields None when it already FINISHED; ends it FINISHED or FAILED.
    Refuses (LiveRunError) a run that a live job is training; `prior`: the prior_run lookup a caller already made and
    passed through refuse_live_run (a pack checks every member before it opens any)."""
    if prior is None:
        prior = prior_run(cfg, key)
        refuse_live_run(prior, key, run_name)
    client, experiment_id, previous = prior.client, prior.experiment_id, prior.previous
    if previous is not None and previous.info.status == "FINISHED" and cfg.tracking.skip_finished:
        print(f"[masksae] run {key} already FINISHED as MLflow run {previous.info.run_id}: skipped", file=sys.stderr)
        yield None
        return
    tags = {"run_key": key, "sweep_id": os.environ.get(SWEEP_ID_ENV, ""), "git_sha": git_sha(), OWNER_TAG: holder_id()}
    if slurm_job_id():
        tags["slurm_job_id"] = slurm_job_id()
    # a run is seen RUNNING only with its tags (who trains it, which SLURM job): watchers act on them
    if previous is not None and previous.info.status != "FINISHED":
        run_id, resumed = previous.info.run_id, True
        tags["resume_count"] = str(int(previous.data.tags.get("resume_count", "0")) + 1)
        set_tags(client, run_id, tags)
        if "error" in previous.data.tags:  # the interruption it resumes from is not this attempt's error
            client.delete_tag(run_id, "error")
        client.update_run(run_id, status="RUNNING")
    else:
        run_id, resumed = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id, False
    from mlflow.entities import Param

    if not resumed:
        params = flatten(OmegaConf.to_container(cfg, resolve=True))
        items = [Param(k, v[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):
            client.log_batch(run_id, params=items[start : start + 100])
    interval_s = cfg.tracking.get("system_metrics_interval_s")
    try:
        with heartbeat(client, run_id), system_metrics(run_id, tracking_uri(cfg.tracking.get("uri")), interval_s, resumed):
            yield client, TrackedRun(run_id=run_id, resumed=resumed, experiment_id=experiment_id)
    except BaseException as error:
        message = "".join(traceback.format_exception_only(type(error), error)).strip()
        client.set_tag(run_id, "error", message[:5000])
        interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))  # Lightning turns Ctrl-C into SystemExit
        client.set_terminated(run_id, status="KILLED" if interrupted else "FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")


def lightning_logger(journals: list[Any]) -> Any:
    """A Lightning logger that journals the metric `<i>/<name>` for run i as `<name>` (a pack trains one SAE per run);
    each MetricJournal sends to MLflow in the background. It never ends a run: Lightning's MLFlowLogger marks its run
    FINISHED when fit returns, before evals and export, so a job killed during evals would look like a success."""
    from lightning.pytorch.loggers import Logger

    class PackRunsLogger(Logger):
        @property
        def name(self) -> str:
            return "masksae"

        @property
        def version(self) -> str:
            return journals[0].run_id

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            return None  # tracked_run logs the resolved config as params

        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            by_run: dict[int, dict[str, float]] = {}
            for name, value in metrics.items():
                index, _, metric = name.partition("/")
                if index.isdigit() and metric:
                    by_run.setdefault(int(index), {})[metric] = value
            for index, values in by_run.items():
                journals[index].append(values, step or 0)

    return PackRunsLogger()


def log_metrics(client: Any, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Log a dict of final metrics in one batch request."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(name, float(value), now, step) for name, value in metrics.items()])


def latest_step(client: Any, run_id: str, keys: Iterable[str]) -> int:
    """The highest step at which the run logged any of these metrics (0 if none): values logged again at that step
    become what MLflow shows as the run's metrics (its latest value is the one of the highest step, then the newest)."""
    logged = set(client.get_run(run_id).data.metrics)
    return max((metric.step for key in keys if key in logged for metric in client.get_metric_history(run_id, key)), default=0)


def set_tags(client: Any, run_id: str, tags: Mapping[str, str]) -> None:
    """Set several tags in one request."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(key, value[:5000]) for key, value in tags.items()])


def log_eval_result(client: Any, run_id: str, result: Any, step: int) -> None:
    """Log an EvalResult: metrics in one batch, each table as a JSON artifact under evals/, and its tags."""
    log_metrics(client, run_id, result.metrics, step)
    for name, table in result.tables.items():
        client.log_dict(run_id, table, f"evals/{name}")
    if result.tags:
        set_tags(client, run_id, result.tags)
