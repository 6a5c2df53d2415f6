"""`mnist-pipeline serve`'s ASGI app: MLflow's scoring app for the model, wrapped in the middleware a public
endpoint needs.

    AccessLog -> BodyLimit -> Invocations -> MLflow's scoring app (+ picture_routes)

The Keras model is loaded in Keras' safe mode (a model carrying Python code is refused) and predicts through
its compiled function (ml/compiled.py), which MLflow's app also calls: any number of requests at once, no
lock. uvicorn imports `from_environment` in every worker (its --factory), so the settings travel in ENV.
"""

from __future__ import annotations

import gc
import logging
import os
import sys

from mnist_pipeline.ml import runtime
from mnist_pipeline.ml.compiled import CompiledModel
from mnist_pipeline.serving import access_log, picture_routes
from mnist_pipeline.serving.asgi import App
from mnist_pipeline.serving.body_limit import BodyLimit
from mnist_pipeline.serving.invocations import Invocations
from mnist_pipeline.tracking import logged_models

MODEL_ENV, MAX_BODY_ENV = "MNIST_PIPELINE_SERVE_MODEL", "MNIST_PIPELINE_SERVE_MAX_BODY_BYTES"
THREADS_ENV = "MNIST_PIPELINE_SERVE_THREADS"
FACTORY = "mnist_pipeline.serving.app:from_environment"


def build(model_path: str, max_body_bytes: int) -> App:
    """The app for the logged model in the local folder `model_path`."""
    from mlflow.pyfunc import scoring_server

    model = CompiledModel(logged_models.load_keras_model(model_path))
    scoring = scoring_server.init(logged_models.pyfunc_model(model_path, model))
    picture_routes.add_routes(scoring, model, logged_models.model_metadata(model_path))
    return access_log.AccessLog(BodyLimit(Invocations(scoring, model), max_body_bytes))


def from_environment() -> App:
    """uvicorn's factory: the app for the model and limit `mnist-pipeline serve` put in the environment."""
    log_to_stderr()
    threads = int(os.environ.get(THREADS_ENV, "0"))
    runtime.set_threads(threads, threads)  # before the model is loaded: TensorFlow fixes its pools at first use
    app = build(os.environ[MODEL_ENV], int(os.environ[MAX_BODY_ENV]))
    # TensorFlow and MLflow leave ~500,000 long-lived objects that every full garbage collection walks; parsing
    # a request's JSON allocates enough lists to trigger several, which made json.loads of 32 images 57 ms
    # instead of 7. Frozen, they are never walked again (Python's gc.freeze, made for servers).
    gc.collect()
    gc.freeze()
    return app


def log_to_stderr() -> None:
    """The access lines on stderr, next to uvicorn's own (which configures only its loggers)."""
    logger = access_log.LOGGER
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
