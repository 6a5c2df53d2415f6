"""The prepared dataset on disk: one .npz per split plus dataset.json, written all-or-nothing.

Layout of the prepared directory:
    train.npz, val.npz, test.npz   x: float32 (n, 28, 28, 1) in [0, 1]; y: uint8 (n,)
    dataset.json                   counts per split and class, payload hashes, sources, settings
    samples.png                    4x4 grid of training digits with their labels
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mnist_pipeline.atomic import atomic_dir
from mnist_pipeline.errors import PipelineError

SPLITS = ("train", "val", "test")
METADATA = "dataset.json"
NORMALIZATIONS = ("scale", "l2")


def normalize(images: np.ndarray, method: str) -> np.ndarray:
    """uint8 (n, 28, 28) -> float32 (n, 28, 28, 1) in [0, 1].

    "scale" divides by 255. "l2" reproduces the small-MLP notebook's `keras.utils.normalize(x, axis=1)`:
    each image's columns (axis 1 of (n, rows, cols)) scaled to unit L2 norm.
    """
    x = images.astype(np.float32)
    if method == "scale":
        x /= 255.0
    elif method == "l2":
        norm = np.sqrt(np.sum(x * x, axis=1, keepdims=True))
        x /= np.where(norm == 0, 1.0, norm)
    else:
        raise ValueError(f"unknown normalization {method!r}; choose one of {NORMALIZATIONS}")
    return x[..., np.newaxis]


def class_counts(labels: np.ndarray, num_classes: int = 10) -> list[int]:
    return np.bincount(labels, minlength=num_classes).tolist()


def write_prepared(
    out_dir: Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    metadata: dict,
    extra: Callable[[Path], None] | None = None,
) -> None:
    """Write every split, dataset.json and `extra(folder)`'s files; `out_dir` appears only when all succeeded."""
    with atomic_dir(out_dir) as staging:
        for name, (x, y) in splits.items():
            np.savez(staging / f"{name}.npz", x=x, y=y)
        (staging / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        if extra is not None:
            extra(staging)


def load_split(prepared_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one split; a clear error if the stage that writes it has not run."""
    path = Path(prepared_dir) / f"{split}.npz"
    if not path.is_file():
        raise PipelineError(f"{path} not found: run the prepare stage first (dvc repro prepare)")
    with np.load(path, allow_pickle=False) as data:
        return data["x"], data["y"]


def load_metadata(prepared_dir: Path) -> dict:
    path = Path(prepared_dir) / METADATA
    if not path.is_file():
        raise PipelineError(f"{path} not found: run the prepare stage first (dvc repro prepare)")
    return json.loads(path.read_text())


def data_hash(prepared_dir: Path) -> str:
    """sha256 over the prepared files (names and contents), to tie a run or a model to the exact data."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(prepared_dir).iterdir() if p.is_file()):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()
