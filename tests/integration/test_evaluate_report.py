"""The evaluate and report stages on real (small) data with a temporary MLflow store."""

import json
import shutil

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from mnist_pipeline import report, tracking
from mnist_pipeline.evaluate import write_probabilities
from mnist_pipeline.stage import CONF_DIR
from tests.helpers import run_module

VARIANT = "mlp_32x32-none"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    return f"sqlite:///{tmp / 'mlflow.db'}"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, small_prepared, store):
    """A variant trained then evaluated by the real stages (subprocesses), as DVC runs them."""
    tmp = tmp_path_factory.mktemp("eval")
    env = {"MLFLOW_TRACKING_URI": store}
    trained = run_module("mnist_pipeline.train", f"data_dir={small_prepared}", "model=mlp_32x32",
                         "trainer.epochs=2", f"variant={VARIANT}", f"output_dir={tmp / 'models' / VARIANT}",
                         f"hydra.run.dir={tmp / 'h1'}", env=env)
    assert trained.returncode == 0, trained.stderr
    result = run_module("mnist_pipeline.evaluate", f"variant={VARIANT}", f"data_dir={small_prepared}",
                        f"model_dir={tmp / 'models' / VARIANT}", f"metrics_file={tmp / 'metrics' / VARIANT}.json",
                        f"plots_dir={tmp / 'plots'}", f"hydra.run.dir={tmp / 'h2'}", env=env)
    assert result.returncode == 0, result.stderr
    return tmp


