"""The `csv` format (data/table.py): a header, a label column and pixel columns, streamed row by row; labels by
name or by index; every bad row named by file and line (the header is line 1)."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.data import table
from mnist_pipeline.data.pictures import Preprocess

SMALL = Preprocess((2, 2), channels=1, method="pad")


def write_csv(path, header, rows):
    path.write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    return path


def read(tmp_path, train, test=None, classes=None, prep=SMALL, limit=None, on_bad="error", label_column="label"):
    return table.read(tmp_path, train, test, label_column, prep, classes, limit, on_bad)


def test_kaggle_digit_recognizer_layout_without_classes(tmp_path):
    """label,pixel0..pixel783, labels 0..9; Kaggle's test.csv has no labels, so the test split is drawn."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (25, 784))
    labels = np.arange(25) % 10
    train = write_csv(
        tmp_path / "train.csv", ["label", *(f"pixel{i}" for i in range(784))], np.column_stack([labels, images])
    )
    data = read(tmp_path, train, prep=Preprocess((28, 28), channels=1, method="digit"))
    assert data.classes == [str(d) for d in range(10)]
    np.testing.assert_array_equal(data.y_train, labels)
    np.testing.assert_array_equal(data.x_train, images.reshape(25, 28, 28, 1))
    assert data.x_test is None and data.skipped == []
    assert data.files["sha256"].keys() == {"train.csv"} and len(data.files["raw_sha256"]) == 64


def test_found_numeric_labels_sort_as_numbers_and_name_the_classes(tmp_path):
    train = write_csv(
        tmp_path / "t.csv", ["a", "b", "c", "d", "label"], [[0, 0, 0, 0, 10], [1, 1, 1, 1, 9], [2] * 4 + ["07"]]
    )
    data = read(tmp_path, train)
    assert data.classes == ["7", "9", "10"]  # "10" after "9"; "07" is 7
    assert data.y_train.tolist() == [2, 1, 0]
    assert data.x_train[:, :, :, 0].tolist() == [[[0, 0], [0, 0]], [[1, 1], [1, 1]], [[2, 2], [2, 2]]]


def test_named_labels_with_listed_classes_and_numbers_as_indices(tmp_path):
    header = ["label", "p0", "p1", "p2", "p3"]
    train = write_csv(tmp_path / "train.csv", header, [["dog", 1, 2, 3, 4], [0, 5, 6, 7, 8], ["bird", 9, 9, 9, 9]])
    test = write_csv(tmp_path / "test.csv", ["p0", "p1", "label", "p2", "p3"], [[1, 2, "2", 3, 4]])
    data = read(tmp_path, train, test, classes=["cat", "dog", "bird"])
    assert data.classes == ["cat", "dog", "bird"]
    assert data.y_train.tolist() == [1, 0, 2]  # by name, by index 0, by name
    assert data.y_test.tolist() == [2]  # the label column found by name wherever it stands
    np.testing.assert_array_equal(data.x_test[0, :, :, 0], [[1, 2], [3, 4]])
    assert sorted(data.files["sha256"]) == ["test.csv", "train.csv"]


def test_found_named_labels_and_a_test_file_that_must_use_them(tmp_path):
    header = ["label", "p0", "p1", "p2", "p3"]
    train = write_csv(tmp_path / "train.csv", header, [["zebra", 1, 2, 3, 4], ["ant", 5, 6, 7, 8]])
    test = write_csv(tmp_path / "test.csv", header, [["ant", 0, 0, 0, 0], ["yak", 0, 0, 0, 0]])
    with pytest.raises(PipelineError) as err:
        read(tmp_path, train, test)
    assert str(err.value) == f"{test}: line 3: label 'yak' is not a class (the training file's labels: ant, zebra)"


def test_three_channels_are_interleaved_per_pixel(tmp_path):
    header = ["label", *(f"{c}{i}" for i in range(4) for c in "rgb")]
    train = write_csv(tmp_path / "t.csv", header, [["a", *range(12)], ["b", *range(12, 24)]])
    data = read(tmp_path, train, prep=Preprocess((2, 2), channels=3, method="pad"))
    assert data.x_train.shape == (2, 2, 2, 3)
    assert data.x_train[0, 0, 1].tolist() == [3, 4, 5]  # pixel (0, 1): its r, g, b
    assert data.x_train[1, 1, 1].tolist() == [21, 22, 23]


