"""The Keras side of training: runtime settings, input pipelines, optimizer, callbacks. No tracking, no files."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mnist_pipeline import augment, batchnorm

log = logging.getLogger(__name__)
EVAL_BATCH = 1024  # inference batch for validation: larger is faster and does not change the result
PIPELINE_PARALLELISM = 2  # batches gathered/warped at once, and batches prefetched ahead of the model
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}  # the CPU multiplies bfloat16 natively


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo does not exist."""
    try:
        match = re.search(r"(?m)^flags\s*:(.*)$", cpuinfo.read_text())
    except OSError:
        return set()
    return set(match.group(1).split()) if match else set()


def resolve_precision(name: str, flags: set[str] | None = None) -> str:
    """`auto` -> mixed_bfloat16 on a CPU with native bf16 (AVX512_BF16 or AMX), float32 elsewhere: without
    native support bf16 is emulated and slower than float32."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    if name != "auto":
        return name
    return "mixed_bfloat16" if BF16_CPU_FLAGS & (cpu_flags() if flags is None else flags) else "float32"


def cores() -> int:
    """CPU cores this process may use (its affinity, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_counts(threads: Mapping, jobs: int = 1, available: int | None = None) -> tuple[int, int]:
    """(intra_op, inter_op) for one of `jobs` trainings running at once. 0 means TensorFlow's default, every
    core, which is right for one job; with several, each gets an equal share of the cores (at least one),
    so they do not oversubscribe them. Explicit values are kept as set."""
    share = max(1, (available or cores()) // max(1, jobs))
    auto = share if jobs > 1 else 0
    return threads["intra_op"] or auto, threads["inter_op"] or auto


def _set_threads(intra_op: int, inter_op: int) -> None:
    pools = (("intra_op", intra_op, tf.config.threading.get_intra_op_parallelism_threads,
              tf.config.threading.set_intra_op_parallelism_threads),
             ("inter_op", inter_op, tf.config.threading.get_inter_op_parallelism_threads,
              tf.config.threading.set_inter_op_parallelism_threads))
    for name, wanted, get, put in pools:
        if not wanted or get() == wanted:
            continue
        try:
            put(wanted)
        except RuntimeError:  # TensorFlow already ran in this process: a launcher worker reused for a new job
            log.warning("trainer.threads.%s=%d not applied: this process already fixed TensorFlow's pool at %d",
                        name, wanted, get())


def thread_pools() -> str:
    """TensorFlow's pool sizes in force, e.g. `intra_op=1 inter_op=1` (0: its default, every core)."""
    return (f"intra_op={tf.config.threading.get_intra_op_parallelism_threads()} "
            f"inter_op={tf.config.threading.get_inter_op_parallelism_threads()}")


def configure_runtime(trainer: Mapping, jobs: int = 1) -> str:
    """Keras state, thread pools and the dtype policy; returns the precision used.

    Call before any model or tensor exists: TensorFlow fixes its thread pools at first use, and layers
    take the dtype policy in force when they are built. `jobs` is how many trainings run at once on this
    machine (a parallel launcher's n_jobs); threads are split between them (thread_counts).
    """
    keras.backend.clear_session()  # a launcher worker reused for another job starts from a clean state
    _set_threads(*thread_counts(trainer["threads"], jobs))
    precision = resolve_precision(trainer["precision"])
    keras.config.set_dtype_policy(precision)
    return precision


def export_copy(model: keras.Model, build: Callable[[], keras.Model]) -> keras.Model:
    """The same trained weights in the model that is saved and served: float32 (variables are float32 under
    mixed precision too), so it computes in float32 on any CPU, with Keras' own layers only
    (batchnorm.standard_copy), and without the training's compile state (optimizer, loss: a smoothed loss is
    a local function), so it loads without this package, compiled or not."""
    keras.config.set_dtype_policy("float32")
    copy = build()
    copy.set_weights(model.get_weights())
    return batchnorm.standard_copy(copy)


def seed_everything(seed: int, deterministic: bool) -> None:
    keras.utils.set_random_seed(seed)  # python, numpy and TF global seeds
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def steps_per_epoch(images: int, batch_size: int) -> int:
    return math.ceil(images / batch_size)


def epoch_order(n: int, buffer: int, key) -> tf.Tensor:
    """The order of one epoch's n images from a stateless key: a full permutation, or with a buffer < n a
    local one, each image moving within about `buffer` places (what a shuffle buffer of that size does;
    tf.data's own shuffle takes no per-epoch seed inside a pipeline)."""
    if buffer >= n:
        return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key)
    jitter = tf.random.stateless_uniform([n], seed=key, dtype=tf.float64) * buffer
    return tf.cast(tf.argsort(tf.range(n, dtype=tf.float64) + jitter, stable=True), tf.int64)


def train_dataset(x: np.ndarray, y: np.ndarray, trainer: Mapping, augment_params: Mapping,
                  epochs: range) -> tf.data.Dataset:
    """The batches of `epochs` (range(E) for a whole training, range(k, E) resuming after k epochs), one
    epoch after another: fit it with steps_per_epoch. Each epoch is shuffled, and augmented when asked
    for, with seeds derived from (seed, epoch) alone, so epoch k is the same whether training started at
    0 or resumed at k.

    The arrays become two in-memory tensors once; only indices are shuffled, and each batch is gathered
    from the tensors in one op instead of passing 54,000 single images through tf.data every epoch.
    Parallelism and prefetch are fixed, with tf.data's autotuner off: on a 2-core machine the autotuner
    was measured to stall training for seconds at a time (benchmarks/results.md).
    """
    images, labels = tf.constant(x), tf.constant(y)
    buffer = trainer["shuffle_buffer"] or len(x)
    augmented = not augment.is_identity(augment_params)

    def one_epoch(epoch):
        shuffle_key, augment_key = tf.unstack(
            tf.random.experimental.stateless_split(tf.stack([tf.constant(trainer["seed"], tf.int64), epoch]), 2))
        order = tf.data.Dataset.from_tensor_slices(epoch_order(len(x), buffer, shuffle_key))
        ds = order.batch(trainer["batch_size"]).map(
            lambda index: (tf.gather(images, index), tf.gather(labels, index)),
            num_parallel_calls=PIPELINE_PARALLELISM, deterministic=True)
        if augmented:
            ds = augment.augment_dataset(ds, augment_key, parallelism=PIPELINE_PARALLELISM, **augment_params)
        return ds

    ds = tf.data.Dataset.range(epochs.start, epochs.stop).flat_map(one_epoch)
    return without_autotune(ds.prefetch(PIPELINE_PARALLELISM))


def without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def eval_dataset(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    return without_autotune(tf.data.Dataset.from_tensor_slices((x, y)).batch(EVAL_BATCH).prefetch(1))


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
            0.0 if warmup else lr, decay_steps=max(1, total_steps - warmup),
            warmup_target=lr if warmup else None, warmup_steps=warmup)
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


def compile_model(model: keras.Model, optimizer_cfg: Mapping, steps_per_execution: int = 1,
                  total_steps: int = 1, label_smoothing: float = 0.0) -> keras.Model:
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


def callbacks(trainer: Mapping, optimizer: Mapping) -> tuple[BestWeights, list[keras.callbacks.Callback]]:
    best = BestWeights()
    averaged = [SwapEMAWeights()] if ema_settings(optimizer) else []
    extra: list[keras.callbacks.Callback] = [*averaged, best]
    stopping = trainer["early_stopping"]
    if stopping["enabled"]:
        extra.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=stopping["patience"], min_delta=stopping["min_delta"],
            restore_best_weights=False,  # BestWeights restores the best epoch in every case
        ))
    return best, extra
