"""The exported files through the real stages (subprocesses, a temporary MLflow store): train logs an ONNX and an
int8 LiteRT file as artifacts of its run, evaluate downloads them and scores them on the test set, `export.formats=[]`
turns both off, and a corrupt file stops evaluate with one line that names it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mnist_pipeline.data.dataset import file_sha256
from tests.helpers import run_module

FIGURES = ("agreement", "accuracy", "accuracy_drop")
EXPORTED_KEYS = {f"{name}_{figure}" for name in ("onnx", "int8") for figure in FIGURES}


def train(tmp: Path, data: Path, variant: str, *overrides: str):
    return run_module(
        "mnist_pipeline.train",
        f"data_dir={data}",
        f"variant={variant}",
        f"output_dir={tmp / 'models' / variant}",
        f"hydra.run.dir={tmp / 'h-train'}",
        *overrides,
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"},
    )


def evaluate(tmp: Path, data: Path, variant: str, model_dir: Path | None = None):
    return run_module(
        "mnist_pipeline.evaluate",
        f"variant={variant}",
        f"data_dir={data}",
        f"model_dir={model_dir or tmp / 'models' / variant}",
        f"metrics_file={tmp / 'metrics' / variant}.json",
        f"plots_dir={tmp / 'plots'}",
        f"probabilities_file={tmp / 'probabilities' / variant}.npz",
        f"hydra.run.dir={tmp / 'h-evaluate'}",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"},
    )


class Trained:
    def __init__(self, tmp: Path, variant: str, trained, evaluated) -> None:
        self.tmp, self.variant, self.trained, self.evaluated = tmp, variant, trained, evaluated
        self.run_info = json.loads((tmp / "models" / variant / "run.json").read_text())
        self.client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
        self.run_id = self.run_info["run_id"]

    def metrics(self) -> dict:
        return json.loads((self.tmp / "metrics" / f"{self.variant}.json").read_text())

    def artifact_file(self, artifact: str) -> Path:
        """Where the store keeps a run artifact (a local SQLite store: a folder beside the database)."""
        return Path(unquote(urlparse(self.client.get_run(self.run_id).info.artifact_uri).path)) / artifact


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_prepared):
    """tiny_cnn trained 2 epochs with the default exports, then evaluated."""
    tmp = tmp_path_factory.mktemp("exported")
    trained = train(tmp, small_prepared, "tiny_cnn-none", "model=tiny_cnn", "trainer.epochs=2")
    assert trained.returncode == 0, trained.stderr
    evaluated = evaluate(tmp, small_prepared, "tiny_cnn-none")
    assert evaluated.returncode == 0, evaluated.stderr
    return Trained(tmp, "tiny_cnn-none", trained, evaluated)


def test_the_files_are_artifacts_of_the_run(exported):
    listed = {a.path: a.file_size for a in exported.client.list_artifacts(exported.run_id, "exported")}
    assert set(listed) == {"exported/model.onnx", "exported/model_int8.tflite"}
    recorded = exported.run_info["exported"]
    assert set(recorded) == {"onnx", "int8"}
    local = {}
    for name, entry in recorded.items():
        local[name] = Path(exported.client.download_artifacts(exported.run_id, entry["artifact"], str(exported.tmp)))
        assert file_sha256(local[name]) == entry["sha256"] and listed[entry["artifact"]] == entry["bytes"]
    assert "tiny_cnn-none: exported exported/model.onnx (" in exported.trained.stdout
    assert "tiny_cnn-none: exported exported/model_int8.tflite (" in exported.trained.stdout
    # the same model the run logged: ONNX Runtime on its own (not the project's runner) predicts Keras' classes
    import keras
    import onnxruntime

    model = keras.saving.load_model(exported.tmp / "models" / exported.variant / "model.keras")
    x = np.random.default_rng(0).random((50, 28, 28, 1), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(local["onnx"]))
    (got,) = session.run(None, {"images": x})
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)


def test_evaluate_scores_them_on_the_test_set(exported, small_prepared):
    written = exported.metrics()
    assert set(written) >= EXPORTED_KEYS
    assert written["onnx_agreement"] >= 0.999
    assert written["onnx_accuracy"] == pytest.approx(written["test_accuracy"], abs=0.001)
    for name in ("onnx", "int8"):
        assert 0.0 <= written[f"{name}_agreement"] <= 1.0 and 0.0 <= written[f"{name}_accuracy"] <= 1.0
        drop = 100 * (written["test_accuracy"] - written[f"{name}_accuracy"])
        assert written[f"{name}_accuracy_drop"] == pytest.approx(drop, abs=1e-9)
    assert written["int8_agreement"] >= 0.98 and abs(written["int8_accuracy_drop"]) <= 1.0
    # the int8 figures from an independent count: LiteRT's interpreter run image by image, no project code
    from ai_edge_litert.interpreter import Interpreter

    test = np.load(small_prepared / "test.npz")
    interpreter = Interpreter(model_path=str(exported.artifact_file("exported/model_int8.tflite")))
    interpreter.allocate_tensors()
    (given,), (answered,) = interpreter.get_input_details(), interpreter.get_output_details()
    scale, zero_point = given["quantization"]
    right = 0
    for image, label in zip(test["x"], test["y"]):
        quantized = np.clip(np.round(image / scale) + zero_point, -128, 127).astype(np.int8)
        interpreter.set_tensor(given["index"], quantized[None])
        interpreter.invoke()
        right += int(np.argmax(interpreter.get_tensor(answered["index"])[0]) == label)
    assert written["int8_accuracy"] == pytest.approx(right / len(test["y"]), abs=1e-12)
    # ... and the same figures in the training run
    logged = exported.client.get_run(exported.run_id).data.metrics
    assert {k: logged[k] for k in EXPORTED_KEYS} == pytest.approx({k: written[k] for k in EXPORTED_KEYS})
    assert "exported/model.onnx agrees with Keras on " in exported.evaluated.stdout


def test_export_formats_empty_turns_exports_off(tmp_path, small_prepared):
    overrides = ("model=mlp_32x32", "trainer.epochs=1", "export.formats=[]")
    trained = train(tmp_path, small_prepared, "mlp_32x32-none", *overrides)
    assert trained.returncode == 0, trained.stderr
    evaluated = evaluate(tmp_path, small_prepared, "mlp_32x32-none")
    assert evaluated.returncode == 0, evaluated.stderr
    run = Trained(tmp_path, "mlp_32x32-none", trained, evaluated)
    assert run.run_info["exported"] == {}
    assert run.client.list_artifacts(run.run_id, "exported") == []
    assert not EXPORTED_KEYS & set(run.metrics()) and "test_accuracy" in run.metrics()
    assert not EXPORTED_KEYS & set(run.client.get_run(run.run_id).data.metrics)
    assert "exported" not in trained.stdout + trained.stderr + evaluated.stdout + evaluated.stderr


def test_a_corrupt_exported_file_stops_evaluate_in_one_line_naming_it(exported, small_prepared):
    stored = exported.artifact_file("exported/model.onnx")
    good = stored.read_bytes()
    before = exported.metrics()
    stored.write_bytes(good[: len(good) // 2])  # truncated in the store
    try:
        result = evaluate(exported.tmp, small_prepared, exported.variant)
    finally:
        stored.write_bytes(good)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line == (
        f"error: exported/model.onnx of run {exported.run_id}: corrupt or replaced: its SHA-256 is not the one "
        f"train recorded in run.json; retrain with `dvc repro --force train@{exported.variant}`"
    )
    assert exported.metrics() == before  # nothing written


def test_a_converter_that_failed_in_train_is_reported_and_the_other_scored(exported, small_prepared, tmp_path):
    """run.json as train writes it when a converter raised (ml/converters.export_all records the error)."""
    model_dir = tmp_path / "model"
    shutil.copytree(exported.tmp / "models" / exported.variant, model_dir)
    run_info = json.loads((model_dir / "run.json").read_text())
    run_info["exported"]["int8"] = {"error": "ConverterError: op Foo is not supported"}
    (model_dir / "run.json").write_text(json.dumps(run_info))
    tmp = tmp_path / "out"
    result = run_module(
        "mnist_pipeline.evaluate",
        f"variant={exported.variant}",
        f"data_dir={small_prepared}",
        f"model_dir={model_dir}",
        f"metrics_file={tmp / 'metrics.json'}",
        f"plots_dir={tmp / 'plots'}",
        f"probabilities_file={tmp / 'p.npz'}",
        f"hydra.run.dir={tmp / 'h'}",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{exported.tmp / 'mlflow.db'}"},
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"warning: evaluate {exported.variant}: no int8 file to score: its export failed in train "
        "(ConverterError: op Foo is not supported)"
    ) in result.stdout
    written = json.loads((tmp / "metrics.json").read_text())
    assert {"onnx_agreement", "onnx_accuracy", "onnx_accuracy_drop"} <= set(written)
    assert not {k for k in written if k.startswith("int8_")}
