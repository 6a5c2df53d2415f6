"""Keras callbacks of the training loop: the best epoch's weights, weight averaging, per-epoch stats, and
handing each epoch's figures to whoever records them (the train stage passes MLflow's logger).

BestWeights and SwapEMAWeights keep state that a resume snapshot saves and restores (ml/resume.py):
`get_state()` / `set_state(state, folder)`, and `save_files(folder)` for BestWeights' weights file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import keras
import numpy as np

from mnist_pipeline.ml.optimizers import ema_settings


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

    # Saved with each resume snapshot (resume.Checkpoint): the best epoch so far and its weights.
    WEIGHTS_FILE = "best_weights.npz"

    def get_state(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_val_loss": float(self.best_val_loss)}

    def save_files(self, folder: Path) -> None:
        if self._weights is not None:
            np.savez(folder / self.WEIGHTS_FILE, *self._weights)

    def set_state(self, state: dict, folder: Path) -> None:
        self.best_epoch, self.best_val_loss = state["best_epoch"], state["best_val_loss"]
        if self.best_epoch is not None:
            with np.load(folder / self.WEIGHTS_FILE, allow_pickle=False) as saved:
                self._weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' SwapEMAWeights with swap_on_epoch: validation, the epoch BestWeights keeps (it comes after this
    one) and so the saved model all use the averaged weights. At every epoch's end, so in every resume
    snapshot, the model holds the averages and the optimizer the raw weights; that one flag is saved with
    the snapshot, so a resumed training swaps the raw weights back before its next epoch."""

    def __init__(self) -> None:
        super().__init__(swap_on_epoch=True)

    def get_state(self) -> dict:
        return {"ema_weights_in_model": bool(self._ema_weights_in_model)}

    def set_state(self, state: dict, folder: Path) -> None:
        self._ema_weights_in_model = state["ema_weights_in_model"]


class EpochStats(keras.callbacks.Callback):
    """Adds learning_rate and epoch_seconds to each epoch's logs (first in the list, so every callback
    after it, and the history, has them)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            logs["epoch_seconds"] = time.perf_counter() - self._started


class EpochLogger(keras.callbacks.Callback):
    """Hands each epoch's logs (loss, accuracy, val_loss, val_accuracy, learning_rate, epoch_seconds) to
    `record(metrics, epoch)`, except epochs in `done` (a resumed run holds them already: every step once)."""

    def __init__(self, record: Callable[[dict[str, float], int], None], done: set[int] | None = None) -> None:
        super().__init__()
        self.record, self.done = record, set(done or ())

    def on_epoch_end(self, epoch, logs=None):
        if epoch not in self.done:
            self.record({k: float(v) for k, v in (logs or {}).items()}, epoch)


def callbacks(trainer: Mapping, optimizer: Mapping) -> tuple[BestWeights, list[keras.callbacks.Callback]]:
    best = BestWeights()
    averaged = [SwapEMAWeights()] if ema_settings(optimizer) else []
    extra: list[keras.callbacks.Callback] = [*averaged, best]
    stopping = trainer["early_stopping"]
    if stopping["enabled"]:
        extra.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=stopping["patience"],
                min_delta=stopping["min_delta"],
                restore_best_weights=False,  # BestWeights restores the best epoch in every case
            )
        )
    return best, extra
