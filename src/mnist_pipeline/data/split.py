"""Seeded, stratified train/validation split."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val), sorted, with every class's share of `val` within one image of exact.

    The validation size is round(n * val_fraction); each class gets floor(n_c * val_fraction) images and
    the few left over go to the classes with the largest remainders (largest-remainder apportionment), so
    both the total and every class are as close to exact as whole images allow.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * val_fraction
    per_class = np.floor(exact).astype(np.int64)
    leftover = int(round(n * val_fraction)) - int(per_class.sum())
    # Stable ordering by remainder (ties: lower class first) keeps the split a pure function of the seed.
    order = np.argsort(-(exact - per_class), kind="stable")
    per_class[order[:leftover]] += 1
    if per_class.sum() == 0 or per_class.sum() == n:
        raise ValueError(f"val_fraction={val_fraction} of {n} images leaves an empty split")

    rng = np.random.default_rng(seed)
    val_parts = []
    for cls, take in zip(classes, per_class):
        members = np.flatnonzero(labels == cls)
        val_parts.append(rng.permutation(members)[:take])
    val_idx = np.sort(np.concatenate(val_parts))
    train_mask = np.ones(n, dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx
