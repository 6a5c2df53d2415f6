"""Property-based fuzzing (Hypothesis) of the three readers of untrusted bytes: the IDX parser (downloads),
the prepared-data loader (data/prepared/*.npz) and predict's image loader (PNG, JPEG, .npy). At least
10,000 generated or mutated inputs each; every failure must be the project's own error, never another
exception. The number of cases each ran is printed at the end of the test session."""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.data import pictures as images
from mnist_pipeline.data.idx import IDXFormatError, parse_images, parse_labels, read_payload
from mnist_pipeline.data.prepared import load_split
from tests.helpers import FUZZ_COUNTS, idx_bytes

CASES = 10_000
FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A valid file, then 1-4 edits: overwrite bytes, truncate, insert, or append garbage."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "flip", "truncate", "insert", "append"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data += draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


def record(name: str, ran: list) -> None:
    """Count a fuzz test's inputs (printed at the end of the session) and hold it to at least CASES."""
    FUZZ_COUNTS[name] += len(ran)
    assert len(ran) >= CASES, f"{name}: only {len(ran)} inputs ran"


def huge_npy(shape: tuple) -> bytes:
    """A .npy header that claims `shape` of float32, with no payload after it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


# --- the IDX parser ----------------------------------------------------------------------------------------

VALID_IMAGES = idx_bytes(np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4))
VALID_LABELS = idx_bytes(np.array([0, 3, 9, 1, 2], np.uint8))


@st.composite
def idx_headers(draw) -> bytes:
    """Headers of any dtype and rank, with dimensions up to 2**32 - 1, and a payload of any (small) size."""
    zero = draw(st.sampled_from([b"\x00\x00", b"\x00\x00", b"\x00\x01", b"\xff\x00"]))
    code = draw(st.sampled_from([0x08, 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x42]))
    ndim = draw(st.integers(0, 6))
    dims = draw(st.lists(st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)), min_size=ndim, max_size=ndim))
    payload = draw(st.binary(max_size=200))
    return zero + bytes([code, ndim]) + struct.pack(f">{ndim}I", *dims) + payload


def test_idx_parser_fuzz(tmp_path):
    path, ran = tmp_path / "data.gz", []

    @FUZZ
    @given(
        data=st.one_of(st.binary(max_size=80), idx_headers(), mutated([VALID_IMAGES, VALID_LABELS])),
        compress=st.booleans(),
        mutate_gzip=st.booleans(),
        cut=st.integers(0, 200),
    )
    def check(data, compress, mutate_gzip, cut):
        ran.append(1)
        raw = gzip.compress(data) if compress else data
        if compress and mutate_gzip:  # damage the compressed stream itself
            raw = raw[:cut] + raw[cut + 1 :] if cut < len(raw) else raw + b"\x00"
        path.write_bytes(raw)
        for parse, ndim in ((parse_images, 3), (parse_labels, 1)):
            try:
                array = parse(read_payload(path), "data.gz")
            except IDXFormatError:
                continue
            assert array.dtype == np.uint8 and array.ndim == ndim
            if ndim == 1:
                assert array.max(initial=0) <= 9

    check()
    record("IDX parser", ran)


def refused_within_1_mib(call) -> None:
    """Run `call`, which must raise, and assert it allocated under 1 MiB before raising."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 1 << 20, f"{peak:,} bytes allocated while refusing a huge header"


def test_a_header_claiming_billions_is_refused_before_any_allocation():
    huge = b"\x00\x00\x08\x03" + struct.pack(">3I", 4_000_000_000, 28, 28) + b"\x00" * 100
    with pytest.raises(
        IDXFormatError,
        match=r"truncated: header declares 4000000000x28x28 = 3136000000000 "
        r"payload bytes, file has 100",
    ):
        refused_within_1_mib(lambda: parse_images(huge, "huge"))


