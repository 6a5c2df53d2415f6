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
from mnist_pipeline.tracking import stale
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


RESUME_TAG = "resume.count"  # how often the run was resumed after its process died


@contextmanager
def training_run(
    run_name: str, config: DictConfig | Mapping, tags: Mapping[str, str], parent_run_id: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run holding the config as dotted params; ends FINISHED, FAILED or KILLED. It is a child of
    `parent_run_id`, else of a multirun's parent (PARENT_RUN_ENV), if any. With `resume_run_id` that run
    is reopened (back to RUNNING, its resume count raised) instead of a new one started.

    First, RUNNING runs of the same variant whose process died (kill -9) are ended KILLED (stale.py)."""
    client = MlflowClient()
    if tags.get("variant"):
        found = stale.running(client, f"tags.variant = '{tags['variant']}'")
        for dead in stale.end_dead(client, found, keep=resume_run_id):
            log.warning("ended stale run %s (%s) KILLED: its process (%s) is gone", dead.info.run_id,
                        dead.info.run_name, dead.data.tags[stale.OWNER_TAG])
    owned = {**tags, stale.OWNER_TAG: stale.owner()}
    if resume_run_id:
        with guarded(f"reopening run {resume_run_id}"):
            resumes = int(client.get_run(resume_run_id).data.tags.get(RESUME_TAG, "0")) + 1
            run = mlflow.start_run(run_id=resume_run_id)
            mlflow.set_tags({**owned, RESUME_TAG: str(resumes)})
    else:
        parent = parent_run_id or os.environ.get(PARENT_RUN_ENV)
        with guarded(f"starting run {run_name!r}"):
            run = mlflow.start_run(run_name=run_name, parent_run_id=parent or None, tags={**owned, RESUME_TAG: "0"})
    status, mark = "FAILED", len(signals.received)
    try:
        with signals.handled():  # SIGTERM/SIGINT end the run KILLED, even if a library wraps the exception
            if not resume_run_id:  # a resumed run has its params (the same settings: resume.py checks)
                _log_config(config)
            yield run
        status = "FINISHED"
    finally:
        failure = sys.exc_info()[1]
        if signals.since(mark) or isinstance(failure, (KeyboardInterrupt, Terminated)):
            status = "KILLED"
        _end_run(run, run_name, status, failure)


def _log_config(config: DictConfig | Mapping) -> None:
    params = {k: _param_value(v) for k, v in flatten(config).items()}
    too_long = [k for k, v in params.items() if len(v) > MAX_PARAM_LENGTH]
    for key in too_long:
        log.warning("param %s is longer than MLflow allows; see config.yaml in the artifacts", key)
        params.pop(key)
    with guarded("logging the config as params"):
        mlflow.log_params(params)


def find_run(run_id: str) -> bool:
    """Whether the store holds the run (a resume needs it)."""
    with guarded(f"looking up run {run_id}"):
        try:
            MlflowClient().get_run(run_id)
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return False
    return True


def logged_epochs(run_id: str) -> set[int]:
    """The epochs whose metrics the run holds (logged together, so `loss` tells)."""
    with guarded(f"reading run {run_id}'s epochs"):
        return {m.step for m in MlflowClient().get_metric_history(run_id, "loss")}


def log_missing_epochs(run_id: str, history: Mapping[str, list[float]], logged: set[int]) -> set[int]:
    """Log the epochs of `history` the run lacks (saved by a snapshot, then killed before logging);
    returns every epoch the run now holds."""
    for epoch in range(len(history.get("loss", []))):
        if epoch not in logged:
            with guarded(f"logging epoch {epoch}'s metrics"):
                mlflow.log_metrics({k: v[epoch] for k, v in history.items()}, step=epoch)
    return logged | set(range(len(history.get("loss", []))))


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


class EpochStats(keras.callbacks.Callback):
    """Adds learning_rate and epoch_seconds to each epoch's logs (first in the list, so every callback
    after it, and the history, has them)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            logs["epoch_seconds"] = time.perf_counter() - self._started


class EpochMetrics(keras.callbacks.Callback):
    """Logs each epoch's logs (loss, accuracy, val_loss, val_accuracy, learning_rate, epoch_seconds) with
    step = epoch, except epochs in `logged` (a resumed run holds them already: every step once)."""

    def __init__(self, logged: set[int] | None = None) -> None:
        super().__init__()
        self.logged = set(logged or ())

    def on_epoch_end(self, epoch, logs=None):
        if epoch in self.logged:
            return
        with guarded(f"logging epoch {epoch}'s metrics"):
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)


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


def running_ids(tags: Mapping[str, str]) -> list[str]:
    """The RUNNING runs carrying all of `tags`, in every experiment."""
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return [found.run.info.run_id for found in stale.running(MlflowClient(), query)]


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
                                      tags={"sweep.dir": str(config.hydra.sweep.dir), stale.OWNER_TAG: stale.owner()})
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
