"""images: user files (pictures in any format Pillow reads, of any size, mode and polarity; .npy) -> the input
convention's arrays."""

import pickle

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.data import pictures as images
from mnist_pipeline.data.pictures import ImageError


def digit(size=(200, 150), ink=255, paper=0, mode="L"):
    """A hand-drawn-like '7' off the picture's centre: thick strokes, `ink` on `paper`."""
    img = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(img)
    draw.line([(40, 30), (110, 30), (70, 130)], fill=ink, width=12, joint="curve")
    draw.line([(60, 80), (100, 80)], fill=ink, width=8)
    return img


def save(img, path, **kwargs):
    img.save(path, **kwargs)
    return path


def centre_of_mass(a):
    rows, cols = np.indices(a.shape)
    return (rows * a).sum() / a.sum(), (cols * a).sum() / a.sum()


def test_large_picture_is_normalized_like_mnist(tmp_path):
    x = images.load_image(save(digit(), tmp_path / "seven.png"))
    assert x.shape == (28, 28, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == pytest.approx(1.0)
    a = x[..., 0]
    cy, cx = centre_of_mass(a)
    assert abs(cy - 13.5) <= 1.0 and abs(cx - 13.5) <= 1.0  # MNIST's own centres are at ~(14, 14)
    rows, cols = np.nonzero(a > 0)
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert max(height, width) in (19, 20) and min(height, width) <= 20  # the longer side fills the 20x20 box
    assert a[0].sum() == a[-1].sum() == a[:, 0].sum() == a[:, -1].sum() == 0  # black margin as in MNIST


def test_another_datasets_preprocessing_fills_its_box_and_centres_the_bounding_box(tmp_path):
    """Fashion-MNIST's convention: the longer side fills the whole image, the object centred by its box."""
    fashion = images.Preprocess(size=(28, 28), box=28, centre="box")
    a = images.load_image(save(digit(), tmp_path / "seven.png"), fashion)[..., 0]
    rows, cols = np.nonzero(a > 0)
    assert (rows.min(), rows.max()) == (0, 27)  # the '7' is taller than wide: it spans every row
    assert abs((cols.min() + cols.max()) / 2 - 13.5) <= 0.5  # its box centred, not its mass
    small = images.Preprocess(size=(16, 12), box=10, centre="mass")
    b = images.load_image(save(digit(), tmp_path / "seven.png"), small)[..., 0]
    assert b.shape == (16, 12) and max(np.ptp(np.nonzero(b > 0)[0]), np.ptp(np.nonzero(b > 0)[1])) + 1 == 10
    with pytest.raises(ImageError, match=r"expected shape \(16, 12\), \(16, 12, 1\) or \(n, 16, 12\[, 1\]\)"):
        np.save(tmp_path / "mnist.npy", np.zeros((28, 28), np.uint8))
        images.load_image(tmp_path / "mnist.npy", small)


def test_preprocessing_comes_from_the_models_metadata():
    assert images.Preprocess.of_model({}) == images.MNIST  # a model logged before datasets were configurable
    meta = {"image_shape": [16, 16, 1], "preprocess": {"box": 12, "centre": "box"}, "classes": ["a", "b"]}
    assert images.Preprocess.of_model(meta) == images.Preprocess((16, 16), 12, "box")


def test_normalizing_an_upscaled_result_gives_it_back(tmp_path):
    x = images.load_image(save(digit(), tmp_path / "seven.png"))[..., 0]
    big = Image.fromarray((x * 255).round().astype(np.uint8)).resize((112, 112), Image.Resampling.BICUBIC)
    again = images.load_image(save(big, tmp_path / "big.png"))[..., 0]
    assert np.abs(again - x).mean() < 0.03


@pytest.mark.parametrize("size", [(200, 150), (28, 28)])
def test_dark_digit_on_light_paper_is_inverted(tmp_path, size):
    light_on_dark = images.load_image(save(digit(size), tmp_path / "a.png"))
    dark_on_light = images.load_image(save(digit(size, ink=0, paper=255), tmp_path / "b.png"))
    np.testing.assert_allclose(dark_on_light, light_on_dark, atol=1e-6)


def test_28x28_picture_is_used_as_is(tmp_path):
    pixels = np.zeros((28, 28), np.uint8)
    pixels[5:23, 12:16] = 200  # off-centre, not 20 px tall: normalizing would move and scale it
    x = images.load_image(save(Image.fromarray(pixels), tmp_path / "one.png"))
    np.testing.assert_array_equal(x[..., 0], pixels / np.float32(255))


@pytest.mark.parametrize("kind", ["RGB", "RGBA", "P", "I;16", "JPEG"])
def test_colour_modes_match_grayscale(tmp_path, kind):
    expected = images.load_image(save(digit(ink=0, paper=255), tmp_path / "gray.png"))
    if kind == "RGB":  # dark blue ink on cream paper
        img = digit(ink=(20, 30, 110), paper=(250, 245, 225), mode="RGB")
    elif kind == "RGBA":  # black ink on a transparent background: composited on white
        img = digit(ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="RGBA")
    elif kind == "P":
        img = digit(ink=0, paper=255).convert("P")
    elif kind == "I;16":
        img = Image.fromarray(np.asarray(digit(ink=0, paper=255), np.uint16) * 257)
    else:
        img = digit(ink=(0, 0, 0), paper=(255, 255, 255), mode="RGB")
    path = save(img, tmp_path / ("x.jpg" if kind == "JPEG" else "x.png"))
    x = images.load_image(path)
    assert x.shape == (28, 28, 1) and x.dtype == np.float32
    assert np.abs(x - expected).mean() < 0.02


def test_npy_single_images(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    np.save(tmp_path / "u8.npy", pixels)
    np.save(tmp_path / "f.npy", (pixels / 255).astype(np.float64)[..., None])
    for name in ("u8.npy", "f.npy"):
        names, x = images.load_named_images(tmp_path / name)
        assert names == [str(tmp_path / name)] and x.shape == (1, 28, 28, 1) and x.dtype == np.float32
        np.testing.assert_allclose(x[0, ..., 0], pixels / 255, atol=1e-6)  # uint8 scaled to [0, 1]
    assert images.load_image(tmp_path / "u8.npy").shape == (28, 28, 1)


@pytest.mark.parametrize("shape", [(5, 28, 28), (5, 28, 28, 1), (1, 28, 28)])
def test_npy_batches(tmp_path, shape):
    batch = np.random.default_rng(1).random(shape, dtype=np.float32)
    path = tmp_path / "batch.npy"
    np.save(path, batch)
    names, x = images.load_named_images(path)
    assert x.shape == (shape[0], 28, 28, 1)
    np.testing.assert_array_equal(x.reshape(shape), batch)
    assert names == [f"{path}[{i}]" for i in range(shape[0])]  # a batch is indexed even when n = 1
    if shape[0] > 1:
        with pytest.raises(ImageError, match="holds 5 images"):
            images.load_image(path)


def test_text_file_named_png_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("buy milk\n")
    with pytest.raises(ImageError) as err:
        images.load_images(path)
    assert str(err.value) == f"{path}: not a picture (cannot identify image file)"
    assert isinstance(err.value, PipelineError)


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("blank", "nothing to classify (the image is blank)"),
        ("missing", "cannot read image (No such file or directory)"),
        ("truncated", "cannot read image (image file is truncated"),
    ],
)
def test_unusable_pictures(tmp_path, problem, expected):
    path = tmp_path / f"{problem}.png"
    if problem == "blank":
        save(Image.new("L", (100, 80), 255), path)
    elif problem == "truncated":
        save(digit(), path)
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageError) as err:
        images.load_image(path)
    assert str(err.value).startswith(f"{path}: {expected}")


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.zeros((3, 4)), "expected shape (28, 28), (28, 28, 1) or (n, 28, 28[, 1]), got (3, 4)"),
        (np.zeros((28, 28, 3)), "expected shape (28, 28), (28, 28, 1) or (n, 28, 28[, 1]), got (28, 28, 3)"),
        (np.zeros((0, 28, 28)), "holds no images"),
        (np.full((28, 28), 1.5), "float values must lie in [0, 1], got 1.5..1.5 (uint8 arrays are scaled"),
        (np.full((28, 28), -0.1, np.float32), "float values must lie in [0, 1], got -0.1..-0.1"),
        (np.full((28, 28), np.nan), "float values must lie in [0, 1], found NaN or infinity"),
        (np.zeros((28, 28), np.int64), "expected uint8 (0..255) or floats in [0, 1], got dtype int64"),
    ],
)
def test_unusable_npy(tmp_path, array, expected):
    path = tmp_path / "x.npy"
    np.save(path, array)
    with pytest.raises(ImageError) as err:
        images.load_images(path)
    assert str(err.value).startswith(f"{path}: {expected}")


