"""Datasets are a config group: a synthetic IDX dataset of another image size and class count, written by the
test, runs through the whole pipeline; Fashion-MNIST runs through `dvc exp run -S prepare.dataset=...`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import idx_bytes, quick_project, ran_stages, run_cli, run_dvc, set_param, write_gz

SHAPES = ["horizontal", "vertical", "square", "diagonal", "plus"]
SIZE = 16
# Two models that take 16x16 images (shallow_cnn and bn_cnn shrink them below a pixel).
SMALL_IMAGE_VARIANTS = (
    '  mlp_32x32-none: {model: mlp_32x32, augment: none, overrides: ""}\n'
    '  cnn_dnn-none: {model: cnn_dnn, augment: none, overrides: "trainer.batch_size=100"}\n'
)
# 16*16*32+32 + 32*32+32 + 32*5+5; cnn_dnn: convs 320 + 18,496 + 36,928, dense (2*2*64)*128+128 + 128*64+64 + 64*5+5
PARAMS = {"mlp_32x32-none": 9_445, "cnn_dnn-none": 97_221}
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def shape_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """One 16x16 uint8 picture of SHAPES[label], placed and sized at random, on faint noise."""
    image = np.zeros((SIZE, SIZE), np.float64)
    c, r = rng.integers(6, 10, size=2)  # centre
    half = int(rng.integers(3, 6))
    if label == 0:
        image[r : r + 2, c - half : c + half] = 1
    elif label == 1:
        image[r - half : r + half, c : c + 2] = 1
    elif label == 2:
        image[r - half : r + half, c - half : c + half] = 1
        image[r - half + 2 : r + half - 2, c - half + 2 : c + half - 2] = 0
    elif label == 3:
        for i in range(-half, half):
            image[r + i, c + i : c + i + 2] = 1
    else:
        image[r : r + 2, c - half : c + half] = 1
        image[r - half : r + half, c : c + 2] = 1
    pixels = image * rng.uniform(0.7, 1.0) * 255 + rng.uniform(0, 40, image.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_shapes(folder: Path, seed: int = 0) -> dict[str, tuple[str, str]]:
    """The four IDX files of a 5-class 16x16 dataset (3,000 training, 600 test images) in `folder`; returns
    {file key: (file name, payload sha256)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for part, count in (("train", 3000), ("test", 600)):
        labels = rng.integers(0, len(SHAPES), size=count).astype(np.uint8)
        images = np.stack([shape_image(int(y), rng) for y in labels])
        for kind, array in (("images", images), ("labels", labels)):
            name, payload = f"{part}-{kind}.idx.gz", idx_bytes(array)
            write_gz(folder / name, payload)
            written[f"{part}_{kind}"] = (name, hashlib.sha256(payload).hexdigest())
    return written


def shapes_config(files: dict[str, tuple[str, str]]) -> str:
    listed = "\n".join(f"  {key}: {{name: {name}, sha256: {sha}}}" for key, (name, sha) in files.items())
    return (
        f"name: shapes\nclasses: {json.dumps(SHAPES)}\nimage_size: [{SIZE}, {SIZE}]\n"
        "preprocess: {box: 12, centre: box}\nmirror_env: SHAPES_MIRROR\nsources: []\n"
        f"files:\n{listed}\n"
    )


@pytest.mark.slow
def test_a_dataset_of_another_size_and_class_count_runs_through_the_pipeline(tmp_path):
    import keras
    import mlflow
    from mlflow.tracking import MlflowClient

    repo = quick_project(tmp_path / "repo", limit=0, variants=SMALL_IMAGE_VARIANTS)
    (repo / "conf/data/shapes.yaml").write_text(shapes_config(write_shapes(tmp_path / "shapes")))
    set_param(repo, "dataset", "shapes")
    set_param(repo, "epochs", 3)
    env = {"SHAPES_MIRROR": str(tmp_path / "shapes"), "MNIST_MIRROR": str(tmp_path / "no-mnist-needed")}
    result = run_dvc(repo, "repro", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ran_stages(result)[0] == "prepare"

    meta = json.loads((repo / "data/prepared/dataset.json").read_text())
    assert (meta["dataset"], meta["classes"], meta["image_shape"]) == ("shapes", SHAPES, [SIZE, SIZE, 1])
    assert meta["counts"] == {"train": 2700, "val": 300, "test": 600}
    assert sorted(p.name for p in (repo / "data/raw/shapes").glob("*.gz")) == sorted(
        f"{part}-{kind}.idx.gz" for part in ("train", "test") for kind in ("images", "labels")
    )

    for variant, count in PARAMS.items():
        model = keras.saving.load_model(repo / "models" / variant / "model.keras")
        assert model.input_shape == (None, SIZE, SIZE, 1) and model.output_shape == (None, len(SHAPES))
        assert model.count_params() == count
        per_class = json.loads((repo / "plots/per_class" / f"{variant}.json").read_text())
        assert [c["class"] for c in per_class] == SHAPES
        assert sum(c["support"] for c in per_class) == 600
        metrics = json.loads((repo / "metrics" / f"{variant}.json").read_text())
        exported = {f"{kind}_{m}" for kind in ("onnx", "int8") for m in ("agreement", "accuracy", "accuracy_drop")}
        assert len(metrics) == 12 and exported <= metrics.keys(), metrics  # 6 of Keras', 6 of the exported files
        assert metrics["onnx_agreement"] >= 0.99 and metrics["int8_agreement"] >= 0.95, metrics

    board = json.loads((repo / "reports/leaderboard.json").read_text())
    assert board["dataset"] == "shapes" and board["classes"] == SHAPES
    assert board["best"]["test_accuracy"] > 0.9, board["best"]  # chance is 0.2: the models learned the shapes
    text = (repo / "reports/leaderboard.md").read_text()
    assert text.startswith("# Leaderboard: shapes\n")
    assert all(f"| {name} |" in text for name in SHAPES)  # the per-class table names every class

    uri = f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    assert board["registry"]["model"] == "shapes-classifier"
    champion = client.get_model_version_by_alias("shapes-classifier", "champion")
    assert champion.tags["dataset"] == "shapes" and champion.tags["variant"] == board["best"]["variant"]
    assert not client.search_registered_models("name = 'mnist-classifier'")  # never mixed with MNIST's
    mlflow.set_tracking_uri(uri)
    try:
        info = mlflow.models.get_model_info("models:/shapes-classifier@champion")
    finally:
        mlflow.set_tracking_uri(None)
    assert info.metadata["classes"] == SHAPES and info.metadata["image_shape"] == [SIZE, SIZE, 1]
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, SIZE, SIZE, 1]
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, len(SHAPES)]

    # Each training run holds its train and validation splits as dataset inputs, evaluate added the test one.
    experiment = client.get_experiment_by_name("mnist").experiment_id
    runs = client.search_runs([experiment], "dataset.name = 'shapes-test'")
    assert sorted(r.info.run_name for r in runs) == sorted(PARAMS)
    digest = hashlib.sha256()
    for path in sorted((repo / "data/prepared").iterdir()):
        digest.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
    for run in runs:
        inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
        assert sorted(inputs) == ["shapes-test", "shapes-train", "shapes-val"]
        contexts = {name: {t.key: t.value for t in i.tags}["mlflow.data.context"] for name, i in inputs.items()}
        assert contexts == {"shapes-train": "training", "shapes-val": "validation", "shapes-test": "testing"}
        assert {i.dataset.digest for i in inputs.values()} == {digest.hexdigest()[:36]}
        assert json.loads(inputs["shapes-val"].dataset.profile)["features_shape"] == [300, SIZE, SIZE, 1]
        assert run.data.tags["dataset"] == "shapes"

    # predict uses the dataset's champion, its image size, preprocessing and class names.
    test_images = np.load(repo / "data/prepared/test.npz")
    wanted = [int(np.flatnonzero(test_images["y"] == label)[0]) for label in range(len(SHAPES))]
    np.save(tmp_path / "five.npy", test_images["x"][wanted])
    picture = np.zeros((64, 48), np.uint8)  # a big dark-on-light "plus" photo: cropped, scaled, centred
    picture[:, :] = 255
    picture[28:34, 6:42] = 0
    picture[8:56, 21:27] = 0
    Image.fromarray(picture).save(tmp_path / "plus.png")
    predicted = run_cli("predict", "--dataset", "shapes", "five.npy", "plus.png", cwd=tmp_path, tracking_uri=uri)
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.splitlines()
    assert [line.split(": ")[1].split(" (p=")[0] for line in lines[:5]] == SHAPES
    assert lines[5].startswith("plus.png: plus (p=")
    np.save(tmp_path / "mnist_sized.npy", np.zeros((28, 28), np.uint8))
    wrong_size = run_cli("predict", "--dataset", "shapes", "mnist_sized.npy", cwd=tmp_path, tracking_uri=uri)
    assert wrong_size.returncode == 1
    assert "expected shape (16, 16), (16, 16, 1) or (n, 16, 16[, 1]), got (28, 28)" in wrong_size.stderr


