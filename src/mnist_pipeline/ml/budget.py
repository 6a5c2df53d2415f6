"""The training budget for `trainer.epochs: auto`: epochs, batch size and learning rate from the size of the
training split, so ~1,000 images train as well as 54,000 with no flags.

A number of epochs is only a budget for one dataset size: MNIST's 3 epochs at batch 256 are 633 optimizer
steps, the same 3 epochs on 900 images 12 steps (83% test accuracy where 100 epochs reach 97%). `auto`
counts the budget in images seen instead, and keeps enough steps per epoch:

- epochs = auto.images / training images, rounded up, at most auto.max_epochs (MNIST: 150,000 / 54,000 -> 3);
- batch = the configured one, or training images / auto.min_steps_per_epoch if that is smaller, but never
  below auto.min_batch (900 images: 32);
- learning rate x sqrt(new batch / configured batch) when the batch shrank (the square-root rule for Adam).

On MNIST-size data nothing changes; a number of epochs (`train.epochs=10`) trains exactly as configured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

AUTO = "auto"


@dataclass(frozen=True)
class Budget:
    epochs: int
    batch_size: int
    lr: float


def plan(trainer: Mapping, lr: float, images: int) -> Budget:
    """The budget for `images` training images: trainer.epochs as given, or `auto`'s rule above."""
    batch = int(trainer["batch_size"])
    if trainer["epochs"] != AUTO:
        return Budget(int(trainer["epochs"]), batch, lr)
    auto = trainer["auto"]
    epochs = min(int(auto["max_epochs"]), max(1, math.ceil(int(auto["images"]) / max(images, 1))))
    small = max(int(auto["min_batch"]), images // int(auto["min_steps_per_epoch"]))
    if small >= batch:
        return Budget(epochs, batch, lr)
    return Budget(epochs, small, lr * math.sqrt(small / batch))
