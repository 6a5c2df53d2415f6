"""A PostgreSQL cluster of the project's own: created with initdb in a folder, started and stopped with
pg_ctl, listening on TCP only (no Unix socket), password-protected (scram-sha-256).

The tracking server keeps MLflow's runs (and Optuna's studies) in it. PostgreSQL refuses to run as root:
when this process is root, the cluster's programs run as the unprivileged user `postgres` (Debian's
package creates it), which then owns the data folder and must be able to reach it.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.core.errors import PipelineError

SERVICE_USER = "postgres"


class PostgresError(PipelineError):
    """A PostgreSQL program failed; the message names it and its last words."""


def bin_dir() -> Path:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise PostgresError(
            "PostgreSQL not found (no pg_ctl on PATH or under /usr/lib/postgresql): install it, "
            "e.g. `apt-get install postgresql-15`"
        )
    return Path(found[-1]).parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _run_as() -> str | None:
    """The user the cluster's programs run as: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise PostgresError(
            f"running as root, and PostgreSQL refuses to: create the unprivileged user "
            f"{SERVICE_USER!r} (Debian's postgresql package does) or run as another user"
        ) from None
    return SERVICE_USER


@dataclass
class Cluster:
    root: Path  # holds data/, postgres.log and the superuser's password
    port: int
    host: str = "127.0.0.1"
    superuser: str = "mlflow"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    def _run(self, *args: str, timeout: float = 120) -> str:
        user = _run_as()
        try:
            done = subprocess.run(
                [str(bin_dir() / args[0]), *args[1:]],
                user=user,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd="/",
            )
        except subprocess.TimeoutExpired:
            raise PostgresError(f"{args[0]} did not finish within {timeout:.0f} s (log: {self.log})") from None
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PostgresError(f"{args[0]} failed: {last[0]} (log: {self.log})")
        return done.stdout

    def init(self) -> None:
        """Create the cluster if the folder holds none: a superuser with a random password, scram-sha-256."""
        if (self.data / "PG_VERSION").is_file():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        self.password_file.chmod(0o600)
        user = _run_as()
        pwfile = self.password_file
        if user is not None:  # initdb runs as `postgres`: give it the folder and a copy it may read
            shutil.chown(self.root, user)
            pwfile = self.root / "password.initdb"
            shutil.copy(self.password_file, pwfile)
            shutil.chown(pwfile, user)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                self.superuser,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            )
        finally:
            if pwfile != self.password_file:
                pwfile.unlink(missing_ok=True)

    def start(self, timeout: float = 60) -> None:
        if self.running():
            return
        options = f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories=''"
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(int(timeout)),
            "-o",
            options,
            timeout=timeout + 10,
        )

    def stop(self, timeout: float = 60) -> None:
        if self.running():
            self._run(
                "pg_ctl",
                "stop",
                "-D",
                str(self.data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(timeout)),
                timeout=timeout + 10,
            )

    def pid(self) -> int | None:
        """The postmaster's PID while the cluster runs (first line of postmaster.pid)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, owned by another user
            pass
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def uri(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.superuser}:{self.password()}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str, timeout: float = 30) -> None:
        """CREATE DATABASE unless it exists (psycopg, through TCP, as the cluster's superuser)."""
        import psycopg
        from psycopg import sql

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(
                    host=self.host,
                    port=self.port,
                    user=self.superuser,
                    password=self.password(),
                    dbname="postgres",
                    autocommit=True,
                    connect_timeout=5,
                ) as connection:
                    if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                        return
                    connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(f"cannot connect to PostgreSQL at {self.host}:{self.port}: {exc}") from exc
                time.sleep(0.5)
