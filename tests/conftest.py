"""Shared fixtures: the real MNIST mirror, a small prepared dataset, and the --run-slow switch.

The tiers by cost: tests/unit is the fast one (in-process, synthetic data: `python3 dev.py test tests/unit`);
tests/fuzz (10,000 inputs per reader) and tests/integration (real stages, small data) join it in the default
run (`python3 dev.py test`, slow tests skipped); CI (`CI=true`) runs the slow ones too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import REPO

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow (CI always does)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow") or os.environ.get("CI", "").lower() == "true":
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter) -> None:
    from tests.helpers import FUZZ_COUNTS

    if FUZZ_COUNTS:
        terminalreporter.write_sep("-", "fuzzing")
        for name, count in FUZZ_COUNTS.items():
            terminalreporter.write_line(f"{name}: {count:,} generated or mutated inputs")


@pytest.fixture(scope="session")
def mnist_mirror() -> Path:
    """A folder holding the four real MNIST files: $MNIST_MIRROR, else the repo's data/raw.

    Missing data skips these tests on a developer machine but fails them in CI, where it must be present.
    """
    candidates = [os.environ.get("MNIST_MIRROR", ""), str(REPO / "data" / "raw" / "mnist")]
    for candidate in filter(None, candidates):
        folder = Path(candidate).expanduser().resolve()
        if all((folder / name).is_file() for name in MNIST_FILES):
            return folder
    message = "real MNIST not found: set MNIST_MIRROR to a folder with the four .gz files"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def small_prepared(tmp_path_factory, mnist_mirror) -> Path:
    """data/prepared-like folder from the first 2,000 real MNIST training and test images (1,800/200/2,000)."""
    from tests.helpers import run_module

    tmp = tmp_path_factory.mktemp("small")
    result = run_module(
        "mnist_pipeline.prepare",
        f"data.raw_dir={tmp / 'raw'}",
        f"data.prepared_dir={tmp / 'prepared'}",
        f"hydra.run.dir={tmp / 'hydra'}",
        "data.limit=2000",
        "data.sources=[]",
        env={"MNIST_MIRROR": str(mnist_mirror)},
    )
    assert result.returncode == 0, result.stderr
    return tmp / "prepared"
