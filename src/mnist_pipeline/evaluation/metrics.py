"""Classification metrics from labels and predicted probabilities (NumPy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return counts


def per_class(confusion: np.ndarray, names: Sequence[str] | None = None) -> list[dict]:
    """Precision, recall, F1 and support per class (its name, default its index, and its index); 0 where a
    ratio is undefined (no predictions)."""
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return [
        {
            "class": names[c] if names is not None else str(c),
            "index": c,
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(actual[c]),
        }
        for c in range(len(tp))
    ]


def cross_entropy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean sparse categorical cross-entropy, clipped as Keras does (epsilon 1e-7)."""
    p = np.clip(probs[np.arange(len(y_true)), np.asarray(y_true, dtype=np.int64)], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))


def summarize(y_true: np.ndarray, probs: np.ndarray, names: Sequence[str] | None = None) -> dict:
    """Loss, accuracy, macro precision/recall/F1, per-class figures (named by `names`) and the confusion
    matrix."""
    y_pred = np.argmax(probs, axis=1)
    confusion = confusion_matrix(y_true, y_pred, probs.shape[1])
    classes = per_class(confusion, names)
    return {
        "loss": cross_entropy(y_true, probs),
        "accuracy": float(np.mean(y_pred == y_true)),
        "macro_precision": float(np.mean([c["precision"] for c in classes])),
        "macro_recall": float(np.mean([c["recall"] for c in classes])),
        "macro_f1": float(np.mean([c["f1"] for c in classes])),
        "errors": int(np.sum(y_pred != y_true)),
        "per_class": classes,
        "confusion_matrix": confusion.tolist(),
    }


# What an exported model should reach against the Keras model it was converted from (issue 24): the key,
# at least (>=) or at most (<=), the limit. evaluate records the figures and warns when one misses, but does
# not fail (docs/exports.md).
EXPORT_TARGETS = (("onnx_agreement", ">=", 0.999), ("int8_accuracy_drop", "<=", 0.2))


def exported_scores(name: str, y_true: np.ndarray, reference: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """An exported model's test figures against the model it came from (`reference`, its probabilities on the
    same images): `<name>_agreement` (the fraction of images whose predicted class is the same),
    `<name>_accuracy` and `<name>_accuracy_drop` (the reference's accuracy minus this one, in points)."""
    predicted, expected = np.argmax(probs, axis=1), np.argmax(reference, axis=1)
    accuracy = float(np.mean(predicted == y_true))
    return {
        f"{name}_agreement": float(np.mean(predicted == expected)),
        f"{name}_accuracy": accuracy,
        f"{name}_accuracy_drop": 100.0 * (float(np.mean(expected == y_true)) - accuracy),
    }


def missed_export_targets(scores: dict[str, float]) -> list[str]:
    """`<key> <value> (target <op> <limit>)` for each EXPORT_TARGETS figure in `scores` that misses it."""
    return [
        f"{key} {scores[key]:.4g} (target {op} {limit})"
        for key, op, limit in EXPORT_TARGETS
        if key in scores and not (scores[key] >= limit if op == ">=" else scores[key] <= limit)
    ]
