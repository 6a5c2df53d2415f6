"""Files and texts as artifacts of the active run, or of an ended run by its id."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.tracking import MlflowClient

from mnist_pipeline.tracking.store import TrackingError, guarded


@guarded("logging an artifact")
def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


@guarded("logging an artifact")
def log_file(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path)


@guarded("logging an artifact")
def log_text_to(run_id: str, text: str, artifact_file: str) -> None:
    MlflowClient().log_text(run_id, text, artifact_file)


def _check_run(client: MlflowClient, run_id: str) -> None:
    """The training's run is in the store, or a TrackingError that says what to do."""
    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise TrackingError(
            f"MLflow run {run_id} not found in {mlflow.get_tracking_uri()}: the store was reset or moved "
            "since training; retrain with `dvc repro --force train@<variant>`"
        ) from exc


def log_to_run(run_id: str, metrics: Mapping[str, float], files: list[Path], artifact_path: str) -> None:
    """Add metrics (step 0) and files to an existing, ended run without reopening it (its status and end
    time stay those of the training)."""
    client = MlflowClient()
    with guarded(f"logging into run {run_id}"):
        _check_run(client, run_id)
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for path in files:
            client.log_artifact(run_id, str(path), artifact_path)


def download(run_id: str, artifact_path: str, dst: Path) -> Path:
    """One artifact of a run copied into the folder `dst` (without MLflow's progress bar); returns its path."""
    switch = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    before = os.environ.get(switch)
    os.environ[switch] = "false"
    try:
        with guarded(f"downloading {artifact_path} of run {run_id}"):
            client = MlflowClient()
            _check_run(client, run_id)
            return Path(client.download_artifacts(run_id, artifact_path, str(dst)))
    finally:
        if before is None:
            del os.environ[switch]
        else:
            os.environ[switch] = before
