"""The prepare stage as a user runs it (a Hydra app in a subprocess) on the real MNIST files."""

import json

import numpy as np
import pytest

from mnist_pipeline.data.prepared import load_split
from tests.helpers import run_module

TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def prepare(tmp_path, mirror, *overrides):
    return run_module(
        "mnist_pipeline.prepare",
        f"data.raw_dir={tmp_path / 'raw'}",
        f"data.prepared_dir={tmp_path / 'prepared'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        *overrides,
        env={"MNIST_MIRROR": str(mirror)},
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, mnist_mirror):
    tmp = tmp_path_factory.mktemp("prepare")
    result = prepare(tmp, mnist_mirror, "data.sources=[]")
    assert result.returncode == 0, result.stderr
    return tmp / "prepared"


def test_real_mnist_split_sizes_and_values(prepared):
    sizes = {}
    for split in ("train", "val", "test"):
        x, y = load_split(prepared, split)
        assert x.dtype == np.float32 and x.shape[1:] == (28, 28, 1)
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() == 1.0
        assert y.dtype == np.uint8 and len(y) == len(x)
        sizes[split] = len(y)
    assert sizes == {"train": 54000, "val": 6000, "test": 10000}
    _, y_test = load_split(prepared, "test")
    assert np.bincount(y_test).tolist() == TEST_CLASS_COUNTS


def test_dataset_json_records_counts_hashes_and_sources(prepared, mnist_mirror):
    meta = json.loads((prepared / "dataset.json").read_text())
    assert meta["counts"] == {"train": 54000, "val": 6000, "test": 10000}
    assert meta["class_counts"]["test"] == TEST_CLASS_COUNTS
    assert sum(meta["class_counts"]["val"]) == 6000
    assert meta["files"]["train_images"]["payload_sha256"].startswith("ba891046e650")
    assert meta["files"]["test_labels"]["source"] == str(mnist_mirror / "t10k-labels-idx1-ubyte.gz")
    assert (prepared / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_val_fraction_and_limit_overrides(tmp_path, prepared, mnist_mirror):
    raw = prepared.parent / "raw"  # reuse the verified download
    result = run_module(
        "mnist_pipeline.prepare",
        f"data.raw_dir={raw}",
        f"data.prepared_dir={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'h'}",
        "data.val_fraction=0.2",
        "data.limit=3000",
        "data.sources=[]",
        env={"MNIST_MIRROR": str(tmp_path / "nowhere")},  # must not be needed: the cache is used
    )
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["counts"] == {"train": 2400, "val": 600, "test": 3000}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.val_fraction=1.5", "error: data.val_fraction: must be in (0.0, 1.0), got 1.5"),
        ("data.val_fraction=abc", "error: data.val_fraction: expected a number, got 'abc'"),
        ("data.limit=-5", "error: data.limit: must be >= 0, got -5"),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path, override, message):
    result = prepare(tmp_path, tmp_path / "nowhere", override)
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "raw").exists() and not (tmp_path / "prepared").exists()


def test_data_level_l2_is_gone_so_serving_cannot_skew(tmp_path):
    """L2 normalization moved into the model (model.input_norm=l2): prepare no longer takes it."""
    result = prepare(tmp_path, tmp_path / "nowhere", "data.normalization=l2")
    assert result.returncode == 1
    assert "Could not override 'data.normalization'" in result.stderr
    assert not (tmp_path / "prepared").exists()


def test_unknown_key_is_rejected_by_hydra(tmp_path):
    result = prepare(tmp_path, tmp_path / "nowhere", "data.val_fractoin=0.2")
    assert result.returncode == 1
    assert "Key 'val_fractoin' is not in struct" in result.stderr


def test_no_source_leaves_nothing_behind(tmp_path):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    result = prepare(tmp_path, empty, "data.sources=[]")
    assert result.returncode == 1
    assert "error: could not get a verified copy of train-images-idx3-ubyte.gz; sources tried:" in result.stderr
    assert f"{empty / 'train-images-idx3-ubyte.gz'}: no such file" in result.stderr
    assert not (tmp_path / "prepared").exists()
    assert list((tmp_path / "raw").iterdir()) == []


def start_prepare(tmp_path, mirror):
    """prepare on the full data in the background; returns it once its staging folder exists."""
    import os
    import subprocess
    import sys
    import time

    from tests.helpers import REPO

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_pipeline.prepare",
            f"data.raw_dir={tmp_path / 'raw'}",
            f"data.prepared_dir={tmp_path / 'prepared'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
            "data.sources=[]",
        ],
        cwd=REPO,
        env={**os.environ, "MNIST_MIRROR": str(mirror)},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".prepared.*.tmp")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"prepare never staged its output: {proc.communicate()[1]}")
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGKILL"])
def test_a_prepare_stopped_mid_write_leaves_no_output_and_the_next_completes(signum, tmp_path, mnist_mirror):
    """Stopped while writing its output: SIGTERM cleans up its staging at once; kill -9 cannot, so the
    next prepare removes it. Either way no partial data/prepared appears and the rerun is complete."""
    import signal

    proc = start_prepare(tmp_path, mnist_mirror)
    try:
        proc.send_signal(getattr(signal, signum))
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert not (tmp_path / "prepared").exists()
    if signum == "SIGTERM":
        assert proc.returncode == 143 and "terminated by SIGTERM" in stderr, stderr
        assert list(tmp_path.glob(".prepared.*.tmp")) == []
    else:
        assert proc.returncode == -9 and len(list(tmp_path.glob(".prepared.*.tmp"))) == 1
    result = prepare(tmp_path, mnist_mirror, "data.sources=[]")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hydra", "prepared", "raw"]
    assert [p.name for p in (tmp_path / "raw").iterdir() if p.name.startswith(".")] == []
    assert len(load_split(tmp_path / "prepared", "test")[1]) == 10_000
