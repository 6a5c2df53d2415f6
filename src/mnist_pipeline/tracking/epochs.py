"""Per-epoch metrics of a training run, logged with step = epoch, each epoch once, also across a resume."""

from __future__ import annotations

from collections.abc import Mapping

import mlflow
from mlflow.tracking import MlflowClient

from mnist_pipeline.tracking.store import guarded


def log_epoch(metrics: Mapping[str, float], epoch: int) -> None:
    """One epoch's figures into the active run, at step `epoch`."""
    with guarded(f"logging epoch {epoch}'s metrics"):
        mlflow.log_metrics(dict(metrics), step=epoch)


def logged_epochs(run_id: str) -> set[int]:
    """The epochs whose metrics the run holds (logged together, so `loss` tells)."""
    with guarded(f"reading run {run_id}'s epochs"):
        return {m.step for m in MlflowClient().get_metric_history(run_id, "loss")}


def log_missing_epochs(run_id: str, history: Mapping[str, list[float]], logged: set[int]) -> set[int]:
    """Log the epochs of `history` the active run lacks (saved by a snapshot, then killed before logging);
    returns every epoch the run now holds."""
    epochs = range(len(history.get("loss", [])))
    for epoch in epochs:
        if epoch not in logged:
            log_epoch({k: v[epoch] for k, v in history.items()}, epoch)
    return logged | set(epochs)
