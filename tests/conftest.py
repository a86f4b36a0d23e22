"""Shared fixtures: composed configs, an isolated MLflow store and cache, the real model loaded once per session, and
the cluster tracking server (PostgreSQL, basic auth, a host name alias)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from masksae.config import compose_config
from masksae.tracking import REPO_ROOT
from tests.parts import TrackingServer, free_port, missing, server_host_name

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


@pytest.fixture(scope="session")
def postgres() -> Iterator[dict[str, str]]:
    """A private PostgreSQL server (slurm/postgres.sh) for the MLflow store: {MLFLOW_STORE, PGPASSFILE}."""
    folder = Path(tempfile.mkdtemp(prefix="masksae-postgres-", dir="/var/tmp"))
    folder.chmod(0o755)  # its server runs as the postgres user
    env = dict(os.environ, MASKSAE_PG_DIR=str(folder), MASKSAE_PG_PORT=str(free_port()))
    script = str(REPO_ROOT / "slurm" / "postgres.sh")
    started = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=600)
    if started.returncode == 3:
        missing(f"PostgreSQL cannot be started here: {started.stderr.strip()}")
    assert started.returncode == 0, started.stdout + started.stderr
    exported = started.stdout.strip().splitlines()[-1].removeprefix("export ").split()
    yield dict(item.split("=", 1) for item in exported)
    subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def tracking_server(postgres: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """The cluster set-up of the README: PostgreSQL store, basic auth (credentials from the environment), allowed
    hosts, reached through a host name that is not localhost. The pytest process gets the credentials too."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port, host = free_port(), server_host_name()
    credentials = {"MLFLOW_TRACKING_USERNAME": "masksae-ci", "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(16)}
    os.environ.update(credentials)
    script_env = dict(os.environ, PY=sys.executable, MLFLOW_HOST=host, MLFLOW_PORT=str(port), **postgres,
                      MLFLOW_ARTIFACTS=str(folder / "artifacts"), MLFLOW_SERVER_DIR=str(folder))
    url = f"http://{host}:{port}"
    server = TrackingServer(url, {**credentials, "MLFLOW_TRACKING_URI": url}, script_env)
    server.start()
    yield server
    server.stop()
