"""Strict parsing of the IDX format MNIST is published in.

IDX header: two zero bytes, a dtype byte, a dimension-count byte, then one big-endian uint32 per
dimension, then the payload in row-major order. Every deviation is rejected with an error that names
the file, so a corrupt download can never turn into silently wrong training data.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from mnist_pipeline.core.errors import PipelineError

# IDX dtype byte -> (numpy big-endian dtype, readable name)
IDX_DTYPES: dict[int, tuple[str, str]] = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "short"),
    0x0C: (">i4", "int"),
    0x0D: (">f4", "float"),
    0x0E: (">f8", "double"),
}
UBYTE = 0x08
NUM_CLASSES = 10  # MNIST's; a dataset's config names its own classes
MAX_PAYLOAD = 256 << 20  # bytes of IDX data: MNIST's largest file is 47 MB uncompressed
CHUNK = 16 << 20  # decompressed bytes per step


class IDXFormatError(PipelineError, ValueError):
    """An IDX file is malformed or is not what MNIST promises."""


def read_payload(path: Path, max_bytes: int = MAX_PAYLOAD) -> bytes:
    """The IDX bytes of a file, gunzipped if it is gzip-compressed (detected by magic, not by name). A gzip
    stream that would decompress past `max_bytes` (a decompression bomb) is refused as it decompresses."""
    raw = Path(path).read_bytes()
    if raw[:2] != b"\x1f\x8b":
        if len(raw) > max_bytes:
            raise IDXFormatError(f"{Path(path).name}: {len(raw):,} bytes, more than the {max_bytes:,} accepted")
        return raw
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip wrapper
    out, pending = bytearray(), raw
    try:
        while pending and not inflate.eof:  # in chunks, so a bomb is stopped near the cap, not after
            out += inflate.decompress(pending, CHUNK)
            if len(out) > max_bytes:
                raise IDXFormatError(
                    f"{Path(path).name}: decompresses to more than {max_bytes:,} bytes (a decompression bomb?)"
                )
            pending = inflate.unconsumed_tail
    except zlib.error as exc:
        raise IDXFormatError(f"{Path(path).name}: corrupt gzip stream ({exc})") from exc
    if not inflate.eof:
        raise IDXFormatError(f"{Path(path).name}: corrupt gzip stream (it ends early)")
    if inflate.unused_data:
        raise IDXFormatError(f"{Path(path).name}: {len(inflate.unused_data):,} bytes after the gzip stream")
    data = bytes(out)
    return data


def parse_idx(data: bytes, name: str, *, dtype_byte: int = UBYTE, ndim: int | None = None) -> np.ndarray:
    """Parse IDX bytes into an array, checking the header against the payload exactly."""
    if len(data) < 4:
        raise IDXFormatError(f"{name}: {len(data)} bytes is too short for an IDX header (4 bytes)")
    zero0, zero1, code, dims = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise IDXFormatError(f"{name}: bad magic number 0x{data[:4].hex()}: IDX files start with two zero bytes")
    if code not in IDX_DTYPES:
        raise IDXFormatError(f"{name}: unknown IDX dtype byte 0x{code:02x}")
    if code != dtype_byte:
        raise IDXFormatError(
            f"{name}: dtype byte 0x{code:02x} ({IDX_DTYPES[code][1]}), "
            f"expected 0x{dtype_byte:02x} ({IDX_DTYPES[dtype_byte][1]})"
        )
    if dims == 0 or (ndim is not None and dims != ndim):
        raise IDXFormatError(f"{name}: {dims} dimensions, expected {ndim if ndim is not None else 'at least 1'}")
    header_len = 4 + 4 * dims
    if len(data) < header_len:
        raise IDXFormatError(
            f"{name}: truncated header: {dims} dimensions need {header_len} bytes, file has {len(data)}"
        )
    shape = struct.unpack(f">{dims}I", data[4:header_len])
    np_dtype = np.dtype(IDX_DTYPES[code][0])
    expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        problem = "truncated" if actual < expected else "oversized"
        dims_text = "x".join(str(s) for s in shape)
        raise IDXFormatError(
            f"{name}: {problem}: header declares {dims_text} = {expected} payload bytes, file has {actual}"
        )
    return np.frombuffer(data, dtype=np_dtype, offset=header_len).reshape(shape).astype(np_dtype.newbyteorder("="))


def parse_images(data: bytes, name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Images: unsigned bytes, shape (n, rows, cols); (rows, cols) must be `size` when given."""
    images = parse_idx(data, name, dtype_byte=UBYTE, ndim=3)
    if size is not None and images.shape[1:] != tuple(size):
        raise IDXFormatError(
            f"{name}: images are {images.shape[1]}x{images.shape[2]}, the dataset's config says "
            f"{size[0]}x{size[1]} (data.image_size)"
        )
    return images


def parse_labels(data: bytes, name: str, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Labels: unsigned bytes, shape (n,), every value a class index 0..num_classes-1."""
    labels = parse_idx(data, name, dtype_byte=UBYTE, ndim=1)
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        raise IDXFormatError(
            f"{name}: label {int(labels[bad[0]])} at index {int(bad[0])} is not a class 0..{num_classes - 1} "
            f"({bad.size} such labels; data.classes lists {num_classes})"
        )
    return labels


def check_pair(images: np.ndarray, labels: np.ndarray, images_name: str, labels_name: str) -> None:
    if len(images) != len(labels):
        raise IDXFormatError(f"{images_name} holds {len(images)} images but {labels_name} holds {len(labels)} labels")
