"""Model files that carry code are refused, in one line, wherever the project loads a model: the evaluate
stage, `mnist-pipeline predict` and the serving path of docs/serving.md (`mlflow models serve`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.model_files import ModelFileError, load_keras
from tests.helpers import run_module, serve_command

LAMBDA_REFUSED = "refused: it holds Python code (a Lambda layer or a function), which Keras' safe mode does not run"


def lambda_model():
    """A small model whose graph runs a Python lambda: loading it in unsafe mode would run code."""
    import keras

    inputs = keras.Input((28, 28, 1))
    doubled = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(doubled))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """lambda.keras, custom.keras (a layer class the loader does not know), truncated.keras, model.h5."""
    import keras

    folder = tmp_path_factory.mktemp("crafted")
    lambda_model().save(folder / "lambda.keras")

    @keras.saving.register_keras_serializable(package="outside")
    class Outside(keras.layers.Layer):
        def call(self, x):
            return x

    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(Outside()(inputs)))
    keras.Model(inputs, outputs).save(folder / "custom.keras")
    keras.saving.get_custom_objects().pop("outside>Outside")  # as in any other process: unknown
    (folder / "truncated.keras").write_bytes((folder / "lambda.keras").read_bytes()[:700])
    (folder / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    return folder


def test_every_kind_of_bad_file_is_refused_in_one_line(crafted):
    cases = {
        "lambda.keras": LAMBDA_REFUSED,
        "custom.keras": "refused: it needs a class this project does not define",
        "truncated.keras": "cannot read it: not a complete .keras file (truncated or corrupt?)",
        "model.h5": "refused: only .keras model files are loaded (.h5 files, e.g. legacy .h5, ignore Keras' safe mode)",
        "missing.keras": "not found",
    }
    for name, reason in cases.items():
        with pytest.raises(ModelFileError) as refused:
            load_keras(crafted / name)
        assert str(refused.value) == f"{crafted / name}: {reason}" or str(refused.value).startswith(
            f"{crafted / name}: {reason}"
        ), str(refused.value)


def test_evaluate_refuses_a_model_with_code(crafted, small_prepared, tmp_path):
    model_dir = tmp_path / "models" / "evil"
    model_dir.mkdir(parents=True)
    (model_dir / "model.keras").write_bytes((crafted / "lambda.keras").read_bytes())
    (model_dir / "history.json").write_text(
        json.dumps({"history": {"loss": [1.0], "accuracy": [0.5], "val_loss": [1.0], "val_accuracy": [0.5]}})
    )
    (model_dir / "run.json").write_text(json.dumps({"run_id": "0" * 32}))
    result = run_module(
        "mnist_pipeline.evaluate",
        "variant=evil",
        f"model_dir={model_dir}",
        f"data_dir={small_prepared}",
        f"metrics_file={tmp_path / 'metrics.json'}",
        f"plots_dir={tmp_path / 'plots'}",
        f"probabilities_file={tmp_path / 'p.npz'}",
        f"hydra.run.dir={tmp_path / 'h'}",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"},
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1] == f"error: {model_dir / 'model.keras'}: {LAMBDA_REFUSED}; "
        "load only models you trust, and never with safe_mode=False"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "plots").exists()


@pytest.fixture(scope="module")
def logged_lambda(tmp_path_factory):
    """The Lambda model logged to a temporary MLflow store, as a trusting colleague might have done."""
    import mlflow

    from mnist_pipeline.tracking import logged_models, runs, store

    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        store.setup({"tracking_uri": uri, "experiment": "crafted"})
        with runs.training_run("evil", {"variant": "evil"}, {}):
            model_uri = logged_models.log_keras_model(lambda_model(), np.zeros((1, 28, 28, 1), np.float32), step=0)
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    return uri, model_uri, folder


def test_predict_refuses_a_logged_model_with_code(logged_lambda, tmp_path):
    uri, model_uri, _ = logged_lambda
    np.save(tmp_path / "digit.npy", np.zeros((28, 28), np.float32))
    result = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.cli", "predict", "--model", model_uri, str(tmp_path / "digit.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {model_uri}: {LAMBDA_REFUSED}")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_serving_path_refuses_it_too(logged_lambda, tmp_path):
    """`mlflow models serve` (docs/serving.md's serving command) loads in Keras' default safe mode: it exits
    with Keras' refusal instead of serving the model."""
    from mnist_pipeline import serving
    from mnist_pipeline.team.postgres import free_port

    uri, model_uri, _ = logged_lambda
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        **serving.ENV,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
    }
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            serve_command(model_uri, free_port()),
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code = server.wait(timeout=240)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 9)
            server.wait()
    assert code != 0
    text = log.read_text()
    assert "Requested the deserialization of a `Lambda` layer" in text and "safe_mode=False" in text
