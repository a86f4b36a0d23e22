"""End to end on the real model and real text: one smoke run into MLflow, resume-skip, failures end FAILED."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from masksae.errors import ConfigError
from masksae.pipeline import train_one
from masksae.tracking import run_key

pytestmark = pytest.mark.slow

CORE_METRICS = (
    "core/mse", "core/l0", "core/dead_frac", "core/explained_variance", "core/explained_variance_uncentered",
    "core/ce_loss_clean", "core/ce_loss_sae", "core/ce_loss_zero", "core/ce_loss_recovered", "core/kl_div",
)


def _run_of(client: MlflowClient, key: str):
    runs = client.search_runs(client.get_experiment_by_name("masksae").experiment_id, f"tags.run_key = '{key}'")
    assert len(runs) == 1
    return runs[0]


def test_smoke_run_logs_everything_and_rerun_is_skipped(make_cfg, gemma, mlflow_uri) -> None:
    cfg = make_cfg("debug=smoke", "sae=topk", "sae.k=16")
    metrics = train_one(cfg)
    client = MlflowClient(tracking_uri=mlflow_uri)
    run = _run_of(client, run_key(cfg))
    assert run.info.status == "FINISHED"
    assert set(CORE_METRICS) <= set(run.data.metrics)
    assert run.data.metrics["core/l0"] == pytest.approx(16, abs=0.5)
    assert 0.0 < run.data.metrics["core/explained_variance"] <= 1.0
    assert run.data.metrics["core/ce_loss_zero"] > run.data.metrics["core/ce_loss_sae"] > run.data.metrics["core/ce_loss_clean"] * 0.99
    assert run.data.params["sae.k"] == "16" and run.data.params["mask_prob"] == "0.1" and run.data.params["layer"] == "6"
    assert {"run_key", "sweep_id", "git_sha", "mask_token_id"} <= set(run.data.tags)
    assert run.data.tags["mask_token_id"] == "4"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "sae", "training_curves.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "sae")} == {"sae/cfg.json", "sae/sae_weights.safetensors"}
    history = client.get_metric_history(run.info.run_id, "train/mse")
    assert len(history) >= 3 and history[-1].value < history[0].value
    assert metrics["core/explained_variance"] == run.data.metrics["core/explained_variance"]
    assert train_one(cfg) is None  # same run key, FINISHED: skipped
    assert _run_of(client, run_key(cfg)).info.run_id == run.info.run_id


def test_failure_inside_a_run_ends_it_failed_with_the_error(make_cfg, gemma, mlflow_uri) -> None:
    cfg = make_cfg("debug=smoke", "training.batch_size=100000000")
    with pytest.raises(ConfigError, match="training.batch_size"):
        train_one(cfg)
    run = _run_of(MlflowClient(tracking_uri=mlflow_uri), run_key(cfg))
    assert run.info.status == "FAILED"
    assert "training.batch_size" in run.data.tags["error"]
