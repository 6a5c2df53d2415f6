"""The evaluate stage on real (small) data with a temporary MLflow store."""

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

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
    trained = run_module(
        "mnist_pipeline.train",
        f"data_dir={small_prepared}",
        "model=mlp_32x32",
        "trainer.epochs=2",
        f"variant={VARIANT}",
        f"output_dir={tmp / 'models' / VARIANT}",
        f"hydra.run.dir={tmp / 'h1'}",
        env=env,
    )
    assert trained.returncode == 0, trained.stderr
    result = evaluate(tmp, small_prepared, env)
    assert result.returncode == 0, result.stderr
    return tmp


def evaluate(tmp, data_dir, env, *overrides):
    return run_module(
        "mnist_pipeline.evaluate",
        f"variant={VARIANT}",
        f"data_dir={data_dir}",
        f"model_dir={tmp / 'models' / VARIANT}",
        f"metrics_file={tmp / 'metrics' / VARIANT}.json",
        f"plots_dir={tmp / 'plots'}",
        f"probabilities_file={tmp / 'probabilities' / VARIANT}.npz",
        f"hydra.run.dir={tmp / 'h2'}",
        *overrides,
        env=env,
    )


def outputs(tmp):
    """Every file evaluate writes, by path relative to `tmp`."""
    return {
        str(p.relative_to(tmp)): p
        for folder in ("metrics", "plots", "probabilities")
        for p in sorted((tmp / folder).rglob("*"))
        if p.is_file()
    }


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
        "test/confusion_matrix.png",
        "test/misclassified.png",
        "test/evaluation.json",
    }
    assert sorted(p.name for p in (evaluated / "plots" / "figures" / VARIANT).iterdir()) == [
        "confusion_matrix.png",
        "misclassified.png",
    ]


def test_evaluate_without_training_names_the_missing_file(tmp_path, small_prepared):
    result = run_module(
        "mnist_pipeline.evaluate",
        "variant=ghost",
        f"model_dir={tmp_path / 'ghost'}",
        f"data_dir={small_prepared}",
        f"hydra.run.dir={tmp_path / 'h'}",
    )
    assert result.returncode == 1
    assert f"error: {tmp_path / 'ghost' / 'run.json'} not found: train the variant first" in result.stderr


@pytest.mark.parametrize("failure", ["an output path is blocked", "the run is not in the store"])
def test_a_failure_part_way_keeps_every_previous_output(failure, evaluated, store, small_prepared, tmp_path):
    """evaluate stages its six outputs, logs to the run, then moves all into place: a failure part-way
    (staging one output, or logging) leaves the previous outputs whole and no staging behind."""
    import shutil

    tmp = shutil.copytree(evaluated, tmp_path / "copy")
    before = outputs(tmp)
    assert len(before) == 7  # metrics, predictions, per_class, curves, probabilities, two figures
    for path in before.values():
        path.write_bytes(b"previous " + path.name.encode())
    if failure == "an output path is blocked":  # staged after four others
        result = evaluate(
            tmp,
            small_prepared,
            {"MLFLOW_TRACKING_URI": store},
            f"probabilities_file={tmp / 'metrics' / VARIANT}.json/p.npz",
        )
    else:
        result = evaluate(tmp, small_prepared, {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'other.db'}"})
        assert "the store was reset or moved since training" in result.stderr and "Traceback" not in result.stderr
    assert result.returncode == 1, result.stderr
    assert {name: p.read_bytes() for name, p in outputs(tmp).items()} == {
        name: b"previous " + p.name.encode() for name, p in before.items()
    }
    assert [str(p) for p in tmp.rglob(".*.tmp")] == []
    run_id = json.loads((tmp / "models" / VARIANT / "run.json").read_text())["run_id"]
    assert len(MlflowClient(tracking_uri=store).get_metric_history(run_id, "test_accuracy")) == 1
