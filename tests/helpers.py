"""Helpers shared by the tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def idx_bytes(array: np.ndarray, dtype_byte: int = 0x08) -> bytes:
    """The IDX encoding of a uint8 array (header + payload)."""
    header = struct.pack(">BBBB", 0, 0, dtype_byte, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_gz(path: Path, payload: bytes) -> Path:
    path.write_bytes(gzip.compress(payload))
    return path


def run_module(module: str, *overrides: str, env: dict | None = None, cwd: Path | None = None):
    """Run `python -m <module> <overrides>` as a user would; returns the CompletedProcess."""
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1800,
    )


def copy_repo(dest: Path) -> Path:
    """A fresh git checkout-like copy of the project (tracked and unignored files only) at `dest`."""
    import shutil
    import subprocess

    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def run_dvc(repo: Path, *args: str, env: dict | None = None):
    """Run the venv's `dvc` in `repo`, with the venv first on PATH so stages use its `python`."""
    import os
    import subprocess
    import sys

    bindir = str(Path(sys.executable).parent)
    full_env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), **(env or {})}
    return subprocess.run(
        [str(Path(bindir) / "dvc"), *args], cwd=repo, env=full_env, capture_output=True, text=True, timeout=3600
    )
