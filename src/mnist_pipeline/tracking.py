"""Everything MLflow: the store, runs and their status, params, per-epoch metrics, artifacts, models.

No other module imports mlflow. A training run is opened with `training_run(...)`, which guarantees the
run ends FINISHED, FAILED (an exception) or KILLED (SIGINT/SIGTERM) and is never left RUNNING.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import json
import logging
import os
import signal
import sys
import time
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from hydra.experimental.callback import Callback
from mlflow.entities import Metric
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Schema, TensorSpec
from omegaconf import DictConfig, OmegaConf

from mnist_pipeline.errors import PipelineError, Terminated

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "MNIST_PIPELINE_PARENT_RUN_ID"
MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values; the full config is an artifact anyway
SIGNATURE = ModelSignature(  # unnamed tensors: the serving payload is simply {"inputs": images}
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28, 1))]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
)


def tracking_uri(tracking: Mapping) -> str:
    """MLFLOW_TRACKING_URI wins over the config, as with every MLflow tool."""
    return os.environ.get("MLFLOW_TRACKING_URI") or tracking["tracking_uri"]


def _artifact_location(uri: str, experiment: str) -> str | None:
    """For a local SQLite store: <folder of the database>/<experiment>/ (mlruns/mnist/); a server decides
    its own. Without this MLflow would put artifacts under ./mlruns of whatever folder the process ran in."""
    if uri.startswith("sqlite:///"):
        db_path = Path(uri.removeprefix("sqlite:///"))
        return (db_path.parent.resolve() / experiment).as_uri()
    return None


def setup(tracking: Mapping) -> str:
    """Point MLflow at the store and experiment; returns the experiment id."""
    uri = tracking_uri(tracking)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(tracking["experiment"])
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        experiment_id = mlflow.create_experiment(
            tracking["experiment"], artifact_location=_artifact_location(uri, tracking["experiment"])
        )
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


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
def _signals_recorded(received: list[int]) -> Iterator[None]:
    """While a run is open, SIGTERM raises Terminated (SIGINT raises KeyboardInterrupt as usual) and
    either is recorded, so the run ends KILLED even if a library wraps the exception in its own."""

    def on_term(signum, frame):
        received.append(signum)
        raise Terminated(f"signal {signum}")

    def on_int(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    try:
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_term),
                    signal.SIGINT: signal.signal(signal.SIGINT, on_int)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def training_run(
    run_name: str, config: DictConfig | Mapping, tags: Mapping[str, str]
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run holding the config as dotted params; ends FINISHED, FAILED or KILLED."""
    parent = os.environ.get(PARENT_RUN_ENV)
    run = mlflow.start_run(run_name=run_name, parent_run_id=parent or None, tags=dict(tags))
    status, received = "FAILED", []
    try:
        with _signals_recorded(received):
            params = {k: _param_value(v) for k, v in flatten(config).items()}
            too_long = [k for k, v in params.items() if len(v) > MAX_PARAM_LENGTH]
            for key in too_long:
                log.warning("param %s is longer than MLflow allows; see config.yaml in the artifacts", key)
                params.pop(key)
            mlflow.log_params(params)
            yield run
        status = "FINISHED"
    finally:
        if received or isinstance(sys.exc_info()[1], (KeyboardInterrupt, Terminated)):
            status = "KILLED"
        mlflow.end_run(status=status)
        log.info("MLflow run %s (%s) ended %s", run.info.run_id, run_name, status)


