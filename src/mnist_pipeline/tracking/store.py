"""The MLflow store: which one, opening it safely from many processes, and its failures in one line."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import mlflow
import sqlalchemy.exc
from filelock import Timeout
from mlflow.exceptions import MlflowException

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.sqlite_files import first_open, resolve_uri, sqlite_path

# (text in the error, what to do): the first match gives the hint of a TrackingError.
HINTS = (
    (
        "database is locked",
        "another process kept the SQLite store busy for over 20 s: retry, or give many "
        "parallel writers a tracking server (mlflow server) instead of one SQLite file",
    ),
    (
        "file is not a database",
        "the file is not an SQLite database (corrupt?): move it aside, or point MLFLOW_TRACKING_URI at another store",
    ),
    ("out-of-date database schema", "back the store up, then run `mlflow db upgrade <store URI>`"),
    ("unable to open database", "the store's folder is missing or not writable"),
    ("Max retries exceeded", "is the tracking server running and reachable? check MLFLOW_TRACKING_URI"),
    ("Connection refused", "is the tracking server running and reachable? check MLFLOW_TRACKING_URI"),
)


# The experiment kind MLflow names model training, which its UI is meant to open on the Runs table. MLflow
# 3.17.2's UI does not choose its view from it yet (the browser's GenAI / Model training switch does, GenAI
# by default: docs/tracking.md); set for the UI versions that read it.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class TrackingError(PipelineError):
    """The MLflow store failed; the message says what failed, where, and what to do."""


class _NoTraceback(logging.Filter):
    """MLflow logs a store's SQL errors with their traceback before raising them; the stage reports the
    error itself, in one line (TrackingError), so these records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.exc_info


logging.getLogger("mlflow.store.db.utils").addFilter(_NoTraceback())


def tracking_uri(tracking: Mapping) -> str:
    """MLFLOW_TRACKING_URI wins over the config, as with every MLflow tool; relative SQLite paths resolved."""
    return resolve_uri(os.environ.get("MLFLOW_TRACKING_URI") or tracking["tracking_uri"])


def describe(exc: BaseException, action: str, uri: str) -> str:
    """`MLflow store <uri>: <action> failed: <first line of the error>; <what to do>`."""
    text = exc.message if isinstance(exc, MlflowException) else str(exc)
    what = next((line.strip() for line in str(text).splitlines() if line.strip()), type(exc).__name__)
    hint = next(
        (h for needle, h in HINTS if needle in str(text)),
        "check the store (MLFLOW_TRACKING_URI or tracking.tracking_uri)",
    )
    return f"MLflow store {uri}: {action} failed: {what[:300]}; {hint}"


@contextmanager
def guarded(action: str) -> Iterator[None]:
    """Turn any store failure inside the block into a TrackingError (one line, no traceback); also usable
    as a decorator."""
    try:
        yield
    except TrackingError:
        raise
    except (MlflowException, sqlalchemy.exc.SQLAlchemyError, Timeout) as exc:
        raise TrackingError(describe(exc, action, mlflow.get_tracking_uri())) from exc


def _artifact_location(uri: str, experiment: str) -> str | None:
    """For a local SQLite store: <folder of the database>/<experiment>/ (mlruns/mnist/); a server decides
    its own. Without this MLflow would put artifacts under ./mlruns of whatever folder the process ran in."""
    path = sqlite_path(uri)
    return (path.parent.resolve() / experiment).as_uri() if path is not None else None


def setup(tracking: Mapping) -> str:
    """Point MLflow at the store and experiment (creating either if new); returns the experiment id."""
    uri = tracking_uri(tracking)
    mlflow.set_tracking_uri(uri)
    name = tracking["experiment"]
    # first_open: MLflow creates a new store's tables unguarded (its own `_safe_initialize_tables` lock
    # covers only its jobs and workspace stores), so processes starting at once would race.
    with guarded(f"opening experiment {name!r}"), first_open(uri):
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            experiment_id = mlflow.create_experiment(
                name, artifact_location=_artifact_location(uri, name), tags=EXPERIMENT_TAGS
            )
        else:
            experiment_id = experiment.experiment_id
            for key, value in EXPERIMENT_TAGS.items():  # made before the tag existed; a user's own choice stays
                if key not in experiment.tags:
                    mlflow.MlflowClient().set_experiment_tag(experiment_id, key, value)
        mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def use(uri: str) -> str:
    """Point MLflow at a store that must already exist (reading models, the registry); returns the URI."""
    uri = resolve_uri(uri)
    path = sqlite_path(uri)
    if path is not None and not path.is_file():  # SQLite would silently create an empty store here
        raise TrackingError(
            f"no MLflow store at {path}: run the pipeline first, or point "
            "MLFLOW_TRACKING_URI (or --tracking-uri) at the store"
        )
    mlflow.set_tracking_uri(uri)
    return uri
