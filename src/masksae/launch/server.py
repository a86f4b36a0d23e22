"""`python -m masksae.launch.server start|stop|check`: the MLflow server sweep jobs log to, reachable by host name,
with MLflow's basic-auth app, its schema made once, and a start that waits on an authenticated API call."""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from masksae.files import write_bytes_atomically
from masksae.locks import pid_alive
from masksae.tracking import REPO_ROOT

CREDENTIALS_FILE = Path("~/.mlflow/credentials").expanduser()  # where MLflow's client reads them too
MIN_PASSWORD_CHARS = 12  # MLflow's basic-auth app refuses shorter admin passwords
API_CHECK = "/api/2.0/mlflow/experiments/search"
PRIVATE = 0o600  # files only their owner reads: credentials, secrets, the auth settings


class ServerError(RuntimeError):
    """The server could not be started or does not answer as compute nodes would need it to."""


@dataclass(frozen=True)
class Settings:
    """Where the server listens, the name clients use, its stores and its state folder (all from the environment)."""

    host: str
    bind: str
    port: int
    store: str
    artifacts: Path
    state: Path
    auth: bool
    workers: int
    extra_hosts: tuple[str, ...]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state / f"server-{self.port}.pid"

    @property
    def log_file(self) -> Path:
        return self.state / f"server-{self.port}.log"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        auth = env.get("MLFLOW_AUTH", "on").lower()
        if auth not in ("on", "off", "1", "0", "true", "false"):
            raise ServerError(f"MLFLOW_AUTH={auth!r}: on or off")
        return cls(host=env.get("MLFLOW_HOST") or default_host(), bind=env.get("MLFLOW_BIND", "0.0.0.0"),
                   port=int(env.get("MLFLOW_PORT", "5000")), store=env.get("MLFLOW_STORE") or f"sqlite:///{REPO_ROOT / 'mlflow.db'}",
                   artifacts=Path(env.get("MLFLOW_ARTIFACTS") or REPO_ROOT / "mlartifacts"),
                   state=Path(env.get("MLFLOW_SERVER_DIR") or REPO_ROOT / "outputs" / "mlflow-server"),
                   auth=auth in ("on", "1", "true"), workers=int(env.get("MLFLOW_WORKERS", "2")),
                   extra_hosts=tuple(h.strip() for h in env.get("MLFLOW_ALLOWED_HOSTS", "").split(",") if h.strip()))


def default_host() -> str:
    """This host's full name as other machines know it (`hostname -f`; the short name where that is only localhost)."""
    full = socket.getfqdn()
    return socket.gethostname() if full.startswith(("localhost", "127.")) else full


