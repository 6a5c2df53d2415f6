"""SQLite databases as files: where a URI points (a relative path is the project's), and the first opening
of a new one, one process at a time.

MLflow's tracking store and Optuna's RDB storage both create a new database's tables (and run their
migrations) on first use, unguarded; processes that start at once on a new file race
(`table experiments already exists`, `duplicate column name: step`). A lock file beside the database makes
them take turns; the kernel frees it if its holder dies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from mnist_pipeline.core import workspace

SQLITE = "sqlite:///"
OPEN_LOCK_TIMEOUT = 600  # seconds to wait for another process creating the same new database


def resolve_uri(uri: str) -> str:
    """A relative SQLite path means the project's file (workspace.project_root()), not the current
    folder's: queued and temporary DVC experiments run in copies of the repository."""
    if uri.startswith(SQLITE):
        path = uri.removeprefix(SQLITE)
        if path and path != ":memory:" and not Path(path).is_absolute():
            return SQLITE + str(workspace.project_root() / path)
    return uri


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix(SQLITE)) if uri.startswith(SQLITE) else None


@contextmanager
def first_open(uri: str) -> Iterator[None]:
    """Hold the database's lock while opening it (a no-op for other URIs); creates its folder."""
    path = sqlite_path(uri)
    if path is None or str(path) == ":memory:":
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=OPEN_LOCK_TIMEOUT):
        yield
