"""The training and validation input pipelines (tf.data), from the prepared arrays in memory."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from mnist_pipeline.ml import augment

EVAL_BATCH = 1024  # inference batch for validation: larger is faster and does not change the result
PIPELINE_PARALLELISM = 2  # batches gathered/warped at once, and batches prefetched ahead of the model


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


def train_dataset(
    x: np.ndarray, y: np.ndarray, trainer: Mapping, augment_params: Mapping, epochs: range
) -> tf.data.Dataset:
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
            tf.random.experimental.stateless_split(tf.stack([tf.constant(trainer["seed"], tf.int64), epoch]), 2)
        )
        order = tf.data.Dataset.from_tensor_slices(epoch_order(len(x), buffer, shuffle_key))
        ds = order.batch(trainer["batch_size"]).map(
            lambda index: (tf.gather(images, index), tf.gather(labels, index)),
            num_parallel_calls=PIPELINE_PARALLELISM,
            deterministic=True,
        )
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
