"""Real parts some tests need (SLURM, PostgreSQL, the tracking server by host name, sae-lens): where one cannot start,
the test skips, except under MASKSAE_REQUIRE_REAL_PARTS=1 (set by .ci/run), where it fails: a CI that cannot set them
up is red."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
from dataclasses import dataclass
from types import ModuleType
from typing import NoReturn

import pytest

from masksae.tracking import REPO_ROOT

REQUIRE_ENV = "MASKSAE_REQUIRE_REAL_PARTS"


def required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def missing(reason: str) -> NoReturn:
    """Skip for `reason`, or fail when real parts are required."""
    if required():
        pytest.fail(f"a real part this test needs is missing ({REQUIRE_ENV}=1): {reason}", pytrace=False)
    pytest.skip(reason)


def import_or_missing(name: str, reason: str) -> ModuleType:
    """The module `name`, or missing(reason) when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(reason)


# The name by which jobs reach the tracking server: not localhost, as a compute node names the login node.
SERVER_ALIAS = "masksae-login.cluster"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _resolves(name: str) -> bool:
    try:
        socket.gethostbyname(name)
    except OSError:
        return False
    return True


def server_host_name() -> str:
    """A name of this machine that is not localhost: SERVER_ALIAS (an /etc/hosts line added once, as root), else the
    machine's own host name where it resolves; missing() only when neither can serve."""
    if _resolves(SERVER_ALIAS):
        return SERVER_ALIAS
    try:
        with open("/etc/hosts", "a") as hosts:
            hosts.write(f"127.0.0.1 {SERVER_ALIAS}\n")
        return SERVER_ALIAS
    except OSError as error:
        own = socket.gethostname()
        if own != "localhost" and _resolves(own):
            return own
        missing(f"no host name for the tracking server: cannot add {SERVER_ALIAS} to /etc/hosts ({error}) and the host name is {own!r}")


@dataclass
class TrackingServer:
    """`slurm/mlflow-server.sh` over PostgreSQL with basic auth, reached by host name; `env` is a client's environment."""

    url: str
    env: dict[str, str]
    script_env: dict[str, str]

    def _script(self, command: str) -> str:
        done = subprocess.run([str(REPO_ROOT / "slurm" / "mlflow-server.sh"), command], env=self.script_env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def stop(self) -> None:
        self._script("stop")

    def start(self) -> str:
        return self._script("start")