def test_metrics_match_an_independent_count(evaluated, small_prepared):
    import keras

    model = keras.saving.load_model(evaluated / "models" / VARIANT / "model.keras")
    test = np.load(small_prepared / "test.npz")
    predicted = np.argmax(model.predict(test["x"], verbose=0), axis=1)
    expected_accuracy = float(np.mean(predicted == test["y"]))
    written = json.loads((evaluated / "metrics" / f"{VARIANT}.json").read_text())
    assert written["test_accuracy"] == pytest.approx(expected_accuracy, abs=1e-12)
    assert written["test_errors"] == int(np.sum(predicted != test["y"]))
    keras_loss = float(keras.losses.SparseCategoricalCrossentropy()(test["y"], model.predict(test["x"], verbose=0)))
    assert written["test_loss"] == pytest.approx(keras_loss, rel=1e-4)
    rows = (evaluated / "plots" / "predictions" / f"{VARIANT}.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 1 + len(test["y"])
    assert [int(r.split(",")[1]) for r in rows[1:]] == predicted.tolist()
    per_class = json.loads((evaluated / "plots" / "per_class" / f"{VARIANT}.json").read_text())
    assert [c["support"] for c in per_class] == np.bincount(test["y"], minlength=10).tolist()


def test_results_land_in_the_training_run(evaluated, store):
    run_id = json.loads((evaluated / "models" / VARIANT / "run.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(run_id)
    written = json.loads((evaluated / "metrics" / f"{VARIANT}.json").read_text())
    assert run.info.status == "FINISHED"  # still the training's status: logging did not reopen it
    assert run.data.metrics["test_accuracy"] == pytest.approx(written["test_accuracy"])
    assert {f"test_f1_{d}" for d in range(10)} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run_id, "test")} == {
        "test/confusion_matrix.png", "test/misclassified.png", "test/evaluation.json"}
    assert sorted(p.name for p in (evaluated / "plots" / "figures" / VARIANT).iterdir()) == [
        "confusion_matrix.png", "misclassified.png"]


def test_evaluate_without_training_names_the_missing_file(tmp_path, small_prepared):
    result = run_module("mnist_pipeline.evaluate", "variant=ghost", f"model_dir={tmp_path / 'ghost'}",
                        f"data_dir={small_prepared}", f"hydra.run.dir={tmp_path / 'h'}")
    assert result.returncode == 1
    assert f"error: {tmp_path / 'ghost' / 'run.json'} not found: train the variant first" in result.stderr


# --- report: champion by validation accuracy, registry alias ------------------------------------------

def fake_variant(root, name, val_accuracy, test_accuracy, store):
    """A variant folder whose numbers we choose, backed by a real (tiny) logged MLflow model."""
    import keras

    tracking.setup({"tracking_uri": store, "experiment": "mnist"})
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    with tracking.training_run(name, {"variant": name}, {}) as run:
        uri = tracking.log_keras_model(model, np.zeros((1, 28, 28, 1), np.float32), step=0)
    folder = root / "models" / name
    folder.mkdir(parents=True)
    (folder / "history.json").write_text(json.dumps({
        "variant": name, "epochs_run": 2, "best_epoch": 1, "params": model.count_params(),
        "history": {"val_accuracy": [0.5, val_accuracy], "val_loss": [1.0, 0.1], "epoch_seconds": [1.5, 2.5]}}))
    (folder / "run.json").write_text(json.dumps({"run_id": run.info.run_id, "model_uri": uri}))
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics" / f"{name}.json").write_text(json.dumps({"test_accuracy": test_accuracy, "test_loss": 0.2}))
    labels = np.arange(200) % 10
    write_probabilities(root / "probabilities" / f"{name}.npz",
                        val=(confident(labels, val_accuracy), labels), test=(confident(labels, test_accuracy), labels))
    return uri


def confident(labels, accuracy):
    """Probabilities with that accuracy: 0.9 on the true label for the first images, else on the next digit."""
    right = np.arange(len(labels)) < round(accuracy * len(labels))
    predicted = np.where(right, labels, (labels + 1) % 10)
    probs = np.full((len(labels), 10), 0.1 / 9, np.float32)
    probs[np.arange(len(labels)), predicted] = 0.9
    return probs


def run_report(root, store, variants):
    (root / "params.yaml").write_text(json.dumps({"variants": {v: {} for v in variants}}))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("report", overrides=[f"params_file={root / 'params.yaml'}", f"models_dir={root / 'models'}",
                                           f"metrics_dir={root / 'metrics'}", f"reports_dir={root / 'reports'}",
                                           f"probabilities_dir={root / 'probabilities'}",
                                           f"tracking.tracking_uri={store}"])
    return report.report(cfg)


def test_champion_is_chosen_on_validation_and_the_alias_moves(tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    uri_a = fake_variant(tmp_path, "a", val_accuracy=0.99, test_accuracy=0.90, store=store)
    fake_variant(tmp_path, "b", val_accuracy=0.95, test_accuracy=0.99, store=store)  # better on test only

    first = run_report(tmp_path, store, ["a", "b"])
    assert first["champion"]["variant"] == "a" and first["champion"]["version"] == 1
    client = MlflowClient(tracking_uri=store)
    assert client.get_model_version_by_alias("mnist-classifier", "champion").source == uri_a
    board = json.loads((tmp_path / "reports" / "leaderboard.json").read_text())
    assert [r["variant"] for r in board["variants"]] == ["a", "b"]
    assert board["variants"][0]["train_seconds"] == 4.0 and board["champion"]["model_uri"] == uri_a
    md = (tmp_path / "reports" / "leaderboard.md").read_text()
    assert "| **a** (champion) | 7,850 | 2 | 4 | 0.9900 | 0.9000 | 0.2000 |" in md
    assert (tmp_path / "reports" / "comparison.png").read_bytes()[:4] == b"\x89PNG"

    # The ensemble: k chosen on validation among the top variants by validation accuracy, scored on test.
    combined = board["ensemble"]
    assert combined["members"] == ["a", "b"][: combined["k"]] and len(combined["val_accuracy_by_k"]) == 2
    assert combined["val_accuracy_by_k"][0] == pytest.approx(0.99)  # a alone
    member_probs = [np.load(tmp_path / "probabilities" / f"{m}.npz") for m in combined["members"]]
    average = np.mean([p["test_probs"] for p in member_probs], axis=0)
    assert combined["test_accuracy"] == pytest.approx(np.mean(average.argmax(1) == member_probs[0]["test_labels"]))
    assert f"| ensemble of top {combined['k']} |" in md

    assert run_report(tmp_path, store, ["a", "b"])["champion"]["version"] == 1  # unchanged: no new version

    uri_c = fake_variant(tmp_path, "c", val_accuracy=0.995, test_accuracy=0.95, store=store)
    third = run_report(tmp_path, store, ["a", "b", "c"])
    assert third["champion"]["variant"] == "c" and third["champion"]["version"] == 2
    assert client.get_model_version_by_alias("mnist-classifier", "champion").source == uri_c
    versions = client.search_model_versions("name = 'mnist-classifier'")
    assert sorted(int(v.version) for v in versions) == [1, 2]  # the old champion stays registered


def test_report_names_a_variant_that_was_not_evaluated(tmp_path):
    (tmp_path / "models" / "x").mkdir(parents=True)
    (tmp_path / "models" / "x" / "history.json").write_text("{}")
    (tmp_path / "models" / "x" / "run.json").write_text("{}")
    from mnist_pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match=r"x.json not found: run `dvc repro` \(train@x and evaluate@x\)"):
        run_report(tmp_path, "sqlite:///unused.db", ["x"])
