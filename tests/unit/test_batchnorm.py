"""The fused batch norm computes what Keras' layer does, and no saved model depends on it."""

import keras
import numpy as np
import tensorflow as tf

from mnist_pipeline.ml import batchnorm
from tests.helpers import tiny_bn_cnn

RNG = np.random.default_rng(7)


def pair(shape):
    """Keras' layer and the fused one, built alike, with non-trivial gamma, beta and moving statistics."""
    keras_bn, fused = keras.layers.BatchNormalization(momentum=0.9), batchnorm.FusedBatchNormalization(momentum=0.9)
    for layer in (keras_bn, fused):
        layer.build(shape)
    channels = shape[-1]
    weights = [
        RNG.normal(1, 0.3, channels),
        RNG.normal(0, 0.3, channels),
        RNG.normal(0, 1, channels),
        RNG.uniform(0.5, 2, channels),
    ]
    for layer in (keras_bn, fused):
        layer.set_weights([w.astype("float32") for w in weights])
    return keras_bn, fused


def step(layer, x):
    """One training step's output, its gradients (input, gamma, beta) for a fixed loss, and the moving stats."""
    x = tf.constant(x)
    probe = tf.cos(tf.range(tf.size(x), dtype="float32"))  # a loss whose gradient differs per value
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.reshape(tf.cast(y, "float32"), [-1]) * probe)
    grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
    return [y, *grads, layer.moving_mean, layer.moving_variance]


def test_a_training_step_matches_keras_batch_normalization():
    # 2 images of 3x3: 18 values per channel, so Bessel's correction (18/17) would show in the variance
    x = RNG.normal(2, 3, (2, 3, 3, 5)).astype("float32")
    keras_bn, fused = pair(x.shape)
    for expected, got in zip(step(keras_bn, x), step(fused, x)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-5)


def test_inference_and_2d_inputs_run_keras_own_code():
    keras_bn, fused = pair((4, 6))
    x = RNG.normal(size=(4, 6)).astype("float32")
    for training in (True, False):
        np.testing.assert_allclose(fused(x, training=training), keras_bn(x, training=training), rtol=1e-5, atol=1e-6)
    images = RNG.normal(size=(2, 3, 3, 6)).astype("float32")
    keras_bn, fused = pair(images.shape)
    np.testing.assert_allclose(fused(images, training=False), keras_bn(images, training=False), rtol=1e-5, atol=1e-6)


def test_under_mixed_bfloat16_it_keeps_the_layer_dtypes():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        x = RNG.normal(size=(8, 5, 5, 4)).astype("float32")
        keras_bn, fused = pair(x.shape)
        expected, got = keras_bn(tf.cast(x, "bfloat16"), training=True), fused(tf.cast(x, "bfloat16"), training=True)
    finally:
        keras.config.set_dtype_policy("float32")
    assert got.dtype == expected.dtype == tf.bfloat16
    assert fused.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.cast(got, "float32"), tf.cast(expected, "float32"), atol=0.05)  # bf16 rounding
    np.testing.assert_allclose(fused.moving_variance, keras_bn.moving_variance, rtol=1e-3)


def test_bn_convnet_fuses_the_convs_batch_norm_only_when_asked():
    fused, plain = tiny_bn_cnn(True), tiny_bn_cnn(False)
    kinds = [type(layer).__name__ for layer in fused.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert kinds == ["FusedBatchNormalization", "FusedBatchNormalization", "BatchNormalization"]  # Dense: 2-D
    assert not any(isinstance(layer, batchnorm.FusedBatchNormalization) for layer in plain.layers)
    # convs 1*9*4 + 4*9*8, Dense 6*6*8*6 (no biases), 4 numbers per BN channel (4 + 8 + 6), output 6*3 + 3
    assert fused.count_params() == plain.count_params() == 36 + 288 + 1728 + 4 * 18 + 21 == 2145


def test_standard_copy_leaves_a_model_without_fused_layers_alone():
    plain = tiny_bn_cnn(False)
    assert batchnorm.standard_copy(plain) is plain
