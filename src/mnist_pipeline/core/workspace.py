"""Where this code runs: its workspace (a checkout, or a DVC experiment's temporary copy) and the project.

DVC runs queued (`dvc exp run --queue`) and `--temp` experiments in temporary copies of the repository
under .dvc/tmp/exps/, and sets DVC_ROOT to the project's own root for every stage it runs (for those
copies too). Code and config come from the workspace, so an experiment runs its own edits; state that
every run shares, the MLflow store, belongs to the project.
"""

from __future__ import annotations

import os
from pathlib import Path

# The checkout this package was imported from: dvc.yaml runs stages with PYTHONPATH=src, so inside a
# DVC experiment's temporary copy this is the copy, not the checkout the package was installed from.
WORKSPACE = Path(__file__).resolve().parents[3]  # src/mnist_pipeline/core/workspace.py
CONF_DIR = WORKSPACE / "conf"


def project_root() -> Path:
    """The project's root: DVC's DVC_ROOT when DVC runs the stage, else this workspace."""
    root = os.environ.get("DVC_ROOT", "").strip()
    return Path(root).resolve() if root else WORKSPACE


def dvc_experiment() -> str:
    """The name of the DVC experiment running this stage (`dvc exp run -n NAME`), '' outside one."""
    return os.environ.get("DVC_EXP_NAME", "").strip()
