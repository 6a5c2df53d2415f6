import json

import numpy as np
import pytest

from mnist_pipeline.data.prepared import load_split, normalize, write_prepared
from mnist_pipeline.errors import PipelineError

IMAGES = np.random.default_rng(1).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
IMAGES[0] = 0  # an all-black image must not divide by zero


def test_scale_gives_float32_in_unit_range_with_channel():
    x = normalize(IMAGES, "scale")
    assert x.shape == (6, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0], IMAGES / 255.0, rtol=1e-6)


def test_l2_matches_the_notebooks_keras_normalize():
    import keras

    expected = keras.utils.normalize(IMAGES.astype(np.float64), axis=1)
    x = normalize(IMAGES, "l2")
    np.testing.assert_allclose(x[..., 0], expected, atol=1e-6)
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_unknown_normalization():
    with pytest.raises(ValueError, match="unknown normalization 'zscore'"):
        normalize(IMAGES, "zscore")


def test_write_is_all_or_nothing(tmp_path):
    out = tmp_path / "prepared"
    splits = {"train": (normalize(IMAGES, "scale"), np.arange(6, dtype=np.uint8))}

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
