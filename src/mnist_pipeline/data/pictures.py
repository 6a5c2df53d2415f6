"""User files -> a dataset's input convention: float32 (rows, cols, 1) in [0, 1], a light object on black.

PNG/JPEG pictures of any size and colour mode are made to look like the dataset's images, as its Preprocess
says (conf/data/<name>.yaml, logged with each model): grayscale, light-on-dark, cropped to the ink, the
longer side scaled to `box` pixels and centred, by centre of mass (MNIST, LeCun's preprocessing: 20 pixels
in 28x28) or by bounding box (Fashion-MNIST: 28 in 28). Pictures that already have the image size are only
made grayscale and light-on-dark. `.npy` arrays are taken as already in the convention and only checked and
scaled.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.npy_files import NpyError, read_array


@dataclass(frozen=True)
class Preprocess:
    """How pictures become a dataset's images; the default is MNIST's."""

    size: tuple[int, int] = (28, 28)  # rows, cols
    box: int = 20  # the object's longer side, in pixels (MNIST digits fit 20x20 in 28x28)
    centre: str = "mass"  # mass: centre of mass at the image's centre; box: the bounding box centred

    @classmethod
    def of_model(cls, metadata: Mapping) -> Preprocess:
        """From a logged model's metadata (DatasetInfo.as_metadata); MNIST's for a model logged without it."""
        if "image_shape" not in metadata:
            return cls()
        settings = metadata.get("preprocess") or {}
        return cls(
            tuple(metadata["image_shape"][:2]), int(settings.get("box", cls.box)), settings.get("centre", cls.centre)
        )

    @property
    def shapes(self) -> str:
        rows, cols = self.size
        return f"({rows}, {cols}), ({rows}, {cols}, 1) or (n, {rows}, {cols}[, 1])"


MNIST = Preprocess()
INK_THRESHOLD = 0.2  # after background removal: brighter pixels are ink (bounding box only)
MIN_CONTRAST = 0.05  # ink less than 5% brighter than the background is JPEG noise on a blank sheet
FORMATS = {"PNG", "JPEG", "MPO"}  # MPO: how Pillow names the JPEGs of many phone cameras
MAX_PIXELS = 40_000_000  # a 40-megapixel photo; larger pictures are refused before decoding (bombs)


class ImageError(PipelineError):
    """A file that cannot be turned into an MNIST image; the message names the file and the problem."""


def load_images(path: str | Path, prep: Preprocess = MNIST) -> np.ndarray:
    """All images in one file as float32 (k, rows, cols, 1): k = 1 for a picture, k = n for an .npy batch."""
    return load_named_images(path, prep)[1]


def load_named_images(path: str | Path, prep: Preprocess = MNIST) -> tuple[list[str], np.ndarray]:
    """The images of one file with a name for each: the path itself, or `path[i]` for an .npy batch
    (n, rows, cols[, 1]), even when n = 1."""
    if Path(path).suffix.lower() != ".npy":
        return [str(path)], load_picture(path, prep)[np.newaxis]
    images, batch = _load_npy(path, prep)
    return ([f"{path}[{i}]" for i in range(len(images))] if batch else [str(path)]), images


def load_image(path: str | Path, prep: Preprocess = MNIST) -> np.ndarray:
    """The one image in a file as float32 (rows, cols, 1); an .npy batch of several images is an error."""
    images = load_images(path, prep)
    if len(images) != 1:
        raise ImageError(f"{path}: holds {len(images)} images, expected one (use load_images)")
    return images[0]


def load_picture(path: str | Path, prep: Preprocess = MNIST) -> np.ndarray:
    """A PNG/JPEG file as float32 (rows, cols, 1), normalized as `prep` says."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, do not just warn
            with Image.open(path) as img:  # reads the header only
                if img.format not in FORMATS:
                    raise ImageError(f"{path}: not a PNG/JPEG image (it is {img.format})")
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(
                        f"{path}: image too large ({img.width} x {img.height} pixels, at most "
                        f"{MAX_PIXELS:,}): refused before decoding"
                    )
                gray = _grayscale(ImageOps.exif_transpose(img))  # phone photos are stored rotated
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a PNG/JPEG image (cannot identify image file)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: image too large ({exc})") from None
    except OSError as exc:  # missing, unreadable, truncated
        raise ImageError(f"{path}: cannot read image ({exc.strerror or exc})") from None
    except (SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, struct.error, zlib.error) as exc:
        # how Pillow's decoders report damaged files (the fuzz tests exercise them)
        raise ImageError(f"{path}: corrupt image ({type(exc).__name__}: {exc})") from None
    try:
        return normalize(gray, prep)[..., np.newaxis]
    except ValueError as exc:
        raise ImageError(f"{path}: {exc}") from None


