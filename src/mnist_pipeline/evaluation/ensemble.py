"""Averaging the predicted probabilities of the best variants, with k chosen on validation only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mnist_pipeline.evaluation import metrics


def top_k(
    ranked: Sequence[str], val_probs: Mapping[str, np.ndarray], y_val: np.ndarray, max_k: int = 0
) -> tuple[int, list[float]]:
    """The k (1..max_k, 0 = all) whose average of the first k of `ranked` scores best on validation, with the
    validation accuracy for every k; ties go to the smaller ensemble."""
    limit = len(ranked) if max_k <= 0 else min(max_k, len(ranked))
    total = np.zeros_like(val_probs[ranked[0]], dtype=np.float64)
    accuracies = []
    for k, name in enumerate(ranked[:limit], start=1):
        total += val_probs[name]
        accuracies.append(float(np.mean(np.argmax(total / k, axis=1) == y_val)))
    return int(np.argmax(accuracies)) + 1, accuracies


def average(probs: Sequence[np.ndarray]) -> np.ndarray:
    return np.mean(np.stack([np.asarray(p, dtype=np.float64) for p in probs]), axis=0)


def score(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    summary = metrics.summarize(labels, probs)
    return {"accuracy": summary["accuracy"], "loss": summary["loss"]}
