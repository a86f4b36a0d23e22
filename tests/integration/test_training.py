"""End to end on the real model and real text: one smoke run into MLflow, resume-skip, failures end FAILED."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf
from safetensors.torch import load_file

from masksae.errors import ConfigError
from masksae.pipeline import train_one
from masksae.tracking import run_key
from tests.parts import import_or_missing

pytestmark = pytest.mark.slow

CORE_METRICS = (
    "core/mse", "core/l0", "core/dead_frac", "core/explained_variance", "core/explained_variance_uncentered",
    "core/ce_loss_clean", "core/ce_loss_sae", "core/ce_loss_zero", "core/ce_loss_recovered", "core/kl_div",
)

EVAL_METRICS = (
    "absorption/n_letters", "absorption/enough_letters", "absorption/mean_full_absorption_score",
    "absorption/mean_absorption_fraction_score", "absorption/full_absorption_complement", "absorption/mean_num_split_features",
    *(f"sparse_probing/{side}_top_{k}_test_accuracy" for side in ("sae", "llm") for k in (1, 2, 5)),
    "sparse_probing/llm_test_accuracy", "ood/sae_auc_id", "ood/sae_auc_ood", "ood/dense_auc_id", "ood/dense_auc_ood",
    "ood/gap_to_dense",
)


def _run_of(client: MlflowClient, key: str):
    runs = client.search_runs(client.get_experiment_by_name("masksae").experiment_id, f"tags.run_key = '{key}'")
    assert len(runs) == 1
    return runs[0]


@pytest.fixture(scope="module")
def smoke_run(make_cfg, gemma):
    """One real smoke run (TopK, k = 16) shared by the tests of this module."""
    cfg = make_cfg("debug=smoke", "sae=topk", "sae.k=16")
    (run,) = train_one(cfg).values()
    return cfg, run.metrics


def test_smoke_run_logs_everything_and_rerun_is_skipped(smoke_run, mlflow_uri) -> None:
    cfg, metrics = smoke_run
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
    assert set(EVAL_METRICS) <= set(run.data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "evals")} == {
        "evals/absorption_per_letter.json", "evals/sparse_probing_per_task.json", "evals/ood_per_task.json",
        "evals/absorption_per_letter.png", "evals/sparse_probing_per_task.png"}
    assert run.data.tags["absorption_status"] == "ok" or run.data.tags["absorption_status"].startswith("too few letters")
    history = client.get_metric_history(run.info.run_id, "train/mse")
    assert len(history) >= 3 and history[-1].value < history[0].value
    assert metrics["core/explained_variance"] == run.data.metrics["core/explained_variance"]
    assert train_one(cfg) == {}  # same run key, FINISHED: skipped
    assert _run_of(client, run_key(cfg)).info.run_id == run.info.run_id


def test_failure_inside_a_run_ends_it_failed_with_the_error(make_cfg, gemma, mlflow_uri) -> None:
    cfg = make_cfg("debug=smoke", "training.batch_size=100000000")
    with pytest.raises(ConfigError, match="training.batch_size"):
        train_one(cfg)
    run = _run_of(MlflowClient(tracking_uri=mlflow_uri), run_key(cfg))
    assert run.info.status == "FAILED"
    assert "training.batch_size" in run.data.tags["error"]


def test_python_api_loads_encodes_and_re_evaluates(smoke_run, mlflow_uri) -> None:
    from masksae import api

    cfg, metrics = smoke_run
    run_id = _run_of(MlflowClient(tracking_uri=mlflow_uri), run_key(cfg)).info.run_id
    sae = api.load_sae(run_id, tracking_uri=mlflow_uri)
    acts_ND = api.residuals(["The Eiffel Tower is in Paris.", "grep searches files for patterns."], run=run_id, tracking_uri=mlflow_uri)
    f_NF = sae.encode(acts_ND)
    assert acts_ND.shape[1] == 640 and f_NF.shape == (acts_ND.shape[0], 1024)
    assert ((f_NF > 0).sum(dim=1) <= 16).all()
    explained = 1 - (acts_ND - sae.decode(f_NF)).pow(2).sum() / acts_ND.pow(2).sum()
    assert explained > 0.8  # raw-space SAE (normalisation folded in) reconstructs raw residuals (uncentered: few tokens)
    again = api.evaluate(run_id, f"paths.cache_dir={cfg.paths.cache_dir}", "eval.core.ce_sequences=4", "eval.evals=[core]",
                         tracking_uri=mlflow_uri)
    for name in ("core/explained_variance", "core/l0", "core/ce_loss_sae"):
        assert again[name] == pytest.approx(metrics[name], rel=1e-4)
    # what MLflow shows for the run is the re-evaluation (its timing differs from training's), not the training-time value
    shown = MlflowClient(tracking_uri=mlflow_uri).get_run(run_id).data.metrics
    assert shown["eval_time/core_s"] == again["eval_time/core_s"] != metrics["eval_time/core_s"]


def test_evaluate_a_saved_folder_logs_a_new_run(smoke_run, mlflow_uri) -> None:
    from masksae.evaluation import evaluate_main
    from masksae.resources import run_dir

    cfg, metrics = smoke_run
    folder = run_dir(cfg, run_key(cfg)) / "sae"
    eval_cfg = OmegaConf.create({"run_id": None, "sweep_id": None, "sae_path": str(folder), "eval": cfg.eval,
                                 "paths": cfg.paths, "tracking": {"uri": mlflow_uri, "experiment": "masksae"}})
    (evaluated,) = evaluate_main(eval_cfg)
    result = evaluated.metrics
    assert evaluated.folder == folder.resolve()
    # a folder carries no training config: the default held-out sample (32k tokens, not smoke's 4k) is used
    assert result["core/explained_variance"] == pytest.approx(metrics["core/explained_variance"], abs=0.03)
    assert result["core/l0"] <= 16
    runs = MlflowClient(tracking_uri=mlflow_uri).search_runs(
        MlflowClient(tracking_uri=mlflow_uri).get_experiment_by_name("masksae").experiment_id, f"tags.sae_path = '{folder.resolve()}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_eval_metrics_are_sane_and_tables_add_up(smoke_run, mlflow_uri) -> None:
    """Real signal on real text: dense residual probes separate the offline tasks; tables agree with the metrics."""
    cfg, metrics = smoke_run
    client = MlflowClient(tracking_uri=mlflow_uri)
    run_id = _run_of(client, run_key(cfg)).info.run_id
    assert metrics["sparse_probing/llm_test_accuracy"] > 0.7
    assert metrics["ood/dense_auc_id"] > 0.55  # chance 0.5; last-token dense probes at smoke sizes measured 0.62
    assert 0.4 <= metrics["sparse_probing/sae_top_1_test_accuracy"] <= metrics["sparse_probing/llm_test_accuracy"] + 0.1
    assert metrics["ood/gap_to_dense"] == pytest.approx(metrics["ood/dense_auc_ood"] - metrics["ood/sae_auc_ood"], abs=1e-9)
    assert metrics["absorption/full_absorption_complement"] == pytest.approx(1 - metrics["absorption/mean_full_absorption_score"])
    with tempfile.TemporaryDirectory() as scratch:
        rows = json.loads(open(client.download_artifacts(run_id, "evals/sparse_probing_per_task.json", scratch)).read())
        letters = json.loads(open(client.download_artifacts(run_id, "evals/absorption_per_letter.json", scratch)).read())
    assert len(rows) == metrics["sparse_probing/n_tasks"] >= 10
    assert {row["task"].split("/")[0] for row in rows} == {"gettext_language", "code_language", "man_section"}
    per_dataset = [np.mean([row["sae_top_1_test_accuracy"] for row in rows if row["task"].startswith(f"{dataset}/")])
                   for dataset in ("gettext_language", "code_language", "man_section")]
    assert np.mean(per_dataset) == pytest.approx(metrics["sparse_probing/sae_top_1_test_accuracy"])  # SAEBench: per data set, then across
    assert [row["letter"] for row in letters] == list("abcdefghijklmnopqrstuvwxyz")


def test_evaluate_re_runs_chosen_evals_into_the_same_run(smoke_run, mlflow_uri) -> None:
    """`python -m evaluate run_id=...` with absorption only: same numbers (deterministic), written into that run."""
    from masksae import api

    cfg, metrics = smoke_run
    client = MlflowClient(tracking_uri=mlflow_uri)
    run_id = _run_of(client, run_key(cfg)).info.run_id
    again = api.evaluate(run_id, f"paths.cache_dir={cfg.paths.cache_dir}", "eval.evals=[absorption]",
                         f"eval.absorption.words_per_letter={cfg.eval.absorption.words_per_letter}", tracking_uri=mlflow_uri)
    assert not any(name.startswith(("core/", "sparse_probing/", "ood/")) for name in again)
    for name in ("absorption/mean_full_absorption_score", "absorption/mean_absorption_fraction_score", "absorption/n_letters"):
        assert again[name] == pytest.approx(metrics[name], abs=1e-9)
    history = client.get_metric_history(run_id, "absorption/n_letters")
    assert len(history) == 2 and client.get_run(run_id).info.status == "FINISHED"


QUICK_EVAL = ("eval.evals=[core]", "eval.core.ce_sequences=4")


def _evaluate(session_env: dict[str, str], repo_root: Path, *arguments: str) -> str:
    """`python -m evaluate <arguments>` as a process (the test store and cache from the environment): what it printed,
    after checking that it exited 0 and ended with the headline table."""
    done = subprocess.run([sys.executable, "-m", "evaluate", *arguments], cwd=repo_root, env=session_env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Headline metrics" in done.stdout and "explained_variance" in done.stdout, done.stdout[-3000:]
    return done.stdout


def _folder_run_metrics(client: MlflowClient, folder: Path) -> dict[str, float]:
    """The SAE quality metrics of the newest evaluation of a saved folder (not its timings or system samples)."""
    runs = client.search_runs(client.get_experiment_by_name("masksae").experiment_id, f"tags.sae_path = '{folder.resolve()}'",
                              order_by=["attribute.start_time DESC"])
    assert runs and all(run.info.status == "FINISHED" for run in runs)
    return {name: value for name, value in runs[0].data.metrics.items() if not name.startswith(("eval_time/", "system/"))}


def test_python_m_evaluate_re_evaluates_a_run_and_a_sweep(smoke_run, mlflow_uri, session_env, repo_root) -> None:
    cfg, metrics = smoke_run
    client = MlflowClient(tracking_uri=mlflow_uri)
    run_id = _run_of(client, run_key(cfg)).info.run_id
    logged_before = len(client.get_metric_history(run_id, "core/l0"))
    printed = _evaluate(session_env, repo_root, f"run_id={run_id}", *QUICK_EVAL)
    assert f"MLflow run {run_id}" in printed
    assert client.get_run(run_id).data.metrics["core/explained_variance"] == pytest.approx(metrics["core/explained_variance"], rel=1e-4)
    assert len(client.get_metric_history(run_id, "core/l0")) == logged_before + 1
    client.set_tag(run_id, "sweep_id", "evaluate-cli-sweep")  # a sweep of its own: the smoke run alone
    assert f"MLflow run {run_id}" in _evaluate(session_env, repo_root, "sweep_id=evaluate-cli-sweep", *QUICK_EVAL)
    assert len(client.get_metric_history(run_id, "core/l0")) == logged_before + 2


def test_python_m_evaluate_evaluates_our_export_and_a_folder_saelens_saved(smoke_run, mlflow_uri, session_env, repo_root, tmp_path) -> None:
    """The same weights as our export and as SAELens's own TopK SAE saved by SAELens (no masksae metadata, model named
    by its Hugging Face id): both evaluate, to the same metrics, each into a new run."""
    from masksae.resources import run_dir

    sae_lens = import_or_missing("sae_lens", "sae-lens is the optional extra: pip install -e '.[saelens]' (make install adds it)")
    cfg, metrics = smoke_run
    ours = run_dir(cfg, run_key(cfg)) / "sae"
    exported = json.loads((ours / "cfg.json").read_text())
    metadata = sae_lens.saes.sae.SAEMetadata(model_name=cfg.model.hf_id, hook_name=exported["metadata"]["hook_name"],
                                             context_size=exported["metadata"]["context_size"])
    theirs = sae_lens.SAE.from_dict(sae_lens.TopKSAEConfig(d_in=exported["d_in"], d_sae=exported["d_sae"], k=exported["k"],
                                                           metadata=metadata).to_dict())
    theirs.load_state_dict(load_file(ours / "sae_weights.safetensors"))
    theirs.save_model(tmp_path / "saelens")
    assert "masksae_sae_config" not in json.loads((tmp_path / "saelens" / "cfg.json").read_text())["metadata"]
    client = MlflowClient(tracking_uri=mlflow_uri)
    results = []
    for folder in (ours, tmp_path / "saelens"):
        assert f"folder: {folder.resolve()}" in _evaluate(session_env, repo_root, f"sae_path={folder}", *QUICK_EVAL)
        results.append(_folder_run_metrics(client, folder))
    assert results[0]["core/explained_variance"] == pytest.approx(metrics["core/explained_variance"], abs=0.03)
    scale = exported["metadata"]["activation_scale_folded"]  # ours reports MSE in the normalised units it trained in
    assert results[1].pop("core/mse") == pytest.approx(results[0].pop("core/mse") / scale**2, rel=1e-3)
    assert results[0] == pytest.approx(results[1], rel=5e-4)
