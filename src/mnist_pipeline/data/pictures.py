"""Pictures -> a dataset's images: one function, `conform`, for the prepare stage and for `predict`.

`conform(path, prep)` turns a picture (any format Pillow opens: PNG, JPEG, BMP, GIF, WebP, TIFF...; any size
and colour mode; the first frame of an animation) into one image of the dataset: uint8 (rows, cols, channels).
The folder reader of the prepare stage writes it into the training arrays; `predict` feeds it to the model as
x / 255, so a picture reaches a served model exactly as it reached training. How, is the dataset's
`preprocess` (conf/data/<name>.yaml, recorded in dataset.json and logged with each model):

- `method: pad` (ordinary pictures, 1 or 3 channels): the EXIF orientation applied (phone photos are stored
  rotated); converted to grayscale (L) or RGB, transparency composited on white, 16-bit scaled to 8 bits;
  scaled to fit the image size keeping its aspect ratio (Lanczos), the rest padded with black, centred.
- `method: digit` (MNIST, Fashion-MNIST; 1 channel): grayscale, light on dark (a picture whose border is
  mostly light is inverted), the background level removed, cropped to the ink, the longer side scaled to
  `box` pixels and centred by its centre of mass (`centre: mass`, MNIST: LeCun's 20 pixels in 28x28) or by
  its bounding box (`centre: box`, Fashion-MNIST: 28 in 28). The method of models logged without one.

A picture that already has the image size and the channel count comes through pixel for pixel (`digit`:
only made light on dark), so a dataset written out as PNGs reads back exactly. Pictures over MAX_PIXELS and
decompression bombs are refused before decoding; a damaged file raises ImageError naming it. `.npy` arrays
(predict only) are taken as already in the input convention and only checked and scaled.
"""

from __future__ import annotations

import io
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

METHODS = ("digit", "pad")


@dataclass(frozen=True)
class Preprocess:
    """How pictures become a dataset's images; the default is MNIST's."""

    size: tuple[int, int] = (28, 28)  # rows, cols
    box: int = 20  # digit: the object's longer side, in pixels (MNIST digits fit 20x20 in 28x28)
    centre: str = "mass"  # digit: mass: centre of mass at the image's centre; box: the bounding box centred
    channels: int = 1  # 1: grayscale, 3: RGB
    method: str = "digit"  # METHODS; see the module docstring

    @classmethod
    def of_model(cls, metadata: Mapping) -> Preprocess:
        """From a logged model's metadata (DatasetInfo.as_metadata: image_shape [rows, cols, channels],
        preprocess {...}); MNIST's for a model logged without it, `digit` for one logged without a method."""
        if "image_shape" not in metadata:
            return cls()
        shape, settings = list(metadata["image_shape"]), metadata.get("preprocess") or {}
        return cls(
            (int(shape[0]), int(shape[1])),
            int(settings.get("box", cls.box)),
            settings.get("centre", cls.centre),
            int(shape[2]) if len(shape) > 2 else 1,
            settings.get("method", cls.method),
        )

    def as_metadata(self) -> dict:
        """What dataset.json records under `preprocess` (of_model reads it back). `digit` is written without its
        method, as before methods existed: MNIST's dataset.json, and so its prepared data's hash, stay as they were."""
        return {"box": self.box, "centre": self.centre} if self.method == "digit" else {"method": self.method}

    @property
    def shapes(self) -> str:
        rows, cols = self.size
        if self.channels == 1:
            return f"({rows}, {cols}), ({rows}, {cols}, 1) or (n, {rows}, {cols}[, 1])"
        return f"({rows}, {cols}, {self.channels}) or (n, {rows}, {cols}, {self.channels})"


MNIST = Preprocess()
INK_THRESHOLD = 0.2  # after background removal: brighter pixels are ink (bounding box only)
MIN_CONTRAST = 0.05  # ink less than 5% brighter than the background is JPEG noise on a blank sheet
MAX_PIXELS = 40_000_000  # a 40-megapixel photo; larger pictures are refused before decoding (bombs)


class ImageError(PipelineError):
    """A file that cannot be turned into one of the dataset's images; the message names the file and the problem."""


