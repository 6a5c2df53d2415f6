"""Batch normalization in one fused TensorFlow op while training, Keras' own layer in every saved model.

Keras 3 normalizes a batch with separate ops (a cast to float32, mean, variance, subtract, scale, cast
back), and TensorFlow differentiates each of them: on a CPU these passes over the activations are
memory-bound, and they made the flagship bn_cnn the least efficient model per FLOP (benchmarks/results.md).
TensorFlow's FusedBatchNormV3 does the forward pass, and its gradient the backward pass, in one op each;
Keras 2 used it (`fused=True`), Keras 3 does not. The maths is the same, so only training uses it:
`standard_copy` swaps Keras' layer back before a model is saved, so a saved or served model needs
nothing from this package to load.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


@keras.saving.register_keras_serializable(package="mnist_pipeline")
class FusedBatchNormalization(layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training step on NHWC images is TensorFlow's fused op.

    Inference, and inputs the fused op does not take (a Dense layer's 2-D batch, a mask, another axis),
    run Keras' own code. The moving statistics are updated as Keras does: with the biased batch variance
    (the fused op returns it with Bessel's correction, which is taken off again here).
    """

    def call(self, inputs, training=None, mask=None):
        if (
            not (training and self.trainable)
            or mask is not None
            or len(inputs.shape) != 4
            or self.axis not in (-1, 3)
            or keras.backend.backend() != "tensorflow"
        ):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )
        count = tf.cast(tf.size(inputs) // channels, "float32")
        variance = variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)


def batch_normalization(fused: bool) -> layers.Layer:
    return FusedBatchNormalization() if fused else layers.BatchNormalization()


def standard_copy(model: keras.Model) -> keras.Model:
    """`model` with keras.layers.BatchNormalization in place of every FusedBatchNormalization, same weights
    (the model itself when it has none)."""
    if not any(isinstance(layer, FusedBatchNormalization) for layer in model.layers):
        return model

    def standard(layer: layers.Layer) -> layers.Layer:
        config = layer.get_config()
        if isinstance(layer, FusedBatchNormalization):
            return layers.BatchNormalization.from_config({**config, "name": None})
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=standard)
    copy.set_weights(model.get_weights())
    return copy
