"""`mlflow models serve` with one prediction at a time.

MLflow's scoring server (3.17) runs each /invocations request in `asyncio.to_thread`, that is in the event
loop's default thread pool, so concurrent requests call Keras' `model.predict` from several threads at once.
Keras' predict is not thread-safe: under load a served model once aborted here with TensorFlow's abseil
"Mutex corrupt". MLflow starts the server with uvicorn, which takes a custom event-loop factory
(`--loop module:function`, or the UVICORN_LOOP environment variable, which MLflow passes on to it). This one
is uvicorn's own loop with a one-thread default executor: connections are still accepted and bodies read
concurrently, while parsing and predicting run one request after another (TensorFlow uses every core inside
each prediction).

    UVICORN_LOOP=mnist_pipeline.serving:one_prediction_at_a_time \
        mlflow models serve -m models:/mnist-classifier@champion -p 5000 --host 127.0.0.1 --env-manager local
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from uvicorn.loops.auto import auto_loop_factory

ENV = {
    "UVICORN_LOOP": "mnist_pipeline.serving:one_prediction_at_a_time"
}  # what `mlflow models serve` needs in its environment


def one_prediction_at_a_time() -> asyncio.AbstractEventLoop:
    """uvicorn's default event loop whose `asyncio.to_thread` calls run one at a time, in order."""
    loop = auto_loop_factory()()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1, thread_name_prefix="prediction"))
    logging.getLogger("uvicorn.error").info("predictions run one at a time (%s)", ENV["UVICORN_LOOP"])
    return loop
