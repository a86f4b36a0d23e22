"""What `python -m train` / `python -m evaluate` print at the end: each run's headline metrics as a table (with standard
errors where a metric has one) and where to look next: the MLflow run, the run folder, the inspection page."""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from masksae.tracking import REPO_ROOT
from masksae.ui_links import HEADLINE_METRICS, LOCAL_UI, experiment_link, run_link, ui_address

MAX_RUN_COLUMNS = 4  # more runs than this are shown a row each
SUITES = {"core": "core", "absorption": "absorption", "sparse_probing": "sparse probing", "ood": "OOD"}


@dataclass
class RunSummary:
    """One run as the end-of-run summary shows it."""

    name: str
    metrics: Mapping[str, float]
    run_id: str
    experiment_id: str
    folder: Path | None = None  # the run folder (training) or the evaluated SAE folder (sae_path=)


def console() -> Console:
    """Rich's console on stdout; without a terminal (SLURM logs, CI) plain text at least 140 columns wide."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=max(140, shutil.get_terminal_size().columns), no_color=True, highlight=False)


def value_with_se(metrics: Mapping[str, float], name: str) -> str:
    """`0.8123 ± 0.012` when the metric has a finite standard error (`<name>_se`), else the value alone; `-` if absent."""
    if name not in metrics:
        return "-"
    value, se = metrics[name], metrics.get(f"{name}_se", math.nan)
    return f"{value:.4g}" if math.isnan(se) else f"{value:.4g} ± {se:.2g}"


def headline_table(runs: Sequence[RunSummary], title: str) -> Table:
    """A row per headline metric that any run has (grouped by suite), a column per run."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("suite")
    table.add_column("metric")
    for run in runs:
        table.add_column(Text(run.name), justify="right", overflow="fold")  # Text: a name is never read as markup
    for name in HEADLINE_METRICS:
        if any(name in run.metrics for run in runs):
            suite, metric = name.split("/", 1)
            table.add_row(SUITES.get(suite, suite), metric, *(value_with_se(run.metrics, name) for run in runs))
    return table


def mlflow_pointer(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """Where to open a run (or the experiment) in the UI: its address when the store is a server, else how to serve it."""
    address = ui_address(tracking_uri)
    link = (lambda base: run_link(base, experiment_id, run_id) if run_id else experiment_link(base, experiment_id))
    if address is not None:
        return link(address)
    store = "" if tracking_uri == f"sqlite:///{REPO_ROOT / 'mlflow.db'}" else f" MLFLOW_STORE={tracking_uri}"
    return f"`make mlflow-ui{store}`, then {link(LOCAL_UI)}"


def where_to_look(run: RunSummary, tracking_uri: str) -> list[str]:
    """The run's MLflow page and the files a person opens first."""
    lines = [f"MLflow run {run.run_id}: {mlflow_pointer(tracking_uri, run.experiment_id, run.run_id)}"]
    if run.folder is not None:
        lines.append(f"folder: {run.folder}")
        for name, what in (("inspection.html", "inspection page"), ("training_curves.png", "training curves")):
            if (run.folder / name).exists():
                lines.append(f"{what}: {run.folder / name}")
    return lines


def print_run_summaries(runs: Sequence[RunSummary], tracking_uri: str, title: str) -> None:
    """The headline table of these runs, then where to look for each."""
    if not runs:
        return
    out = console()
    if len(runs) > MAX_RUN_COLUMNS:  # a row per run: 18 columns of folded names cannot be read
        out.print(sweep_table(title, [SweepRow(run.name, "done", run.metrics) for run in runs]))
    else:
        out.print(headline_table(runs, title))
    for run in runs:
        out.print(run.name if len(runs) > 1 else "Where to look:", style="bold", markup=False)
        for line in where_to_look(run, tracking_uri):
            out.print(f"  {line}", soft_wrap=True, markup=False)


SWEEP_COLUMNS = (
    ("L0", "core/l0"), ("EV", "core/explained_variance"), ("CE rec.", "core/ce_loss_recovered"),
    ("full abs.", "absorption/mean_full_absorption_score"), ("abs. frac.", "absorption/mean_absorption_fraction_score"),
    ("probe top-1", "sparse_probing/sae_top_1_test_accuracy"), ("OOD AUC", "ood/sae_auc_ood"),
)


@dataclass
class SweepRow:
    """One grid point of a sweep: its name, what became of it, and its run's metrics (empty when it has none)."""

    name: str
    status: str
    metrics: Mapping[str, float]


def sweep_table(title: str, rows: Sequence[SweepRow]) -> Table:
    """A row per grid point: its status and compact headline metrics (the columns no point has are left out)."""
    columns = [(label, name) for label, name in SWEEP_COLUMNS if any(name in row.metrics for row in rows)]
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("run", overflow="fold")
    table.add_column("status")
    for label, _ in columns:
        table.add_column(label, justify="right")
    for row in rows:
        table.add_row(Text(row.name), row.status, *(f"{row.metrics[name]:.4g}" if name in row.metrics else "-" for _, name in columns))
    return table


def print_sweep_summary(sweep_id: str, rows: Sequence[SweepRow], tracking_uri: str, experiment_id: str) -> None:
    """The sweep's table, then where its runs and its report are."""
    out = console()
    out.print(sweep_table(f"Sweep {sweep_id}", rows))
    out.print(f"All runs: {mlflow_pointer(tracking_uri, experiment_id)}", soft_wrap=True, markup=False)
    out.print(f"Report (tables with intervals, plots): make report SWEEP_ID={sweep_id}", soft_wrap=True, markup=False)
