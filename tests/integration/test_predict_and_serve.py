"""A registered champion used as users do: `mnist-pipeline predict` on files, and `mlflow models serve`
(`mnist-pipeline serve`: test_pipeline_server.py)."""

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO, model_server, run_cli

PROB = r"[01]\.\d{4}"
# docs/serving.md's example request body: {"inputs": x}, x the first test image as nested lists of shape
# (1, 28, 28, 1), floats in [0, 1]. `python -c "<this>" > digit.json`; test_serve_champion runs it as is.
DOCUMENTED_PAYLOAD = (
    "import json, numpy as np; print(json.dumps({'inputs': np.load('data/prepared/test.npz')['x'][:1].tolist()}))"
)
LINE = re.compile(rf"(?P<name>.+): (?P<digit>\d) \(p={PROB}\)  top-3: \d {PROB}, \d {PROB}, \d {PROB}")


def as_photo(x: np.ndarray) -> Image.Image:
    """A 28x28 MNIST digit as a larger RGB picture: blue ink on cream paper, off-centre on a 220x180 sheet."""
    ink = np.asarray(Image.fromarray(x).resize((140, 140), Image.Resampling.BILINEAR), np.float64)[..., None] / 255
    paper, pen = np.array([235, 230, 215]), np.array([30, 40, 110])
    sheet = np.tile(paper, (180, 220, 1)).astype(np.float64)
    sheet[15:155, 60:200] = paper * (1 - ink) + pen * ink
    return Image.fromarray(sheet.round().astype(np.uint8))


def test_predict_files_of_every_kind(champion, tmp_path):
    x_test = np.load(champion.test_npz)["x"]
    files, expected = [], []
    for index, label in champion.picks:
        x = (x_test[index, ..., 0] * 255).round().astype(np.uint8)
        variants = {
            f"{label}.png": Image.fromarray(x),
            f"{label}-inverted.png": Image.fromarray(255 - x),
            f"{label}-112.png": Image.fromarray(x).resize((112, 112), Image.Resampling.BICUBIC),
            f"{label}-photo.jpg": as_photo(x),
        }
        for name, img in variants.items():
            img.save(tmp_path / name)
        np.save(tmp_path / f"{label}.npy", x)
        files += [*variants, f"{label}.npy"]
        expected += [(name, label) for name in [*variants, f"{label}.npy"]]
    np.save(tmp_path / "batch.npy", x_test[[index for index, _ in champion.picks]])  # float32 (3, 28, 28, 1)
    expected += [(f"batch.npy[{i}]", label) for i, (_, label) in enumerate(champion.picks)]
    (tmp_path / "notes.png").write_text("not a picture\n")
    # The bad file sits in the middle: the files after it must still be predicted.
    result = run_cli(
        "predict", *files[:2], "notes.png", *files[2:], "batch.npy", cwd=tmp_path, tracking_uri=champion.tracking_uri
    )

    assert result.returncode == 1, result.stderr
    assert "error: notes.png: not a picture (cannot identify image file)" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert [LINE.fullmatch(line) is not None for line in lines] == [True] * len(expected), result.stdout
    got = [(m["name"], int(m["digit"])) for m in map(LINE.fullmatch, lines)]
    assert got == expected, result.stdout


def test_predict_with_unknown_model_exits_2(champion, tmp_path):
    index, _ = champion.picks[0]
    np.save(tmp_path / "digit.npy", np.load(champion.test_npz)["x"][index])
    result = run_cli(
        "predict",
        "--model",
        "models:/does-not-exist@champion",
        "digit.npy",
        cwd=tmp_path,
        tracking_uri=champion.tracking_uri,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "error: cannot load model models:/does-not-exist@champion from sqlite:///" in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_without_a_store_exits_2(tmp_path):
    (tmp_path / "digit.png").write_bytes(b"")
    result = run_cli("predict", "digit.png", cwd=tmp_path, tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: no MLflow store at {tmp_path}/mlruns/mlflow.db: run the pipeline first")
    assert not (tmp_path / "mlruns").exists()  # and none was created


def documented_payload(prepared: Path, cwd: Path) -> bytes:
    """docs/serving.md's request body, made by running its command where data/prepared is `prepared`."""
    assert f'python -c "{DOCUMENTED_PAYLOAD}" > digit.json' in (REPO / "docs" / "serving.md").read_text()
    (cwd / "data").mkdir()
    (cwd / "data" / "prepared").symlink_to(prepared)
    return subprocess.run([sys.executable, "-c", DOCUMENTED_PAYLOAD], cwd=cwd, capture_output=True, check=True).stdout


def post(port: int, body: bytes) -> tuple[int, dict | str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


@pytest.mark.slow
def test_serve_champion(champion, tmp_path):
    good, label = documented_payload(champion.test_npz.parent, tmp_path), champion.first_label
    with model_server("models:/mnist-classifier@champion", champion.tracking_uri, tmp_path) as port:
        status, body = post(port, good)
        assert status == 200, body
        assert set(body) == {"predictions"} and np.shape(body["predictions"]) == (1, 10)
        assert int(np.argmax(body["predictions"][0])) == label
        assert sum(body["predictions"][0]) == pytest.approx(1.0, abs=1e-4)

        flat = json.dumps({"inputs": np.load(champion.test_npz)["x"][0].ravel().tolist()}).encode()
        for bad in (flat, b'{"inputs": [[[0.5]]', b"not json"):
            status, body = post(port, bad)
            assert 400 <= status < 500, (bad[:40], status, body)

        status, body = post(port, good)  # the bad requests did not break the server
        assert status == 200 and int(np.argmax(body["predictions"][0])) == label
