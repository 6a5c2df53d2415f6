import numpy as np
import pytest

from mnist_pipeline.evaluation import ensemble


def rows(*peaks):
    """One probability row per (class, p) pair: p on that class, the rest spread evenly."""
    out = np.zeros((len(peaks), 10))
    for i, spread in enumerate(peaks):
        rest = 1.0 - sum(spread.values())
        out[i] = rest / (10 - len(spread))
        for digit, p in spread.items():
            out[i, digit] = p
    return out


LABELS = np.array([0, 1, 2, 3])
A = rows({0: 0.9}, {1: 0.9}, {2: 0.9}, {5: 0.6, 3: 0.4})  # wrong on the last image
B = rows({0: 0.9}, {1: 0.9}, {7: 0.6, 2: 0.4}, {3: 0.9})  # wrong on the third
C = rows({9: 1.0}, {9: 1.0}, {9: 1.0}, {9: 1.0})  # always wrong
PROBS = {"a": A, "b": B, "c": C}


def test_top_k_picks_the_best_validation_ensemble_and_the_smaller_on_ties():
    k, by_k = ensemble.top_k(["a", "b", "c"], PROBS, LABELS)
    assert by_k == [0.75, 1.0, 1.0]  # a + b fix each other's mistake; c does not hurt the average here
    assert k == 2


def test_max_k_limits_the_ensemble():
    assert ensemble.top_k(["a", "b", "c"], PROBS, LABELS, max_k=1) == (1, [0.75])


def test_average_and_score():
    averaged = ensemble.average([A, B])
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0)
    # p(true digit) of the average: 0.9, 0.9, (0.9 + 0.4) / 2 = 0.65, (0.4 + 0.9) / 2 = 0.65, all the largest
    np.testing.assert_allclose(averaged[np.arange(4), LABELS], [0.9, 0.9, 0.65, 0.65])
    scored = ensemble.score(averaged, LABELS)
    assert scored["accuracy"] == 1.0
    # -(2 ln 0.9 + 2 ln 0.65) / 4 = -ln(0.9 * 0.65) / 2 = -ln 0.585 / 2
    assert scored["loss"] == pytest.approx(0.26807171587514034, rel=1e-12)
