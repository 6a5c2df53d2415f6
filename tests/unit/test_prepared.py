import json

import numpy as np
import pytest

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.data.prepared import load_split, scale, write_prepared

IMAGES = np.random.default_rng(1).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
IMAGES[0] = 0  # an all-black image must not divide by zero


def test_scale_gives_float32_in_unit_range_with_channel():
    x = scale(IMAGES)
    assert x.shape == (6, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0], IMAGES / 255.0, rtol=1e-6)


@pytest.fixture
def float32_policy():
    """Models built in float32, whatever an earlier test in this process set (the train path sets
    mixed_bfloat16 on a CPU with native bf16, and the policy is global)."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy(previous)


def test_l2_lives_in_the_model_so_a_served_model_gets_it(float32_policy):
    """No train/serve skew: a model with input_norm=l2 fed [0, 1] pixels (what predict and serving send)
    computes what the notebook's pipeline did, keras.utils.normalize(x, axis=1) then the model."""
    import keras

    from mnist_pipeline.ml.models import mlp

    normed = mlp("mlp", hidden=[32, 32], input_norm="l2", input_shape=(28, 28, 1), num_classes=10)
    plain = mlp("mlp", hidden=[32, 32], input_norm="none", input_shape=(28, 28, 1), num_classes=10)
    plain.set_weights(normed.get_weights())
    x = scale(IMAGES)
    notebook = keras.utils.normalize(x[..., 0].astype(np.float64), axis=1)[..., np.newaxis].astype(np.float32)
    # The model's own first step is the notebook's normalization, to float32 precision.
    first = keras.Model(normed.inputs, normed.layers[0].output)
    np.testing.assert_allclose(first.predict(x, verbose=0), notebook, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(normed.predict(x, verbose=0), plain.predict(notebook, verbose=0), atol=1e-6)
    # Feeding the plain model unnormalized pixels, the skew this guards against, is far off.
    assert np.abs(plain.predict(x, verbose=0) - plain.predict(notebook, verbose=0)).max() > 1e-2


def test_write_is_all_or_nothing(tmp_path):
    out = tmp_path / "prepared"
    splits = {"train": (scale(IMAGES), np.arange(6, dtype=np.uint8))}

    def explode(directory):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_prepared(out, splits, {"k": 1}, extra=explode)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder

    write_prepared(out, splits, {"k": 1})
    x, y = load_split(out, "train")
    np.testing.assert_array_equal(y, np.arange(6))
    assert json.loads((out / "dataset.json").read_text()) == {"k": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_missing_split_names_the_stage(tmp_path):
    with pytest.raises(PipelineError, match=r"val.npz not found: run the prepare stage first"):
        load_split(tmp_path, "val")