def load_images(path: str | Path, prep: Preprocess = MNIST) -> np.ndarray:
    """All images in one file as float32 (k, rows, cols, channels): k = 1 for a picture, k = n for an .npy batch."""
    return load_named_images(path, prep)[1]


def load_named_images(path: str | Path, prep: Preprocess = MNIST) -> tuple[list[str], np.ndarray]:
    """The images of one file with a name for each: the path itself, or `path[i]` for an .npy batch
    (n, rows, cols[, 1]), even when n = 1."""
    if Path(path).suffix.lower() != ".npy":
        return [str(path)], load_picture(path, prep)[np.newaxis]
    images, batch = _load_npy(path, prep)
    return ([f"{path}[{i}]" for i in range(len(images))] if batch else [str(path)]), images


def load_image(path: str | Path, prep: Preprocess = MNIST) -> np.ndarray:
    """The one image in a file as float32 (rows, cols, channels); an .npy batch of several images is an error."""
    images = load_images(path, prep)
    if len(images) != 1:
        raise ImageError(f"{path}: holds {len(images)} images, expected one (use load_images)")
    return images[0]


def load_picture(path: str | Path, prep: Preprocess = MNIST) -> np.ndarray:
    """A picture file as float32 (rows, cols, channels) in [0, 1]: `conform` / 255, what a model is fed."""
    return conform(path, prep).astype(np.float32) / 255.0


def conform(path: str | Path, prep: Preprocess = MNIST, data: bytes | None = None) -> np.ndarray:
    """A picture as one of the dataset's images, uint8 (rows, cols, channels), made as `prep` says (module
    docstring). `data`: the file's bytes when the caller has read them already; `path` then only names it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, do not just warn
            with Image.open(io.BytesIO(data) if data is not None else path) as img:  # reads the header only
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(
                        f"{path}: image too large ({img.width} x {img.height} pixels, at most "
                        f"{MAX_PIXELS:,}): refused before decoding"
                    )
                upright = ImageOps.exif_transpose(img)  # phone photos are stored rotated
                if prep.method == "pad":
                    return _padded(upright, prep)
                gray = _grayscale(upright)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a picture (cannot identify image file)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: image too large ({exc})") from None
    except OSError as exc:  # missing, unreadable, truncated
        raise ImageError(f"{path}: cannot read image ({exc.strerror or exc})") from None
    except (SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, struct.error, zlib.error) as exc:
        # how Pillow's decoders report damaged files (the fuzz tests exercise them)
        raise ImageError(f"{path}: corrupt image ({type(exc).__name__}: {exc})") from None
    try:
        return np.rint(normalize(gray, prep) * 255.0).astype(np.uint8)[..., np.newaxis]
    except ValueError as exc:
        raise ImageError(f"{path}: {exc}") from None


def _padded(img: Image.Image, prep: Preprocess) -> np.ndarray:
    """`method: pad`: 8-bit L or RGB, fitted into the image size keeping the aspect ratio, black around."""
    if img.mode.startswith("I"):  # 16-bit PNG: convert("L") would clip, not scale
        img = Image.fromarray(np.rint(_grayscale(img) * 255.0).astype(np.uint8))
    elif img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    img = img.convert("L" if prep.channels == 1 else "RGB")
    rows, cols = prep.size
    if img.size != (cols, rows):  # at the size already: pixel for pixel
        img = ImageOps.pad(img, (cols, rows), method=Image.Resampling.LANCZOS, color=0)
    return np.asarray(img, dtype=np.uint8).reshape(rows, cols, prep.channels)


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
    """An .npy array in the input convention (uint8 0..255 or floats in [0, 1]) as float32 (n, rows, cols,
    channels), and whether it was a batch."""
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
    shape, image = array.shape, (*prep.size, prep.channels)
    if prep.channels == 1 and shape[-1:] == (1,) and array.ndim in (3, 4):
        shape = shape[:-1]  # grayscale with or without its channel axis
    image_ndim = 2 if prep.channels == 1 else 3
    if len(shape) not in (image_ndim, image_ndim + 1) or shape[-image_ndim:] != image[:image_ndim]:
        raise ImageError(f"{path}: expected shape {prep.shapes}, got {array.shape}")
    images, batch = array.reshape((-1, *image)), len(shape) == image_ndim + 1
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
