"""`dvc repro` in a temporary copy of the repository, on a small slice of the real data."""

import json
import re

import pytest

from tests.helpers import copy_repo, run_dvc


def set_param(repo, key, value):
    """Edit one `key: value` line of params.yaml (as a user would)."""
    path = repo / "params.yaml"
    text, count = re.subn(rf"(?m)^(\s*{key}:)\s*[^#\n]*?(\s*#.*)?$", rf"\g<1> {value}\g<2>", path.read_text())
    assert count == 1, f"{key} not found once in params.yaml"
    path.write_text(text)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mnist_mirror):
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    set_param(repo, "limit", 2000)
    return repo


def test_repro_runs_prepare_once_then_nothing(repo, mnist_mirror):
    env = {"MNIST_MIRROR": str(mnist_mirror)}
    first = run_dvc(repo, "repro", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Running stage 'prepare'" in first.stdout
    meta = json.loads((repo / "data/prepared/dataset.json").read_text())
    assert meta["counts"] == {"train": 1800, "val": 200, "test": 2000}

    second = run_dvc(repo, "repro", env=env)
    assert second.returncode == 0, second.stderr
    assert "Running stage" not in second.stdout
    assert "Data and pipelines are up to date." in second.stdout

    # Changing a tracked param reruns the stage; the raw cache (persist) means no new download.
    set_param(repo, "val_fraction", 0.2)
    third = run_dvc(repo, "repro", env={"MNIST_MIRROR": str(repo / "no-such-mirror")})
    assert third.returncode == 0, third.stdout + third.stderr
    assert "Running stage 'prepare'" in third.stdout
    meta = json.loads((repo / "data/prepared/dataset.json").read_text())
    assert meta["counts"] == {"train": 1600, "val": 400, "test": 2000}
