"""Set up the project environment on demand, then run the pipeline or the tests.

    python3 dev.py repro [dvc repro args...]   # create .venv if needed, then `dvc repro`
    python3 dev.py test  [pytest args...]      # create .venv if needed, then pytest
    python3 dev.py check                       # lint, format, types, import layers, docs (what CI runs first)
    python3 dev.py env                         # only create/update .venv
    python3 dev.py lock                        # rewrite requirements.lock from .venv (after a pin change)

Only the standard library is used here, so this runs on a fresh machine with nothing but Python 3.11+.
The environment is reinstalled only when pyproject.toml or requirements.lock changed since the last
install (a stamp file inside .venv records their hash).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".mnist-pipeline-installed"
INPUTS = [ROOT / "pyproject.toml", ROOT / "requirements.lock"]


def _inputs_hash() -> str:
    digest = hashlib.sha256()
    for path in INPUTS:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_env() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 the machine has
        sys.exit(f"dev.py: Python >= 3.11 is required, this is {sys.version.split()[0]}")
    wanted = _inputs_hash()
    if STAMP.exists() and STAMP.read_text().strip() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"dev.py: creating virtual environment {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    print("dev.py: installing the project and its pinned dependencies", flush=True)
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run(
        [*pip, "install", "--quiet", "-c", str(ROOT / "requirements.lock"), "-e", f"{ROOT}[test,dev]"],
        check=True,
    )
    STAMP.write_text(wanted + "\n")


def run_in_env(argv: list[str]) -> int:
    """Run a command with the venv first on PATH, so DVC stages' `python` is the venv's."""
    env = dict(os.environ, VIRTUAL_ENV=str(VENV), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(argv, cwd=ROOT, env=env).returncode


LOCK_HEADER = """\
# Every package of the tested environment (Linux, Python 3.11), used as pip constraints by dev.py.
# Regenerate after changing a pin in pyproject.toml: python3 dev.py lock
"""


def write_lock() -> int:
    frozen = subprocess.run(
        [str(PYTHON), "-m", "pip", "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
    ).stdout
    (ROOT / "requirements.lock").write_text(LOCK_HEADER + frozen)
    STAMP.write_text(_inputs_hash() + "\n")
    return 0


# What CI runs before the tests, in this order; each must pass (the pre-commit hooks run the same).
CHECKS = (
    ["ruff", "check", "."],
    ["ruff", "format", "--check", "."],
    ["mypy"],  # settings in pyproject.toml: src/, check_untyped_defs
    ["lint-imports"],  # the import-linter contracts in pyproject.toml
    ["mkdocs", "build", "--strict"],  # into site/ (git-ignored): a broken link or anchor fails
)


def run_checks() -> int:
    for check in CHECKS:
        print(f"dev.py check: {' '.join(check)}", flush=True)
        code = run_in_env([str(BIN / check[0]), *check[1:]])
        if code:
            return code
    return 0


def main(argv: list[str]) -> int:
    commands = {
        "repro": lambda rest: run_in_env([str(BIN / "dvc"), "repro", *rest]),
        "test": lambda rest: run_in_env([str(PYTHON), "-m", "pytest", *rest]),
        "check": lambda rest: run_checks(),
        "env": lambda rest: 0,
        "lock": lambda rest: write_lock(),
    }
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    ensure_env()
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
