"""Run key and sweep id: what changes them and what must not."""

from __future__ import annotations

from masksae.tracking import EXPERIMENT_KIND_TAG, experiment_id_for, flatten, run_key, sweep_id_from_argv


def test_run_key_ignores_paths_tracking_and_eval_but_not_what_is_computed(make_cfg) -> None:
    base = run_key(make_cfg())
    assert base == run_key(make_cfg("eval.core.ce_sequences=3", "tracking.experiment=other", "paths.output_dir=/elsewhere"))
    assert base != run_key(make_cfg("mask_prob=0.2"))
    assert base != run_key(make_cfg("seed=1"))
    assert base != run_key(make_cfg("sae.k=32"))


def test_sweep_id_is_order_free_and_ignores_the_launcher() -> None:
    sweep = sweep_id_from_argv(["-m", "mask_prob=0,0.1", "sae=topk,jumprelu"])
    assert sweep == sweep_id_from_argv(["sae=topk,jumprelu", "--multirun", "mask_prob=0,0.1", "launcher=slurm", "hydra.launcher.timeout_min=60"])
    assert sweep != sweep_id_from_argv(["-m", "mask_prob=0,0.2", "sae=topk,jumprelu"])
    assert sweep != sweep_id_from_argv(["-m", "mask_prob=0,0.1", "sae=topk,jumprelu", "experiment=local_paper"])


def test_flatten_gives_dotted_params() -> None:
    assert flatten({"sae": {"k": 64, "adam_betas": [0.9, 0.999]}, "mask_prob": 0.1}) == {
        "sae.k": "64", "sae.adam_betas": "[0.9, 0.999]", "mask_prob": "0.1"}


def test_experiments_are_created_as_model_training_ones_and_a_guessed_kind_is_corrected(tmp_path) -> None:
    """MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, no runs table); once opened, the UI
    may store its own guess with an `_inferred` kind."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    created = experiment_id_for(client, "fresh", uri)
    assert client.get_experiment(created).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    guessed = client.create_experiment("guessed", tags={EXPERIMENT_KIND_TAG: "genai_development_inferred"})
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert experiment_id_for(client, "guessed", uri) == guessed and experiment_id_for(client, "chosen", uri) == chosen
    assert client.get_experiment(guessed).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"  # a person's choice stays


def test_experiments_store_masksae_runs_table_as_a_shared_view(tmp_path) -> None:
    """The view the printed links open (`?viewStateShareKey=`): headline metrics as columns, rewritten when it changes."""
    import json

    from mlflow import MlflowClient

    from masksae.ui_links import HEADLINE_METRICS, RUNS_VIEW_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = experiment_id_for(client, "fresh", uri)
    columns = json.loads(client.get_experiment(experiment_id).tags[RUNS_VIEW_TAG])["selectedColumns"]
    assert {f"metrics.`{name}`" for name in HEADLINE_METRICS} <= set(columns) and "params.`mask_prob`" in columns
    client.set_experiment_tag(experiment_id, RUNS_VIEW_TAG, "{}")
    experiment_id_for(client, "fresh", uri)
    assert json.loads(client.get_experiment(experiment_id).tags[RUNS_VIEW_TAG])["selectedColumns"] == columns
