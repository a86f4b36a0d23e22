"""The sweep report from a real tiny sweep (conftest: 4 smoke runs through the pipeline into a real MLflow store): table,
CIs, paired rows, PNG plots, HTML page, parent run; and each run's inspection page."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from experiments.report import build_report, render_markdown
from experiments.runs import load_sweep
from experiments.table import build_rows
from masksae.config import compose_config
from masksae.errors import ConfigError
from tests.experiments.conftest import EXPERIMENT, SWEEP_ID, report_cfg
from tests.parts import import_or_missing

pytestmark = pytest.mark.slow

EV = "core/explained_variance"


def _csv_row(rows: list[dict[str, str]], mask_prob: str, kind: str, metric: str) -> dict[str, str]:
    [row] = [r for r in rows if r["mask_prob"] == mask_prob and r["kind"] == kind and r["metric"] == metric]
    return row


def test_report_cli_builds_table_plots_and_parent_run(sweep, session_env, repo_root, mlflow_uri, tmp_path) -> None:
    out = tmp_path / "report"
    command = [sys.executable, "-m", "experiments.report", f"sweep_id={SWEEP_ID}", f"tracking.uri={mlflow_uri}",
               f"tracking.experiment={EXPERIMENT}", f"out={out}"]
    done = subprocess.run(command, cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    markdown = (out / "report.md").read_text()
    assert "## gemma3-270m L6 topk k=16 d_sae=1024" in markdown
    for line in ("| p=0 | 2 |", "| p=0.2 | 2 |", "| Δ p=0.2 − p=0 | 2 |"):
        assert line in markdown
    p0_line = next(line for line in markdown.splitlines() if line.startswith("| p=0 |"))
    cells = [cell.strip() for cell in p0_line.strip("|").split("|")]
    assert "n/a" in cells  # sparse probing and OOD were not run: shown, not crashed
    assert sum("[" in cell and "]" in cell for cell in cells) >= 5  # absorption x3, EV, CE recovered, L0 carry intervals

    rows = list(csv.DictReader((out / "table.csv").open()))
    mean = _csv_row(rows, "0.0", "mean", EV)
    assert mean["n"] == "2" and float(mean["ci_low"]) <= float(mean["mean"]) <= float(mean["ci_high"])
    runs = sweep.search_runs([sweep.get_experiment_by_name(EXPERIMENT).experiment_id], f"tags.sweep_id = '{SWEEP_ID}'")
    by_point = {(r.data.params["mask_prob"], r.data.params["seed"]): r for r in runs if r.data.tags.get("report") != "true"}
    assert len(by_point) == 4
    expected = sum(by_point[("0.2", s)].data.metrics[EV] - by_point[("0", s)].data.metrics[EV] for s in ("0", "1")) / 2
    paired = _csv_row(rows, "0.2", "paired", EV)
    assert paired["n"] == "2" and float(paired["mean"]) == pytest.approx(expected, abs=1e-12)
    assert float(paired["ci_low"]) < float(paired["mean"]) < float(paired["ci_high"])
    assert _csv_row(rows, "0.2", "paired", "sparse_probing/sae_top_1_test_accuracy")["n"] == "0"

    plots = sorted((out / "plots").glob("*.png"))
    assert [p.name.split("__")[0] for p in plots] == ["l0", "mask_prob"]
    for plot in plots:
        with Image.open(plot) as image:
            image.load()
            assert image.format == "PNG" and image.width > 300 and image.height > 200
        assert f"(plots/{plot.name})" in markdown

    [parent] = [r for r in runs if r.data.tags.get("report") == "true"]
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_id"] == SWEEP_ID
    logged = {a.path for a in sweep.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/table.csv", "report/plots"} <= logged
    page = (out / "report.html").read_text()
    assert page.count("<table>") == markdown.count("## gemma3") and page.count('src="data:image/png;base64,') == len(plots)
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("# Masked regularization") and "open `report/report.html` under Artifacts" in note and "](plots/" not in note
    assert len(sweep.list_artifacts(parent.info.run_id, "report/plots")) == 2
    assert {r.data.tags.get("mlflow.parentRunId") for r in by_point.values()} == {parent.info.run_id}

    rebuilt = build_report(report_cfg(mlflow_uri, tmp_path / "again"))  # same sweep: the parent run is reused
    assert rebuilt.parent_run_id == parent.info.run_id
    assert len([r for r in sweep.search_runs([parent.info.experiment_id], "tags.report = 'true'")]) == 1


def test_bad_sweep_ids_fail_before_any_work(sweep, mlflow_uri, tmp_path) -> None:
    with pytest.raises(ConfigError, match="sweep_id='nosuchsweep'"):
        build_report(report_cfg(mlflow_uri, tmp_path / "r", "nosuchsweep"))
    with pytest.raises(ConfigError, match="quote ids that look like numbers"):
        build_report(report_cfg(mlflow_uri, tmp_path / "r", 123))
    assert not (tmp_path / "r").exists()


def test_single_seed_gives_means_without_intervals(sweep) -> None:
    runs, notes = load_sweep(sweep, EXPERIMENT, SWEEP_ID)
    one_seed = [run for run in runs if run.seed == 0]
    rows = build_rows(one_seed, 0.95)
    assert [(row.mask_prob, row.kind) for row in rows] == [(0.0, "mean"), (0.2, "mean"), (0.2, "paired")]
    assert all(est.n <= 1 and not est.has_interval for row in rows for est in row.cells.values())
    assert rows[2].cells[EV].cell().endswith("(n=1)")
    markdown = render_markdown(SWEEP_ID, EXPERIMENT, one_seed, rows, {}, [], 0.95)
    assert "1 pair(s) with the baseline: no interval, nothing can be concluded" in markdown
    assert " *" not in markdown


def test_every_run_logs_an_inspection_page_with_its_absorbed_words(sweep, test_cache, mlflow_uri, tmp_path) -> None:
    from experiments.inspect import inspect_run

    runs, _ = load_sweep(sweep, EXPERIMENT, SWEEP_ID)
    with tempfile.TemporaryDirectory() as scratch:
        for run in runs:
            assert "inspection.html" in {a.path for a in sweep.list_artifacts(run.run_id)}
        page = Path(sweep.download_artifacts(runs[0].run_id, "inspection.html", scratch)).read_text()
        letters = json.loads(Path(sweep.download_artifacts(runs[0].run_id, "evals/absorption_per_letter.json", scratch)).read_text())
    assert page.startswith("<!doctype html>") and page.count('class="card"') >= 12
    assert page.count('class="ctx"') >= 12  # sampled latents fire: each shows held-out contexts
    absorbed = [(letter["letter"], example) for letter in letters for example in letter["absorbed"]]
    words_by_latent = Counter(example["absorbing_latent"] for _, example in absorbed)
    most = sorted(words_by_latent, key=lambda latent: (-words_by_latent[latent], latent))[: compose_config("train").eval.inspection.absorbing_latents]
    for latent in most:  # the latents that absorb the most words have cards, linked from their words
        assert f'href="#latent-{latent}"' in page and f'id="latent-{latent}"' in page
    for latent in set(re.findall(r'href="#latent-(\d+)"', page)):  # and no link leads nowhere
        assert f'id="latent-{latent}"' in page
    if not absorbed:
        assert "No test word was fully absorbed." in page
    overrides = [f"paths.cache_dir={test_cache}", f"tracking.uri={mlflow_uri}", f"out={tmp_path / 'page.html'}"]
    again = inspect_run(compose_config("inspect", [f"run_id={runs[0].run_id}", *overrides]))
    assert again.read_text().count('class="card"') >= 12
    with pytest.raises(ConfigError, match="run_id"):
        inspect_run(compose_config("inspect", ["run_id=abc0123", *overrides]))


def test_a_trained_runs_sae_artifact_loads_in_saelens_and_matches_on_real_residuals(sweep, mlflow_uri) -> None:
    sae_lens = import_or_missing("sae_lens", "sae-lens is the optional extra: pip install -e '.[saelens]'")
    import torch

    from masksae import api

    runs, _ = load_sweep(sweep, EXPERIMENT, SWEEP_ID)
    run = runs[-1]  # mask_prob 0.2
    acts_ND = api.residuals(["The Eiffel Tower is in Paris.", "grep -r pattern src/ | sort -u"], run=run.run_id, tracking_uri=mlflow_uri)
    ours = api.load_sae(run.run_id, tracking_uri=mlflow_uri)
    with tempfile.TemporaryDirectory() as scratch:
        theirs = sae_lens.SAE.load_from_disk(sweep.download_artifacts(run.run_id, "sae", scratch))
    assert theirs.cfg.metadata.mask_prob == 0.2 and theirs.cfg.metadata.hook_name == "blocks.6.hook_resid_post"
    assert theirs.cfg.metadata.run_key == sweep.get_run(run.run_id).data.tags["run_key"]
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(acts_ND), theirs.encode(acts_ND)
        assert torch.equal(f_ours > 0, f_theirs > 0) and int((f_ours > 0).sum(dim=1).max()) == 16
        assert float((f_theirs - f_ours).norm() / f_ours.norm()) < 1e-4
        assert float((theirs.decode(f_ours) - ours.decode(f_ours)).norm() / ours.decode(f_ours).norm()) < 1e-4