class _Exploit:
    """Unpickling this creates a file: proof that a loader unpickled it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickles_are_never_loaded(tmp_path):
    marker = tmp_path / "unpickled"
    object_npy = tmp_path / "objects.npy"
    np.save(object_npy, np.array([_Exploit(marker)], dtype=object), allow_pickle=True)
    raw_pickle = tmp_path / "raw.npy"
    raw_pickle.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ImageError) as err:
        images.load_images(object_npy)
    assert str(err.value) == (
        f"{object_npy}: holds pickled Python objects, which are never loaded (only plain numeric .npy arrays are)"
    )
    with pytest.raises(ImageError, match=r"raw\.npy: not a NumPy \.npy file$"):
        images.load_images(raw_pickle)
    assert not marker.exists()


def png_header_only(width, height):
    """A PNG that declares width x height pixels but carries almost no data: what a decompression bomb's
    header looks like. Refusing it must not need the pixels."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def exif_rotated(path):
    """The '7' as a phone stores a portrait photo: pixels turned 90 degrees, EXIF orientation 6 to undo it."""
    img = digit(ink=(0, 0, 0), paper=(255, 255, 255), mode="RGB").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    img.save(path, format="JPEG", exif=exif.tobytes())
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("truncated.jpg", "cannot read image (image file is truncated"),
        ("bomb.png", "image too large"),
        ("fifty_megapixels.png", "image too large (10000 x 5000 pixels, at most 40,000,000): refused before decoding"),
        ("one_pixel.png", "nothing to classify (the image is blank)"),
    ],
)
def test_real_world_files_that_are_refused(tmp_path, case, expected):
    path = tmp_path / case
    if case == "truncated.jpg":
        save(digit(ink=0, paper=255), path, format="JPEG")
        path.write_bytes(path.read_bytes()[:400])
    elif case == "bomb.png":
        path.write_bytes(png_header_only(60_000, 60_000))  # 3.6 billion pixels
    elif case == "fifty_megapixels.png":
        path.write_bytes(png_header_only(10_000, 5_000))
    else:
        save(Image.new("L", (1, 1), 255), path)
    with pytest.raises(ImageError) as err:
        images.load_image(path)
    assert str(err.value).startswith(f"{path}: {expected}"), str(err.value)


