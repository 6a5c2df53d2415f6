"""Figures saved as PNG (headless: the Agg backend, never a window)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402


def digit_grid(images: np.ndarray, titles: Sequence[str], path: Path, rows: int = 4, cols: int = 4) -> Path:
    """A rows x cols grid of 28x28 digits (light on dark, as MNIST), each titled, saved to `path`."""
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.8))
    for ax, image, title in zip(np.ravel(axes), images, titles):
        ax.imshow(np.squeeze(image), cmap="gray", vmin=0.0, vmax=float(max(1.0, np.max(image))))
        ax.set_title(title, fontsize=9)
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def training_curves(history: dict[str, list[float]], path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, training and validation, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            if key in history:
                ax.plot(range(len(history[key])), history[key], style, label=key, markersize=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
