"""evaluation.leaderboard: the ranking rule, a variant's row and the ensemble's row from probabilities, and the
markdown page. The probabilities are small enough to score by hand; every expected number is written out."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.evaluation import leaderboard


def ranked_row(variant: str, val_accuracy: float, val_loss: float) -> dict:
    return {"variant": variant, "val_accuracy": val_accuracy, "val_loss": val_loss}


def test_rank_higher_validation_accuracy_first_then_lower_validation_loss_then_given_order():
    rows = [
        ranked_row("a", 0.990, 0.05),
        ranked_row("b", 0.995, 0.10),
        ranked_row("c", 0.990, 0.04),
        ranked_row("d", 0.990, 0.05),
        ranked_row("e", 0.980, 0.01),
    ]
    # b: best accuracy despite its loss; then the three at 0.990 by loss, c (0.04) before a and d (0.05),
    # which tie exactly and keep their order; e last whatever its loss
    assert [r["variant"] for r in leaderboard.rank(rows)] == ["b", "c", "a", "d", "e"]
    assert [r["variant"] for r in leaderboard.rank(rows[::-1])] == ["b", "c", "d", "a", "e"]


def test_the_test_set_plays_no_part_in_the_ranking():
    rows = [
        {**ranked_row("a", 0.990, 0.05), "test_accuracy": 0.999},
        {**ranked_row("b", 0.991, 0.05), "test_accuracy": 0.900},
    ]
    assert [r["variant"] for r in leaderboard.rank(rows)] == ["b", "a"]


def test_a_variants_row_is_scored_from_its_probabilities():
    history = {
        "params": 26_506,
        "epochs_run": 3,
        "best_epoch": 1,
        "history": {"epoch_seconds": [1.5, 2.0, 2.5], "val_accuracy": [0.1, 0.2, 0.3]},
    }
    run = {"run_id": "r1", "model_uri": "models:/m-1"}
    probs = {
        "val_probs": np.array(
            [
                [0.8, 0.1, 0.1],  # a 0: right, p 0.8
                [0.4, 0.5, 0.1],
            ]
        ),  # a 0 called 1: wrong, p 0.4
        "val_labels": np.array([0, 0]),
        "test_probs": np.array([[0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1], [0.5, 0.25, 0.25]]),
        "test_labels": np.array([1, 2, 0, 0]),  # all four right: p 0.7, 0.8, 0.6, 0.5
    }
    row = leaderboard.variant_row("mlp_32x32-none", history, run, probs)
    assert row == {
        "variant": "mlp_32x32-none",
        "params": 26_506,
        "epochs": 3,
        "best_epoch": 1,
        "train_seconds": 6.0,  # 1.5 + 2.0 + 2.5
        "val_accuracy": 0.5,  # not the curve's 0.3: the saved model's
        "val_loss": pytest.approx(0.5697171415941824),  # -(ln 0.8 + ln 0.4) / 2 = -ln 0.32 / 2
        "test_accuracy": 1.0,
        "test_loss": pytest.approx(0.4459478248947195),  # -ln(0.7 * 0.8 * 0.6 * 0.5) / 4 = -ln 0.168 / 4
        "run_id": "r1",
        "model_uri": "models:/m-1",
    }
    # no best epoch recorded (None) reads as the first; no timings as 0 seconds
    bare = {**history, "best_epoch": None, "history": {}}
    assert leaderboard.variant_row("v", bare, run, probs)["best_epoch"] == 0
    assert leaderboard.variant_row("v", bare, run, probs)["train_seconds"] == 0


# Three variants on 4 validation images (labels 0, 1, 2, 2) and 2 test images (labels 0, 1), 3 classes.
VAL_LABELS, TEST_LABELS = np.array([0, 1, 2, 2]), np.array([0, 1])
PROBS = {
    "a": {
        "val_probs": np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6], [0.2, 0.5, 0.3]]),  # 4th wrong
        "test_probs": np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]]),
    },  # 2nd wrong
    "b": {
        "val_probs": np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.5, 0.3], [0.2, 0.2, 0.6]]),  # 3rd wrong
        "test_probs": np.array([[0.5, 0.4, 0.1], [0.2, 0.7, 0.1]]),
    },
    "c": {
        "val_probs": np.array([[0.1, 0.8, 0.1]] * 4),  # always 1
        "test_probs": np.array([[0.1, 0.1, 0.8]] * 2),
    },
}
for _p in PROBS.values():
    _p.update(val_labels=VAL_LABELS, test_labels=TEST_LABELS)
RANKED = [
    {"variant": "a", "params": 100, "epochs": 3, "train_seconds": 10.0},
    {"variant": "b", "params": 200, "epochs": 5, "train_seconds": 20.0},
    {"variant": "c", "params": 400, "epochs": 2, "train_seconds": 40.0},
]


def test_the_ensemble_takes_the_k_best_on_validation_and_only_reports_test():
    row = leaderboard.ensemble_row(RANKED, PROBS, max_k=0)
    # k=1, a alone: 3 of 4 right, 0.75. k=2, (a + b) / 2: images 3 and 4 become [0.2, 0.35, 0.45], both right: 1.0.
    # k=3, (a + b + c) / 3: images 3 and 4 become [0.5, 1.5, 1.0] / 3, called 1: 2 of 4 right, 0.5. So k = 2.
    assert row == {
        "variant": "ensemble of top 2",
        "members": ["a", "b"],
        "k": 2,
        "val_accuracy_by_k": [0.75, 1.0, 0.5],
        "params": 300,
        "epochs": 5,
        "train_seconds": 30.0,  # a + b; the longer training; a + b
        "val_accuracy": 1.0,
        "val_loss": pytest.approx(0.6546666599918811),  # p(true) 0.6, 0.6, 0.45, 0.45: -(ln 0.6 + ln 0.45) / 2
        # test (a + b) / 2 = [0.6, 0.3, 0.1] and [0.4, 0.5, 0.1]: both right although a alone misses the second
        "test_accuracy": 1.0,
        "test_loss": pytest.approx(0.601986402162968),  # -(ln 0.6 + ln 0.5) / 2
        "run_id": "-",
    }


def test_max_k_caps_the_ensemble():
    row = leaderboard.ensemble_row(RANKED, PROBS, max_k=1)
    assert (row["variant"], row["members"], row["k"], row["val_accuracy_by_k"]) == (
        "ensemble of top 1",
        ["a"],
        1,
        [0.75],
    )
    assert (row["val_accuracy"], row["test_accuracy"], row["params"]) == (0.75, 0.5, 100)


def test_the_markdown_marks_the_best_variant_and_ends_the_table_with_the_ensemble():
    ranked = [
        {
            "variant": "shallow_cnn-none",
            "params": 167_114,
            "epochs": 3,
            "train_seconds": 61.4,
            "val_accuracy": 0.995,
            "val_loss": 0.02,
            "test_accuracy": 0.9931,
            "test_loss": 0.0213,
            "run_id": "r-a",
        },
        {
            "variant": "mlp_32x32-none",
            "params": 26_506,
            "epochs": 3,
            "train_seconds": 12.6,
            "val_accuracy": 0.98,
            "val_loss": 0.07,
            "test_accuracy": 0.979,
            "test_loss": 0.07,
            "run_id": "r-b",
        },
    ]
    combined = {
        "variant": "ensemble of top 2",
        "members": ["shallow_cnn-none", "mlp_32x32-none"],
        "k": 2,
        "val_accuracy_by_k": [0.995, 0.99622],
        "params": 193_620,
        "epochs": 3,
        "train_seconds": 74.0,
        "val_accuracy": 0.99622,
        "val_loss": 0.018,
        "test_accuracy": 0.9942,
        "test_loss": 0.0188,
        "run_id": "-",
    }
    page = leaderboard.markdown(ranked, combined, "champion kept: v3 x", "mnist", "Ten digits.", ["per class"])
    lines = page.splitlines()
    start = lines.index(
        "| variant | params | epochs | train time (s) | val accuracy | test accuracy | test loss | MLflow run |"
    )
    assert lines[start : start + 6] == [
        "| variant | params | epochs | train time (s) | val accuracy | test accuracy | test loss | MLflow run |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        "| **shallow_cnn-none** (best) | 167,114 | 3 | 61 | 0.9950 | 0.9931 | 0.0213 | `r-a` |",
        "| mlp_32x32-none | 26,506 | 3 | 13 | 0.9800 | 0.9790 | 0.0700 | `r-b` |",
        "| ensemble of top 2 | 193,620 | 3 | 74 | 0.9962 | 0.9942 | 0.0188 | - |",  # last: the table ends
        "",
    ]
    assert lines[0] == "# Leaderboard: mnist"
    assert "Best variant: `shallow_cnn-none` (validation accuracy 0.9950, test accuracy 0.9931)." in lines
    assert "Registry: champion kept: v3 x." in lines
    assert (
        "Ensemble: the average of the probabilities of the top 2 variants by validation accuracy "
        "(`shallow_cnn-none`, `mlp_32x32-none`), k chosen on validation accuracy (by k: 0.9950, 0.9962); "
        "test accuracy 0.9942."
    ) in lines
    assert lines[-1] == "per class"


def test_the_per_class_table_names_the_classes():
    probs = {
        "test_labels": np.array([0, 1, 2, 2]),
        "test_probs": np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5], [0.5, 0.25, 0.25]]),
    }
    # predicted 0, 1, 2, 0: a has precision 1/2 (one of its two calls is a c), c recall 1/2; F1 2pr / (p + r) = 2/3
    assert leaderboard.per_class_table({"variant": "v"}, probs, ["a", "b", "c"]) == [
        "Per class, best variant `v` on the test set:",
        "",
        "| class | precision | recall | F1 | images |",
        "|---|---:|---:|---:|---:|",
        "| a | 0.5000 | 1.0000 | 0.6667 | 1 |",
        "| b | 1.0000 | 1.0000 | 1.0000 | 1 |",
        "| c | 1.0000 | 0.5000 | 0.6667 | 2 |",
        "",
    ]
