"""A shared MLflow tracking server: `mlflow server` on PostgreSQL, artifacts served through it.

    mnist-pipeline server start [--dir .mlflow-server] [--host 127.0.0.1] [--port 5000] [--auth]
    mnist-pipeline server status | stop

Everything the server keeps lives in one folder: a PostgreSQL cluster of its own (postgres/, databases
`mlflow` for runs and the registry, `optuna` for search studies, `mlflow_auth` for the basic-auth app's
users), the artifacts (artifacts/, `--artifacts-destination`, so clients upload and download through the
server and need no shared filesystem), the server's log and server.json (PIDs, URL, ports). Clients need
only MLFLOW_TRACKING_URI=http://host:port. `--database-uri` uses an existing PostgreSQL database instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mnist_pipeline.core import processes
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.team.postgres import Cluster, free_port

STATE = "server.json"
DATABASES = ("mlflow", "optuna", "mlflow_auth")
AUTH_ENV = ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD")


class ServerError(PipelineError):
    """The tracking server could not be started, found or stopped; the message says why."""


def read_state(folder: Path) -> dict | None:
    path = Path(folder) / STATE
    return json.loads(path.read_text()) if path.is_file() else None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _auth_config(folder: Path, database_uri: str) -> Path:
    """basic-auth's settings: users in PostgreSQL beside the runs; no default admin password (MLflow has
    none since 3.16.1: MLFLOW_AUTH_ADMIN_PASSWORD sets it on the first start)."""
    path = folder / "basic_auth.ini"
    path.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {database_uri}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    path.chmod(0o600)  # it holds the database password
    return path


def start(
    folder: Path,
    host: str = "127.0.0.1",
    port: int = 5000,
    database_uri: str | None = None,
    auth: bool = False,
    allowed_hosts: str | None = None,
    workers: int = 2,
    timeout: float = 180,
) -> dict:
    """Start PostgreSQL (unless `database_uri` is given) and `mlflow server`; returns the state written to
    server.json. Waits until the server answers /health."""
    folder = Path(folder).resolve()
    state = read_state(folder)
    if state and processes.alive(state.get("pid")):
        raise ServerError(
            f"a tracking server from {folder} is already running at {state['url']} "
            f"(pid {state['pid']}): `mnist-pipeline server stop --dir {folder}` first"
        )
    missing = [name for name in AUTH_ENV if auth and not os.environ.get(name)]
    if missing:
        raise ServerError(
            f"--auth needs {' and '.join(missing)} in the environment (a secret key for its CSRF "
            "protection, the admin password to create on first start, 12+ characters)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    cluster = None
    auth_uri = database_uri
    if database_uri is None:
        previous = (state or {}).get("postgres") or {}
        cluster = Cluster(folder / "postgres", port=previous.get("port") or free_port(host), host=host)
        cluster.init()
        cluster.start()
        for name in DATABASES:
            cluster.create_database(name)
        database_uri, auth_uri = cluster.uri("mlflow"), cluster.uri("mlflow_auth")

    url = f"http://{host}:{port}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        database_uri,
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if allowed_hosts:  # Host headers the server answers (DNS-rebinding protection)
        command += ["--allowed-hosts", allowed_hosts]
    env = dict(os.environ)
    if auth:
        command += ["--app-name", "basic-auth"]
        assert auth_uri is not None  # database_uri was given, or the cluster's was made above
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(_auth_config(folder, auth_uri))
    log = folder / "server.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True
        )  # its own process group: stop() ends its workers too
    state = {
        "url": url,
        "pid": process.pid,
        "host": host,
        "port": port,
        "auth": auth,
        "log": str(log),
        "artifacts": str(folder / "artifacts"),
        "postgres": {"port": cluster.port, "pid": cluster.pid(), "data": str(cluster.data)} if cluster else None,
    }
    (folder / STATE).write_text(json.dumps(state, indent=2) + "\n")

    deadline = time.monotonic() + timeout
    while not _healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            reason = (
                f"exited with {process.returncode}" if process.poll() is not None else f"no answer in {timeout:.0f} s"
            )
            stop(folder)
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise ServerError(f"mlflow server {reason}: {tail[0]} (log: {log})")
        time.sleep(0.5)
    return state


def stop(folder: Path, timeout: float = 60) -> list[int]:
    """Stop the server's process group, then its PostgreSQL; returns the PIDs that were running."""
    folder = Path(folder).resolve()
    state = read_state(folder)
    if state is None:
        raise ServerError(f"no tracking server state in {folder / STATE}: nothing to stop")
    stopped: list[int] = []
    pid: int = state.get("pid") or 0
    if processes.alive(pid):
        stopped.append(pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while processes.alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if processes.alive(pid):
            os.killpg(pid, signal.SIGKILL)
            _reap(pid)
    postgres = state.get("postgres")
    if postgres:
        cluster = Cluster(folder / "postgres", port=postgres["port"], host=state["host"])
        cluster_pid = cluster.pid()
        if cluster_pid:
            stopped.append(cluster_pid)
        cluster.stop()
    (folder / STATE).unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    """Collect the exit status if the server is our own child (started in this process, as in tests)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def status(folder: Path) -> str:
    state = read_state(Path(folder).resolve())
    if state is None or not processes.alive(state.get("pid")):
        return f"not running ({Path(folder).resolve()})"
    health = "healthy" if _healthy(state["url"]) else "not answering"
    auth = ", basic-auth" if state.get("auth") else ""
    lines = [f"running at {state['url']} (pid {state['pid']}{auth}), {health}; log: {state['log']}"]
    if state.get("postgres"):
        cluster = Cluster(Path(folder).resolve() / "postgres", port=state["postgres"]["port"], host=state["host"])
        lines.append(
            f"Optuna storage for shared searches: {cluster.uri('optuna').replace(cluster.password(), '<password>')}"
            f" (the password is in {cluster.password_file})"
        )
    return "\n".join(lines)
