"""Keras models in MLflow (through its keras flavour; this module never imports Keras itself): logged with
their signature and an input example, loaded back for prediction."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import shutil
import types
import zipfile
from typing import Any

import mlflow
import numpy as np
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from mnist_pipeline.core.model_errors import ModelFileError, refusal
from mnist_pipeline.tracking.store import TrackingError, guarded


def signature(image_shape, num_classes: int) -> ModelSignature:
    """float32 images (-1, rows, cols, 1) -> probabilities (-1, classes), unnamed tensors: the serving
    payload is simply {"inputs": images}."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *image_shape))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )


# The name the pyfunc loader file has inside a logged model's code/ folder (unique: MLflow puts code/ first on
# sys.path and drops modules of the same name).
LOADER_MODULE = "mnist_pipeline_compiled_model"


def _keras_flavor(pyfunc_loader: str | None) -> types.SimpleNamespace:
    """MLflow's Keras flavour, with `pyfunc_loader` (a Python file with `_load_pyfunc(data_path)`, see
    ml/compiled.py) as the model's pyfunc loader instead of `mlflow.keras`, which predicts through
    `model.predict`; the `keras` flavour and its .keras file are unchanged."""

    def save_model(path: str, **kwargs: Any) -> None:
        # mlflow.keras.save_model (3.17) writes the input example before creating `path`, so any
        # input_example raises FileNotFoundError; creating the folder first is the only change.
        kwargs.pop("validate_serving_input", None)  # Model.log passes it; save_model does not take it
        os.makedirs(path, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)
        if pyfunc_loader is None:
            return
        model = kwargs["mlflow_model"]
        os.makedirs(os.path.join(path, "code"))
        shutil.copyfile(pyfunc_loader, os.path.join(path, "code", f"{LOADER_MODULE}.py"))
        env = model.flavors[mlflow.pyfunc.FLAVOR_NAME]
        mlflow.pyfunc.add_to_model(  # replaces the flavour's entry: same data and environments, new loader
            model,
            loader_module=LOADER_MODULE,
            data="data",
            code="code",
            conda_env=env["env"]["conda"],
            python_env=env["env"]["virtualenv"],
        )
        model.save(os.path.join(path, "MLmodel"))

    return types.SimpleNamespace(__name__="mlflow.keras", save_model=save_model)


def _pip_requirements() -> list[str]:
    """The installed versions, pinned: what MLflow would infer, without its 6 s probe subprocess."""
    tf_dist = "tensorflow-cpu" if _installed("tensorflow-cpu") else "tensorflow"
    return [f"{name}=={_installed(name)}" for name in ("mlflow", "keras", tf_dist, "numpy")]


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@guarded("logging the model")
def log_keras_model(
    model: Any,
    example: np.ndarray,
    step: int,
    metadata: dict | None = None,
    name: str = "model",
    pyfunc_loader: str | None = None,
) -> str:
    """Log the model with its signature, an input example and `metadata` (the dataset: its class names and
    predict's preprocessing, data/prepared.DatasetInfo) into the active run; returns its URI
    (models:/<model_id>). `step` links the run's metrics at that epoch (the best one) to the logged model.
    `pyfunc_loader`: the file MLflow's pyfunc loads the model with (train passes ml/compiled.py); without it,
    MLflow's own Keras loader."""
    example = np.asarray(example, dtype=np.float32)
    with contextlib.redirect_stdout(io.StringIO()):  # MLflow checks the example behind a Keras progress bar
        info = Model.log(
            artifact_path=None,
            name=name,
            flavor=_keras_flavor(pyfunc_loader),
            model=model,
            signature=signature(example.shape[1:], int(model.output_shape[-1])),
            input_example=example,
            step=step,
            pip_requirements=_pip_requirements(),
            metadata=metadata,
        )
    return info.model_uri


def load_keras_model(model_uri: str) -> Any:
    """A logged Keras model, in Keras' safe mode (a model carrying Python code is refused)."""
    flavors = _flavors(model_uri)
    if "keras" not in flavors:
        raise TrackingError(f"{model_uri}: not a Keras model (flavors: {', '.join(flavors) or 'none'})")
    if flavors["keras"].get("save_exported_model"):
        raise ModelFileError(
            f"{model_uri}: refused: an exported TensorFlow graph, not a .keras file that Keras' safe mode can check"
        )
    try:
        return mlflow.keras.load_model(model_uri, load_model_kwargs={"safe_mode": True, "compile": False})
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"cannot load model {model_uri} from {mlflow.get_tracking_uri()}: {exc.message}") from exc
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise refusal(exc, model_uri) from None


def _model_info(model_uri: str):
    try:
        return mlflow.models.get_model_info(model_uri)
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"cannot load model {model_uri} from {mlflow.get_tracking_uri()}: {exc.message}") from exc
    except OSError as exc:
        raise TrackingError(f"cannot load model {model_uri} from {mlflow.get_tracking_uri()}: {exc}") from exc


def _flavors(model_uri: str) -> dict:
    return dict(_model_info(model_uri).flavors)


def model_metadata(model_uri: str) -> dict:
    """What train logged with the model about its dataset (DatasetInfo.as_metadata); {} if nothing."""
    return dict(_model_info(model_uri).metadata or {})


def load_predictor(model_uri: str):
    """An MLflow model as a function: float32 images (n, rows, cols, 1) -> probabilities (n, classes). Keras
    models (what this pipeline logs) load in safe mode; other flavors through pyfunc."""
    if "keras" in _flavors(model_uri):
        model = load_keras_model(model_uri)
        return lambda images: np.asarray(model.predict(np.asarray(images, dtype=np.float32), verbose=0))
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"cannot load model {model_uri} from {mlflow.get_tracking_uri()}: {exc.message}") from exc
    return lambda images: np.asarray(model.predict(np.asarray(images, dtype=np.float32)))


def download_model(model_uri: str, dst: str) -> str:
    """A logged model's folder (MLmodel, data/, code/...) copied to `dst`; returns its local path."""
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst)
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"cannot load model {model_uri} from {mlflow.get_tracking_uri()}: {exc.message}") from exc
    except OSError as exc:
        raise TrackingError(f"cannot load model {model_uri} from {mlflow.get_tracking_uri()}: {exc}") from exc


def pyfunc_model(model_path: str, implementation: Any) -> Any:
    """The model at `model_path` as MLflow's pyfunc, predicting through `implementation` (an object with
    predict(data, params=None)) instead of the loader its MLmodel names: MLflow's signature checks stay, and
    no code shipped inside the model is run."""
    return mlflow.pyfunc.PyFuncModel(model_meta=Model.load(model_path), model_impl=implementation)
