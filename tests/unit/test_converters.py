"""The exported files (ml/converters.py), converted for real from a small Keras model in this process: ONNX predicts
Keras' classes, the LiteRT file is int8 throughout, a failing converter is recorded while the others still export,
and a file that cannot be run is refused in one line naming it. Also the scores evaluate records
(evaluation/metrics.py) and the export settings train checks."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.core.errors import ConfigError
from mnist_pipeline.evaluation import metrics
from mnist_pipeline.ml import converters, models
from tests.helpers import compose

RNG = np.random.default_rng(3)
IMAGES = RNG.random((64, 12, 12, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small CNN (12x12x1 images, 3 classes) with random weights, converted to both formats once."""
    import keras

    keras.utils.set_random_seed(5)
    model = models.convnet(
        "small",
        [{"filters": 4, "kernel": 3, "pool": True}, {"filters": 8, "kernel": 3, "pool": True}],
        dense=[16],
        padding="same",
        input_shape=(12, 12, 1),
        num_classes=3,
    )
    folder = tmp_path_factory.mktemp("exported")
    results = converters.export_all(model, ["onnx", "int8"], folder, converters.representative_images(IMAGES, 48))
    return model, {r.name: r for r in results}


def test_both_formats_are_written_with_their_file_names(exported):
    _, results = exported
    assert [(r.name, r.path.name, r.error) for r in results.values()] == [
        ("onnx", "model.onnx", None),
        ("int8", "model_int8.tflite", None),
    ]
    assert all(r.path.stat().st_size > 1000 and r.seconds > 0 for r in results.values())


def test_onnx_predicts_what_keras_predicts(exported):
    model, results = exported
    runner = converters.OnnxModel(results["onnx"].path)
    assert runner.input_name == "images" and runner.input_shape == (12, 12, 1)
    expected = model.predict(IMAGES, verbose=0)
    got = runner.predict(IMAGES)
    assert got.dtype == np.float32 and got.shape == (64, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(got, axis=1), np.argmax(expected, axis=1))
    np.testing.assert_allclose(runner.predict(IMAGES[:1]), expected[:1], atol=1e-5)  # the batch axis is dynamic