def test_limit_takes_the_first_rows_and_the_array_grows_by_doubling(tmp_path):
    rows = [[i % 3, i % 256, 0, 0, 0] for i in range(3000)]  # more than the first allocation of 1,024 rows
    train = write_csv(tmp_path / "t.csv", ["label", "a", "b", "c", "d"], rows)
    data = read(tmp_path, train)
    assert len(data.y_train) == 3000 and data.x_train[2999, 0, 0, 0] == 2999 % 256
    assert data.x_train.base is None or data.x_train.base.shape[0] == 3000  # no leftover room kept
    assert len(read(tmp_path, train, limit=10).y_train) == 10


ROWS = [["label", "a", "b", "c", "d"], ["x", 1, 2, 3, 4]]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["x", 1, 2, 3], "line 3: 4 columns, the header has 5"),
        (["x", 1, 2, 3, 4, 5], "line 3: 6 columns, the header has 5"),
        (["x", 1, "two", 3, 4], "line 3: column 'b': 'two' is not a whole number 0..255"),
        (["x", 1, 2, 3.5, 4], "line 3: column 'c': '3.5' is not a whole number 0..255"),
        (["x", 1, 2, 3, 256], "line 3: column 'd': 256 is outside 0..255"),
        (["x", -1, 2, 3, 4], "line 3: column 'a': -1 is outside 0..255"),
        (["x", 1, 2, 3, 10**30], f"line 3: column 'd': {10**30} is outside 0..255"),
        (["y", 1, 2, 3, 4], "line 3: label 'y' is not a class (data.classes: x, z)"),
        (["5", 1, 2, 3, 4], "line 3: label '5' is not a class (data.classes: x, z)"),
        (["", 1, 2, 3, 4], "line 3: label '' is not a class (data.classes: x, z)"),
    ],
)
def test_each_bad_row_stops_with_one_line_naming_file_and_line(tmp_path, row, message):
    train = write_csv(tmp_path / "train.csv", ROWS[0], [ROWS[1], row, ROWS[1]])
    with pytest.raises(PipelineError) as err:
        read(tmp_path, train, classes=["x", "z"])
    assert str(err.value) == f"{train}: {message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty (a CSV dataset starts with a header line)"),
        ("lbl,a,b,c,d\nx,1,2,3,4\n", "line 1: no column 'label' (data.label_column); the header starts lbl,a,b,c,..."),
        ("label,a,b,c\nx,1,2,3\n", "line 1: 3 pixel columns, but data.image_size [2, 2] with 1 channel(s) needs 4"),
        ("label,a,b,c,d\nx,1,2,3,4\n\xff\n", "not UTF-8 text"),
    ],
)
def test_a_bad_file_is_named(tmp_path, text, message):
    train = tmp_path / "train.csv"
    train.write_bytes(text.encode("latin-1"))
    with pytest.raises(PipelineError) as err:
        read(tmp_path, train, classes=["x", "z"])
    assert str(err.value).startswith(f"{train}: {message}")


def test_on_bad_skip_leaves_bad_rows_out_and_lists_them(tmp_path):
    train = write_csv(
        tmp_path / "train.csv",
        ROWS[0],
        [["x", 1, 2, 3, 4], ["x", 1, 2], ["z", 5, 6, 7, 8], ["x", 1, 2, 3, 999], ["q", 0, 0, 0, 0], ["z", 0, 0, 0, 1]],
    )
    data = read(tmp_path, train, classes=["x", "z"], on_bad="skip")
    assert data.y_train.tolist() == [0, 1, 1]
    assert data.skipped == [
        {"file": "train.csv", "line": 3, "reason": "3 columns, the header has 5"},
        {"file": "train.csv", "line": 5, "reason": "column 'd': 999 is outside 0..255"},
        {"file": "train.csv", "line": 6, "reason": "label 'q' is not a class (data.classes: x, z)"},
    ]


def test_blank_lines_and_a_byte_order_mark_are_fine(tmp_path):
    train = tmp_path / "train.csv"
    train.write_bytes("\ufefflabel,a,b,c,d\r\nx,1,2,3,4\r\n\r\nz,5,6,7,8\r\n".encode())
    data = read(tmp_path, train)
    assert data.classes == ["x", "z"] and data.y_train.tolist() == [0, 1]