def this_host_names() -> list[str]:
    """Names and addresses by which other machines may reach this one: short and full host name, its addresses, loopback."""
    names = ["localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()]
    try:
        names += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
    except OSError:
        pass
    addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split() if shutil.which("hostname") else []
    return list(dict.fromkeys(names + addresses))


def allowed_hosts(settings: Settings) -> list[str]:
    """Host headers the server accepts: this host's names and addresses and MLFLOW_ALLOWED_HOSTS, bare and with the port
    (MLflow refuses any other Host header with 403, which is how a compute node naming the login node was refused)."""
    hosts = []
    for name in dict.fromkeys([settings.host, *this_host_names(), *settings.extra_hosts]):
        shown = f"[{name}]" if ":" in name and not name.startswith("[") else name  # IPv6 literal in a Host header
        hosts += [shown, f"{shown}:{settings.port}"]
    return hosts


def credentials() -> tuple[str, str, str]:
    """(user, password, where from), read as every MLflow client reads them: MLFLOW_TRACKING_USERNAME/PASSWORD, else
    ~/.mlflow/credentials; generated into that file (mode 600) when neither has them. Never from a command line: jobs
    inherit the environment or read the file."""
    from mlflow.utils.credentials import read_mlflow_creds

    found = read_mlflow_creds()
    user, password = found.username, found.password
    source = "the environment" if os.environ.get("MLFLOW_TRACKING_PASSWORD") else str(CREDENTIALS_FILE)
    if not (user and password):
        user, password = os.environ.get("USER") or "masksae", secrets.token_urlsafe(18)
        text = f"[mlflow]\nmlflow_tracking_username = {user}\nmlflow_tracking_password = {password}\n"
        write_bytes_atomically(CREDENTIALS_FILE, text.encode(), mode=PRIVATE)
        source = f"{CREDENTIALS_FILE} (generated now)"
    if len(password) < MIN_PASSWORD_CHARS:
        raise ServerError(f"the MLflow password from {source} has {len(password)} characters: MLflow's auth app needs at least {MIN_PASSWORD_CHARS}")
    return user, password, source


def _secret(settings: Settings) -> str:
    """The Flask secret for CSRF protection, made once per state folder and kept across restarts."""
    path = settings.state / "flask-secret"
    if not path.exists():
        write_bytes_atomically(path, secrets.token_hex(32).encode(), mode=PRIVATE)
    return path.read_text().strip()


def _auth_config(settings: Settings, user: str) -> Path:
    """MLflow's basic-auth settings: users in a sqlite file of the server's own (one writer), `user` as admin, every
    user may read. The admin password reaches the server through its environment, not this file."""
    path = settings.state / "basic_auth.ini"
    write_bytes_atomically(path, mode=PRIVATE, data="\n".join([
        "[mlflow]", "default_permission = READ", f"database_uri = sqlite:///{settings.state / 'basic_auth.db'}",
        f"admin_username = {user}", "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds = 60", ""]).encode())
    return path


def api_status(url: str, auth: tuple[str, str] | None, host_header: str | None = None) -> int:
    """HTTP status of an experiments search at `url`, as a client sends it (0: no answer)."""
    request = urllib.request.Request(url + API_CHECK, data=json.dumps({"max_results": 1}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    if host_header:
        request.add_header("Host", host_header)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def running_pid(settings: Settings) -> int | None:
    if settings.pid_file.exists():
        pid = int(settings.pid_file.read_text())
        return pid if pid_alive(pid) else None
    return None


def _explain(status: int, settings: Settings, source: str) -> str:
    if status == 403:
        return (f"{settings.url} answers 403: the Host header {settings.host}:{settings.port} is not allowed; "
                "add the name clients use to MLFLOW_ALLOWED_HOSTS")
    if status == 401:
        return (f"{settings.url} refuses the credentials from {source} (401): the user exists in "
                f"{settings.state / 'basic_auth.db'} with another password; use that password or remove the file")
    return f"{settings.url} answers {status or 'nothing'} to {API_CHECK}"


def create_schema(store: str) -> None:
    """Create the store's tables from one process before any job writes (many jobs racing on a fresh schema fail)."""
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=store).search_experiments(max_results=1)
    except ModuleNotFoundError as error:
        raise ServerError(f"MLFLOW_STORE={_redacted(store)} needs {error.name}: pip install -e '.[server]' (make install adds it)") from error


def _redacted(uri: str) -> str:
    """A store URI without the password it may carry."""
    scheme, sep, rest = uri.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        rest = rest.split(":", 1)[0] + ":***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


def start(settings: Settings, wait_s: float = 180.0) -> str:
    """Start the server in the background (or find it running) and return its URL once an authenticated API call succeeds."""
    user, password, source = credentials() if settings.auth else (None, None, "")
    auth = (user, password) if settings.auth else None
    if running_pid(settings) and api_status(settings.url, auth) == 200:
        return f"[mlflow-server] already serving {settings.url} (pid {running_pid(settings)}); export MLFLOW_TRACKING_URI={settings.url}"
    stop(settings)  # one that runs but does not answer as clients need
    settings.state.mkdir(parents=True, exist_ok=True)
    settings.artifacts.mkdir(parents=True, exist_ok=True)
    create_schema(settings.store)
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_BACKEND_STORE_URI=settings.store,
               MLFLOW_ARTIFACTS_DESTINATION=str(settings.artifacts))
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", settings.bind, "--port", str(settings.port),
               "--workers", str(settings.workers), "--allowed-hosts", ",".join(allowed_hosts(settings))]
    if settings.auth:
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(_auth_config(settings, user)), MLFLOW_AUTH_ADMIN_PASSWORD=password,
                   MLFLOW_FLASK_SERVER_SECRET_KEY=_secret(settings))
        command[2:2] = ["--app-name", "basic-auth"]
    with open(settings.log_file, "a") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=settings.state)
    settings.pid_file.write_text(str(process.pid))
    deadline, status = time.monotonic() + wait_s, 0
    while time.monotonic() < deadline:
        status = api_status(settings.url, auth)
        if status == 200:
            who = f"basic auth as {user} (credentials: {source})" if settings.auth else "no auth"
            return (f"[mlflow-server] serving {settings.url} (store {_redacted(settings.store)}, {who}, pid {process.pid}); "
                    f"export MLFLOW_TRACKING_URI={settings.url}")
        if status in (401, 403) or process.poll() is not None:
            break
        time.sleep(0.5)
    stop(settings)
    tail = settings.log_file.read_text().strip().splitlines()[-5:]
    raise ServerError(_explain(status, settings, source) + f"; log {settings.log_file}:\n" + "\n".join(tail))


def stop(settings: Settings) -> str:
    """Stop the server of this port (its whole process group) and wait for it to exit."""
    pid = running_pid(settings)
    if pid is None:
        settings.pid_file.unlink(missing_ok=True)
        return f"[mlflow-server] not running on port {settings.port}"
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if not pid_alive(pid):
            break
    settings.pid_file.unlink(missing_ok=True)
    return f"[mlflow-server] stopped (pid {pid})"


def _reap(pid: int) -> None:
    """Reap `pid` if it is our own exited child (a zombie would still count as alive)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def check(settings: Settings) -> str:
    """Whether an authenticated client reaches the API at the URL jobs use, and an unauthenticated one is refused."""
    user, password, source = credentials() if settings.auth else (None, None, "")
    status = api_status(settings.url, (user, password) if settings.auth else None)
    if status != 200:
        raise ServerError(_explain(status, settings, source))
    anonymous = api_status(settings.url, None)
    return f"[mlflow-server] {settings.url}: API answers 200 to {user or 'anyone'}; without credentials {anonymous}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m masksae.launch.server", description=__doc__)
    parser.add_argument("command", choices=("start", "stop", "check"), nargs="?", default="start")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        print({"start": start, "stop": stop, "check": check}[args.command](settings))
    except ServerError as error:
        print(f"[mlflow-server] error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