@pytest.mark.slow
def test_fashion_mnist_runs_as_a_dvc_experiment_from_debians_files(tmp_path):
    """`dvc exp run -S prepare.dataset=fashion_mnist -S train.epochs=1 -S prepare.limit=2000` with no mirror
    set: the files come from Debian's dataset-fashion-mnist, the champion is fashion_mnist-classifier."""
    if not all(
        (FASHION_DIR / f"{p}-{k}-idx{n}-ubyte.gz").is_file()
        for p in ("train", "t10k")
        for k, n in (("images", 3), ("labels", 1))
    ):
        message = f"{FASHION_DIR} lacks the Fashion-MNIST files: apt-get install dataset-fashion-mnist"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)  # .ci/run installs it
        pytest.skip(message)
    from mlflow.tracking import MlflowClient

    repo = quick_project(tmp_path / "repo", limit=2000)
    env = {"MNIST_MIRROR": str(tmp_path / "none"), "FASHION_MNIST_MIRROR": ""}
    result = run_dvc(
        repo,
        "exp",
        "run",
        "-n",
        "fashion",
        "-S",
        "prepare.dataset=fashion_mnist",
        "-S",
        "train.epochs=1",
        "-S",
        "prepare.limit=2000",
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ran_stages(result)[0] == "prepare"

    meta = json.loads((repo / "data/prepared/dataset.json").read_text())
    assert meta["dataset"] == "fashion_mnist" and meta["classes"][9] == "Ankle boot"
    assert meta["counts"] == {"train": 1800, "val": 200, "test": 2000}
    sources = json.loads((repo / "data/raw/fashion_mnist/sources.json").read_text())
    assert set(sources.values()) == {str(FASHION_DIR / name) for name in sources}
    assert not (repo / "data/raw/mnist").exists()
    per_class = json.loads((repo / "plots/per_class/mlp_32x32-none.json").read_text())
    assert [c["class"] for c in per_class][:2] == ["T-shirt/top", "Trouser"]

    shown = run_dvc(repo, "exp", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert '"dataset": "fashion_mnist"' in shown.stdout.replace("'", '"')
    board = json.loads((repo / "reports/leaderboard.json").read_text())
    assert board["dataset"] == "fashion_mnist"
    # Reduced data never promotes; the gate looked at Fashion-MNIST's own registered model.
    assert (board["registry"]["model"], board["registry"]["action"]) == ("fashion_mnist-classifier", "none")
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id], "tags.dataset = 'fashion_mnist'")
    assert sorted(r.data.tags["dvc.exp"] for r in runs) == ["fashion", "fashion"]
    accuracy = {r.info.run_name: r.data.metrics["test_accuracy"] for r in runs}
    assert max(accuracy.values()) > 0.5, accuracy  # chance is 0.1
