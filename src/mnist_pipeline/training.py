"""The Keras side of training: input pipelines, optimizer, callbacks. No tracking, no files."""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from mnist_pipeline import augment

EVAL_BATCH = 1024  # inference batch for validation: larger is faster and does not change the result


def seed_everything(seed: int, deterministic: bool) -> None:
    keras.utils.set_random_seed(seed)  # python, numpy and TF global seeds
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def train_dataset(x: np.ndarray, y: np.ndarray, trainer: Mapping, augment_params: Mapping) -> tf.data.Dataset:
    """Shuffled (seeded, reshuffled every epoch), batched, augmented on the fly when asked for."""
    buffer = trainer["shuffle_buffer"] or len(x)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(buffer, seed=trainer["seed"], reshuffle_each_iteration=True).batch(trainer["batch_size"])
    if not augment.is_identity(augment_params):
        ds = augment.augment_dataset(ds, trainer["seed"], **augment_params)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(EVAL_BATCH).prefetch(tf.data.AUTOTUNE)


def make_optimizer(cfg: Mapping) -> keras.optimizers.Optimizer:
    if cfg["name"] == "adam":
        return keras.optimizers.Adam(learning_rate=cfg["lr"])
    if cfg["name"] == "sgd":
        # Keras 2's `decay` argument: lr / (1 + decay * iterations), now a schedule.
        lr = cfg["lr"]
        if cfg.get("decay", 0.0):
            lr = keras.optimizers.schedules.InverseTimeDecay(cfg["lr"], decay_steps=1, decay_rate=cfg["decay"])
        return keras.optimizers.SGD(learning_rate=lr, momentum=cfg.get("momentum", 0.0))
    raise ValueError(f"unknown optimizer {cfg['name']!r}")


def compile_model(model: keras.Model, optimizer_cfg: Mapping) -> keras.Model:
    model.compile(
        optimizer=make_optimizer(optimizer_cfg),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the lowest val_loss and restores them when training ends."""

    def __init__(self) -> None:
        super().__init__()
        self.best_epoch: int | None = None
        self.best_val_loss = np.inf
        self._weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch, logs=None):
        val_loss = (logs or {}).get("val_loss")
        if val_loss is not None and val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch = float(val_loss), epoch
            self._weights = [w.copy() for w in self.model.get_weights()]

    def on_train_end(self, logs=None):
        if self._weights is not None:
            self.model.set_weights(self._weights)


def callbacks(trainer: Mapping) -> tuple[BestWeights, list[keras.callbacks.Callback]]:
    best = BestWeights()
    extra: list[keras.callbacks.Callback] = [best]
    stopping = trainer["early_stopping"]
    if stopping["enabled"]:
        extra.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=stopping["patience"], min_delta=stopping["min_delta"],
            restore_best_weights=False,  # BestWeights restores the best epoch in every case
        ))
    return best, extra
