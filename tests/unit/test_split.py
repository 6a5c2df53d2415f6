import numpy as np
import pytest

from mnist_pipeline.data.split import stratified_split

# Unbalanced classes, like MNIST's (5,421 to 6,742 images per class).
LABELS = np.repeat(np.arange(10), [593, 674, 596, 613, 584, 542, 592, 627, 585, 595])


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.37])
def test_sizes_and_stratification(fraction):
    train, val = stratified_split(LABELS, fraction, seed=0)
    assert len(val) == round(len(LABELS) * fraction)
    assert len(train) + len(val) == len(LABELS)
    for cls in range(10):
        exact = np.sum(cls == LABELS) * fraction
        assert abs(np.sum(LABELS[val] == cls) - exact) <= 1


def test_no_overlap_and_full_cover():
    train, val = stratified_split(LABELS, 0.1, seed=3)
    assert not set(train) & set(val)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(LABELS)))


def test_same_seed_same_split_other_seed_differs():
    a = stratified_split(LABELS, 0.1, seed=7)
    b = stratified_split(LABELS, 0.1, seed=7)
    c = stratified_split(LABELS, 0.1, seed=8)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_out_of_range(fraction):
    with pytest.raises(ValueError, match="val_fraction must be in \\(0, 1\\)"):
        stratified_split(LABELS, fraction, seed=0)


def test_empty_split_rejected():
    with pytest.raises(ValueError, match="leaves an empty split"):
        stratified_split(np.array([1, 2, 3]), 0.1, seed=0)