def _grayscale(img: Image.Image) -> np.ndarray:
    """Any mode -> float64 (h, w) in [0, 1]; transparency is composited on white (paper)."""
    if img.mode.startswith("I"):  # 16-bit PNG: convert("L") would clip, not scale
        return np.asarray(img, dtype=np.float64) / 65535.0
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return np.asarray(img.convert("L"), dtype=np.float64) / 255.0


def normalize(gray: np.ndarray, prep: Preprocess = MNIST) -> np.ndarray:
    """A grayscale picture (h, w) in [0, 1], either polarity -> float32 (rows, cols), light on black, the
    object's longer side `prep.box` pixels, centred as `prep.centre` says."""
    rows_out, cols_out = prep.size
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:  # dark digit on light paper: MNIST digits are light on black
        gray, border = 1.0 - gray, 1.0 - border
    if gray.shape == tuple(prep.size):
        return gray.astype(np.float32)
    # Background (the border's level, e.g. grey paper in a photo) -> 0, the strongest ink -> 1.
    gray = np.clip(gray - np.median(border), 0.0, None)
    if gray.max() < MIN_CONTRAST:
        raise ValueError("nothing to classify (the image is blank)")
    gray /= gray.max()
    rows, cols = np.nonzero(gray > INK_THRESHOLD)
    ink = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    # Fit the longer side to the box, keeping the aspect ratio; Lanczos antialiases when shrinking.
    scale = min(prep.box / max(ink.shape), rows_out / ink.shape[0], cols_out / ink.shape[1])
    width, height = (max(1, round(n * scale)) for n in (ink.shape[1], ink.shape[0]))
    small = Image.fromarray(ink.astype(np.float32)).resize((width, height), Image.Resampling.LANCZOS)
    small = np.clip(np.asarray(small), 0.0, None)
    small /= max(small.max(), 1e-6)  # the strongest stroke is full white, as in MNIST
    if prep.centre == "mass":
        # Its centre of mass at (rows/2, cols/2): where MNIST's lie (mean 13.98, 14.01 over the test set, sd
        # 0.3), half a pixel off the geometric centre 13.5; matching it halves the difference to the original
        # on resized MNIST digits. Whole-pixel shifts, as MNIST's, never so far the object leaves the image.
        cy, cx = (np.average(np.indices(small.shape)[axis], weights=small) for axis in (0, 1))
        top = int(np.clip(round(rows_out / 2 - cy), 0, rows_out - height))
        left = int(np.clip(round(cols_out / 2 - cx), 0, cols_out - width))
    else:  # the bounding box centred
        top, left = (rows_out - height) // 2, (cols_out - width) // 2
    out = np.zeros((rows_out, cols_out), np.float32)
    out[top : top + height, left : left + width] = np.clip(small, 0.0, 1.0)
    return out


def _load_npy(path: str | Path, prep: Preprocess) -> tuple[np.ndarray, bool]:
    """An .npy array in the input convention (uint8 0..255 or floats in [0, 1]) as float32 (n, rows, cols, 1),
    and whether it was a batch."""
    try:
        with open(path, "rb") as file:
            magic = file.read(6)
            if magic != b"\x93NUMPY":  # without it, np.load would take the file for a pickle
                hint = " (an .npz archive?)" if magic[:2] == b"PK" else ""
                raise ImageError(f"{path}: not a NumPy .npy file{hint}")
            file.seek(0)
            array = read_array(file, os.fstat(file.fileno()).st_size)  # never unpickles; checks sizes first
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except NpyError as exc:
        if "pickled" in str(exc):
            raise ImageError(f"{path}: {exc}") from None
        raise ImageError(f"{path}: not a valid .npy file ({exc})") from None
    shape = array.shape
    if shape[-1:] == (1,) and array.ndim in (3, 4):
        shape = shape[:-1]
    if len(shape) not in (2, 3) or shape[-2:] != tuple(prep.size):
        raise ImageError(f"{path}: expected shape {prep.shapes}, got {array.shape}")
    images, batch = array.reshape((-1, *prep.size, 1)), len(shape) == 3
    if len(images) == 0:
        raise ImageError(f"{path}: holds no images (shape {array.shape})")
    if array.dtype == np.uint8:
        return images.astype(np.float32) / 255.0, batch
    if array.dtype.kind != "f":
        raise ImageError(f"{path}: expected uint8 (0..255) or floats in [0, 1], got dtype {array.dtype}")
    if not np.all(np.isfinite(images)):
        raise ImageError(f"{path}: float values must lie in [0, 1], found NaN or infinity")
    if images.min() < 0.0 or images.max() > 1.0:
        raise ImageError(
            f"{path}: float values must lie in [0, 1], got {images.min():.4g}..{images.max():.4g}"
            " (uint8 arrays are scaled from 0..255)"
        )
    return images.astype(np.float32), batch
