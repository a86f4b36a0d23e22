"""Shared fixtures: composed configs, an isolated MLflow store and cache, and the real model loaded once per session."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from masksae.config import compose_config
from masksae.tracking import REPO_ROOT

MACHINE_CACHE = Path(os.environ.get("MASKSAE_CACHE", "~/.cache/masksae")).expanduser()


@pytest.fixture(scope="session")
def test_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache root for activations; the per-machine model conversion and corpus are shared with it."""
    root = tmp_path_factory.mktemp("cache")
    for shared in ("models", "gguf", "corpora"):
        (MACHINE_CACHE / shared).mkdir(parents=True, exist_ok=True)
        (root / shared).symlink_to(MACHINE_CACHE / shared)
    return root


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real sqlite MLflow store, schema created once before any run writes to it."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()
    return uri


@pytest.fixture(scope="session")
def session_env(test_cache: Path, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for subprocess runs of `python -m train`, pointing at the test store and cache."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    env = dict(os.environ, MASKSAE_CACHE=str(test_cache), MLFLOW_TRACKING_URI=mlflow_uri, PYTHONUNBUFFERED="1")
    env["MASKSAE_OUTPUT_DIR"] = str(tmp_path_factory.mktemp("outputs"))
    return env


@pytest.fixture(scope="session")
def make_cfg(test_cache: Path, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., DictConfig]:
    """Compose the training config with overrides, as `python -m train` would, isolated to test paths."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    output_dir = tmp_path_factory.mktemp("runs")

    def _compose(*overrides: str) -> DictConfig:
        base = [f"paths.cache_dir={test_cache}", f"paths.output_dir={output_dir}", f"tracking.uri={mlflow_uri}"]
        return compose_config("train", [*base, *overrides])

    return _compose


@pytest.fixture(scope="session")
def gemma(make_cfg: Callable[..., DictConfig]):
    """The real gemma-3-270m, loaded once for the whole session (same object the pipeline uses)."""
    from masksae.resources import shared_model

    return shared_model(make_cfg())


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
