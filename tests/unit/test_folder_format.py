"""The `folder` format (data/folder.py): pictures of any size, mode and format Pillow reads become the dataset's
uint8 images through pictures.conform; classes, order, limit, the raw digest and every bad input's one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.data import folder
from mnist_pipeline.data.pictures import Preprocess

RED = (200, 100, 50)  # a colour whose grayscale (ITU-R 601 luma, Pillow's) is none of its channels
NOISE = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)


def luma(rgb: tuple[int, int, int]) -> int:
    return Image.new("RGB", (1, 1), rgb).convert("L").getpixel((0, 0))


def pad(channels: int, size=(8, 8)) -> Preprocess:
    return Preprocess(size, channels=channels, method="pad")


def save(path, img, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **options)
    return path


# file name -> (picture, expected centre pixel as RGB); every picture a solid colour, or noise at the image size
MIXED = {
    "a_gray_exact.png": (Image.fromarray(NOISE[..., 0]), None),  # at the size: pixel for pixel
    "b_rgb_exact.png": (Image.fromarray(NOISE), None),
    "c_wide.jpg": (Image.new("RGB", (40, 20), RED), RED),  # lossy: compared within a few levels
    "d_tall.bmp": (Image.new("RGB", (10, 30), RED), RED),
    "e_palette.gif": (Image.new("RGB", (12, 12), RED).convert("P", palette=Image.Palette.ADAPTIVE), RED),
    "f_transparent.webp": (Image.new("RGBA", (16, 16), (*RED, 0)), (255, 255, 255)),  # composited on white
    "g_one_bit.png": (Image.new("1", (9, 9), 1), (255, 255, 255)),
    "h_sixteen_bit.png": (Image.fromarray(np.full((20, 20), 65535 // 4, np.uint16)), (64, 64, 64)),
    "i_rgba.png": (Image.new("RGBA", (8, 8), (*RED, 255)), RED),
}


@pytest.fixture
def mixed(tmp_path):
    root = tmp_path / "mixed"
    for name, (img, _) in MIXED.items():
        save(root / "train" / "things" / name, img, **({"lossless": True} if name.endswith(".webp") else {}))
    save(root / "train" / "other" / "only.png", Image.new("L", (8, 8), 7))
    return root


@pytest.mark.parametrize("channels", [1, 3])
def test_mixed_sizes_modes_and_formats_become_the_image_size_and_channels(mixed, channels):
    data = folder.read(mixed, pad(channels), None, None, "error")
    assert data.classes == ["other", "things"]  # the folder names, sorted
    assert data.x_train.shape == (10, 8, 8, channels) and data.x_train.dtype == np.uint8
    # interleaved: other's first file, then things' files in sorted order
    assert data.y_train.tolist() == [0] + [1] * 9
    assert data.x_test is None and data.skipped == []
    got = dict(zip(sorted(MIXED), data.x_train[1:]))
    gray, rgb = NOISE[..., 0], NOISE
    exact = {"a_gray_exact.png": np.dstack([gray] * channels), "b_rgb_exact.png": rgb if channels == 3 else None}
    if channels == 1:
        exact["b_rgb_exact.png"] = np.asarray(Image.fromarray(NOISE).convert("L"))[..., None]
    for name, image in exact.items():
        np.testing.assert_array_equal(got[name], image, err_msg=name)
    for name, (_, colour) in MIXED.items():
        if colour is None:
            continue
        expected = np.array(colour if channels == 3 else [luma(colour)])
        tolerance = 4 if name.endswith(".jpg") else 0
        assert np.abs(got[name][4, 4].astype(int) - expected).max() <= tolerance, (name, got[name][4, 4], expected)
    # not square: fitted keeping the aspect ratio, black bars (rows for the wide one, columns for the tall one)
    assert got["c_wide.jpg"][[0, 1, 6, 7]].max() <= 2 and got["c_wide.jpg"][2:6].min() > 0  # 40x20 -> 8x4
    assert got["d_tall.bmp"][:, [0, 1, 6, 7]].max() == 0 and got["d_tall.bmp"][:, 3:5].min() > 0  # 10x30 -> 3x8


def test_an_mnist_sized_grayscale_png_comes_through_pixel_exact_with_the_digit_method(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    pixels[0, :], pixels[-1, :], pixels[:, 0], pixels[:, -1] = 0, 0, 0, 0  # a dark border, as MNIST's
    save(tmp_path / "d" / "train" / "a" / "x.png", Image.fromarray(pixels))
    save(tmp_path / "d" / "train" / "b" / "x.png", Image.fromarray(pixels))
    data = folder.read(tmp_path / "d", Preprocess(), None, None, "error")
    np.testing.assert_array_equal(data.x_train[0, ..., 0], pixels)


def tiny(root, layout: dict[str, int], value: int = 100):
    """root/<split>/<class>/<i>.png for each 'split/class': count."""
    for where, count in layout.items():
        for i in range(count):
            save(root / where / f"{i:03d}.png", Image.new("L", (8, 8), value + i))
    return root


def test_limit_takes_the_first_files_of_every_class_in_turn(tmp_path):
    root = tiny(tmp_path, {"train/a": 5, "train/b": 3, "train/c": 1, "test/a": 2, "test/b": 2})
    data = folder.read(root, pad(1), None, 4, "error")
    assert data.y_train.tolist() == [0, 1, 2, 0]  # a0 b0 c0 a1
    assert data.x_train[:, 0, 0, 0].tolist() == [100, 100, 100, 101]
    assert data.y_test.tolist() == [0, 1, 0, 1]
    everything = folder.read(root, pad(1), None, None, "error")
    assert everything.y_train.tolist() == [0, 1, 2, 0, 1, 0, 1, 0, 0]
    assert everything.files["pictures"] == {"train": 9, "test": 4}
    assert everything.files["raw_sha256"] == data.files["raw_sha256"]  # the limit reads less, the input is the same


def test_listed_classes_give_the_order_and_must_match_the_folders(tmp_path):
    root = tiny(tmp_path, {"train/cat": 1, "train/dog": 2})
    data = folder.read(root, pad(1), ["dog", "cat"], None, "error")
    assert data.classes == ["dog", "cat"] and data.y_train.tolist() == [0, 1, 0]
    with pytest.raises(PipelineError) as err:
        folder.read(root, pad(1), ["dog", "cat", "bird"], None, "error")
    assert str(err.value) == f"data.classes lists 'bird' but {root / 'train'} has no folder 'bird'"
    with pytest.raises(PipelineError) as err:
        folder.read(root, pad(1), ["dog", "bird"], None, "error")
    assert str(err.value) == f"{root / 'train' / 'cat'}: folder 'cat' is not one of data.classes ['dog', 'bird']"


def test_hidden_files_and_folders_are_ignored(tmp_path):
    root = tiny(tmp_path, {"train/a": 1, "train/b": 1})
    before = folder.read(root, pad(1), None, None, "error")
    (root / "train" / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    save(root / "train" / "b" / ".thumbs" / "x.png", Image.new("L", (8, 8)))
    after = folder.read(root, pad(1), None, None, "error")
    assert after.classes == ["a", "b"] and len(after.y_train) == 2
    assert after.files["raw_sha256"] == before.files["raw_sha256"]


def test_the_raw_digest_changes_when_one_picture_changes_or_moves(tmp_path):
    root = tiny(tmp_path, {"train/a": 2, "train/b": 2})
    first = folder.read(root, pad(1), None, None, "error").files["raw_sha256"]
    assert folder.read(root, pad(1), None, None, "error").files["raw_sha256"] == first  # deterministic
    save(root / "train" / "b" / "001.png", Image.new("L", (8, 8), 200))
    changed = folder.read(root, pad(1), None, None, "error").files["raw_sha256"]
    assert changed != first
    (root / "train" / "b" / "001.png").rename(root / "train" / "b" / "002.png")  # renamed: same bytes, same order
    assert folder.read(root, pad(1), None, None, "error").files["raw_sha256"] not in (first, changed)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("truncated", "{root}/train/b/000.png: cannot read image (image file is truncated)"),
        ("not_a_picture", "{root}/train/b/000.png: not a picture (cannot identify image file)"),
        ("dangling_link", "{root}/train/b/000.png: cannot read image (No such file or directory)"),
        ("empty_class", "{root}/train/c: empty class folder (every class needs at least one picture)"),
        ("test_only_class", "{root}/test/z: class 'z' is in test/ but not in train/"),
        ("file_in_train", "{root}/train/notes.txt: a file directly in train/ (a folder dataset holds "),
        ("no_train", "{root}: no train/ folder (a folder dataset holds train/<class>/<pictures> and optionally"),
        ("one_class", "{root}/train: 1 class folder(s), a classifier needs 2 to 256"),
    ],
)
def test_each_bad_input_stops_with_one_line_naming_it(tmp_path, case, expected):
    root = tiny(tmp_path / "d", {"train/a": 2, "train/b": 1, "test/a": 1})
    bad = root / "train" / "b" / "000.png"
    if case == "truncated":
        save(bad, Image.fromarray(NOISE))
        bad.write_bytes(bad.read_bytes()[:-40])
    elif case == "not_a_picture":
        bad.write_text("a shopping list\n")
    elif case == "dangling_link":
        bad.unlink()
        bad.symlink_to(root / "gone.png")
    elif case == "empty_class":
        (root / "train" / "c").mkdir()
    elif case == "test_only_class":
        tiny(root, {"test/z": 1})
    elif case == "file_in_train":
        (root / "train" / "notes.txt").write_text("x")
    elif case == "no_train":
        (root / "train").rename(root / "training")
    else:
        for f in (root / "train" / "b").iterdir():
            f.unlink()
        (root / "train" / "b").rmdir()
    with pytest.raises(PipelineError) as err:
        folder.read(root, pad(1), None, None, "error")
    message = expected.format(root=root)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_on_bad_skip_leaves_bad_pictures_out_and_lists_them(tmp_path, caplog):
    root = tiny(tmp_path, {"train/a": 3, "train/b": 2})
    (root / "train" / "a" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "train" / "b" / "000.png").write_text("not a picture")
    with caplog.at_level("WARNING"):
        data = folder.read(root, pad(1), None, None, "skip")
    assert data.y_train.tolist() == [0, 1, 0]  # a0 (b0 skipped) (a1 skipped) b1 a2
    assert data.x_train[:, 0, 0, 0].tolist() == [100, 101, 102]
    assert data.skipped == [
        {"file": "train/b/000.png", "reason": "not a picture (cannot identify image file)"},
        {"file": "train/a/001.png", "reason": "not a picture (cannot identify image file)"},
    ]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [
        f"skipped (on_bad: skip): {root}/train/b/000.png: not a picture (cannot identify image file)",
        f"skipped (on_bad: skip): {root}/train/a/001.png: not a picture (cannot identify image file)",
    ]
    with pytest.raises(PipelineError) as err:
        folder.read(root, pad(1), None, None, "error")
    assert str(err.value) == f"{root}/train/b/000.png: not a picture (cannot identify image file)"


def test_a_class_whose_every_picture_is_bad_is_an_error_even_with_skip(tmp_path):
    root = tiny(tmp_path, {"train/a": 2, "train/b": 1})
    (root / "train" / "b" / "000.png").write_text("not a picture")
    with pytest.raises(PipelineError) as err:
        folder.read(root, pad(1), None, None, "skip")
    assert str(err.value) == f"{root}/train/b: no readable picture (every one was bad and skipped, on_bad: skip)"


def test_pictures_are_decoded_one_at_a_time_into_one_array(tmp_path, monkeypatch):
    """Bounded memory: the files are counted first, one uint8 array is allocated for all of them, and each
    picture goes straight into it; no list of file contents or decoded pictures grows (Python's own allocations,
    which tracemalloc sees, stay far below the files' total size)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    for i in range(120):
        save(
            tmp_path / "train" / "ab"[i % 2] / f"{i:03d}.png",
            Image.fromarray(rng.integers(0, 256, (96, 96, 3), np.uint8)),
        )
    total = sum(p.stat().st_size for p in tmp_path.rglob("*.png"))
    allocations = []
    real_empty = np.empty

    def counting_empty(shape, dtype=float, *args, **kwargs):
        allocations.append(tuple(np.atleast_1d(shape)))
        return real_empty(shape, dtype, *args, **kwargs)

    monkeypatch.setattr(folder.np, "empty", counting_empty)
    tracemalloc.start()
    try:
        data = folder.read(tmp_path, pad(3), None, None, "error")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(data.y_train) == 120
    assert allocations == [(120, 8, 8, 3), (120,)]
    assert total > 3_000_000 and peak < total / 5, (peak, total)
