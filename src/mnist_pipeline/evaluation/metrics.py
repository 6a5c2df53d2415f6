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
