"""The `csv` format: a header line, then one image per row: its label and its pixels.

    label,pixel0,pixel1,...,pixel783        Kaggle's digit-recognizer train.csv (28x28, 1 channel)
    7,0,0,...,0

`data.label_column` names the label's column (default `label`); every other column is a pixel, in header
order: rows * cols * channels of them, row by row with each pixel's channels together (r, g, b, r, g, b...),
whole numbers 0..255. A label is a class this way: with data.classes listed, a label that is one of the names
is that class, else a whole number is an index into the list (0: the first); without data.classes, the
classes are the training file's distinct labels, sorted (as numbers when every label is a whole number, so
"10" follows "9"), and the test file's labels must be among them.

The file is streamed row by row with the csv module into a uint8 array that doubles when full (no pandas,
never the whole text in memory). `limit` takes the first N rows of each file. A bad row stops the stage with
`<file>: line <N>: <why>` (the header is line 1), or is skipped and listed (on_bad: skip).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.data.dataset import BadInputs, RawDataset, file_sha256, raw_digest
from mnist_pipeline.data.pictures import Preprocess

MAX_CLASSES = 256  # labels are uint8
WHOLE = re.compile(r"\s*[+-]?\d+\s*")


def whole(text: str) -> int | None:
    return int(text) if WHOLE.fullmatch(text) else None


class Labels:
    """Label text -> class index, as the module docstring says."""

    def __init__(self, classes: list[str], indices: bool) -> None:
        self.classes, self.indices = classes, indices  # indices: a whole number is an index into `classes`
        self.names = {name: i for i, name in enumerate(classes)}

    def index(self, label: str) -> int | None:
        if label in self.names:
            return self.names[label]
        number = whole(label)
        if number is None:
            return None
        if self.indices:
            return number if 0 <= number < len(self.classes) else None
        return self.names.get(str(number))  # found classes: "07" is class "7"

    def not_a_class(self, label: str, source: str) -> str:
        listed = ", ".join(self.classes[:12]) + (", ..." if len(self.classes) > 12 else "")
        return f"label {label!r} is not a class ({source}: {listed})"


class Found:
    """The training file's labels when data.classes lists none: each new label gets the next provisional
    index, sorted into the final order once the file is read."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.seen: dict[str, int] = {}

    def index(self, label: str) -> int | None:
        if label.strip() == "":
            return None
        if label not in self.seen:
            if len(self.seen) == MAX_CLASSES:
                raise PipelineError(
                    f"{self.file}: more than {MAX_CLASSES} distinct labels: is data.label_column the label?"
                )
            self.seen[label] = len(self.seen)
        return self.seen[label]

    def not_a_class(self, label: str, source: str) -> str:
        return "empty label"

    def final(self, y: np.ndarray) -> tuple[Labels, np.ndarray]:
        """The sorted classes and `y` renumbered to them."""
        numbers = {label: number for label in self.seen if (number := whole(label)) is not None}
        if len(numbers) == len(self.seen):  # every label a whole number: sorted by value, named without padding
            values = sorted(set(numbers.values()))
            if len(values) < len(numbers):
                raise PipelineError(f"{self.file}: labels {sorted(numbers)} name the same number twice")
            classes = [str(n) for n in values]
            rank = {label: values.index(n) for label, n in numbers.items()}
        else:
            classes = sorted(self.seen)
            rank = {label: classes.index(label) for label in self.seen}
        labels = Labels(classes, indices=False)
        if len(classes) < 2:
            raise PipelineError(f"{self.file}: {len(classes)} distinct label(s), a classifier needs 2 to {MAX_CLASSES}")
        remap = np.zeros(MAX_CLASSES, np.uint8)
        for label, provisional in self.seen.items():
            remap[provisional] = rank[label]
        return labels, remap[y]


def first_bad_pixel(header: list[str], row: list[str], pixel_at: list[int]) -> str:
    """Why a row's pixels cannot be used: its first value that is not a whole number 0..255."""
    for i in pixel_at:
        number = whole(row[i])
        if number is None:
            return f"column {header[i]!r}: {row[i]!r} is not a whole number 0..255"
        if not 0 <= number <= 255:
            return f"column {header[i]!r}: {row[i].strip()} is outside 0..255"
    return "a pixel is not a whole number 0..255"  # numpy refused what int() takes: not seen


