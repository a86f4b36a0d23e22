"""The end-of-run summary: headline metrics with standard errors, where to look, the sweep table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rich.console import Console

from masksae.summary import RunSummary, SweepRow, headline_table, print_run_summaries, sweep_table, value_with_se, where_to_look
from masksae.tracking import REPO_ROOT


def _text(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_values_carry_their_standard_error_where_they_have_a_finite_one() -> None:
    metrics = {"absorption/mean_full_absorption_score": 0.21234, "absorption/mean_full_absorption_score_se": 0.0123,
               "core/l0": 64.0, "ood/sae_auc_ood": 0.8, "ood/sae_auc_ood_se": math.nan}
    assert value_with_se(metrics, "absorption/mean_full_absorption_score") == "0.2123 ± 0.012"
    assert value_with_se(metrics, "core/l0") == "64"
    assert value_with_se(metrics, "ood/sae_auc_ood") == "0.8"  # one data set: no standard error
    assert value_with_se(metrics, "sparse_probing/llm_test_accuracy") == "-"


def test_headline_table_has_a_column_per_run_and_only_the_metrics_some_run_has() -> None:
    runs = [RunSummary("topk-p0", {"core/l0": 64.0, "core/explained_variance": 0.81}, "r0", "1"),
            RunSummary("eval-[sae]", {"core/l0": 63.5}, "r1", "1")]
    text = _text(headline_table(runs, "Headline metrics"))
    assert "eval-[sae]" in text and "explained_variance" in text and "absorption" not in text
    explained = next(line for line in text.splitlines() if "explained_variance" in line).split()
    assert explained[-2:] == ["0.81", "-"]


def test_where_to_look_links_the_server_ui_or_says_how_to_serve_the_store(tmp_path: Path) -> None:
    (tmp_path / "inspection.html").write_text("<!doctype html>")
    run = RunSummary("r", {}, "abc123", "7", tmp_path)
    on_server = where_to_look(run, "http://login1:5001/")
    assert on_server[0] == "MLflow run abc123: http://login1:5001/#/experiments/7/runs/abc123?workflowType=machine_learning"
    assert f"inspection page: {tmp_path / 'inspection.html'}" in on_server and not any("training curves" in line for line in on_server)
    default_store = where_to_look(run, f"sqlite:///{REPO_ROOT / 'mlflow.db'}")[0]
    assert default_store.startswith("MLflow run abc123: `make mlflow-ui`, then http://127.0.0.1:5000/#/experiments/7/runs/abc123")
    assert "MLFLOW_STORE=sqlite:////elsewhere.db`" in where_to_look(run, "sqlite:////elsewhere.db")[0]


def test_sweep_table_leaves_out_metrics_no_point_has() -> None:
    rows = [SweepRow("gemma3-270m-L6-topk-k64-d4096-p0.1-s0-ds0", "FINISHED", {"core/l0": 64.0, "core/explained_variance": 0.8}),
            SweepRow("gemma3-270m-L6-topk-k64-d4096-p0.3-s0-ds0", "FAILED", {})]
    text = _text(sweep_table("Sweep abc", rows))
    assert "EV" in text and "OOD AUC" not in text
    failed = next(line for line in text.splitlines() if "p0.3" in line).split()
    assert failed == ["gemma3-270m-L6-topk-k64-d4096-p0.3-s0-ds0", "FAILED", "-", "-"]


def test_many_runs_are_printed_a_row_each(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m evaluate sweep_id=` of an 18-run sweep: a row per run with whole names, not 18 folded columns."""
    runs = [RunSummary(f"gemma3-270m-L6-topk-k64-d2048-p0.1-s{seed}-ds0", {"core/l0": 64.0, "ood/sae_auc_ood": 0.5 + seed / 100},
                       f"r{seed}", "1") for seed in range(18)]
    print_run_summaries(runs, "sqlite:////elsewhere.db", "Headline metrics")
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.lstrip().startswith("gemma3-270m") and "done" in line]
    assert len(rows) == 18 and rows[17] == ["gemma3-270m-L6-topk-k64-d2048-p0.1-s17-ds0", "done", "64", "0.67"]
