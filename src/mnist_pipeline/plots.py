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
