"""MLflow runs: a training run and its status, params, per-epoch metrics and artifacts; multirun parents.

A training run is opened with `training_run(...)`, which guarantees the run ends FINISHED, FAILED (an
exception) or KILLED (SIGINT/SIGTERM) and is never left RUNNING.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import mlflow
from hydra.experimental.callback import Callback
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from mnist_pipeline import signals
from mnist_pipeline.errors import Terminated
from mnist_pipeline.tracking.store import TrackingError, guarded, setup

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "MNIST_PIPELINE_PARENT_RUN_ID"
MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values; the full config is an artifact anyway


def flatten(config: Mapping | DictConfig, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"a.b.c": value}; lists of mappings are indexed ("model.conv.0.filters")."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
            flat.update(flatten({str(i): v for i, v in enumerate(value)}, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


@contextmanager
def training_run(
    run_name: str, config: DictConfig | Mapping, tags: Mapping[str, str], parent_run_id: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run holding the config as dotted params; ends FINISHED, FAILED or KILLED. It is a child of
    `parent_run_id`, else of a multirun's parent (PARENT_RUN_ENV), if any."""
    parent = parent_run_id or os.environ.get(PARENT_RUN_ENV)
    with guarded(f"starting run {run_name!r}"):
        run = mlflow.start_run(run_name=run_name, parent_run_id=parent or None, tags=dict(tags))
    status, mark = "FAILED", len(signals.received)
    try:
        with signals.handled():  # SIGTERM/SIGINT end the run KILLED, even if a library wraps the exception
            params = {k: _param_value(v) for k, v in flatten(config).items()}
            too_long = [k for k, v in params.items() if len(v) > MAX_PARAM_LENGTH]
            for key in too_long:
                log.warning("param %s is longer than MLflow allows; see config.yaml in the artifacts", key)
                params.pop(key)
            with guarded("logging the config as params"):
                mlflow.log_params(params)
            yield run
        status = "FINISHED"
    finally:
        failure = sys.exc_info()[1]
        if signals.since(mark) or isinstance(failure, (KeyboardInterrupt, Terminated)):
            status = "KILLED"
        _end_run(run, run_name, status, failure)


def _end_run(run: mlflow.ActiveRun, run_name: str, status: str, failure: BaseException | None) -> None:
    try:
        with guarded(f"ending run {run.info.run_id} as {status}"):
            mlflow.end_run(status=status)
    except TrackingError as exc:
        if failure is None:
            raise
        log.warning("%s", exc)  # the failure that ended the run is the error reported
        return
    log.info("MLflow run %s (%s) ended %s", run.info.run_id, run_name, status)


class EpochMetrics(keras.callbacks.Callback):
    """Logs loss, accuracy, val_loss, val_accuracy, learning_rate and epoch_seconds with step = epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        metrics["epoch_seconds"] = time.perf_counter() - self._started
        with guarded(f"logging epoch {epoch}'s metrics"):
            mlflow.log_metrics(metrics, step=epoch)
        if logs is not None:  # so the history has them too
            logs["learning_rate"] = metrics["learning_rate"]
            logs["epoch_seconds"] = metrics["epoch_seconds"]


@guarded("logging an artifact")
def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


@guarded("logging an artifact")
def log_file(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path)


@guarded("logging an artifact")
def log_dict(data: Mapping, artifact_file: str) -> None:
    mlflow.log_dict(dict(data), artifact_file)


def log_to_run(run_id: str, metrics: Mapping[str, float], files: list[Path], artifact_path: str) -> None:
    """Add metrics (step 0) and files to an existing, ended run without reopening it (its status and end
    time stay those of the training)."""
    client = MlflowClient()
    with guarded(f"logging into run {run_id}"):
        try:
            client.get_run(run_id)
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise TrackingError(
                f"MLflow run {run_id} not found in {mlflow.get_tracking_uri()}: the store was reset or moved "
                "since training; retrain with `dvc repro --force train@<variant>`"
            ) from exc
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for path in files:
            client.log_artifact(run_id, str(path), artifact_path)


@guarded("finding or creating the shared parent run")
def shared_parent_run(experiment_id: str, run_name: str, identity: Mapping[str, str],
                      params: Mapping[str, Any] | None = None) -> str:
    """The id of the one run tagged with `identity`, shared by processes that may start at once on several
    machines: each creates one if it finds none, then every process keeps the earliest (start time, then
    id) and deletes any other it created itself."""
    client = MlflowClient()
    quoted = {k: str(v).replace("'", "\\'") for k, v in identity.items()}
    found = " and ".join(f"tags.`{k}` = '{v}'" for k, v in quoted.items())

    def existing() -> list:
        runs = client.search_runs([experiment_id], filter_string=found)
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    present = existing()
    if present:
        return present[0].info.run_id
    mine = client.create_run(experiment_id, run_name=run_name, tags=dict(identity)).info.run_id
    first = existing()[0].info.run_id
    if first != mine:
        client.delete_run(mine)
    elif params:
        client.log_batch(mine, params=[Param(k, _param_value(v)) for k, v in params.items()])
    return first


@guarded("updating a run")
def update_run(run_id: str, tags: Mapping[str, str] | None = None, metrics: Mapping[str, float] | None = None,
               step: int = 0, status: str | None = None) -> None:
    """Tags, metrics (at `step`) and the status of a run that another process may also update."""
    client = MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
                     tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])
    if status == "RUNNING":
        client.update_run(run_id, status="RUNNING")
    elif status is not None:
        client.set_terminated(run_id, status=status)


@guarded("logging an artifact")
def log_text_to(run_id: str, text: str, artifact_file: str) -> None:
    MlflowClient().log_text(run_id, text, artifact_file)


def run_tags(run_id: str) -> dict[str, str]:
    with guarded(f"reading run {run_id}"):
        return dict(MlflowClient().get_run(run_id).data.tags)


class MultirunParentRun(Callback):
    """Hydra callback: a multirun's jobs become child runs of one parent run named after the sweep."""

    def __init__(self) -> None:
        self._client: MlflowClient | None = None
        self._run_id: str | None = None

    @guarded("creating the sweep's parent run")
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        setup(config.tracking)
        self._client = MlflowClient()
        sweep = Path(str(config.hydra.sweep.dir)).name
        experiment = mlflow.get_experiment_by_name(config.tracking.experiment)
        run = self._client.create_run(experiment.experiment_id, run_name=f"sweep {sweep}",
                                      tags={"sweep.dir": str(config.hydra.sweep.dir)})
        self._run_id = run.info.run_id
        os.environ[PARENT_RUN_ENV] = self._run_id
        atexit.register(self._end_early)  # a sweep that raised or was stopped never reaches on_multirun_end

    def _end_early(self) -> None:
        self._end("KILLED" if signals.received else "FAILED")

    def _end(self, status: str) -> None:
        if self._client is not None and self._run_id is not None:
            self._client.set_terminated(self._run_id, status=status)
            self._run_id = None
        os.environ.pop(PARENT_RUN_ENV, None)

    @guarded("ending the sweep's parent run")
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._client is None or self._run_id is None:
            return
        children = self._client.search_runs(
            [self._client.get_run(self._run_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self._run_id}'",
        )
        failed = any(child.info.status != "FINISHED" for child in children)
        self._end("FAILED" if failed else "FINISHED")
