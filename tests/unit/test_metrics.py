"""evaluation.metrics on examples small enough to score by hand: every expected number is written out, with
how it was worked out in a comment."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.evaluation import metrics


def test_the_confusion_matrix_counts_true_rows_against_predicted_columns():
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 2, 0, 2])
    # (0,0) (0,1) (1,1) (2,2) (2,0) (2,2)
    assert metrics.confusion_matrix(y_true, y_pred, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    # a class that never occurs still has its row and column
    assert metrics.confusion_matrix(np.array([1]), np.array([1]), 3).tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_per_class_gives_zero_where_a_ratio_is_undefined():
    confusion = np.array(
        [
            [2, 0, 0, 0],  # class 0: 2 right
            [1, 0, 0, 0],  # class 1: its one image called 0; 1 is never predicted
            [0, 0, 1, 0],  # class 2: 1 right
            [0, 0, 0, 0],
        ]
    )  # class 3: no images and never predicted
    rows = metrics.per_class(confusion, ["zero", "one", "two", "three"])
    assert rows == [
        # precision 2/3 (column 0 sums to 3), recall 2/2, F1 2 * (2/3) * 1 / (2/3 + 1) = 0.8
        {
            "class": "zero",
            "index": 0,
            "precision": pytest.approx(2 / 3),
            "recall": 1.0,
            "f1": pytest.approx(0.8),
            "support": 2,
        },
        # never predicted: precision 0 (not NaN), recall 0/1, F1 0
        {"class": "one", "index": 1, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        {"class": "two", "index": 2, "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        {"class": "three", "index": 3, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
    ]
    assert [r["class"] for r in metrics.per_class(confusion)] == ["0", "1", "2", "3"]  # unnamed: the index


def test_cross_entropy_clips_probabilities_at_1e_minus_7_like_keras():
    probs = np.array([[1.0, 0.0], [1.0, 0.0]])
    # image 0: -ln(1) = 0; image 1: p = 0 clipped to 1e-7, -ln(1e-7) = 7 ln 10 = 16.1180956509583; mean 7 ln 10 / 2
    assert metrics.cross_entropy(np.array([0, 1]), probs) == pytest.approx(8.05904782547916, rel=1e-12)
    # 1e-9 is clipped up to 1e-7 too; 1e-7 itself is kept
    assert metrics.cross_entropy(np.array([1]), np.array([[1.0, 1e-9]])) == pytest.approx(16.1180956509583)
    assert metrics.cross_entropy(np.array([1]), np.array([[1.0, 1e-7]])) == pytest.approx(16.1180956509583)
    # above 1 (rounding in a float32 softmax) is clipped down to 1: no negative loss
    assert metrics.cross_entropy(np.array([0]), np.array([[1.0000001, 0.0]])) == 0.0


def test_summarize_a_hand_scored_example():
    y_true = np.array([0, 1, 2, 2])
    probs = np.array(
        [
            [0.50, 0.25, 0.25],  # predicted 0, right, p(true) 0.5
            [0.25, 0.50, 0.25],  # predicted 1, right, 0.5
            [0.25, 0.25, 0.50],  # predicted 2, right, 0.5
            [0.50, 0.25, 0.25],
        ]
    )  # predicted 0, wrong (a 2), 0.25
    summary = metrics.summarize(y_true, probs, ["a", "b", "c"])
    assert summary["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert summary["accuracy"] == 0.75 and summary["errors"] == 1
    # -(3 ln 0.5 + ln 0.25) / 4 = (3 ln 2 + 2 ln 2) / 4 = 5 ln 2 / 4
    assert summary["loss"] == pytest.approx(0.8664339756999316, rel=1e-12)
    # per class (precision, recall, F1): a (1/2, 1, 2/3), b (1, 1, 1), c (1, 1/2, 2/3)
    assert [(r["class"], r["precision"], r["recall"], r["support"]) for r in summary["per_class"]] == [
        ("a", 0.5, 1.0, 1),
        ("b", 1.0, 1.0, 1),
        ("c", 1.0, 0.5, 2),
    ]
    assert [r["f1"] for r in summary["per_class"]] == pytest.approx([2 / 3, 1.0, 2 / 3])
    # macro: means over the three classes, (1/2 + 1 + 1) / 3 = 5/6, (1 + 1 + 1/2) / 3 = 5/6, (2/3 + 1 + 2/3) / 3 = 7/9
    assert summary["macro_precision"] == pytest.approx(5 / 6)
    assert summary["macro_recall"] == pytest.approx(5 / 6)
    assert summary["macro_f1"] == pytest.approx(7 / 9)
