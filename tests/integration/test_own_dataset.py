"""A user's own colour pictures through the whole pipeline, the way docs/datasets.md brings them: a class
folder under datasets/, `dvc add`, one YAML, `dvc repro`. RGB end to end (prepare, train, the logged model's
signature, predict by class name), a variant whose model cannot take 16x16 images skipped, not fatal, and a
changed picture rerunning prepare."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import git_commit_all, quick_project, ran_stages, run_cli, run_dvc, set_param

COLOURS = {"blue": (20, 40, 220), "green": (30, 200, 40), "red": (230, 30, 20)}
VARIANTS = (
    '  mlp_32x32-none: {model: mlp_32x32, augment: none, overrides: ""}\n'
    '  shallow_cnn-none: {model: shallow_cnn, augment: none, overrides: ""}\n'  # 16 -> 14 -> 7 -> 5 -> 2 -> 0
    '  tiny_cnn-light: {model: tiny_cnn, augment: light, overrides: ""}\n'
)
YAML = """name: colours
format: folder
path: ${paths.datasets}/colours
image_size: [16, 16]
channels: 3
preprocess: {method: pad}
test_fraction: 0.25
on_bad: skip
"""
SIZES = [(16, 16), (24, 20), (40, 30), (12, 18)]
EXTENSIONS = ["png", "jpg", "bmp", "webp"]


def picture(colour, size, seed):
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    repo = quick_project(tmp_path_factory.mktemp("own"), limit=0, variants=VARIANTS)
    for c, (name, colour) in enumerate(COLOURS.items()):
        folder = repo / "datasets" / "colours" / "train" / name
        folder.mkdir(parents=True)
        for i in range(16):
            image = picture(colour, SIZES[i % 4], seed=100 * c + i)
            image.save(folder / f"{i:02d}.{EXTENSIONS[i % 4]}")
    broken = repo / "datasets" / "colours" / "train" / "red" / "broken.png"
    broken.write_bytes((repo / "datasets" / "colours" / "train" / "red" / "00.png").read_bytes()[:60])  # truncated
    (repo / "conf" / "data" / "colours.yaml").write_text(YAML)
    set_param(repo, "dataset", "colours")
    set_param(repo, "epochs", 8)
    added = run_dvc(repo, "add", "datasets/colours")
    assert added.returncode == 0, added.stderr
    git_commit_all(repo, "colours, dvc add-ed")
    result = run_dvc(repo, "repro")
    assert result.returncode == 0, result.stdout + result.stderr
    return repo, result


def test_rgb_prepared_and_every_fitting_variant_trained(project):
    repo, result = project
    meta = json.loads((repo / "data" / "prepared" / "dataset.json").read_text())
    assert meta["classes"] == ["blue", "green", "red"] and meta["image_shape"] == [16, 16, 3]
    assert meta["counts"] == {"train": 32, "val": 4, "test": 12}  # 48: 12 drawn as test, 10% of 36 as val
    with np.load(repo / "data" / "prepared" / "train.npz") as train:
        assert train["x"].shape == (32, 16, 16, 3) and train["x"].dtype == np.float32
    for variant in ("mlp_32x32-none", "tiny_cnn-light"):
        history = json.loads((repo / "models" / variant / "history.json").read_text())
        assert history["epochs_run"] == 8
        assert "test_accuracy" in json.loads((repo / "metrics" / f"{variant}.json").read_text())
    assert ran_stages(result)[0] == "prepare"
    assert meta["skipped_count"] == 1 and meta["skipped"][0]["file"].endswith("train/red/broken.png")


def test_the_skipped_picture_is_listed_in_each_training_run(project):
    repo, _ = project
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    run_id = json.loads((repo / "models" / "mlp_32x32-none" / "run.json").read_text())["run_id"]
    assert client.get_run(run_id).data.tags["data.skipped"] == "1"
    listed = json.loads(Path(client.download_artifacts(run_id, "dataset_skipped.json")).read_text())
    assert listed == json.loads((repo / "data" / "prepared" / "dataset.json").read_text())["skipped"]


def test_a_variant_that_cannot_take_the_images_is_skipped_with_its_reason(project):
    repo, _ = project
    reason = json.loads((repo / "models" / "shallow_cnn-none" / "skipped.json").read_text())["skipped"]
    assert reason.startswith("model shallow_cnn cannot take 16x16 images (its convolutions and pools shrink")
    assert sorted(p.name for p in (repo / "models" / "shallow_cnn-none").iterdir()) == ["skipped.json"]
    assert json.loads((repo / "metrics" / "shallow_cnn-none.json").read_text()) == {"skipped": reason}
    assert (repo / "plots" / "predictions" / "shallow_cnn-none.csv").read_text() == "actual,predicted\n"
    board = json.loads((repo / "reports" / "leaderboard.json").read_text())
    assert board["skipped"] == {"shallow_cnn-none": reason}
    assert sorted(row["variant"] for row in board["variants"]) == ["mlp_32x32-none", "tiny_cnn-light"]
    assert f"- `shallow_cnn-none`: {reason}" in (repo / "reports" / "leaderboard.md").read_text()


def test_the_logged_model_takes_rgb_and_predict_names_the_class(project, tmp_path):
    repo, _ = project
    import mlflow

    board = json.loads((repo / "reports" / "leaderboard.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")  # the project's store (restored after)
    info = mlflow.models.get_model_info(board["best"]["model_uri"])
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 16, 16, 3]
    served = mlflow.pyfunc.load_model(board["best"]["model_uri"])  # what `mlflow models serve` calls
    assert np.asarray(served.predict(np.zeros((2, 16, 16, 3), np.float32))).shape == (2, 3)
    picture(COLOURS["red"], (50, 40), seed=9).save(tmp_path / "red.jpg")
    picture(COLOURS["blue"], (20, 20), seed=8).save(tmp_path / "blue.png")
    pictures = [str(tmp_path / "red.jpg"), str(tmp_path / "blue.png")]
    result = run_cli("predict", "--dataset", "colours", *pictures, cwd=repo, tracking_uri=mlflow.get_tracking_uri())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'red.jpg'}: red (p=") and lines[1].startswith(
        f"{tmp_path / 'blue.png'}: blue"
    )


def test_changing_one_picture_reruns_prepare_and_changes_the_data_hash(project):
    repo, _ = project
    before = json.loads((repo / "data" / "prepared" / "dataset.json").read_text())
    picture(COLOURS["green"], (16, 16), seed=999).save(repo / "datasets" / "colours" / "train" / "green" / "00.png")
    status = run_dvc(repo, "status", "prepare")
    assert "changed deps" in status.stdout and "datasets" in status.stdout, status.stdout
    result = run_dvc(repo, "repro", "prepare")
    assert result.returncode == 0 and ran_stages(result) == ["prepare"], result.stdout + result.stderr
    after = json.loads((repo / "data" / "prepared" / "dataset.json").read_text())
    assert after != before
