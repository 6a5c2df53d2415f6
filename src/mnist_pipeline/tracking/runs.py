"""MLflow runs: a training run's lifecycle (never left RUNNING), and reading or updating runs by id that
other processes may also write.

A training run is opened with `training_run(...)`, which guarantees the run ends FINISHED, FAILED (an
exception) or KILLED (SIGINT/SIGTERM). A process killed outright (kill -9) leaves it RUNNING: the next run of
the same variant ends it KILLED (stale.py), or a resume reopens it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import mlflow
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from mnist_pipeline.core import signals
from mnist_pipeline.core.errors import Terminated
from mnist_pipeline.tracking import stale
from mnist_pipeline.tracking.params import log_config
from mnist_pipeline.tracking.parents import parent_from_environment
from mnist_pipeline.tracking.store import TrackingError, guarded

log = logging.getLogger(__name__)

RESUME_TAG = "resume.count"  # how often the run was resumed after its process died


@contextmanager
def training_run(
    run_name: str,
    config: Mapping[str, Any],
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run holding `config` (plain containers) as dotted params; ends FINISHED, FAILED or KILLED.
    It is a child of `parent_run_id`, else of a multirun's parent (parents.PARENT_RUN_ENV), if any. With
    `resume_run_id` that run is reopened (back to RUNNING, its resume count raised) instead of a new one.

    First, RUNNING runs of the same variant whose process died (kill -9) are ended KILLED (stale.py)."""
    client = MlflowClient()
    if tags.get("variant"):
        found = stale.running(client, f"tags.variant = '{tags['variant']}'")
        for dead in stale.end_dead(client, found, keep=resume_run_id):
            log.warning(
                "ended stale run %s (%s) KILLED: its process (%s) is gone",
                dead.info.run_id,
                dead.info.run_name,
                dead.data.tags[stale.OWNER_TAG],
            )
    owned = {**tags, stale.OWNER_TAG: stale.owner()}
    if resume_run_id:
        with guarded(f"reopening run {resume_run_id}"):
            resumes = int(client.get_run(resume_run_id).data.tags.get(RESUME_TAG, "0")) + 1
            run = mlflow.start_run(run_id=resume_run_id)
            mlflow.set_tags({**owned, RESUME_TAG: str(resumes)})
    else:
        parent = parent_run_id or parent_from_environment()
        with guarded(f"starting run {run_name!r}"):
            run = mlflow.start_run(run_name=run_name, parent_run_id=parent, tags={**owned, RESUME_TAG: "0"})
    status, mark = "FAILED", len(signals.received)
    try:
        with signals.handled():  # SIGTERM/SIGINT end the run KILLED, even if a library wraps the exception
            if not resume_run_id:  # a resumed run has its params (the same settings: resume.py checks)
                log_config(config)
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


def run_tags(run_id: str) -> dict[str, str]:
    with guarded(f"reading run {run_id}"):
        return dict(MlflowClient().get_run(run_id).data.tags)


@guarded("updating a run")
def update_run(
    run_id: str,
    tags: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    step: int = 0,
    status: str | None = None,
) -> None:
    """Tags, metrics (at `step`) and the status of a run that another process may also update."""
    client = MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )
    if status == "RUNNING":
        client.update_run(run_id, status="RUNNING")
    elif status is not None:
        client.set_terminated(run_id, status=status)


def running_ids(tags: Mapping[str, str]) -> list[str]:
    """The RUNNING runs carrying all of `tags`, in every experiment."""
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return [found.run.info.run_id for found in stale.running(MlflowClient(), query)]
