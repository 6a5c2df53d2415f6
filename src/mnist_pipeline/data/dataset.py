"""What every dataset reader (data/formats.py) returns, the bad-input policy they share, and the raw digest.

A reader turns one format (IDX files, a class folder, CSV files) into uint8 images (n, rows, cols, channels)
and uint8 class indices; the prepare stage takes it from there whatever the format.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_pipeline.core.errors import PipelineError

log = logging.getLogger(__name__)

ON_BAD = ("error", "skip")
SHOWN_SKIPS = 20  # skipped inputs logged one by one; dataset.json lists them all


class BadInputError(PipelineError):
    """One input (a picture, a CSV row) cannot be used; the message names it (file, and line for CSV)."""


@dataclass
class RawDataset:
    """One dataset as read: the training pool and, when the data has one, its own test split."""

    x_train: np.ndarray  # uint8 (n, rows, cols, channels)
    y_train: np.ndarray  # uint8 (n,): indices into `classes`
    x_test: np.ndarray | None  # None: the test split is drawn from the training pool (data.test_fraction)
    y_test: np.ndarray | None
    classes: list[str]
    files: dict  # provenance for dataset.json: files, hashes, sources
    skipped: list[dict] = field(default_factory=list)  # {"file", ["line"], "reason"}, in reading order


class BadInputs:
    """`on_bad: error` raises the first bad input's error; `skip` records it and reading goes on."""

    def __init__(self, on_bad: str) -> None:
        self.skip = on_bad == "skip"
        self.skipped: list[dict] = []

    def bad(self, shown: str | Path, relative: str, reason: str, line: int | None = None) -> None:
        """Raise `<shown>: [line N: ]<reason>` (on_bad: error), or record the input as skipped and warn. The record
        names the file relative to the dataset's folder, so dataset.json (and the prepared data's hash) does
        not depend on where the data lies."""
        message = f"{shown}: line {line}: {reason}" if line is not None else f"{shown}: {reason}"
        if not self.skip:
            raise BadInputError(message)
        self.skipped.append({"file": relative, **({"line": line} if line is not None else {}), "reason": reason})
        if len(self.skipped) <= SHOWN_SKIPS:
            log.warning("skipped (on_bad: skip): %s", message)


def log_skips(skipped: list[dict]) -> None:
    if len(skipped) > SHOWN_SKIPS:
        log.warning("... %d inputs skipped in all (dataset.json lists them under `skipped`)", len(skipped))


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def raw_digest(hashes: Iterable[tuple[str, str]]) -> str:
    """The digest of a dataset's raw input from (relative path, sha256 of its bytes) pairs: sha256 over the
    pairs sorted by path, each as `path NUL sha256 LF`. Any renamed, added, removed or changed file changes it,
    and so dataset.json and the prepared data's hash."""
    digest = hashlib.sha256()
    for name, sha in sorted(hashes):
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest()
