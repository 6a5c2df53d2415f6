"""The shipped dataset configs name the real files: Fashion-MNIST's SHA-256 sums are those of Debian's
dataset-fashion-mnist package (reads the real files, so not in the fast tier)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from tests.helpers import compose


def test_fashion_mnist_hashes_are_those_of_debians_files():
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not folder.is_dir():
        pytest.skip(f"{folder} missing: apt-get install dataset-fashion-mnist")
    cfg = compose("prepare", "data=fashion_mnist")
    assert str(folder) in cfg.data.sources
    for spec in cfg.data.files.values():
        assert hashlib.sha256(gzip.decompress((folder / spec.name).read_bytes())).hexdigest() == spec.sha256
