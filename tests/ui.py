"""The MLflow UI as a person reaches it: `make mlflow-ui` over a store, and Debian's chromium driven headless through
its chromedriver (apt-get installs both where missing, as root; elsewhere the test skips, or fails under CI)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.parts import free_port, import_or_missing, missing

BROWSER_PACKAGES = ("chromium", "chromium-driver")


@contextlib.contextmanager
def mlflow_ui(repo_root: Path, store: str, artifacts: Path) -> Iterator[str]:
    """`make mlflow-ui` on a free port over `store`; its base address once /health answers."""
    port = free_port()
    server = subprocess.Popen(
        ["make", "-s", "mlflow-ui", f"MLFLOW_PORT={port}", f"MLFLOW_STORE={store}", f"MLFLOW_ARTIFACTS={artifacts}"],
        cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    os.killpg(server.pid, signal.SIGTERM)  # a server still starting would keep stderr open for ever
                    pytest.fail(f"mlflow-ui did not come up in 120 s: {server.communicate(timeout=30)[1].decode()[-2000:]}")
                time.sleep(1)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _install_browser() -> None:
    if os.geteuid() != 0:
        missing(f"chromium and its chromedriver are not installed and this is not root: apt-get install {' '.join(BROWSER_PACKAGES)}")
    # without their man pages: the offline corpus renders the machine's man pages, and would change mid-session
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Options::=--path-exclude=/usr/share/man/*",
               *BROWSER_PACKAGES]
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(command, env=environment, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=environment, capture_output=True)
        done = subprocess.run(command, env=environment, capture_output=True, text=True)
        if done.returncode != 0:
            missing(f"apt-get could not install {' '.join(BROWSER_PACKAGES)}: {done.stderr[-500:]}")


def headless_chromium(width: int = 2400, height: int = 1200) -> Any:
    """A selenium driver of Debian's chromium (no download: the browser and driver are the distribution's)."""
    webdriver = import_or_missing("selenium.webdriver", "selenium is in the test extra: pip install -e '.[test]'")
    if shutil.which("chromedriver") is None or shutil.which("chromium") is None:
        _install_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    os.environ.setdefault("SE_AVOID_STATS", "true")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))
    driver.implicitly_wait(30)
    return driver
