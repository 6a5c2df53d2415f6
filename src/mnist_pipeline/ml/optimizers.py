"""The optimizer (with its learning-rate schedule and weight averaging), the loss, and compiling a model."""

from __future__ import annotations

from collections.abc import Mapping

import keras


def learning_rate(cfg: Mapping, total_steps: int):
    """The optimizer's learning rate: a constant, or with `schedule: cosine` a linear warm-up over
    `warmup_fraction` of the steps then a cosine decay to 0 at the last step."""
    lr = cfg["lr"]
    schedule = cfg.get("schedule", "constant")
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        warmup = int(cfg.get("warmup_fraction", 0.0) * total_steps)
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else lr,
            decay_steps=max(1, total_steps - warmup),
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def ema_settings(cfg: Mapping) -> dict:
    """Keras' own weight averaging (`use_ema`): with `ema_momentum` > 0 the optimizer keeps an exponential
    moving average of the weights, updated every step; SwapEMAWeights (callbacks()) puts it to use."""
    momentum = float(cfg.get("ema_momentum", 0.0))
    return {"use_ema": True, "ema_momentum": momentum} if momentum > 0 else {}


def make_optimizer(cfg: Mapping, total_steps: int = 1) -> keras.optimizers.Optimizer:
    if cfg["name"] == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate(cfg, total_steps), **ema_settings(cfg))
    if cfg["name"] == "sgd":
        lr = learning_rate(cfg, total_steps)
        if cfg.get("decay", 0.0):
            # Keras 2's `decay` argument: lr / (1 + decay * iterations), now a schedule.
            lr = keras.optimizers.schedules.InverseTimeDecay(cfg["lr"], decay_steps=1, decay_rate=cfg["decay"])
        return keras.optimizers.SGD(learning_rate=lr, momentum=cfg.get("momentum", 0.0), **ema_settings(cfg))
    raise ValueError(f"unknown optimizer {cfg['name']!r}")


def crossentropy(label_smoothing: float = 0.0):
    """The loss on integer labels. With `label_smoothing` > 0 the target puts 1 - s + s/classes on the true
    class and s/classes on every other one (Keras 3's sparse loss has no such argument, so the labels are
    one-hot encoded inside the loss; the input pipeline stays integer)."""
    if not label_smoothing:
        return "sparse_categorical_crossentropy"

    def smoothed_crossentropy(y_true, y_pred):
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        target = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(target, y_pred, label_smoothing=label_smoothing)

    return smoothed_crossentropy


def compile_model(
    model: keras.Model,
    optimizer_cfg: Mapping,
    steps_per_execution: int = 1,
    total_steps: int = 1,
    label_smoothing: float = 0.0,
) -> keras.Model:
    """`total_steps` (batches over the whole training) shapes a learning-rate schedule; `steps_per_execution`
    > 1 runs that many batches per call into TensorFlow, saving the Python overhead of each step
    (epoch-level callbacks and metrics are unchanged)."""
    model.compile(
        optimizer=make_optimizer(optimizer_cfg, total_steps),
        loss=crossentropy(label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model
