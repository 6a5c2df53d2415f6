"""Pruning a trial's training on its validation accuracy, epoch by epoch."""

from __future__ import annotations

import keras
import optuna


class PruneOnValidation(keras.callbacks.Callback):
    """Reports validation accuracy to Optuna after every epoch; if the pruner says so, stops the training
    (which then ends normally, its run FINISHED) and remembers the epoch, so the trial can be marked PRUNED."""

    def __init__(self, trial: optuna.Trial, monitor: str = "val_accuracy") -> None:
        super().__init__()
        self.trial, self.monitor = trial, monitor
        self.pruned_at: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        self.trial.report(float((logs or {})[self.monitor]), step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            self.model.stop_training = True
