import numpy as np
import pytest

from mnist_pipeline.data.idx import IDXFormatError, check_pair, parse_images, parse_labels, read_payload
from tests.helpers import idx_bytes, write_gz

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
LABELS = np.array([0, 3, 9, 1, 7], dtype=np.uint8)


def test_valid_files_round_trip(tmp_path):
    images = parse_images(read_payload(write_gz(tmp_path / "i.gz", idx_bytes(IMAGES))), "i.gz")
    labels = parse_labels(idx_bytes(LABELS), "l")
    assert images.shape == (5, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)


def test_uncompressed_payload_is_read_as_is(tmp_path):
    path = tmp_path / "raw-idx"
    path.write_bytes(idx_bytes(LABELS))
    np.testing.assert_array_equal(parse_labels(read_payload(path), path.name), LABELS)


def test_truncated_file_rejected():
    data = idx_bytes(IMAGES)[:-1]
    with pytest.raises(
        IDXFormatError, match=r"imgs: truncated: header declares 5x28x28 = 3920 payload bytes, file has 3919"
    ):
        parse_images(data, "imgs")


def test_oversized_file_rejected():
    with pytest.raises(IDXFormatError, match=r"lbls: oversized: header declares 5 = 5 payload bytes, file has 6"):
        parse_labels(idx_bytes(LABELS) + b"\x00", "lbls")


def test_wrong_magic_rejected():
    data = b"\x01" + idx_bytes(LABELS)[1:]
    with pytest.raises(IDXFormatError, match=r"lbls: bad magic number 0x01000801"):
        parse_labels(data, "lbls")


def test_wrong_dtype_byte_rejected():
    with pytest.raises(IDXFormatError, match=r"lbls: dtype byte 0x0d \(float\), expected 0x08 \(unsigned byte\)"):
        parse_labels(idx_bytes(LABELS, dtype_byte=0x0D), "lbls")
    with pytest.raises(IDXFormatError, match=r"lbls: unknown IDX dtype byte 0x07"):
        parse_labels(idx_bytes(LABELS, dtype_byte=0x07), "lbls")


def test_wrong_dimension_count_rejected():
    with pytest.raises(IDXFormatError, match=r"imgs: 1 dimensions, expected 3"):
        parse_images(idx_bytes(LABELS), "imgs")


def test_label_out_of_range_rejected():
    bad = LABELS.copy()
    bad[2] = 10
    with pytest.raises(IDXFormatError, match=r"lbls: label 10 at index 2 is not a class 0..9"):
        parse_labels(idx_bytes(bad), "lbls")


def test_count_mismatch_rejected():
    with pytest.raises(IDXFormatError, match=r"imgs holds 5 images but lbls holds 4 labels"):
        check_pair(IMAGES, LABELS[:4], "imgs", "lbls")


def test_corrupt_gzip_rejected(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(write_gz(tmp_path / "ok.gz", idx_bytes(LABELS)).read_bytes()[:-8])
    with pytest.raises(IDXFormatError, match=r"broken.gz: corrupt gzip stream"):
        read_payload(path)
