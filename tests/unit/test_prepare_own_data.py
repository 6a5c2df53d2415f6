"""The prepare stage, in-process, on a user's own dataset: a conf/data/<name>.yaml written to a temporary config
folder (Hydra's searchpath, as --config-dir does for a run by hand), class folders or CSV files beside it. What
dataset.json records, the drawn test split, the checks before any work, and nothing written on failure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline import prepare as prepare_stage
from mnist_pipeline.core.errors import ConfigError, PipelineError
from mnist_pipeline.data.idx import parse_images, parse_labels, read_payload
from mnist_pipeline.data.prepared import data_hash, describe, load_split
from tests.helpers import compose, load_script


def config(tmp_path, yaml: str, *overrides: str, name: str = "mine"):
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True, exist_ok=True)
    (conf / "data" / f"{name}.yaml").write_text(yaml)
    return compose(
        "prepare",
        f"hydra.searchpath=[file://{conf}]",
        f"data={name}",
        f"data.prepared_dir={tmp_path / 'prepared'}",
        "data.limit=0",
        *overrides,
    )


def folder_yaml(root, extra: str = "") -> str:
    return f"name: mine\nformat: folder\npath: {root}\nimage_size: [8, 8]\n{extra}"


def pictures(root, layout: dict[str, int], mode: str = "RGB", size=(12, 9)):
    """root/<split>/<class>/<i>.png, each a solid colour that tells it apart (its class and number)."""
    for where, count in layout.items():
        shade = 40 * (len(where) % 5)
        for i in range(count):
            path = root / where / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            colour = (shade + i, 2 * i, 255 - i) if mode == "RGB" else shade + i
            Image.new(mode, size, colour).save(path)
    return root


def test_a_colour_folder_dataset_is_prepared_and_described(tmp_path):
    root = pictures(tmp_path / "pets", {"train/cat": 10, "train/dog": 10, "test/cat": 3, "test/dog": 2})
    meta = prepare_stage.prepare(config(tmp_path, folder_yaml(root, "channels: 3\n")))
    out = tmp_path / "prepared"
    assert meta == json.loads((out / "dataset.json").read_text())
    assert meta["classes"] == ["cat", "dog"] and meta["image_shape"] == [8, 8, 3]
    assert meta["preprocess"] == {"method": "pad"}
    assert meta["counts"] == {"train": 18, "val": 2, "test": 5}
    assert meta["class_counts"]["test"] == [3, 2]
    assert meta["settings"] == {"val_fraction": 0.1, "split_seed": 0, "limit": 0, "on_bad": "error"}
    assert meta["files"]["format"] == "folder" and meta["files"]["pictures"] == {"train": 20, "test": 5}
    assert meta["skipped_count"] == 0 and meta["skipped"] == []
    x, y = load_split(out, "train")
    assert x.shape == (18, 8, 8, 3) and x.dtype == np.float32 and 0.0 <= x.min() <= x.max() <= 1.0
    assert describe(out).image_shape == (8, 8, 3)


def test_without_test_folder_the_test_split_is_drawn_stratified_and_seeded(tmp_path):
    root = pictures(tmp_path / "d", {"train/a": 12, "train/b": 8, "train/c": 20})
    meta = prepare_stage.prepare(config(tmp_path, folder_yaml(root, "test_fraction: 0.25\n")))
    assert meta["class_counts"]["test"] == [3, 2, 5]  # a quarter of every class
    assert meta["counts"] == {"train": 27, "val": 3, "test": 10}
    assert meta["settings"]["test_fraction"] == 0.25
    first = load_split(tmp_path / "prepared", "test")
    prepare_stage.prepare(config(tmp_path, folder_yaml(root, "test_fraction: 0.25\n")))
    again = load_split(tmp_path / "prepared", "test")
    np.testing.assert_array_equal(first[0], again[0])  # the same seed, the same draw
    prepare_stage.prepare(config(tmp_path, folder_yaml(root, "test_fraction: 0.25\n"), "data.split_seed=7"))
    other = load_split(tmp_path / "prepared", "test")
    assert np.bincount(other[1]).tolist() == [3, 2, 5]  # stratified either way
    assert not np.array_equal(first[0], other[0])  # another seed, other images


def test_a_changed_picture_changes_dataset_json_and_the_prepared_hash(tmp_path):
    root = pictures(tmp_path / "d", {"train/a": 10, "train/b": 10})
    before = prepare_stage.prepare(config(tmp_path, folder_yaml(root), "data.limit=12"))
    hash_before = data_hash(tmp_path / "prepared")
    Image.new("RGB", (12, 9), (1, 2, 3)).save(root / "train" / "b" / "009.png")  # beyond the limit: not read
    after = prepare_stage.prepare(config(tmp_path, folder_yaml(root), "data.limit=12"))
    assert before["counts"] == after["counts"] == {"train": 9, "val": 1, "test": 2}
    assert after["files"]["raw_sha256"] != before["files"]["raw_sha256"]
    assert data_hash(tmp_path / "prepared") != hash_before


def test_on_bad_skip_lists_the_skipped_pictures_in_dataset_json(tmp_path, caplog):
    root = pictures(tmp_path / "d", {"train/a": 10, "train/b": 10})
    bad = root / "train" / "b" / "004.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 12, 3), np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:-30])
    with caplog.at_level("WARNING"):
        meta = prepare_stage.prepare(config(tmp_path, folder_yaml(root, "on_bad: skip\n")))
    assert meta["skipped_count"] == 1 and meta["settings"]["on_bad"] == "skip"
    assert meta["skipped"] == [{"file": "train/b/004.png", "reason": "cannot read image (image file is truncated)"}]
    assert sum(meta["counts"].values()) == 19
    assert f"skipped (on_bad: skip): {root}/train/b/004.png: cannot read image" in caplog.text


def test_a_failed_prepare_writes_nothing(tmp_path):
    root = pictures(tmp_path / "d", {"train/a": 10, "train/b": 10})
    (root / "train" / "b" / "004.png").write_text("not a picture")
    with pytest.raises(PipelineError) as err:
        prepare_stage.prepare(config(tmp_path, folder_yaml(root)))
    assert str(err.value) == f"{root}/train/b/004.png: not a picture (cannot identify image file)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf", "d"]  # no prepared/, no staging left


def test_a_csv_dataset_with_named_classes(tmp_path):
    root = tmp_path / "digits"
    root.mkdir()
    header = "label," + ",".join(f"pixel{i}" for i in range(64))
    rows = [f"{['zero', 'one'][i % 2]}," + ",".join(str((i * 7 + j) % 256) for j in range(64)) for i in range(40)]
    (root / "train.csv").write_text("\n".join([header, *rows]) + "\n")
    yaml = (
        f"name: mine\nformat: csv\npath: {root}\ntrain_file: ${{data.path}}/train.csv\n"
        "image_size: [8, 8]\nclasses: [zero, one]\n"
    )
    meta = prepare_stage.prepare(config(tmp_path, yaml))
    assert meta["classes"] == ["zero", "one"] and meta["image_shape"] == [8, 8, 1]
    assert meta["counts"] == {"train": 29, "val": 3, "test": 8}  # test: 20% drawn from the training file
    assert meta["files"]["sha256"].keys() == {"train.csv"}
    x, _ = load_split(tmp_path / "prepared", "train")
    assert x.shape == (29, 8, 8, 1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.format=parquet"], "data.format: must be one of idx, folder, csv; got 'parquet'"),
        (["data.channels=2"], "data.channels must be 1 (grayscale) or 3 (RGB), got 2"),
        (["data.on_bad=ignore"], "data.on_bad: must be one of error, skip; got 'ignore'"),
        (["data.test_fraction=1.5"], "data.test_fraction: must be in (0.0, 1.0), got 1.5"),
        (["data.preprocess.method=stretch"], "data.preprocess.method: must be one of digit, pad; got 'stretch'"),
        (
            [
                "data.channels=3",
                "data.preprocess.method=digit",
                "+data.preprocess.box=4",
                "+data.preprocess.centre=mass",
            ],
            "data.preprocess.method: digit makes grayscale images (data.channels: 1); use pad",
        ),
        (["data.classes=[a]"], "data.classes must list 2 to 256 distinct class names, got ['a']"),
    ],
)
def test_wrong_settings_are_named_before_any_work(tmp_path, overrides, message):
    root = pictures(tmp_path / "d", {"train/a": 2, "train/b": 2})
    with pytest.raises(ConfigError) as err:
        prepare_stage.check_settings(config(tmp_path, folder_yaml(root), *overrides))
    assert str(err.value) == message


def test_idx_datasets_stay_grayscale():
    with pytest.raises(ConfigError) as err:
        prepare_stage.check_settings(compose("prepare", "data.channels=3", "data.preprocess.method=pad"))
    assert str(err.value) == "data.channels: IDX files hold grayscale images, so it must be 1, got 3"


def test_missing_data_is_named_with_how_to_bring_it(tmp_path):
    missing = tmp_path / "datasets" / "mine"
    with pytest.raises(ConfigError) as err:
        prepare_stage.check_settings(config(tmp_path, folder_yaml(missing)))
    assert str(err.value) == (
        f"data.path: {missing} does not exist: put your data there and track it with `dvc add {missing}`, "
        "or get it with `dvc pull` if it is tracked already (datasets/README.md)"
    )
    missing.mkdir(parents=True)
    yaml = f"name: mine\nformat: csv\npath: {missing}\ntrain_file: ${{data.path}}/train.csv\nimage_size: [8, 8]\n"
    with pytest.raises(ConfigError, match=r"^data\.train_file: .*/datasets/mine/train\.csv does not exist: put"):
        prepare_stage.check_settings(config(tmp_path, yaml))


def test_the_default_path_is_under_datasets():
    cfg = compose("prepare", "data.format=folder", "+data.path=${paths.datasets}/${data.name}")
    assert cfg.data.path == "datasets/mnist"


def test_mnist_written_as_pngs_round_trips_pixel_exact(tmp_path, mnist_mirror):
    """benchmarks/folder_prepare.py's class folder of MNIST's first 300 training and 200 test images, prepared as
    a folder dataset with MNIST's digit preprocessing: every image is the IDX file's, unchanged."""
    load_script("folder_prepare").write_folder(mnist_mirror, tmp_path / "png", 300, 200)
    yaml = folder_yaml(tmp_path / "png", 'classes: ["0","1","2","3","4","5","6","7","8","9"]\n').replace(
        "[8, 8]", "[28, 28]"
    )
    meta = prepare_stage.prepare(config(tmp_path, yaml + "preprocess: {method: digit, box: 20, centre: mass}\n"))
    assert meta["counts"] == {"train": 270, "val": 30, "test": 200}
    assert meta["preprocess"] == {"box": 20, "centre": "mass"}  # `digit` recorded as before methods existed
    x_idx = parse_images(read_payload(mnist_mirror / "t10k-images-idx3-ubyte.gz"), "t10k")[:200]
    y_idx = parse_labels(read_payload(mnist_mirror / "t10k-labels-idx1-ubyte.gz"), "t10k")[:200]
    x, y = load_split(tmp_path / "prepared", "test")
    for digit in range(10):  # the folder reads each class's files in name order: MNIST's order within the class
        np.testing.assert_array_equal(np.rint(x[y == digit, ..., 0] * 255).astype(np.uint8), x_idx[y_idx == digit])
    train = [load_split(tmp_path / "prepared", s) for s in ("train", "val")]
    x_pool = np.concatenate([np.rint(t[0] * 255).astype(np.uint8)[..., 0] for t in train])
    x_idx = parse_images(read_payload(mnist_mirror / "train-images-idx3-ubyte.gz"), "train")[:300]
    assert sorted(map(bytes, x_pool)) == sorted(map(bytes, x_idx))  # the same 300 images, split


def test_a_yaml_without_format_or_method_means_what_it_did_before_formats(tmp_path):
    """A dataset file written before formats existed (IDX files, box and centre only) is idx with MNIST's
    digit method; a folder or CSV dataset without a method gets pad."""
    old_style = "name: mine\nclasses: [a, b]\nimage_size: [8, 8]\npreprocess: {box: 6, centre: box}\nfiles: {}\n"
    cfg = config(tmp_path, old_style)
    prepare_stage.check_settings(cfg)
    assert (cfg.data.format, cfg.data.preprocess.method) == ("idx", "digit")
    root = pictures(tmp_path / "d", {"train/a": 2, "train/b": 2})
    cfg = config(tmp_path, folder_yaml(root))
    prepare_stage.check_settings(cfg)
    assert cfg.data.preprocess.method == "pad"