def rows(file: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each row; blank lines are left out. utf-8-sig: Excel's byte-order mark."""
    with open(file, newline="", encoding="utf-8-sig") as text:
        reader = csv.reader(text)
        for row in reader:
            if row:
                yield reader.line_num, row


def read_file(
    file: Path,
    relative: str,
    label_column: str,
    prep: Preprocess,
    labels: Labels | Found,
    limit: int | None,
    bad: BadInputs,
) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` rows (None: all) as uint8 (n, rows, cols, channels) and provisional or final labels."""
    pixels = prep.size[0] * prep.size[1] * prep.channels
    source = "data.classes" if isinstance(labels, Labels) and labels.indices else "the training file's labels"
    try:
        stream = rows(file)
        _, header = next(stream, (1, []))
        if not header:
            raise PipelineError(f"{file}: empty (a CSV dataset starts with a header line)")
        if label_column not in header:
            raise PipelineError(
                f"{file}: line 1: no column {label_column!r} (data.label_column); the header starts "
                f"{','.join(header[:4])}{',...' if len(header) > 4 else ''}"
            )
        label_at = header.index(label_column)
        pixel_at = [i for i in range(len(header)) if i != label_at]
        if len(pixel_at) != pixels:
            raise PipelineError(
                f"{file}: line 1: {len(pixel_at)} pixel columns, but data.image_size {list(prep.size)} with "
                f"{prep.channels} channel(s) needs {pixels}"
            )
        x = np.empty((min(limit or 1024, 1 << 16), pixels), np.uint8)
        y = np.empty(len(x), np.uint8)
        filled = 0
        for count, (line, row) in enumerate(stream):
            if limit and count == limit:
                break
            if len(row) != len(header):
                bad.bad(file, relative, f"{len(row)} columns, the header has {len(header)}", line)
                continue
            label = row[label_at]
            index = labels.index(label)
            if index is None:
                bad.bad(file, relative, labels.not_a_class(label, source), line)
                continue
            try:
                numbers = np.array([row[i] for i in pixel_at], dtype=np.int64)
                usable = bool(numbers.min() >= 0 and numbers.max() <= 255)
            except (ValueError, OverflowError):
                usable = False
            if not usable:
                bad.bad(file, relative, first_bad_pixel(header, row, pixel_at), line)
                continue
            if filled == len(x):  # full: double (the rows already read stay in place)
                x.resize((2 * len(x), pixels), refcheck=False)
                y.resize(2 * len(y), refcheck=False)
            x[filled], y[filled] = numbers, index
            filled += 1
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise PipelineError(f"{file}: not a readable CSV file ({exc})") from None
    x.resize((filled, pixels), refcheck=False)  # give back the room the last doubling left
    y.resize(filled, refcheck=False)
    return x.reshape(filled, *prep.size, prep.channels), y


def read(
    root: Path,
    train_file: Path,
    test_file: Path | None,
    label_column: str,
    prep: Preprocess,
    classes: list[str] | None,
    limit: int | None,
    on_bad: str,
) -> RawDataset:
    """A CSV dataset (module docstring); `test_file` None: the test split is drawn from the training file."""

    def relative(file: Path) -> str:
        return file.relative_to(root).as_posix() if file.is_relative_to(root) else str(file)

    bad = BadInputs(on_bad)
    labels: Labels | Found = Labels(classes, indices=True) if classes is not None else Found(train_file)
    x_train, y_train = read_file(train_file, relative(train_file), label_column, prep, labels, limit, bad)
    if isinstance(labels, Found):
        labels, y_train = labels.final(y_train)
    x_test, y_test = (
        read_file(test_file, relative(test_file), label_column, prep, labels, limit, bad) if test_file else (None, None)
    )
    hashes = {relative(f): file_sha256(f) for f in [train_file, *([test_file] if test_file else [])]}
    files = {"format": "csv", "path": str(root), "raw_sha256": raw_digest(hashes.items()), "sha256": hashes}
    return RawDataset(x_train, y_train, x_test, y_test, labels.classes, files, bad.skipped)
