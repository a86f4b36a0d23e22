"""`python -m experiments.report sweep_id=...`: the sweep's table, plots and markdown from MLflow, logged to a parent run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from experiments import figures, report_page
from experiments.cli import or_exit
from experiments.runs import REPORT_TAG, SweepRun, experiment_id, load_sweep, search_all
from experiments.table import METRICS, Row, build_rows, by_setting, markdown_table, verdict, write_csv
from masksae.config import CONF_DIR
from masksae.errors import ConfigError
from masksae.tracking import REPO_ROOT, tracking_uri

MAX_DESCRIPTION = 8000  # MLflow's longest tag value; a longer report is cut (its page and markdown are whole)



@dataclass(frozen=True)
class Report:
    """Where the report was written and the MLflow run that holds it."""

    folder: Path
    markdown: Path
    parent_run_id: str
    rows: list[Row]


def validate(cfg: DictConfig) -> str:
    """The sweep id as a string; ConfigError for a missing or number-like id or a bad confidence level."""
    sweep_id = cfg.get("sweep_id")
    if not isinstance(sweep_id, str) or not sweep_id:
        raise ConfigError("sweep_id", sweep_id, "the sweep_id tag of a sweep's runs (quote ids that look like numbers: sweep_id=\"'0123'\")")
    confidence = cfg.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, float) or not 0 < confidence < 1:
        raise ConfigError("confidence", confidence, "a number in (0, 1), e.g. 0.95")
    return sweep_id


def _findings(rows: list[Row], confidence: float) -> list[str]:
    """Plain sentences for each paired row: which metrics moved (false-discovery-controlled), and which way."""
    lines = []
    for row in (r for r in rows if r.kind == "paired"):
        pairs = max(est.n for est in row.cells.values())
        if pairs < 2:
            lines.append(f"- p={row.mask_prob:g}: {pairs} pair(s) with the baseline: no interval, nothing can be concluded.")
            continue
        moved = [f"{m.header} {verdict(m, row.cells[m.key], confidence)} ({row.cells[m.key].cell()}, q={row.cells[m.key].q:.3f})"
                 for m in METRICS if verdict(m, row.cells[m.key], confidence)]
        lines.append(f"- p={row.mask_prob:g} vs p=0 ({pairs} pairs): " + ("; ".join(moved) if moved else
                     f"no metric differs from the baseline at a false discovery rate of {1 - confidence:.0%}."))
    return lines


def _notes(runs: list[SweepRun], notes: list[str]) -> list[str]:
    shas = sorted({run.git_sha for run in runs})
    out = list(notes)
    if len(shas) > 1:
        out.append(f"runs come from {len(shas)} code versions (git_sha): {', '.join(shas)}")
    if max(len(members) for rates in by_setting(runs).values() for members in rates.values()) < 2:
        out.append("one seed per grid point: means without confidence intervals, and no difference can be called")
    thin = [run for run in runs if run.metrics.get("absorption/enough_letters") == 0.0]
    if thin:
        out.append(f"{len(thin)} run(s) had too few letters pass the absorption probe gate (absorption/enough_letters = 0): "
                   "their absorption scores average few letters")
    return out


def render_markdown(sweep_id: str, experiment: str, runs: list[SweepRun], rows: list[Row], plots: Mapping[str, list[Path]],
                    notes: list[str], confidence: float) -> str:
    """The report: how to read it, notes, then per setting its table, findings and plot (blocks split by blank lines)."""
    parts = [
        f"# Masked regularization: sweep `{sweep_id}`",
        f"MLflow experiment `{experiment}`, {len(runs)} FINISHED training runs, {len({r.setting for r in runs})} setting(s).",
        "## How to read",
        "\n".join([
            f"- A cell is the mean over seeds and its {confidence:.0%} Student-t interval `[low, high]`; `(n=1)` is a single run "
            "(no interval); `n/a`: the metric was not logged (eval not run).",
            "- `Δ` rows: paired difference to mask_prob = 0 over runs sharing (`seed`, `data_seed`), tested with a paired t-test; "
            f"`*`: called moved, its Benjamini-Hochberg q-value (false discovery rate over all metrics and mask rates of the "
            f"setting, one test per metric) below {1 - confidence:.2g}. An interval that excludes 0 is not enough on its own: "
            "with ~9 metrics per mask rate, some would by chance.",
            "- Higher is better for absorption `1 - full`, sparse probing, OOD AUC, explained variance and CE loss recovered; lower is "
            "better for the raw absorption scores and the OOD gap to the dense probe (dense AUC - SAE AUC out of distribution).",
        ]),
    ]
    if notes:
        parts += ["## Notes", "\n".join(f"- {note}" for note in notes)]
    for setting in by_setting(runs):
        setting_rows = [row for row in rows if row.setting == setting]
        parts += [f"## {setting.label}", markdown_table(setting_rows, confidence), "\n".join(_findings(setting_rows, confidence))]
        parts += [f"![{setting.label}](plots/{path.name})" for path in plots.get(setting.label, [])]
    parts += ["## Matched sparsity (each metric against L0, one curve per mask_prob)"]
    parts += [f"![{title}](plots/{path.name})" for title, paths in plots.items() if title.startswith("L0:") for path in paths]
    return "\n\n".join(parts) + "\n"


def write_plots(runs: list[SweepRun], folder: Path, confidence: float) -> dict[str, list[Path]]:
    """Metric-vs-mask_prob per setting and metric-vs-L0 per (model, layer, architecture); PNG paths by title."""
    folder.mkdir(parents=True, exist_ok=True)
    plots: dict[str, list[Path]] = {}
    for setting, rates in by_setting(runs).items():
        plots[setting.label] = [figures.against_mask_prob(setting, rates, confidence, folder / f"mask_prob__{setting.slug}.png")]
    families = {(r.setting.model, r.setting.layer, r.setting.architecture) for r in runs}
    for model, layer, architecture in sorted(families):
        members = [r for r in runs if (r.setting.model, r.setting.layer, r.setting.architecture) == (model, layer, architecture)]
        title = f"L0: {model} L{layer} {architecture}"
        path = folder / f"l0__{model}_L{layer}_{architecture}.png"
        plots[title] = [figures.against_l0(members, title, confidence, path)]
    return plots


def log_parent_run(client: Any, experiment: str, sweep_id: str, folder: Path, runs: list[SweepRun]) -> str:
    """The sweep's report run (reused when the report is rebuilt): tags sweep_id and report=true, the report as artifacts,
    and each training run nested under it."""
    exp_id = experiment_id(client, experiment)
    existing = search_all(client, exp_id, f"tags.sweep_id = '{sweep_id}' and tags.{REPORT_TAG} = 'true'")
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run_id = client.create_run(exp_id, run_name=f"report-{sweep_id}", tags={"sweep_id": sweep_id, REPORT_TAG: "true"}).info.run_id
    client.set_tag(run_id, "n_runs", str(len(runs)))
    client.set_tag(run_id, "mlflow.note.content", report_page.description(folder / "report.md", "report")[:MAX_DESCRIPTION])
    client.log_artifacts(run_id, str(folder), artifact_path="report")
    for run in runs:
        client.set_tag(run.run_id, "mlflow.parentRunId", run_id)
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def build_report(cfg: DictConfig) -> Report:
    """Read the sweep, write table (CSV + markdown) and plots into the output folder, and log them to the parent run."""
    from mlflow import MlflowClient

    sweep_id = validate(cfg)
    confidence = float(cfg.confidence)
    experiment = str(cfg.tracking.experiment)
    client = MlflowClient(tracking_uri=tracking_uri(cfg.tracking.get("uri")))
    runs, notes = load_sweep(client, experiment, sweep_id)
    folder = Path(cfg.out) if cfg.get("out") else REPO_ROOT / "outputs" / "reports" / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    rows = build_rows(runs, confidence)
    write_csv(rows, folder / "table.csv")
    plots = write_plots(runs, folder / "plots", confidence)
    markdown = folder / "report.md"
    markdown.write_text(render_markdown(sweep_id, experiment, runs, rows, plots, _notes(runs, notes), confidence))
    report_page.write_page(markdown)
    return Report(folder, markdown, log_parent_run(client, experiment, sweep_id, folder, runs), rows)


@hydra.main(config_path=CONF_DIR, config_name="report", version_base="1.3")
def main(cfg: DictConfig) -> None:
    report = or_exit(lambda: build_report(cfg))
    print(f"[masksae] report: {report.markdown} (MLflow run {report.parent_run_id})")


if __name__ == "__main__":
    main()