def test_a_gzip_bomb_is_refused_while_it_decompresses(tmp_path):
    bomb = tmp_path / "bomb.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        chunk = b"\x00" * (1 << 20)
        for _ in range(1024):  # 1 GiB of zeros in about 1 MB
            f.write(chunk)
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(IDXFormatError, match="decompresses to more than 268,435,456 bytes"):
            read_payload(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400 << 20  # near the 256 MiB cap (plus buffer growth), far from the 1 GiB it expands to


# --- the prepared-data loader --------------------------------------------------------------------------------


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


X_OK = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
Y_OK = np.array([1, 7, 3], np.uint8)
VALID_NPZ = npz_bytes(x=X_OK, y=Y_OK)


@st.composite
def odd_npz(draw) -> bytes:
    """Well-formed archives of the wrong things: other dtypes and shapes, objects, missing members, a header
    that claims a huge array."""
    shapes = st.sampled_from([(3, 28, 28, 1), (3, 28, 28), (0, 28, 28, 1), (3,), (2,), (), (3, 4, 4, 1)])
    dtypes = st.sampled_from([np.float32, np.float64, np.uint8, np.int64, np.bool_, "<U3"])
    members = {}
    for name in draw(st.sampled_from([("x", "y"), ("x",), ("y",), ("x", "y", "z"), ("a",)])):
        kind = draw(st.sampled_from(["array", "array", "array", "object", "huge", "bytes"]))
        if kind == "array":
            shape, dtype = draw(shapes), draw(dtypes)
            value = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, float("nan")]))
            with np.errstate(invalid="ignore"):  # NaN cast to an integer type: whatever it gives
                members[f"{name}.npy"] = npy_bytes(np.full(shape, value).astype(dtype))
        elif kind == "object":
            members[f"{name}.npy"] = npy_bytes(np.array([1, "a"], dtype=object), allow_pickle=True)
        elif kind == "huge":
            members[f"{name}.npy"] = huge_npy((draw(st.integers(10**6, 10**12)), 28, 28, 1))
        else:
            members[f"{name}.npy"] = draw(st.binary(max_size=300))
    buffer = io.BytesIO()
    with zipfile.ZipFile(
        buffer, "w", compression=draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    ) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def test_prepared_loader_fuzz():
    with tempfile.TemporaryDirectory() as folder:
        path, ran = Path(folder) / "train.npz", []

        @FUZZ
        @given(data=st.one_of(mutated([VALID_NPZ]), odd_npz(), st.binary(max_size=200)))
        def check(data):
            ran.append(1)
            path.write_bytes(data)
            try:
                x, y = load_split(Path(folder), "train")
            except PipelineError as exc:
                assert str(exc).startswith(f"{path}: damaged ("), str(exc)
                return
            assert x.dtype == np.float32 and x.ndim == 4 and y.shape == (len(x),) and y.dtype == np.uint8
            assert np.isfinite(x).all() and (x.size == 0 or 0.0 <= x.min() <= x.max() <= 1.0)

        check()
    record("prepared-data loader", ran)


def test_a_prepared_split_claiming_billions_is_refused_before_any_allocation(tmp_path):
    with zipfile.ZipFile(tmp_path / "train.npz", "w") as z:
        z.writestr("x.npy", huge_npy((99999999, 28, 28, 1)))
        z.writestr("y.npy", npy_bytes(np.zeros(1, np.uint8)))
    with pytest.raises(
        PipelineError,
        match=r"damaged \(header declares shape \(99999999, 28, 28, 1\) of float32 "
        r"= 313,599,996,864 bytes, more than the 1,073,741,824 accepted\)",
    ):
        refused_within_1_mib(lambda: load_split(tmp_path, "train"))


# --- predict's image loader ------------------------------------------------------------------------------------


def picture(fmt: str, mode: str = "L") -> bytes:
    img = Image.new(mode, (40, 30), 0 if mode != "RGBA" else (0, 0, 0, 0))
    ImageDraw.Draw(img).line(
        [(8, 5), (30, 5), (15, 25)],
        fill=255 if mode == "L" else (255, 255, 255, 255) if mode == "RGBA" else 200,
        width=4,
    )
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


IMAGE_SEEDS = {
    ".png": [picture("PNG"), picture("PNG", "RGBA"), picture("PNG", "P"), picture("GIF")],
    ".jpg": [picture("JPEG")],
    ".npy": [npy_bytes(np.zeros((28, 28), np.uint8)), npy_bytes(np.full((2, 28, 28, 1), 0.5, np.float32))],
}


def test_image_loader_fuzz():
    ran = []
    with tempfile.TemporaryDirectory() as folder:

        @FUZZ
        @given(suffix=st.sampled_from(sorted(IMAGE_SEEDS)), data=st.data())
        def check(suffix, data):
            ran.append(1)
            raw = data.draw(st.one_of(mutated(IMAGE_SEEDS[suffix]), st.binary(max_size=120)))
            path = Path(folder) / f"input{suffix}"
            path.write_bytes(raw)
            try:
                names, batch = images.load_named_images(path)
            except images.ImageError as exc:
                assert str(exc).startswith(f"{path}: "), str(exc)
                return
            assert batch.dtype == np.float32 and batch.shape[1:] == (28, 28, 1) and len(names) == len(batch) >= 1
            assert np.isfinite(batch).all() and 0.0 <= batch.min() <= batch.max() <= 1.0

        check()
    record("image loader", ran)
