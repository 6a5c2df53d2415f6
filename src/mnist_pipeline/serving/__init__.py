"""Serving models: `mnist-pipeline serve` (app.py and its middleware) and, for `mlflow models serve` of
models logged before their pyfunc was compiled, the one-prediction-at-a-time event loop (event_loop.py).
`mnist_pipeline.serving:one_prediction_at_a_time` is the name the docs give uvicorn, so it is exported here."""

from mnist_pipeline.serving.event_loop import ENV, one_prediction_at_a_time

__all__ = ["ENV", "one_prediction_at_a_time"]