def test_the_litert_file_is_int8_throughout(exported):
    from ai_edge_litert.interpreter import Interpreter

    _, results = exported
    interpreter = Interpreter(model_path=str(results["int8"].path))
    (given,), (answered,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert given["dtype"] == np.int8 and answered["dtype"] == np.int8
    assert list(given["shape_signature"]) == [-1, 12, 12, 1]
    scale, zero_point = given["quantization"]
    assert zero_point == -128 and scale == pytest.approx(1 / 255, rel=0.02)  # calibrated on images in [0, 1]
    tensors = interpreter.get_tensor_details()
    # full-integer: no float tensor anywhere; weights int8, biases (and shapes) int32
    assert {np.dtype(t["dtype"]).name for t in tensors} == {"int8", "int32"}
    ends = (given["index"], answered["index"])
    weights = [t for t in tensors if len(t["shape"]) in (2, 4) and t["index"] not in ends]
    assert weights and all(t["dtype"] == np.int8 for t in weights)


def test_the_int8_runner_quantizes_in_and_dequantizes_out(exported):
    model, results = exported
    runner = converters.LiteRTInt8Model(results["int8"].path, threads=1)
    got, expected = runner.predict(IMAGES), model.predict(IMAGES, verbose=0)
    assert got.dtype == np.float32 and got.shape == (64, 3)
    np.testing.assert_allclose(got, expected, atol=0.05)  # int8 output steps of 1/256
    assert np.mean(np.argmax(got, axis=1) == np.argmax(expected, axis=1)) >= 0.9
    np.testing.assert_array_equal(runner.predict(IMAGES[:5]), got[:5])  # resized to 5 and back gives the same
    with pytest.raises(ValueError, match=r"model_int8\.tflite: images must have the shape \(n, 12, 12, 1\)"):
        runner.predict(IMAGES[:, :10])


def test_a_failing_converter_is_recorded_and_the_others_still_export(exported, tmp_path, monkeypatch):
    model, _ = exported

    def broken(*args, **kwargs):
        raise RuntimeError("tf2onnx cannot convert\nop Foo")

    monkeypatch.setattr(converters, "to_onnx", broken)
    onnx, int8 = converters.export_all(model, ["onnx", "int8"], tmp_path, IMAGES[:8])
    assert (onnx.name, onnx.path, onnx.error) == ("onnx", None, "RuntimeError: tf2onnx cannot convert op Foo")
    assert int8.error is None and int8.path == tmp_path / "model_int8.tflite" and int8.path.is_file()
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
@pytest.mark.parametrize(("name", "runtime"), [("onnx", "ONNX Runtime"), ("int8", "LiteRT")])
def test_a_file_that_cannot_be_run_is_one_line_naming_it(exported, tmp_path, damage, name, runtime):
    _, results = exported
    good = results[name].path.read_bytes()
    path = tmp_path / results[name].path.name
    contents = {"truncated": good[: len(good) // 2], "garbage": b"not a model " * 40, "empty": b""}
    if damage in contents:
        path.write_bytes(contents[damage])
    with pytest.raises(converters.ExportedModelError) as raised:
        converters.load(name, path, label=f"exported/{path.name} of run r1")
    message = str(raised.value)
    assert message.startswith(f"exported/{path.name} of run r1: cannot run it with {runtime} (")
    assert "\n" not in message and len(message) < 400


def test_a_float_litert_file_is_not_taken_for_int8(exported, tmp_path):
    model, _ = exported
    path = tmp_path / "model_int8.tflite"
    model.export(str(path), format="litert", verbose=False, input_signature=converters.input_spec(model))
    with pytest.raises(converters.ExportedModelError, match=r"model_int8\.tflite: not an int8 model \(input float32"):
        converters.LiteRTInt8Model(path)


def test_the_onnx_conversion_leaves_numpy_as_it_was(exported, tmp_path):
    model, _ = exported
    converters.to_onnx(model, tmp_path / "again.onnx")  # Keras sets np.object on the way
    assert "object" not in vars(np)


def test_representative_images_are_evenly_spaced_through_the_split():
    x = np.arange(1000, dtype=np.float32).reshape(1000, 1, 1, 1)
    chosen = converters.representative_images(x, 5)
    assert chosen.ravel().tolist() == [0, 250, 500, 749, 999]
    assert len(converters.representative_images(x[:3], 300)) == 3  # never more than there are
    np.testing.assert_array_equal(converters.representative_images(x, 300), converters.representative_images(x, 300))


def test_exported_scores_compare_with_the_reference_model():
    y = np.array([0, 1, 2, 0, 1])
    reference = np.eye(3)[[0, 1, 2, 0, 2]]  # 4 of 5 right
    exported = np.eye(3)[[0, 1, 1, 0, 2]]  # 3 of 5 right; differs from the reference on one image
    assert metrics.exported_scores("int8", y, reference, exported) == pytest.approx(
        {"int8_agreement": 0.8, "int8_accuracy": 0.6, "int8_accuracy_drop": 20.0}
    )


def test_missed_targets_are_named_and_met_ones_are_not():
    met = {"onnx_agreement": 0.999, "int8_accuracy_drop": 0.2, "int8_agreement": 0.5}
    assert metrics.missed_export_targets(met) == []
    assert metrics.missed_export_targets({"onnx_agreement": 0.998, "int8_accuracy_drop": 0.35}) == [
        "onnx_agreement 0.998 (target >= 0.999)",
        "int8_accuracy_drop 0.35 (target <= 0.2)",
    ]
    assert metrics.missed_export_targets({}) == []  # nothing exported: nothing missed


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("export.formats=[onnx,tflite]", r"^export\.formats: 'tflite' is not one of onnx, int8$"),
        ("export.formats=[onnx,onnx]", r"^export\.formats: expected a list without repeats"),
        ("export.formats=onnx", r"^export\.formats: expected a list without repeats"),
        ("export.representative_images=0", r"^export\.representative_images: must be >= 1, got 0$"),
    ],
)
def test_train_checks_the_export_settings(override, message):
    from mnist_pipeline import train

    with pytest.raises(ConfigError, match=message):
        train.check_settings(compose("train", override))


def test_the_default_exports_both_and_an_empty_list_is_accepted():
    from mnist_pipeline import train

    cfg = compose("train")
    assert list(cfg.export.formats) == ["onnx", "int8"] and cfg.export.representative_images == 300
    train.check_settings(compose("train", "export.formats=[]"))
