"""The prepared dataset on disk: one .npz per split plus dataset.json, written all-or-nothing.

Layout of the prepared directory:
    train.npz, val.npz, test.npz   x: float32 (n, rows, cols, channels) in [0, 1], channels 1 (grayscale) or 3
                                   (RGB); y: uint8 (n,) class indices
    dataset.json                   dataset name, class names, image shape, predict's preprocessing, counts
                                   per split and class, the raw input's hashes and sources, settings, and
                                   the inputs skipped as bad (folder and CSV datasets with on_bad: skip)
    samples.png                    4x4 grid of training images with their class names

Every stage after prepare learns the dataset from here (`describe`), never from constants.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from mnist_pipeline.core.atomic import atomic_dir
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.npy_files import NpyError, Stream, read_array

SPLITS = ("train", "val", "test")
METADATA = "dataset.json"


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 (n, rows, cols[, channels]) -> float32 (n, rows, cols, channels) in [0, 1] (no channel axis: 1):
    pixels / 255, the one input convention of every model, of `predict` and of serving. Any other
    normalization (the small-MLP notebook's per-column L2 norm) is a layer inside the model
    (model.input_norm), so whoever feeds the model cannot get it wrong."""
    x = images.astype(np.float32) / 255.0
    return x[..., np.newaxis] if x.ndim == 3 else x


def class_counts(labels: np.ndarray, num_classes: int) -> list[int]:
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
    """(x, y) of one split, checked: x float32 (n, h, w, 1 or 3) in [0, 1], y uint8 (n,). A missing file names the
    stage that writes it; a damaged one is refused in one line (its arrays' headers are checked against
    their sizes before anything is read, and pickled objects are never loaded)."""
    path = Path(prepared_dir) / f"{split}.npz"
    if not path.is_file():
        raise PipelineError(f"{path} not found: run the prepare stage first (dvc repro prepare)")
    try:
        with zipfile.ZipFile(path) as archive:
            x, y = (_member(archive, name) for name in ("x.npy", "y.npy"))
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NpyError,
        KeyError,
        OSError,
        EOFError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
        ValueError,
        struct.error,
        UnicodeDecodeError,
    ) as exc:
        raise _damaged(path, " ".join(str(exc).split())[:160] or type(exc).__name__) from None
    if x.dtype != np.float32 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise _damaged(path, f"x is {x.dtype} {x.shape}, expected float32 (n, height, width, 1 or 3)")
    if y.dtype != np.uint8 or y.shape != (len(x),):
        raise _damaged(path, f"y is {y.dtype} {y.shape}, expected uint8 ({len(x)},)")
    if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        raise _damaged(path, "x holds values outside [0, 1]")
    return x, y


def _member(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    info = archive.getinfo(name)
    with archive.open(info) as stream:  # a ZipExtFile, which typeshed types as IO[bytes] (no readinto)
        return read_array(cast(Stream, stream), info.file_size)


def _damaged(path: Path, why: str) -> PipelineError:
    return PipelineError(f"{path}: damaged ({why}): run the prepare stage again (dvc repro --force prepare)")


def load_metadata(prepared_dir: Path) -> dict:
    path = Path(prepared_dir) / METADATA
    if not path.is_file():
        raise PipelineError(f"{path} not found: run the prepare stage first (dvc repro prepare)")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class DatasetInfo:
    """What the stages after prepare need to know about the prepared dataset."""

    name: str
    classes: tuple[str, ...]  # class index -> name
    image_shape: tuple[int, int, int]  # rows, cols, channels
    preprocess: dict  # how `predict` turns a picture into one of these images
    sha256: str  # data_hash of the prepared folder

    def as_metadata(self) -> dict:
        """The logged model's metadata: what `predict` needs to feed it and to name its answers."""
        return {
            "dataset": self.name,
            "classes": list(self.classes),
            "image_shape": list(self.image_shape),
            "preprocess": dict(self.preprocess),
            "data.sha256": self.sha256,
        }


def describe(prepared_dir: Path) -> DatasetInfo:
    meta = load_metadata(prepared_dir)
    if "classes" not in meta:  # written before datasets were configurable
        raise PipelineError(
            f"{Path(prepared_dir) / METADATA} names no classes: run the prepare stage again (dvc repro --force prepare)"
        )
    return DatasetInfo(
        meta["dataset"],
        tuple(meta["classes"]),
        tuple(meta["image_shape"]),
        dict(meta["preprocess"]),
        data_hash(prepared_dir),
    )


def data_hash(prepared_dir: Path) -> str:
    """sha256 over the prepared files (names and contents), to tie a run or a model to the exact data."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(prepared_dir).iterdir() if p.is_file()):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()