class EpochMetrics(keras.callbacks.Callback):
    """Logs loss, accuracy, val_loss, val_accuracy, learning_rate and epoch_seconds with step = epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        metrics["epoch_seconds"] = time.perf_counter() - self._started
        mlflow.log_metrics(metrics, step=epoch)
        if logs is not None:  # so the history has them too
            logs["learning_rate"] = metrics["learning_rate"]
            logs["epoch_seconds"] = metrics["epoch_seconds"]


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


def log_file(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path)


def log_dict(data: Mapping, artifact_file: str) -> None:
    mlflow.log_dict(dict(data), artifact_file)


def _keras_save_model(path: str, **kwargs: Any) -> None:
    # mlflow.keras.save_model (3.17) writes the input example before creating `path`, so any
    # input_example raises FileNotFoundError; creating the folder first is the only change.
    kwargs.pop("validate_serving_input", None)  # Model.log passes it; save_model does not take it
    os.makedirs(path, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)


_KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_keras_save_model)


def _pip_requirements() -> list[str]:
    """The installed versions, pinned: what MLflow would infer, without its 6 s probe subprocess."""
    tf_dist = "tensorflow-cpu" if _installed("tensorflow-cpu") else "tensorflow"
    return [f"{name}=={_installed(name)}" for name in ("mlflow", "keras", tf_dist, "numpy")]


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def log_keras_model(model: keras.Model, example: np.ndarray, step: int, name: str = "model") -> str:
    """Log the model with its signature and an input example; returns its URI (models:/<model_id>).

    `step` links the run's metrics at that epoch (the best one) to the logged model.
    """
    info = Model.log(
        artifact_path=None, name=name, flavor=_KERAS_FLAVOR, model=model, signature=SIGNATURE,
        input_example=np.asarray(example, dtype=np.float32), step=step, pip_requirements=_pip_requirements(),
    )
    return info.model_uri


def log_to_run(run_id: str, metrics: Mapping[str, float], files: list[Path], artifact_path: str) -> None:
    """Add metrics (step 0) and files to an existing, ended run without reopening it (its status and end
    time stay those of the training)."""
    client = MlflowClient()
    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise PipelineError(
            f"MLflow run {run_id} not found in {mlflow.get_tracking_uri()}: the store was reset or moved "
            "since training; retrain with `dvc repro --force train@<variant>`"
        ) from exc
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path)


def load_keras_model(model_uri: str) -> keras.Model:
    return mlflow.keras.load_model(model_uri)


def load_predictor(model_uri: str, tracking: str | None = None):
    """Any MLflow model as a function: float32 images (n, 28, 28, 1) -> probabilities (n, 10)."""
    if tracking:
        mlflow.set_tracking_uri(tracking)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except mlflow.exceptions.MlflowException as exc:
        raise PipelineError(f"cannot load model {model_uri} from {mlflow.get_tracking_uri()}: {exc.message}") from exc
    return lambda images: np.asarray(model.predict(np.asarray(images, dtype=np.float32)))


def register_champion(model_uri: str, name: str, alias: str, tags: Mapping[str, str]) -> int:
    """Make `model_uri` the version of registered model `name` that `alias` points to.

    A new champion becomes a new version and takes the alias; older versions stay. If the alias already
    points at a version of the same model, nothing changes (re-running the report is idempotent).
    """
    client = MlflowClient()
    try:
        current = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        current = None
    if current is not None and current.source == model_uri:
        return int(current.version)
    version = mlflow.register_model(model_uri, name, tags=dict(tags))
    client.set_registered_model_alias(name, alias, version.version)
    return int(version.version)


class MultirunParentRun(Callback):
    """Hydra callback: a multirun's jobs become child runs of one parent run named after the sweep."""

    def __init__(self) -> None:
        self._client: MlflowClient | None = None
        self._run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        setup(config.tracking)
        self._client = MlflowClient()
        sweep = Path(str(config.hydra.sweep.dir)).name
        experiment = mlflow.get_experiment_by_name(config.tracking.experiment)
        run = self._client.create_run(experiment.experiment_id, run_name=f"sweep {sweep}",
                                      tags={"sweep.dir": str(config.hydra.sweep.dir)})
        self._run_id = run.info.run_id
        os.environ[PARENT_RUN_ENV] = self._run_id
        atexit.register(self._end, "FAILED")  # a sweep that raised never reaches on_multirun_end

    def _end(self, status: str) -> None:
        if self._client is not None and self._run_id is not None:
            self._client.set_terminated(self._run_id, status=status)
            self._run_id = None
        os.environ.pop(PARENT_RUN_ENV, None)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._client is None or self._run_id is None:
            return
        children = self._client.search_runs(
            [self._client.get_run(self._run_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self._run_id}'",
        )
        failed = any(child.info.status != "FINISHED" for child in children)
        self._end("FAILED" if failed else "FINISHED")
