"""The prepare stage as a user runs it on their own data (a Hydra app in a subprocess): a conf/data/<name>.yaml
in a folder passed with --config-dir, the pictures or CSV files beside it. Bad input ends it with exit code 1
and one line on stderr naming the file (and line), with no prepared folder; `on_bad: skip` goes on, warns (in the
log on stdout) and lists; no TensorFlow, Keras or MLflow is imported on the way."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_module


def prepare(tmp_path, yaml: str, *overrides: str, importtime: bool = False):
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True, exist_ok=True)
    (conf / "data" / "mine.yaml").write_text(yaml)
    args = [
        "--config-dir",
        str(conf),
        "data=mine",
        f"data.prepared_dir={tmp_path / 'prepared'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "data.limit=0",
        *overrides,
    ]
    if importtime:
        import os
        import subprocess
        import sys

        from tests.helpers import REPO

        return subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "mnist_pipeline.prepare", *args],
            cwd=REPO,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=600,
        )
    return run_module("mnist_pipeline.prepare", *args)


@pytest.fixture
def pets(tmp_path):
    """datasets/pets: train/cat and train/dog, 8 colour pictures each (odd sizes), no test/."""
    root = tmp_path / "datasets" / "pets"
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog")):
        (root / "train" / name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 256, (20 + i, 30, 3), np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{i}.{'png' if c else 'jpg'}")
    return root


def pets_yaml(root, extra: str = "") -> str:
    return f"name: pets\nformat: folder\npath: {root}\nimage_size: [16, 16]\nchannels: 3\n{extra}"


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_folder_of_colour_pictures_prepares_without_tensorflow(tmp_path, pets):
    result = prepare(tmp_path, pets_yaml(pets), importtime=True)
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "import time:" in line}
    assert "mnist_pipeline.data.folder" in imported and "PIL.Image" in imported
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "mlflow")}
    meta = json.loads((tmp_path / "prepared" / "dataset.json").read_text())
    assert meta["image_shape"] == [16, 16, 3] and meta["classes"] == ["cat", "dog"]
    assert meta["counts"] == {"train": 12, "val": 1, "test": 3}  # test: 20% drawn from train/


@pytest.mark.parametrize("case", ["truncated", "empty_class", "test_only_class"])
def test_bad_input_ends_the_stage_with_one_line_and_no_output(tmp_path, pets, case):
    if case == "truncated":
        bad = pets / "train" / "dog" / "3.png"
        bad.write_bytes(bad.read_bytes()[:-50])
        expected = f"error: {bad}: cannot read image (image file is truncated)"
    elif case == "empty_class":
        (pets / "train" / "bird").mkdir()
        expected = f"error: {pets / 'train' / 'bird'}: empty class folder (every class needs at least one picture)"
    else:
        (pets / "test" / "fox").mkdir(parents=True)
        Image.new("RGB", (5, 5)).save(pets / "test" / "fox" / "0.png")
        expected = f"error: {pets / 'test' / 'fox'}: class 'fox' is in test/ but not in train/"
    result = prepare(tmp_path, pets_yaml(pets))
    assert result.returncode == 1
    assert error_lines(result) == [expected], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "prepared").exists() and not list(tmp_path.glob(".prepared.*"))


def test_on_bad_skip_goes_on_warns_and_lists(tmp_path, pets):
    bad = pets / "train" / "cat" / "2.jpg"
    bad.write_text("not a picture")
    result = prepare(tmp_path, pets_yaml(pets), "data.on_bad=skip")
    assert result.returncode == 0, result.stderr
    assert f"skipped (on_bad: skip): {bad}: not a picture (cannot identify image file)" in result.stdout
    meta = json.loads((tmp_path / "prepared" / "dataset.json").read_text())
    assert meta["skipped_count"] == 1
    assert meta["skipped"] == [{"file": "train/cat/2.jpg", "reason": "not a picture (cannot identify image file)"}]


def test_a_bad_csv_row_is_named_by_file_and_line(tmp_path):
    root = tmp_path / "datasets" / "digits"
    root.mkdir(parents=True)
    lines = ["label," + ",".join(f"pixel{i}" for i in range(16))]
    lines += [f"{i % 2}," + ",".join(["7"] * 16) for i in range(10)]
    lines[4] = "1," + ",".join(["7"] * 15 + ["x7"])
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    yaml = f"name: digits\nformat: csv\npath: {root}\ntrain_file: ${{data.path}}/train.csv\nimage_size: [4, 4]\n"
    result = prepare(tmp_path, yaml)
    assert result.returncode == 1
    assert error_lines(result) == [
        f"error: {root / 'train.csv'}: line 5: column 'pixel15': 'x7' is not a whole number 0..255"
    ]
    assert not (tmp_path / "prepared").exists()


def test_missing_data_says_how_to_bring_it(tmp_path):
    missing = tmp_path / "datasets" / "pets"
    result = prepare(tmp_path, pets_yaml(missing))
    assert result.returncode == 1
    assert error_lines(result) == [
        f"error: data.path: {missing} does not exist: put your data there and track it with `dvc add {missing}`, "
        "or get it with `dvc pull` if it is tracked already (datasets/README.md)"
    ]
