"""The model that is saved, logged and served, made from the trained one."""

from __future__ import annotations

from collections.abc import Callable

import keras

from mnist_pipeline.ml import batchnorm


def export_copy(model: keras.Model, build: Callable[[], keras.Model]) -> keras.Model:
    """The same trained weights in the model that is saved and served: float32 (variables are float32 under
    mixed precision too), so it computes in float32 on any CPU, with Keras' own layers only
    (batchnorm.standard_copy), and without the training's compile state (optimizer, loss: a smoothed loss is
    a local function), so it loads without this package, compiled or not."""
    keras.config.set_dtype_policy("float32")
    copy = build()
    copy.set_weights(model.get_weights())
    return batchnorm.standard_copy(copy)
