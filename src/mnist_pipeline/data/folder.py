"""The `folder` format: pictures in one folder per class, the layout Keras' image_dataset_from_directory and
torchvision's ImageFolder read.

    <path>/train/<class>/...   the pictures of each class (subfolders inside a class folder are read too)
    <path>/test/<class>/...    optional; without test/ the test split is drawn from train/ (data.test_fraction)

Every file whose path has no hidden part (a name starting with '.', e.g. .DS_Store) is a picture, in any
format Pillow reads; each becomes the dataset's image size and channels by pictures.conform. The classes
are train/'s folder names sorted, or data.classes in its order (then train/'s folders must be exactly those).
test/ may lack a class but never hold one train/ does not.

Order: each class's files sorted by path, then the classes interleaved (the first file of every class, then
the second of every class...), so the result is deterministic and `limit` (the first N files of train/ and of
test/) keeps every class. Memory: the files are listed first, one uint8 array is allocated, and each picture
is decoded straight into it; no more than one file's bytes are held at a time.

A bad picture stops the stage with `<file>: <why>`, or is skipped and listed (on_bad: skip). An empty class
folder, or a class whose every picture was bad, stops it whatever on_bad says: the class list would be wrong.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import numpy as np

from mnist_pipeline.core.errors import ConfigError, PipelineError
from mnist_pipeline.data.dataset import BadInputs, RawDataset, file_sha256, raw_digest
from mnist_pipeline.data.pictures import ImageError, Preprocess, conform

LAYOUT = "a folder dataset holds train/<class>/<pictures> and optionally test/<class>/<pictures>"
MAX_CLASSES = 256  # labels are uint8


def hidden(name: str) -> bool:
    return name.startswith(".")


def class_files(class_dir: Path) -> list[str]:
    """The files under one class folder, hidden ones left out, as sorted paths relative to it."""
    found = []
    for folder, subfolders, files in os.walk(class_dir):
        subfolders[:] = [d for d in subfolders if not hidden(d)]  # os.walk descends into what is left
        base = Path(folder).relative_to(class_dir)
        found += [(base / f).as_posix() for f in files if not hidden(f)]
    return sorted(found)


def split_folders(split_dir: Path) -> dict[str, list[str]]:
    """class name -> its files, for train/ or test/. A file directly in the split folder, a split without any
    class folder and an empty class folder are errors."""
    classes = {}
    for entry in sorted(split_dir.iterdir()):
        if hidden(entry.name):
            continue
        if not entry.is_dir():
            raise PipelineError(f"{entry}: a file directly in {split_dir.name}/ ({LAYOUT})")
        files = class_files(entry)
        if not files:
            raise PipelineError(f"{entry}: empty class folder (every class needs at least one picture)")
        classes[entry.name] = files
    if not classes:
        raise PipelineError(f"{split_dir}: no class folder ({LAYOUT})")
    return classes


def class_names(train: dict[str, list[str]], listed: list[str] | None, train_dir: Path) -> list[str]:
    """train/'s folders, sorted, or the listed classes (which they must match exactly)."""
    if listed is None:
        if not 2 <= len(train) <= MAX_CLASSES:
            raise PipelineError(f"{train_dir}: {len(train)} class folder(s), a classifier needs 2 to {MAX_CLASSES}")
        return sorted(train)
    for name in train:
        if name not in listed:
            raise ConfigError(f"{train_dir / name}: folder {name!r} is not one of data.classes {listed}")
    for name in listed:
        if name not in train:
            raise ConfigError(f"data.classes lists {name!r} but {train_dir} has no folder {name!r}")
    return listed


def interleaved(files: dict[str, list[str]], classes: list[str]) -> list[tuple[int, str]]:
    """(class index, file) pairs: every class's first file, then every class's second file, ..."""
    columns = itertools.zip_longest(*[[(index, f) for f in files.get(name, [])] for index, name in enumerate(classes)])
    return [pair for column in columns for pair in column if pair is not None]


def read_split(
    split_dir: Path,
    files: dict[str, list[str]],
    classes: list[str],
    prep: Preprocess,
    limit: int | None,
    bad: BadInputs,
    hashes: list[tuple[str, str]],
) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` pictures of one split (all: None) as uint8 (n, rows, cols, channels) and their labels;
    (relative path, sha256) of every file of the split goes into `hashes`."""
    order = interleaved(files, classes)
    chosen, rest = order[:limit], (order[limit:] if limit else [])
    x = np.empty((len(chosen), *prep.size, prep.channels), np.uint8)
    y = np.empty(len(chosen), np.uint8)
    filled = 0
    for index, name in chosen:
        path, relative = split_dir / classes[index] / name, f"{split_dir.name}/{classes[index]}/{name}"
        try:
            data = path.read_bytes()  # once: hashed and decoded from memory
        except OSError as exc:
            bad.bad(path, relative, f"cannot read image ({exc.strerror or exc})")  # as conform says it
            continue
        hashes.append((relative, hashlib.sha256(data).hexdigest()))
        try:
            x[filled] = conform(path, prep, data)
        except ImageError as exc:
            bad.bad(path, relative, str(exc).removeprefix(f"{path}: "))
            continue
        y[filled] = index
        filled += 1
    for index, name in rest:  # beyond the limit: not read as pictures, but part of the raw input's digest
        hashes.append((f"{split_dir.name}/{classes[index]}/{name}", file_sha256(split_dir / classes[index] / name)))
    empty = sorted({index for index, _ in chosen} - set(y[:filled].tolist()))
    if empty:
        raise PipelineError(
            f"{split_dir / classes[empty[0]]}: no readable picture (every one was bad and skipped, on_bad: skip)"
        )
    return x[:filled], y[:filled]


def read(root: Path, prep: Preprocess, classes: list[str] | None, limit: int | None, on_bad: str) -> RawDataset:
    """A class-folder dataset (module docstring); `limit` None: every picture."""
    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir():
        raise PipelineError(f"{root}: no train/ folder ({LAYOUT})")
    train = split_folders(train_dir)
    names = class_names(train, classes, train_dir)
    test = split_folders(test_dir) if test_dir.is_dir() else None
    for name in test or {}:
        if name not in names:
            raise PipelineError(f"{test_dir / name}: class {name!r} is in test/ but not in train/")

    bad = BadInputs(on_bad)
    hashes: list[tuple[str, str]] = []
    x_train, y_train = read_split(train_dir, train, names, prep, limit, bad, hashes)
    x_test, y_test = read_split(test_dir, test, names, prep, limit, bad, hashes) if test else (None, None)
    files = {
        "format": "folder",
        "path": str(root),
        "raw_sha256": raw_digest(hashes),
        "pictures": {"train": sum(map(len, train.values())), "test": sum(map(len, (test or {}).values()))},
    }
    return RawDataset(x_train, y_train, x_test, y_test, names, files, bad.skipped)
