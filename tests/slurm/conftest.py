"""A real single-node SLURM (slurm/up.sh) and a real MLflow server (slurm/mlflow-server.sh) for the sweep tests."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from masksae.tracking import REPO_ROOT, SWEEP_ID_ENV

SLURM_DIR = Path(os.environ.get("MASKSAE_SLURM_DIR", "/var/tmp/masksae-slurm"))
NOT_STARTABLE = 3  # slurm/up.sh: packages missing and not root


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """Start (installing if needed) the local SLURM; stop it at the end if this session started it."""
    conf = SLURM_DIR / "etc" / "slurm.conf"
    env = dict(os.environ, SLURM_CONF=str(conf), MASKSAE_SLURM_DIR=str(SLURM_DIR))
    was_up = conf.exists() and shutil.which("scontrol") is not None and \
        subprocess.run(["scontrol", "ping"], env=env, capture_output=True).returncode == 0
    up = subprocess.run([str(REPO_ROOT / "slurm" / "up.sh")], env=env, capture_output=True, text=True, timeout=900)
    if up.returncode == NOT_STARTABLE:
        pytest.skip(f"SLURM cannot be started here: {up.stderr.strip()}")
    assert up.returncode == 0, up.stdout + up.stderr
    os.environ["SLURM_CONF"] = str(conf)
    yield env
    if not was_up:
        subprocess.run([str(REPO_ROOT / "slurm" / "down.sh")], env=env, capture_output=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`slurm/mlflow-server.sh` over a fresh sqlite store (schema made once before any job); yields its URL."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    env = dict(os.environ, PY=sys.executable, MLFLOW_PORT=str(_free_port()), MLFLOW_STORE=f"sqlite:///{folder / 'mlflow.db'}",
               MLFLOW_ARTIFACTS=str(folder / "artifacts"), MLFLOW_SERVER_DIR=str(folder))
    script = str(REPO_ROOT / "slurm" / "mlflow-server.sh")
    started = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    yield f"http://127.0.0.1:{env['MLFLOW_PORT']}"
    subprocess.run([script, "stop"], env=env, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def sweep_env(slurm_cluster: dict[str, str], mlflow_server: str, test_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of the sweep commands: local SLURM, the MLflow server, the test cache, a fresh output root."""
    env = dict(slurm_cluster, MLFLOW_TRACKING_URI=mlflow_server, MASKSAE_CACHE=str(test_cache), PYTHONUNBUFFERED="1",
               MASKSAE_OUTPUT_DIR=str(tmp_path_factory.mktemp("sweep-outputs")))
    env.pop(SWEEP_ID_ENV, None)
    return env

