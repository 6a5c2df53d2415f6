"""The model zoo: short Keras builders, one per family of the notebooks' architectures.

Each conf/model/<name>.yaml names its builder with `_target_` and passes the layer sizes, so one builder
serves every width/depth variant and adding an architecture means one builder plus one config. Every
model takes float32 images (n, rows, cols, 1) in [0, 1] and returns one softmax probability per class; the
image shape and the class count are the prepared dataset's (ml/fit.py passes them), never constants.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from mnist_pipeline.ml.batchnorm import batch_normalization

Shape = Sequence[int]  # (rows, cols, 1)


def _input_layers(input_shape: Shape, input_norm: str) -> list[keras.layers.Layer]:
    """The input, plus the small-MLP notebook's per-column L2 normalization when asked for.

    UnitNormalization(axis=1) computes what that notebook's keras.utils.normalize(x, axis=1) did to the
    data, but inside the model, so serving and prediction apply it too.
    """
    if input_norm not in ("none", "l2"):
        raise ValueError(f"input_norm must be 'none' or 'l2', got {input_norm!r}")
    return [keras.Input(tuple(input_shape))] + ([layers.UnitNormalization(axis=1)] if input_norm == "l2" else [])


def output_layer(num_classes: int) -> keras.layers.Layer:
    """Dense(num_classes) + softmax, always in float32: under mixed precision, probabilities and the loss in
    bfloat16 (8 bits of mantissa) would be too coarse; this one small layer costs nothing to keep exact."""
    return layers.Dense(num_classes, activation="softmax", dtype="float32")


def mlp(
    name: str,
    hidden: Sequence[int],
    dropout: float = 0.0,
    activation: str = "relu",
    input_norm: str = "none",
    *,
    input_shape: Shape,
    num_classes: int,
) -> keras.Model:
    """Flatten -> [Dense(width) -> Dropout]* -> Dense(classes): the dense notebooks (3x500, 2x350, small MLPs)."""
    stack = _input_layers(input_shape, input_norm) + [layers.Flatten()]
    for width in hidden:
        stack.append(layers.Dense(width, activation=activation))
        if dropout > 0:
            stack.append(layers.Dropout(dropout))
    stack.append(output_layer(num_classes))
    return keras.Sequential(stack, name=name)


def convnet(
    name: str,
    conv: Sequence[dict],
    dense: Sequence[int],
    padding: str = "valid",
    input_norm: str = "none",
    *,
    input_shape: Shape,
    num_classes: int,
) -> keras.Model:
    """[Conv2D (-> MaxPool)]* -> Flatten -> Dense* -> Dense(classes): the notebooks' CNNs.

    `conv` lists blocks as {filters, kernel, pool}; pool=true adds a 2x2 max-pool after that conv.
    """
    stack = _input_layers(input_shape, input_norm)
    for block in conv:
        stack.append(layers.Conv2D(block["filters"], block["kernel"], padding=padding, activation="relu"))
        if block.get("pool", False):
            stack.append(layers.MaxPooling2D(2))
    stack.append(layers.Flatten())
    stack.extend(layers.Dense(units, activation="relu") for units in dense)
    stack.append(output_layer(num_classes))
    return keras.Sequential(stack, name=name)


def bn_convnet(
    name: str,
    stages: Sequence[Sequence[dict]],
    dense: Sequence[int] = (),
    dropout: float = 0.0,
    input_norm: str = "none",
    fused_batchnorm: bool = True,
    *,
    input_shape: Shape,
    num_classes: int,
) -> keras.Model:
    """Stages of [Conv2D -> BatchNorm -> ReLU]*, Dropout after each stage -> Flatten -> [Dense -> BatchNorm ->
    ReLU -> Dropout]* -> Dense(classes): the batch-normalized CNNs (the flagship and the fast preset).

    A conv is {filters, kernel, strides (1), padding ("same")}; a strided conv downsamples instead of a
    max-pool. Convs carry no bias: the BatchNorm after each has its own shift. `fused_batchnorm`: train the
    convs' BatchNorm with TensorFlow's fused op (batchnorm.py); the saved model has Keras' own layer either way.
    """
    stack = _input_layers(input_shape, input_norm)
    for stage in stages:
        for conv in stage:
            stack += [
                layers.Conv2D(
                    conv["filters"],
                    conv["kernel"],
                    strides=conv.get("strides", 1),
                    padding=conv.get("padding", "same"),
                    use_bias=False,
                ),
                batch_normalization(fused_batchnorm),
                layers.ReLU(),
            ]
        if dropout > 0:
            stack.append(layers.Dropout(dropout))
    stack.append(layers.Flatten())
    for units in dense:
        stack += [layers.Dense(units, use_bias=False), layers.BatchNormalization(), layers.ReLU()]  # 2-D: not fused
        if dropout > 0:
            stack.append(layers.Dropout(dropout))
    stack.append(output_layer(num_classes))
    return keras.Sequential(stack, name=name)
