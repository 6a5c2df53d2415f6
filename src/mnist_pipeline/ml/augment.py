"""Random affine augmentation of image batches: one fused warp per image, stateless seeds.

Design:
- Fused warp. Rotation, shift, shear and zoom are composed into a single 3x3 matrix per image and
  applied to the whole batch by one `ImageProjectiveTransformV3` call (bilinear, zero fill). Chaining
  the four Keras preprocessing layers resamples each image four times (blurrier) and was ~4x slower.
- Stateless seeds. Parameters come from `tf.random.stateless_uniform`, so the output is a pure function
  of (images, seed): the same seed gives bit-identical output, and no stateful random op is involved,
  which keeps `tf.data` parallel and fast under `tf.config.experimental.enable_op_determinism()`.
  `augment_dataset` folds the batch index into a per-epoch key, so an epoch can be replayed alone.

Coordinates: x is the column, y the row (pointing down); pixel centres sit at integer coordinates and
transforms act about the image centre ((W - 1) / 2, (H - 1) / 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf

from mnist_pipeline.core import plots

PARAM_NAMES = ("rotation", "width_shift", "height_shift", "shear", "zoom")


def _matrices(rows: list[list[tf.Tensor]]) -> tf.Tensor:
    """A batch of matrices [B, 3, 3] from a 3x3 nested list of [B] tensors."""
    return tf.stack([tf.stack(row, axis=-1) for row in rows], axis=-2)


def affine_matrix(rotation_deg, shift_x_px, shift_y_px, shear, zoom_x, zoom_y, height, width) -> tf.Tensor:
    """Forward affine maps (input pixel -> output pixel) [B, 3, 3] for per-image parameters of shape [B].

    Applied in this order, about the image centre: zoom (magnification, > 1 enlarges), horizontal
    shear (x += shear * y), rotation (positive = counter-clockwise on screen, like np.rot90 and Keras
    RandomRotation), then the shift in pixels (+x right, +y down).
    """
    values = [tf.cast(v, tf.float32) for v in (rotation_deg, shift_x_px, shift_y_px, shear, zoom_x, zoom_y)]
    one = tf.ones_like(sum(values))  # the common batch shape: scalars broadcast against [B] vectors
    zero = tf.zeros_like(one)
    angle, tx, ty, s, zx, zy = (v * one for v in values)
    angle = angle * (math.pi / 180.0)
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0 * one
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0 * one
    cos, sin = tf.cos(angle), tf.sin(angle)
    # With y pointing down, [[cos, sin], [-sin, cos]] turns +x towards -y: counter-clockwise on screen.
    to_origin = _matrices([[one, zero, -cx], [zero, one, -cy], [zero, zero, one]])
    zoom = _matrices([[zx, zero, zero], [zero, zy, zero], [zero, zero, one]])
    shear_m = _matrices([[one, s, zero], [zero, one, zero], [zero, zero, one]])
    rotate = _matrices([[cos, sin, zero], [-sin, cos, zero], [zero, zero, one]])
    back_and_shift = _matrices([[one, zero, cx + tx], [zero, one, cy + ty], [zero, zero, one]])
    return back_and_shift @ rotate @ shear_m @ zoom @ to_origin


def apply_affine(images: tf.Tensor, matrices: tf.Tensor) -> tf.Tensor:
    """Warp images [B, H, W, C] by forward maps [B, 3, 3]: bilinear, zeros outside, clipped to [0, 1]."""
    images = tf.convert_to_tensor(images)
    # The op wants the inverse map (output pixel -> input pixel) as its first 8 entries (the 9th is 1).
    inverse = tf.linalg.inv(tf.cast(matrices, tf.float32))
    transforms = tf.reshape(inverse, [-1, 9])[:, :8]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return tf.ensure_shape(tf.clip_by_value(warped, 0.0, 1.0), images.shape)


def random_affine(
    images: tf.Tensor,
    seed: tf.Tensor,
    *,
    rotation: float,
    width_shift: float,
    height_shift: float,
    shear: float,
    zoom: float,
) -> tf.Tensor:
    """One random affine warp per image of a batch [B, H, W, C], a pure function of `seed` (int [2]).

    Per image, uniformly: rotation in [-rotation, rotation] degrees; shifts in [-f, f] times W (x) or
    H (y) pixels; horizontal shear factor in [-shear, shear]; x and y magnification, independently,
    in [1 - zoom, 1 + zoom]. A parameter equal to 0 disables that part.

    Shear is a factor (tan of the shear angle, as Keras 3 RandomShear's x_factor), not an angle:
    Keras' old ImageDataGenerator read shear_range in degrees, so its shear_range=0.2 sheared by at
    most 0.2 degrees, i.e. not at all in practice; a factor of 0.2 (~11 degrees) is the visible shear
    that setting was evidently meant to give. (ImageDataGenerator also drew zoom as the inverse
    scale; drawing the magnification itself differs negligibly for small ranges.)
    """
    if min(rotation, width_shift, height_shift, shear, zoom) < 0 or zoom >= 1:
        raise ValueError("augmentation ranges must be >= 0, and zoom < 1")
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    # One draw, one column per parameter; philox pinned so the stream does not depend on the device.
    u = tf.random.stateless_uniform([shape[0], 6], seed=seed, minval=-1.0, maxval=1.0, alg="philox")
    matrices = affine_matrix(
        rotation_deg=u[:, 0] * rotation,
        shift_x_px=u[:, 1] * width_shift * width,
        shift_y_px=u[:, 2] * height_shift * height,
        shear=u[:, 3] * shear,
        zoom_x=1.0 + u[:, 4] * zoom,
        zoom_y=1.0 + u[:, 5] * zoom,
        height=height,
        width=width,
    )
    return apply_affine(images, matrices)


def augment_dataset(dataset: tf.data.Dataset, key, parallelism: int = tf.data.AUTOTUNE, **params) -> tf.data.Dataset:
    """Map random_affine over batches (images, labels), batch i warped with the seed fold_in(key, i).

    `key` is a stateless seed, shape (2,) int64: the training derives one per epoch from (seed, epoch), so
    every epoch draws anew yet any epoch can be replayed alone (a resumed training).
    """
    key = tf.cast(key, tf.int64)

    def warp(index, batch):
        images, labels = batch
        return random_affine(images, tf.random.experimental.stateless_fold_in(key, index), **params), labels

    return dataset.enumerate().map(warp, num_parallel_calls=parallelism, deterministic=True)


def is_identity(params: Mapping[str, float]) -> bool:
    """True when every augmentation range is 0, so augmentation can be skipped altogether."""
    return all(float(params[name]) == 0.0 for name in PARAM_NAMES)


def preview_grid(images: np.ndarray, path, seed: int = 0, **params) -> Path:
    """A 4x4 PNG grid: each of the first 8 images followed by one augmented version of it."""
    originals = np.asarray(images[:8], dtype=np.float32)
    augmented = random_affine(tf.constant(originals), tf.constant([seed, 0], tf.int64), **params).numpy()
    interleaved = np.stack([originals, augmented], axis=1).reshape(-1, *originals.shape[1:])
    titles = ["original", "augmented"] * len(originals)
    return plots.image_grid(interleaved, titles, Path(path), rows=4, cols=4)
