"""The training path up to `model.fit`, from a train config: the model, compiled, and its input pipeline.
The train stage and the benchmarks both call prepare_fit, so the benchmarks measure what the stage runs."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from mnist_pipeline.core.errors import ConfigError
from mnist_pipeline.ml import augment, budget, inputs, optimizers, runtime


def augment_settings(cfg: Mapping) -> dict[str, float]:
    return {k: float(cfg["augment"][k]) for k in augment.PARAM_NAMES}


class ModelFitError(ConfigError):
    """The model's architecture cannot take the dataset's images (e.g. its convolutions and pools shrink
    16x16 images below one pixel): the train stage skips such a variant instead of failing the pipeline."""


def build_model(model_cfg: Mapping, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """The model of a conf/model config for images of `input_shape` (rows, cols, channels) and
    `num_classes` classes; a model that cannot take images of that shape is a ModelFitError that says so."""
    try:
        return instantiate(model_cfg, input_shape=tuple(input_shape), num_classes=num_classes, _convert_="all")
    except (InstantiationException, ValueError) as exc:
        cause = exc.__cause__ or exc
        reason = " ".join(str(cause).split())[:300]
        if "negative" in reason.lower():  # a conv or pool shrank the image below 1 pixel
            reason = "its convolutions and pools shrink the image below one pixel"
        raise ModelFitError(
            f"model {model_cfg.get('name', '?')} cannot take {input_shape[0]}x{input_shape[1]} "
            f"images ({reason}): choose another model or padding=same"
        ) from None


def with_budget(cfg: DictConfig, images: int) -> DictConfig:
    """`cfg` with trainer.epochs, trainer.batch_size and optimizer.lr as trained on `images` training
    images: as configured, or for `trainer.epochs: auto` chosen by ml/budget.py. Every later use (the
    fit, the logged params, the resume snapshot's settings hash) sees the numbers actually trained."""
    chosen = budget.plan(cfg.trainer, float(cfg.optimizer.lr), images)
    resolved = copy.deepcopy(cfg)
    resolved.trainer.epochs, resolved.trainer.batch_size = chosen.epochs, chosen.batch_size
    resolved.optimizer.lr = chosen.lr
    return resolved


def prepare_fit(
    cfg: Mapping, x_train: np.ndarray, y_train: np.ndarray, num_classes: int, jobs: int = 1, first_epoch: int = 0
) -> tuple[keras.Model, tf.data.Dataset, Callable[[], keras.Model]]:
    """Runtime settings, seeds, the compiled model (for x_train's image shape and `num_classes`) and the
    training dataset (epochs first_epoch..trainer.epochs-1; fit it with steps_per_epoch). Returns (model,
    dataset, build), `build()` making a fresh model of the same config. `jobs`: trainings running at once
    (their threads are split)."""
    trainer = cfg["trainer"]
    if trainer["epochs"] == budget.AUTO:
        raise ValueError("trainer.epochs=auto: resolve the budget with with_budget(cfg, images) first")
    runtime.configure_runtime(trainer, jobs)
    runtime.seed_everything(trainer["seed"], trainer["deterministic"])

    def build() -> keras.Model:
        return build_model(cfg["model"], x_train.shape[1:], num_classes)

    steps = trainer["epochs"] * inputs.steps_per_epoch(len(x_train), trainer["batch_size"])
    model = optimizers.compile_model(
        build(),
        cfg["optimizer"],
        trainer["steps_per_execution"],
        total_steps=steps,
        label_smoothing=trainer["label_smoothing"],
    )
    dataset = inputs.train_dataset(
        x_train, y_train, trainer, augment_settings(cfg), range(first_epoch, trainer["epochs"])
    )
    return model, dataset, build
