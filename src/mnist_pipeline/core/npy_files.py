""".npy arrays read without trusting them: the header is checked against the bytes that follow before
anything is allocated (a header may claim billions of items), and pickled objects are never loaded.

Used for the user's `.npy` files in `predict` and for the members of the prepared `.npz` splits.
"""

from __future__ import annotations

import math
import warnings
from tokenize import TokenError
from typing import Protocol

import numpy as np

MAX_BYTES = 1 << 30  # 1 GiB of payload: ~340,000 float32 28x28 images, far more than any split or batch


class Stream(Protocol):
    """A binary file-like object read from its start: an open file or a zip archive's member."""

    def read(self, size: int = -1, /) -> bytes: ...
    def readinto(self, buffer: memoryview, /) -> int | None: ...
    def tell(self) -> int: ...


class NpyError(ValueError):
    """What is wrong with the array, without the file's name: callers add it and their own error class."""


def read_array(stream: Stream, size: int, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """The array in a .npy stream of `size` bytes in all (header included), read from its start."""
    try:
        version = np.lib.format.read_magic(stream)
    except (ValueError, EOFError):
        raise NpyError("not a NumPy .npy file") from None
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise NpyError(f"unsupported .npy format version {version[0]}.{version[1]}")
    try:
        with warnings.catch_warnings():  # a damaged header's odd escapes are not the user's concern
            warnings.simplefilter("ignore")
            shape, fortran_order, dtype = readers[version](stream)
    # what NumPy's header parser raises on damaged headers (the fuzz tests found tokenize's error too)
    except (ValueError, SyntaxError, TypeError, EOFError, RecursionError, MemoryError, TokenError) as exc:
        raise NpyError(f"corrupt .npy header ({' '.join(str(exc).split())[:120]})") from None
    if dtype.hasobject:
        raise NpyError("holds pickled Python objects, which are never loaded (only plain numeric .npy arrays are)")
    expected = math.prod(shape) * dtype.itemsize
    if expected > max_bytes:
        raise NpyError(
            f"header declares shape {shape} of {dtype} = {expected:,} bytes, more than the {max_bytes:,} accepted"
        )
    available = size - stream.tell()
    if available != expected:
        problem = "truncated" if available < expected else "longer than its header says"
        raise NpyError(
            f"{problem}: header declares shape {shape} of {dtype} = {expected:,} bytes, {available:,} follow"
        )
    data = bytearray(expected)  # writable, so the array is an ordinary one
    view, got = memoryview(data), 0
    while got < expected:
        n = stream.readinto(view[got:])
        if not n:
            raise NpyError(f"truncated: {got:,} of {expected:,} payload bytes could be read")
        got += n
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape, order="F" if fortran_order else "C")
