"""A real single-node SLURM (slurm/up.sh) for the sweep tests; jobs log to the cluster tracking server (PostgreSQL,
basic auth, reached by host name: tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from masksae.tracking import REPO_ROOT, SWEEP_ID_ENV
from tests.parts import TrackingServer, missing

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
        missing(f"SLURM cannot be started here: {up.stderr.strip()}")
    assert up.returncode == 0, up.stdout + up.stderr
    os.environ["SLURM_CONF"] = str(conf)
    yield env
    if not was_up:
        subprocess.run([str(REPO_ROOT / "slurm" / "down.sh")], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def sweep_env(slurm_cluster: dict[str, str], tracking_server: TrackingServer, test_cache: Path,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of the sweep commands: local SLURM, the tracking server and its credentials, the test cache, a fresh
    output root."""
    env = dict(slurm_cluster, **tracking_server.env, MASKSAE_CACHE=str(test_cache), PYTHONUNBUFFERED="1",
               MASKSAE_OUTPUT_DIR=str(tmp_path_factory.mktemp("sweep-outputs")))
    env.pop(SWEEP_ID_ENV, None)
    return env

