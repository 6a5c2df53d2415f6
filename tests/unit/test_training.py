"""The Keras side of training: precision choice, float32 export, the in-memory input pipeline, schedules."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mnist_pipeline.ml import callbacks, export, inputs, models, optimizers, runtime

TRAINER = {"batch_size": 4, "shuffle_buffer": 0, "seed": 3}
NO_AUGMENT = dict.fromkeys(("rotation", "width_shift", "height_shift", "shear", "zoom"), 0.0)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert runtime.cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512f", "avx512_bf16"}
    assert runtime.cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize(
    ("name", "flags", "expected"),
    [
        ("auto", {"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
        ("auto", {"amx_bf16"}, "mixed_bfloat16"),
        ("auto", {"avx512f", "avx2"}, "float32"),  # bf16 would be emulated: slower than float32
        ("float32", {"avx512_bf16"}, "float32"),
        ("mixed_bfloat16", set(), "mixed_bfloat16"),
    ],
)
def test_resolve_precision(name, flags, expected):
    assert runtime.resolve_precision(name, flags) == expected


def test_resolve_precision_rejects_unknown():
    with pytest.raises(ValueError, match="precision must be one of"):
        runtime.resolve_precision("float16", set())


def test_export_copy_of_a_mixed_precision_model_is_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:

        def build():
            return models.convnet(
                "tiny", [{"filters": 4, "kernel": 3, "pool": True}], [8], input_shape=(28, 28, 1), num_classes=10
            )

        mixed = build()
        assert mixed.layers[0].compute_dtype == "bfloat16" and mixed.layers[-1].compute_dtype == "float32"
        copy = export.export_copy(mixed, build)
    finally:
        keras.config.set_dtype_policy("float32")
    assert all(layer.compute_dtype == "float32" for layer in copy.layers)
    for a, b in zip(mixed.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(copy.predict(x, verbose=0), mixed.predict(x, verbose=0), atol=0.02)  # bf16 rounding


def batches_of(ds, per_epoch=3):
    batches = [(xb.numpy(), yb.numpy()) for xb, yb in ds]
    return [batches[i : i + per_epoch] for i in range(0, len(batches), per_epoch)]


def test_train_dataset_visits_every_image_once_per_epoch_in_a_new_order():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) * np.ones((1, 28, 28, 1), np.float32)
    y = np.arange(10, dtype=np.uint8)
    epochs = batches_of(inputs.train_dataset(x, y, TRAINER, NO_AUGMENT, range(2)))
    assert len(epochs) == 2 and inputs.steps_per_epoch(10, TRAINER["batch_size"]) == 3
    for batches in epochs:
        assert [len(yb) for _, yb in batches] == [4, 4, 2]
        for xb, yb in batches:
            np.testing.assert_array_equal(xb[:, 0, 0, 0], yb)  # each image stays with its label
        assert sorted(np.concatenate([yb for _, yb in batches]).tolist()) == list(range(10))
    orders = [np.concatenate([yb for _, yb in batches]).tolist() for batches in epochs]
    assert orders[0] != orders[1]  # reshuffled every epoch
    again = batches_of(inputs.train_dataset(x, y, TRAINER, NO_AUGMENT, range(2)))
    assert [np.concatenate([yb for _, yb in b]).tolist() for b in again] == orders  # same seed, same orders


@pytest.mark.parametrize("augment_params", [NO_AUGMENT, {**NO_AUGMENT, "rotation": 15.0, "zoom": 0.2}])
def test_an_epoch_replayed_alone_is_the_epoch_of_a_whole_training(augment_params):
    """What resuming relies on: epoch 2 built on its own (resuming after 2 epochs) has the same batches,
    in order, warped alike, as epoch 2 of the training that ran from 0."""
    x = np.random.default_rng(0).random((10, 28, 28, 1), dtype=np.float32)
    y = np.arange(10, dtype=np.uint8)
    whole = batches_of(inputs.train_dataset(x, y, TRAINER, augment_params, range(4)))
    alone = batches_of(inputs.train_dataset(x, y, TRAINER, augment_params, range(2, 4)))
    for (xa, ya), (xb, yb) in zip(sum(whole[2:], []), sum(alone, []), strict=True):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(whole[1][0][1], whole[2][0][1])


def test_cosine_schedule_warms_up_then_decays_to_zero():
    schedule = optimizers.learning_rate({"lr": 0.01, "schedule": "cosine", "warmup_fraction": 0.1}, total_steps=100)
    values = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert values[0] == 0.0 and values[1] == pytest.approx(0.005) and values[2] == pytest.approx(0.01)
    assert values[3] == pytest.approx(0.005, rel=1e-3) and values[4] == pytest.approx(0.0, abs=1e-9)
    assert optimizers.learning_rate({"lr": 0.01, "schedule": "constant"}, total_steps=100) == 0.01
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        optimizers.learning_rate({"lr": 0.01, "schedule": "step"}, total_steps=100)


def test_a_shuffle_buffer_moves_each_image_within_about_its_size():
    order = inputs.epoch_order(1000, 50, tf.constant([3, 1], tf.int64)).numpy()
    assert sorted(order.tolist()) == list(range(1000))
    displacement = np.abs(order - np.arange(1000))
    assert displacement.max() <= 50 and displacement.mean() > 5
    full = inputs.epoch_order(1000, 1000, tf.constant([3, 1], tf.int64)).numpy()
    assert sorted(full.tolist()) == list(range(1000)) and np.abs(full - np.arange(1000)).max() > 500


def test_seed_zero_under_a_global_seed_zero():
    """keras.utils.set_random_seed(0) then trainer.seed=0 (as a sweep over seeds does) builds and runs."""
    import keras

    keras.utils.set_random_seed(0)
    x = np.zeros((10, 28, 28, 1), np.float32)
    ds = inputs.train_dataset(x, np.arange(10, dtype=np.uint8), {**TRAINER, "seed": 0}, NO_AUGMENT, range(1))
    assert sorted(np.concatenate([y.numpy() for _, y in ds]).tolist()) == list(range(10))


def fit_with_callbacks(ema_momentum: float):
    """A small softmax regression fitted with the pipeline's optimizer and callbacks, the same way each time
    (fixed seed, float32 on the CPU, the same batches): the only difference between two calls is the EMA."""
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(64, 12)).astype("float32"), rng.integers(0, 3, 64)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(3, activation="softmax")])
    optimizers.compile_model(model, {"name": "adam", "lr": 0.05, "ema_momentum": ema_momentum})
    best, extra = callbacks.callbacks({"early_stopping": {"enabled": False}}, {"ema_momentum": ema_momentum})
    history = model.fit(
        x, y, batch_size=16, epochs=3, shuffle=False, validation_data=(x[:32], y[:32]), callbacks=extra, verbose=0
    ).history
    return model, best, history, (x[:32], y[:32])


def test_ema_weights_are_validated_and_kept_while_training_follows_the_raw_weights():
    """With optimizer.ema_momentum > 0, Keras' weight average is what validation scores and what BestWeights
    keeps (so what is saved), while the training itself (its loss) is exactly that of the same fit without
    EMA: the averages are swapped out again before each epoch trains."""
    raw_model, _, raw_history, _ = fit_with_callbacks(0.0)
    model, best, history, (x_val, y_val) = fit_with_callbacks(0.9)
    assert history["loss"] == pytest.approx(raw_history["loss"], rel=1e-6)
    assert history["val_loss"] != pytest.approx(raw_history["val_loss"], rel=1e-3)
    kept_val_loss = model.evaluate(x_val, y_val, verbose=0)[0]
    assert kept_val_loss == pytest.approx(history["val_loss"][best.best_epoch], rel=1e-5)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(model.get_weights(), raw_model.get_weights())) > 1e-3
    assert [
        type(cb).__name__
        for cb in callbacks.callbacks({"early_stopping": {"enabled": False}}, {"ema_momentum": 0.9})[1]
    ] == ["SwapEMAWeights", "BestWeights"]
    assert optimizers.make_optimizer({"name": "adam", "lr": 1e-3, "ema_momentum": 0.0}).use_ema is False


def test_label_smoothing_targets_one_minus_s_plus_s_over_k_on_the_true_digit():
    """The smoothed loss is the cross-entropy against (1 - s) * one_hot + s / classes, on integer labels;
    0 keeps Keras' own sparse loss."""
    assert optimizers.crossentropy(0.0) == "sparse_categorical_crossentropy"
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    labels = np.array([0, 1])
    s = 0.3
    loss = keras.ops.convert_to_numpy(optimizers.crossentropy(s)(labels, probs))
    target = (1 - s) * np.eye(3)[labels] + s / 3  # [0.8, 0.1, 0.1] and [0.1, 0.8, 0.1]
    np.testing.assert_allclose(loss, -(target * np.log(probs)).sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(
        loss,
        [
            -(0.8 * np.log(0.7) + 0.1 * np.log(0.2) + 0.1 * np.log(0.1)),
            -(0.1 * np.log(0.1) + 0.8 * np.log(0.1) + 0.1 * np.log(0.8)),
        ],
        rtol=1e-6,
    )
    # (n, 1) labels, as Keras passes them from a dataset of scalars after expand_dims, give the same loss.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(optimizers.crossentropy(s)(labels[:, None], probs)), loss)
