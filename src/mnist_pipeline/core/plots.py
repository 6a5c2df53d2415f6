"""Figures saved as PNG (headless: the Agg backend, never a window)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)  # figures are kept alive by pyplot until closed
    return Path(path)


def image_grid(images: np.ndarray, titles: Sequence[str], path: Path, rows: int = 4, cols: int = 4) -> Path:
    """A rows x cols grid of grayscale images (light on dark, as MNIST), each titled, saved to `path`."""
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.8))
    for ax, image, title in zip(np.ravel(axes), images, titles):
        ax.imshow(np.squeeze(image), cmap="gray", vmin=0.0, vmax=float(max(1.0, np.max(image))))
        ax.set_title(title, fontsize=9)
    for ax in np.ravel(axes):
        ax.axis("off")
    return _save(fig, path)


def notice(text: str, path: Path) -> Path:
    """A figure that is only text: what stands in for a variant's figures when it was skipped."""
    fig = plt.figure(figsize=(6, 1.5))
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10)
    return _save(fig, path)


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
    return _save(fig, path)


def confusion_matrix(counts: np.ndarray, path: Path, classes: Sequence[str], title: str = "") -> Path:
    return _save(confusion_figure(counts, classes, title), path)


def confusion_figure(counts: np.ndarray, classes: Sequence[str], title: str = "") -> plt.Figure:
    """Counts of (true, predicted) classes, each cell labelled and each axis tick named by its class; the
    diagonal is the correct ones. Names longer than a digit are slanted so they do not overlap."""
    fig, ax = plt.subplots(figsize=(8, 7))
    image = ax.imshow(np.log1p(counts), cmap="Blues")  # log scale: errors stay visible beside the diagonal
    for (row, col), value in np.ndenumerate(counts):
        if value:
            ax.text(
                col,
                row,
                str(value),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > counts.max() / 4 else "black",
            )
    slanted = max(map(len, classes)) > 3
    ax.set_xticks(range(counts.shape[1]), classes, rotation=40 if slanted else 0, ha="right" if slanted else "center")
    ax.set_yticks(range(counts.shape[0]), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    if title:
        ax.set_title(title)
    return fig


def comparison(rows: list[dict], val_curves: dict[str, list[float]], path: Path) -> Path:
    """Test accuracy per variant (bars) beside every variant's validation error per epoch."""
    return _save(comparison_figure(rows, val_curves), path)


def comparison_figure(rows: list[dict], val_curves: dict[str, list[float]]) -> plt.Figure:
    """The comparison chart. Validation *error* (1 - accuracy) on a log axis: 10% and 0.5% both stay
    readable, where on a linear accuracy axis one weak first epoch squeezes every other curve into a
    flat band at the top. Epochs are counted from 1, on whole-number ticks; 20 colours, then dashes too."""
    from matplotlib.ticker import MaxNLocator

    fig, (bars, lines) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [1, 1.3]})
    names = [r["variant"] for r in rows]
    accuracy = [r["test_accuracy"] for r in rows]
    bars.barh(names, accuracy, color="tab:blue")
    for y, value in enumerate(accuracy):
        bars.text(value, y, f" {value:.4f}", va="center", fontsize=8)
    low = min(accuracy)
    bars.set_xlim(max(0.0, low - (1 - low) * 0.5), 1.0)
    bars.invert_yaxis()
    bars.set_xlabel("test accuracy")
    colours = plt.get_cmap("tab20")  # 20 colours, indexed by integers
    for i, (name, curve) in enumerate(val_curves.items()):
        error = np.maximum(1.0 - np.asarray(curve, dtype=float), 1e-4)  # a perfect epoch stays on the axis
        lines.plot(
            range(1, len(curve) + 1),
            error,
            marker="o",
            markersize=3,
            label=name,
            color=colours(i % 20),
            linestyle=("-", "--", ":")[i // 20 % 3],
        )
    lines.set_yscale("log")
    lines.xaxis.set_major_locator(MaxNLocator(integer=True))
    lines.set_xlabel("epoch")
    lines.set_ylabel("validation error (1 - accuracy), log scale")
    lines.grid(alpha=0.3, which="both")
    lines.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a curve
    return fig
