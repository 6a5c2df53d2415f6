"""All-or-nothing outputs: a stage's outputs appear complete or not at all, also when it fails or is
stopped by a signal part-way.

Everything is written to staging paths beside the final ones (`.<name>.<pid>.<random>.tmp`), then moved
into place with signals held back (signals.deferred), so a SIGTERM cannot split the moves. Staging left
by a process that was killed outright (kill -9) is removed by the next writer of the same output; DVC
ignores staging paths (.dvcignore), so they never change a folder's hash.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from mnist_pipeline.core import processes, signals


def clear_leftovers(path: Path) -> list[Path]:
    """Remove the staging paths of `path` whose writer process is gone; returns what was removed."""
    removed = []
    for leftover in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        pid = leftover.name[len(Path(path).name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not processes.alive(int(pid)):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def _staging_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _replace(staging: Path, final: Path) -> None:
    """Move a staged file or folder onto `final` (a folder is swapped in whole)."""
    if staging.is_dir():
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the output is an ordinary folder
        if final.is_dir():
            shutil.rmtree(final)
        elif final.exists():
            final.unlink()
    else:
        os.chmod(staging, 0o644)  # mkstemp makes it private; the output is an ordinary file
        if final.is_dir():
            shutil.rmtree(final)
    os.replace(staging, final)


class Outputs:
    """Outputs staged together: `file(path)` / `folder(path)` give staging paths to write; `commit()` moves
    them all into place; whatever was not committed is removed."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def folder(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        clear_leftovers(path)
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(path), suffix=".tmp", dir=path.parent))
        self._staged.append((staging, path))
        return staging

    def file(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        clear_leftovers(path)
        fd, name = tempfile.mkstemp(prefix=_staging_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
        self._staged.append((Path(name), path))
        return Path(name)

    def commit(self) -> None:
        with signals.deferred():
            for staging, final in self._staged:
                _replace(staging, final)
            self._staged.clear()

    def discard(self) -> None:
        for staging, _ in self._staged:
            if staging.is_dir():
                shutil.rmtree(staging, ignore_errors=True)
            else:
                staging.unlink(missing_ok=True)
        self._staged.clear()


@contextmanager
def all_or_nothing() -> Iterator[Outputs]:
    """Stage several outputs; they are committed together when the block ends without error."""
    outputs = Outputs()
    try:
        yield outputs
        outputs.commit()
    finally:
        outputs.discard()


@contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a staging folder beside `out_dir`; on success it replaces `out_dir`, on error it is removed."""
    with all_or_nothing() as outputs:
        yield outputs.folder(out_dir)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Yield a binary file beside `path` that replaces `path` once written in full, or vanishes on error."""
    with all_or_nothing() as outputs, open(outputs.file(path), "wb") as f:
        yield f
