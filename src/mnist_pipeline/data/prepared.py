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


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) -> float32 (n, 28, 28, 1) in [0, 1]: pixels / 255, the one input convention of every
    model, of `predict` and of serving. Any other normalization (the small-MLP notebook's per-column L2
    norm) is a layer inside the model (model.input_norm), so whoever feeds the model cannot get it wrong."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


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
