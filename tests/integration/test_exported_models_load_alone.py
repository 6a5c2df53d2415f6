"""A saved model loads in a fresh interpreter that never imports this package, as `mlflow models serve` and any
user's script load it: the exported copy of a fused-batch-norm, mixed-precision model, and a model trained with
the label-smoothed loss (a local function the saved file must not refer to). Each check starts a TensorFlow
subprocess, so it lives here and not in the fast tier."""

import os
import subprocess
import sys

import keras
import numpy as np

from mnist_pipeline.ml import batchnorm, export, models, optimizers
from tests.helpers import tiny_bn_cnn

RNG = np.random.default_rng(7)


def test_the_exported_model_loads_without_this_package(tmp_path):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:

        def build():
            return tiny_bn_cnn(True)

        model = optimizers.compile_model(
            build(),
            {"name": "adam", "lr": 0.01, "schedule": "constant", "warmup_fraction": 0.0, "ema_momentum": 0.0},
            1,
            total_steps=2,
        )
        x = RNG.random((16, 12, 12, 1), dtype=np.float32)
        model.fit(x, RNG.integers(0, 3, 16), batch_size=8, epochs=1, verbose=0)  # moving stats move
        exported = export.export_copy(model, build)
    finally:
        keras.config.set_dtype_policy("float32")
    assert not any(isinstance(layer, batchnorm.FusedBatchNormalization) for layer in exported.layers)
    assert all(layer.compute_dtype == "float32" for layer in exported.layers)
    for a, b in zip(model.get_weights(), exported.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(exported.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.02)
    exported.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", exported.predict(x, verbose=0))
    # a fresh interpreter that never imports mnist_pipeline, as `mlflow models serve` would load it
    check = (
        "import sys, numpy as np, keras; assert not any(m.startswith('mnist_pipeline') for m in sys.modules); "
        f"m = keras.saving.load_model({str(tmp_path / 'model.keras')!r}, safe_mode=True, compile=False); "
        f"np.testing.assert_allclose(m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0), "
        f"np.load({str(tmp_path / 'expected.npy')!r}), atol=1e-6); print('loaded')"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip().endswith("loaded"), done.stderr[-2000:]


def test_a_model_trained_with_label_smoothing_is_saved_without_its_loss(tmp_path):
    """The smoothed loss is a local function: the saved model must not refer to it, so Keras' default
    load_model (compile=True) works in an interpreter that never imported this package."""

    def build():
        return models.convnet(
            "tiny", [{"filters": 4, "kernel": 3, "pool": True}], [8], input_shape=(28, 28, 1), num_classes=10
        )

    model = optimizers.compile_model(build(), {"name": "adam", "lr": 1e-3, "schedule": "constant"}, label_smoothing=0.1)
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    model.fit(x, np.arange(8), epochs=1, verbose=0)
    export.export_copy(model, build).save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, numpy as np, keras; "
            f"m = keras.saving.load_model({str(tmp_path / 'model.keras')!r}); "
            "assert 'mnist_pipeline' not in sys.modules; "
            f"np.save({str(tmp_path / 'p.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
