import numpy as np
import pytest
import tensorflow as tf

from mnist_pipeline.ml.augment import (
    PARAM_NAMES,
    affine_matrix,
    apply_affine,
    augment_dataset,
    is_identity,
    preview_grid,
    random_affine,
)

STANDARD = {"rotation": 15.0, "width_shift": 0.2, "height_shift": 0.2, "shear": 0.2, "zoom": 0.2}
ZERO = dict.fromkeys(PARAM_NAMES, 0.0)


def digits(n: int = 16) -> np.ndarray:
    """n synthetic 'digits' [n, 28, 28, 1] in [0, 1]: a bright square and a vertical stroke, varied."""
    images = np.zeros((n, 28, 28, 1), np.float32)
    for i in range(n):
        images[i, 8 + i % 4 : 16 + i % 4, 9:17] = 1.0
        images[i, 5:23, 18 + i % 3] = 0.6
    return images


def warp(images: np.ndarray, **params) -> np.ndarray:
    """Apply one fixed affine map (affine_matrix's parameters, identity by default) to all images."""
    fixed = {"rotation_deg": 0.0, "shift_x_px": 0.0, "shift_y_px": 0.0, "shear": 0.0, "zoom_x": 1.0, "zoom_y": 1.0}
    fixed.update(params)
    n, height, width, _ = images.shape
    matrices = affine_matrix(**{k: tf.fill([n], v) for k, v in fixed.items()}, height=height, width=width)
    return apply_affine(tf.constant(images), matrices).numpy()


def test_shape_dtype_range_and_changed():
    images = digits()
    out = random_affine(tf.constant(images), tf.constant([1, 2]), **STANDARD)
    assert out.shape == images.shape and out.dtype == tf.float32
    out = out.numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    changed = np.abs(out - images).reshape(len(images), -1).max(axis=1)
    assert np.all(changed > 0.1)  # every image moved, not just rounding noise


def test_other_shapes():
    images = np.random.default_rng(0).random((3, 20, 32, 3), dtype=np.float32)
    out = random_affine(tf.constant(images), tf.constant([0, 0]), **STANDARD)
    assert out.shape == images.shape


def test_same_seed_same_output_other_seed_differs():
    images = tf.constant(digits())
    a = random_affine(images, tf.constant([7, 0]), **STANDARD).numpy()
    b = random_affine(images, tf.constant([7, 0]), **STANDARD).numpy()
    c = random_affine(images, tf.constant([8, 0]), **STANDARD).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_zero_params_is_identity():
    images = digits()
    out = random_affine(tf.constant(images), tf.constant([3, 4]), **ZERO).numpy()
    np.testing.assert_allclose(out, images, atol=1e-6)
    assert is_identity(ZERO)
    assert not is_identity({**ZERO, "shear": 0.1})


def test_invalid_ranges_rejected():
    with pytest.raises(ValueError):
        random_affine(tf.constant(digits(2)), tf.constant([0, 0]), **{**STANDARD, "zoom": 1.0})
    with pytest.raises(ValueError):
        random_affine(tf.constant(digits(2)), tf.constant([0, 0]), **{**STANDARD, "rotation": -5.0})


def test_shift_moves_a_pixel_right_and_down():
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 10, 5] = 1.0  # row 10, column 5
    out = warp(image, shift_x_px=3.0, shift_y_px=-2.0)
    expected = np.zeros_like(image)
    expected[0, 8, 8] = 1.0  # +3 columns (right), -2 rows (up)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_rotation_90_is_counter_clockwise_like_rot90():
    # Asymmetric pattern; positive angles turn counter-clockwise on screen, as np.rot90(k=1).
    image = np.random.default_rng(1).random((1, 28, 28, 1), dtype=np.float32)
    out = warp(image, rotation_deg=90.0)
    np.testing.assert_allclose(out[0, ..., 0], np.rot90(image[0, ..., 0]), atol=1e-5)
    back = warp(image, rotation_deg=-90.0)
    np.testing.assert_allclose(back[0, ..., 0], np.rot90(image[0, ..., 0], k=-1), atol=1e-5)


def centroid_x(row: np.ndarray) -> float:
    return float(np.sum(row * np.arange(row.size)) / np.sum(row))


def test_zoom_and_shear_about_centre():
    # Zoom x2 doubles horizontal distances from the centre x = 13.5: a 2-pixel block at x = 15.5
    # becomes 4 pixels wide (same total brightness x2) centred at x = 17.5.
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 13:15, 15:17] = 1.0
    zoomed = warp(image, zoom_x=2.0)[0, ..., 0]
    assert zoomed[13:15].sum() == pytest.approx(8.0, abs=1e-4) and zoomed.sum() == pytest.approx(8.0, abs=1e-4)
    assert centroid_x(zoomed[13]) == pytest.approx(17.5, abs=1e-4)
    # Horizontal shear x += s * (y - 13.5): a vertical stroke at x = 13 leans, bottom to the right.
    stroke = np.zeros((1, 28, 28, 1), np.float32)
    stroke[0, 3:25, 13] = 1.0
    sheared = warp(stroke, shear=0.5)[0, ..., 0]
    assert centroid_x(sheared[24]) == pytest.approx(13 + 0.5 * 10.5, abs=1e-4)
    assert centroid_x(sheared[3]) == pytest.approx(13 - 0.5 * 10.5, abs=1e-4)


def _batches(n_batches: int = 3, size: int = 4) -> tf.data.Dataset:
    images = digits(n_batches * size)
    labels = np.arange(n_batches * size, dtype=np.int64)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(size)


def _epoch(dataset: tf.data.Dataset):
    pairs = [(x.numpy(), y.numpy()) for x, y in dataset]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def test_augment_dataset_is_a_function_of_its_key_with_a_new_warp_per_batch():
    first, labels = _epoch(augment_dataset(_batches(), key=[5, 0], **STANDARD))
    again, _ = _epoch(augment_dataset(_batches(), key=[5, 0], **STANDARD))
    other, _ = _epoch(augment_dataset(_batches(), key=[5, 1], **STANDARD))  # another epoch's key
    np.testing.assert_array_equal(labels, np.arange(12))
    np.testing.assert_array_equal(first, again)  # same key: bit-identical
    assert not np.allclose(first, other)
    # Each batch gets its own seed: identical input batches come out different.
    repeated = tf.data.Dataset.from_tensors((digits(4), np.zeros(4))).repeat(2)
    a, b = (x.numpy() for x, _ in augment_dataset(repeated, key=[5, 0], **STANDARD))
    assert not np.allclose(a, b)


def test_preview_grid_writes_png(tmp_path):
    path = preview_grid(digits(10), tmp_path / "preview.png", seed=1, **STANDARD)
    assert path == tmp_path / "preview.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
