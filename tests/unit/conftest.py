"""The fast tier (`python3 dev.py test tests/unit`) runs in one process, in-process only.

No test may leave global state behind for the next: the environment, MLflow's tracking URI and active
experiment, Keras' dtype policy and op determinism and the random seeds are put
back after every test and module (tests/global_state.py). And no test may
start a stage, a TensorFlow process, DVC or MLflow's CLI: those belong in tests/integration/."""

from __future__ import annotations

import subprocess

import pytest

from tests.global_state import _module_leaves_no_global_state, _test_leaves_no_global_state

__all__ = ["_module_leaves_no_global_state", "_test_leaves_no_global_state"]  # pytest finds them here


def heavy(args) -> str | None:
    """Why a command does not belong in the fast tier, or None."""
    words = [str(w) for w in args] if isinstance(args, (list, tuple)) else str(args).split()
    program = words[0].rsplit("/", 1)[-1] if words else ""
    if program in ("dvc", "mlflow", "mnist-pipeline"):
        return f"it runs {program}"
    for flag, value in zip(words, words[1:]):
        if flag == "-m" and value.startswith(("mnist_pipeline", "mlflow", "dvc")):
            return f"it runs python -m {value}"
        if flag == "-c" and any(name in value for name in ("tensorflow", "keras")):
            return "its Python imports TensorFlow"
    return None


@pytest.fixture(autouse=True)
def _no_heavy_subprocess(monkeypatch):
    start = subprocess.Popen.__init__

    def checked(self, args, *more, **options):
        reason = heavy(args)
        assert reason is None, f"not in the fast tier ({reason}): move the test to tests/integration/: {args}"
        start(self, args, *more, **options)

    monkeypatch.setattr(subprocess.Popen, "__init__", checked)
