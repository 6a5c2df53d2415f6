"""Serving the champion with `mlflow models serve` (see event_loop). `mnist_pipeline.serving:one_prediction_at_a_time`
is the name the docs give uvicorn, so it is exported here."""

from mnist_pipeline.serving.event_loop import ENV, one_prediction_at_a_time

__all__ = ["ENV", "one_prediction_at_a_time"]
