"""A Keras model called through one traced TensorFlow function: the fast, thread-safe way to predict.

Keras' `model.predict` builds a data pipeline and runs callbacks on every call (about 49 ms for one image
here) and is not safe to call from several threads at once; the same model traced once by `tf.function`
answers one image in about 1 ms and may be called from any number of threads. MLflow's Keras flavour serves
through `predict`, so the pipeline logs its models with this module as their pyfunc loader (MLflow's
custom-flavour mechanism: a `loader_module` with `_load_pyfunc`, copied into the model's `code/` folder):
`mlflow models serve` and `mlflow.pyfunc.load_model` then predict through the traced function, while the
`keras` flavour and its `.keras` file are unchanged.

This file is copied into every logged model and imported there without this package, so it imports only
NumPy, Keras and TensorFlow.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

# The largest batch one call computes; larger requests are split so memory stays bounded.
CHUNK = 1024


class CompiledModel:
    """`predict(images) -> probabilities` through a traced function with a dynamic batch axis."""

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self.model = model
        self.input_shape = tuple(model.input_shape[1:])
        spec = tf.TensorSpec((None, *self.input_shape), tf.float32)
        # One concrete function for every batch size: traced here, never again at request time.
        self._call = tf.function(lambda x: model(x, training=False), input_signature=[spec]).get_concrete_function()

    def predict(self, data: Any, params: dict | None = None) -> np.ndarray:
        """float32 images (n, *input_shape) -> float32 probabilities (n, classes); MLflow's pyfunc API."""
        x = np.asarray(data, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"images must have the shape (n, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        if len(x) <= CHUNK:
            return self._call(x).numpy()
        return np.concatenate([self._call(x[i : i + CHUNK]).numpy() for i in range(0, len(x), CHUNK)])


def _load_pyfunc(data_path: str) -> CompiledModel:
    """MLflow's loader hook: `data_path` is the logged model's `data/` folder, which holds `model.keras`
    (MLflow's Keras flavour). Loaded in Keras' safe mode: a model carrying Python code is refused."""
    import keras

    model = keras.saving.load_model(os.path.join(data_path, "model.keras"), safe_mode=True, compile=False)
    return CompiledModel(model)
