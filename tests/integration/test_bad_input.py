"""Bad input: a one-line error naming key, value and what is allowed, before any compute, with no MLflow run left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow import MlflowClient

from masksae.errors import ConfigError, OfflineError
from masksae.pipeline import train_one

BAD_INPUTS = [
    (["mask_prob=1.0"], ConfigError, r"mask_prob=1\.0: a number with 0 <= mask_prob < 1"),
    (["mask_prob=-0.1"], ConfigError, r"mask_prob=-0\.1"),
    (["layer=18"], ConfigError, r"layer=18: an integer block index in \[0, 17\]"),
    (["sae.k=0"], ConfigError, r"sae\.k=0"),
    (["sae.k=5000", "sae.d_sae=4096"], ConfigError, r"sae\.k=5000"),
    (["sae.d_sae=0"], ConfigError, r"sae\.d_sae=0"),
    (["activations.train_tokens=0"], ConfigError, r"activations\.train_tokens=0: a positive integer"),
    (["activations.train_tokens=-5"], ConfigError, r"activations\.train_tokens=-5"),
    (["model.mask_token='[MASK] token'"], ConfigError, r"model\.mask_token='\[MASK\] token'.*exactly one token"),
    (["activations.cache_budget_gb=-1"], ConfigError, r"activations\.cache_budget_gb=-1: null \(no limit\) or a number of GB >= 0"),
    (["activations.cache_budget_gb=lots"], ConfigError, r"activations\.cache_budget_gb='lots'"),
    (["training.compile=maybe"], ConfigError, r"training\.compile='maybe': true or false"),
    (["activations.shard_mb=0"], ConfigError, r"activations\.shard_mb=0: a positive number of MB"),
    (["activations.shuffle_buffer_mb=-5"], ConfigError, r"activations\.shuffle_buffer_mb=-5: a positive number of MB"),
    (["activations.read_block_rows=0"], ConfigError, r"activations\.read_block_rows=0: a positive integer"),
    (["sae.architecture=transcoder"], ConfigError, r"sae\.architecture='transcoder'.*relu.*topk"),
    (["model=pythia-160m-deduped"], OfflineError, r"pythia-160m-deduped.*not in the Hugging Face cache"),
    (["model=gemma-2-2b"], OfflineError, r"gemma-2-2b.*make prefetch"),
    (["eval.evals=[core,autointerp]"], ConfigError, r"eval\.evals=\['core', 'autointerp'\]: a list drawn from core, absorption"),
    (["eval.sparse_probing.tasks=[sentiment]"], ConfigError, r"eval\.sparse_probing\.tasks='sentiment': a task defined under eval\.tasks"),
    (["eval.absorption.test_fraction=1.5"], ConfigError, r"eval\.absorption\.test_fraction=1\.5: a number in \[0, 1\)"),
    (["eval.absorption.prompt_template=spell it"], ConfigError, r"eval\.absorption\.prompt_template='spell it'.*\{word\}"),
    (["eval.tasks.gettext_language.languages=[de,xx]"], ConfigError, r"eval\.tasks\.gettext_language\.languages='xx'"),
    (["eval.ood.k=0"], ConfigError, r"eval\.ood\.k=0: a positive integer"),
]


def _run_count(mlflow_uri: str) -> int:
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("masksae")
    return 0 if experiment is None else len(client.search_runs(experiment.experiment_id, run_view_type=3))


@pytest.mark.parametrize(("overrides", "error", "message"), BAD_INPUTS, ids=[" ".join(o) for o, _, _ in BAD_INPUTS])
def test_bad_input_is_rejected_before_any_run(make_cfg, mlflow_uri, monkeypatch, overrides, error, message) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = _run_count(mlflow_uri)
    with pytest.raises(error, match=message):
        train_one(make_cfg(*overrides))
    assert _run_count(mlflow_uri) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "code", "expected"),
    [
        ("mask_prob=1.5", 2, "error: invalid config mask_prob=1.5: a number with 0 <= mask_prob < 1"),
        ("sae.k=0", 2, "error: invalid config sae.k=0"),
        ("model=nope", 1, "Could not find 'model/nope'"),
        ("sae=nope", 1, "Could not find 'sae/nope'"),
    ],
)
def test_cli_exits_non_zero_with_one_line(session_env, repo_root, mlflow_uri, override, code, expected) -> None:
    before = _run_count(mlflow_uri)
    done = subprocess.run([sys.executable, "-m", "train", override], cwd=repo_root, env=dict(session_env, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == code, done.stderr[-2000:]
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert _run_count(mlflow_uri) == before


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ([], "error: invalid config run_id|sweep_id|sae_path=None: exactly one of run_id=, sweep_id= or sae_path="),
        (["run_id=abc", "sweep_id=def"], "error: invalid config run_id|sweep_id|sae_path=['run_id', 'sweep_id']: exactly one of"),
        (["sae_path={tmp_path}"], "error: invalid config sae_path='{tmp_path}': a folder holding cfg.json and sae_weights.safetensors"),
        (["sweep_id=no-such-sweep"], "error: invalid config sweep_id='no-such-sweep': a sweep with FINISHED runs in experiment masksae"),
    ],
    ids=["none", "two", "folder-without-cfg", "unknown-sweep"],
)
def test_evaluate_cli_exits_2_with_one_line(session_env, repo_root, mlflow_uri, tmp_path, arguments, expected) -> None:
    before = _run_count(mlflow_uri)
    done = subprocess.run([sys.executable, "-m", "evaluate", *(argument.format(tmp_path=tmp_path) for argument in arguments)],
                          cwd=repo_root, env=session_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(expected.format(tmp_path=tmp_path))
    assert _run_count(mlflow_uri) == before