@pytest.mark.parametrize(
    "case",
    [
        "exif_rotated.jpg",
        "palette_with_transparency.png",
        "alpha.png",
        "sixteen_bit.png",
        "gif_named.png",  # any format Pillow reads, told by its bytes, not its name (it was PNG/JPEG only)
        "digit.bmp",
        "digit.webp",
        "digit.tiff",
    ],
)
def test_real_world_files_that_load_like_the_plain_digit(tmp_path, case):
    expected = images.load_image(save(digit(ink=0, paper=255), tmp_path / "plain.png"))
    path = tmp_path / case
    if case == "exif_rotated.jpg":
        exif_rotated(path)
    elif case == "palette_with_transparency.png":
        img = digit(ink=0, paper=255).convert("P")
        save(img, path, transparency=img.getpixel((0, 0)))  # the paper is transparent: composited on white
    elif case == "alpha.png":
        save(digit(ink=(0, 0, 0, 255), paper=(255, 255, 255, 0), mode="RGBA"), path)
    elif case == "sixteen_bit.png":
        save(Image.fromarray(np.asarray(digit(ink=0, paper=255), np.uint16) * 257), path)
    else:
        save(digit(ink=0, paper=255), path, format={".png": "GIF", ".webp": "WEBP"}.get(path.suffix), lossless=True)
    x = images.load_image(path)
    assert x.shape == (28, 28, 1) and x.dtype == np.float32
    assert np.abs(x - expected).mean() < 0.02, case


@pytest.mark.parametrize("prep", [images.MNIST, images.Preprocess((20, 24), channels=3, method="pad")])
def test_predict_feeds_the_image_prepare_stores(tmp_path, prep):
    """One function for both: predict's float image is conform's uint8 image / 255, the nearest level to the
    exact result (not truncated, which would darken every resized picture by half a level on average)."""
    path = save(digit(ink=(30, 60, 200), paper=(250, 250, 240), mode="RGB"), tmp_path / "seven.png")
    stored = images.conform(path, prep)
    assert stored.dtype == np.uint8 and stored.shape == (*prep.size, prep.channels)
    np.testing.assert_array_equal(images.load_image(path, prep), stored / np.float32(255))
    if prep.method == "digit":
        with Image.open(path) as img:
            exact = images.normalize(images._grayscale(img), prep)
        assert np.abs(stored[..., 0] / 255.0 - exact).max() <= 0.5 / 255 + 1e-6
