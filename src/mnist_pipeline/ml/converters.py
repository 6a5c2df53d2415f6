"""The trained model as files other runtimes run, and the runners that score them.

    onnx  model.onnx         Keras' `model.export(format="onnx")` (tf2onnx under TensorFlow): float32 images in,
                             float32 probabilities out; run by ONNX Runtime
    int8  model_int8.tflite  Keras' `model.export(format="litert")` with full-integer post-training quantization:
                             weights, activations, input and output int8, the ranges calibrated on representative
                             training images; run by LiteRT's interpreter (ai-edge-litert)

The train stage converts the exported copy (ml/export.py) right after logging it and logs the files as run
artifacts; the evaluate stage runs them on the test set through OnnxModel and LiteRTInt8Model, which take and
return what the Keras model does (float32 images in [0, 1] -> probabilities), so their predictions compare
directly. A converter that fails is recorded, not fatal: the other formats are still exported.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.core.errors import PipelineError

log = logging.getLogger(__name__)

FORMATS = {"onnx": "model.onnx", "int8": "model_int8.tflite"}  # format -> file name
CHUNK = 1000  # images per call: bounded memory for any number of images (10,000 at once would need ~1 GB)


class ExportedModelError(PipelineError):
    """An exported file that cannot be run (missing, truncated, not the format its name says); one line that
    names the file."""


@dataclass(frozen=True)
class Exported:
    """One format's outcome: the file written, or why the converter failed (one line)."""

    name: str
    path: Path | None
    seconds: float
    error: str | None = None


def representative_images(x_train: np.ndarray, count: int) -> np.ndarray:
    """`count` training images evenly spaced through the split (every class appears; no randomness, so the
    same data calibrates the same quantization)."""
    count = min(count, len(x_train))
    return x_train[np.linspace(0, len(x_train) - 1, count).round().astype(int)]


@contextlib.contextmanager
def _quiet_conversion() -> Iterator[None]:
    """A conversion without its INFO logging (tf2onnx logs every graph rewrite, TensorFlow the SavedModel the
    LiteRT converter reads), and NumPy as it was: Keras patches tf2onnx for NumPy 2 by setting `np.object` for
    the whole process, which is removed again (tf2onnx 1.17 no longer reads it)."""
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "tensorflow")]
    levels = [logger.level for logger in loggers]
    had_object = "object" in vars(np)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
            if not had_object and "object" in vars(np):
                delattr(np, "object")


def input_spec(model: Any) -> list:
    """The model's input with a dynamic batch axis, named `images` in the exported files (given explicitly:
    Keras infers it only for a model that has been called, which a freshly built export copy has not)."""
    import keras

    return [keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32", name="images")]


def to_onnx(model: Any, path: Path) -> None:
    """The model as ONNX, with a dynamic batch axis (Keras' own export, which converts with tf2onnx)."""
    with _quiet_conversion():
        model.export(str(path), format="onnx", verbose=False, input_signature=input_spec(model))


def to_int8_litert(model: Any, path: Path, images: np.ndarray) -> None:
    """The model as a LiteRT flatbuffer with full-integer quantization (int8 weights, activations, input and
    output; TFLITE_BUILTINS_INT8 only, so no float fallback), activation ranges calibrated on `images`."""
    import tensorflow as tf

    def representative() -> Iterator[list[np.ndarray]]:
        for image in images:
            yield [image[None].astype(np.float32)]

    with _quiet_conversion():
        model.export(
            str(path),
            format="litert",
            verbose=False,
            input_signature=input_spec(model),
            optimizations=[tf.lite.Optimize.DEFAULT],
            representative_dataset=representative,
            target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
            inference_input_type=tf.int8,
            inference_output_type=tf.int8,
        )


def export_all(model: Any, formats: Sequence[str], folder: Path, images: np.ndarray) -> list[Exported]:
    """Each of `formats` (FORMATS' keys) written into `folder`; a converter that raises is recorded with its
    error (its type and message in one line) and the next format is still tried."""
    results = []
    for name in formats:
        path = Path(folder) / FORMATS[name]
        start = time.perf_counter()
        try:
            if name == "onnx":
                to_onnx(model, path)
            else:
                to_int8_litert(model, path, images)
        except Exception as exc:  # noqa: BLE001 - any converter failure is recorded; the training stands
            error = " ".join(f"{type(exc).__name__}: {exc}".split())
            log.warning("export %s failed: %s", name, error, exc_info=True)
            results.append(Exported(name, None, time.perf_counter() - start, error))
            continue
        results.append(Exported(name, path, time.perf_counter() - start))
    return results


def _check_images(x: np.ndarray, shape: tuple[int, ...], path: Path) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:] != shape:
        raise ValueError(f"{path.name}: images must have the shape (n, {', '.join(map(str, shape))}), got {x.shape}")
    return x


class OnnxModel:
    """An ONNX file run by ONNX Runtime on the CPU: `predict(images) -> probabilities`, as the Keras model."""

    def __init__(self, path: Path, threads: int = 0, label: str | None = None) -> None:
        """`label`: how errors name the file (default its path)."""
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        errors = tuple(v for v in vars(ort_errors).values() if isinstance(v, type) and issubclass(v, Exception))
        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per physical core
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except errors as exc:
            reason = " ".join(str(exc).split()).replace(str(path), self.path.name)
            raise ExportedModelError(f"{label or path}: cannot run it with ONNX Runtime ({reason[:300]})") from None
        (first,) = self.session.get_inputs()
        self.input_name = first.name
        self.input_shape = tuple(int(d) for d in first.shape[1:])

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = _check_images(images, self.input_shape, self.path)
        return np.concatenate(
            [self.session.run(None, {self.input_name: x[i : i + CHUNK]})[0] for i in range(0, max(len(x), 1), CHUNK)]
        )


class LiteRTInt8Model:
    """An int8 LiteRT file run by LiteRT's interpreter: float32 images are quantized with the input tensor's scale
    and zero point, the int8 outputs dequantized, so `predict(images) -> probabilities` as the Keras model."""

    def __init__(self, path: Path, threads: int | None = None, label: str | None = None) -> None:
        """`threads`: None for LiteRT's default; `label`: how errors name the file (default its path)."""
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            reason = " ".join(str(exc).split()).replace(str(path), self.path.name)
            raise ExportedModelError(f"{label or path}: cannot run it with LiteRT ({reason[:300]})") from None
        self.input, self.output = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        if self.input["dtype"] != np.int8 or self.output["dtype"] != np.int8:
            raise ExportedModelError(
                f"{label or path}: not an int8 model (input {np.dtype(self.input['dtype']).name}, "
                f"output {np.dtype(self.output['dtype']).name})"
            )
        self.input_shape = tuple(int(d) for d in self.input["shape"][1:])
        self._batch = int(self.input["shape"][0])

    def _run(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._batch:  # the batch axis is dynamic (shape_signature -1): resized on change only
            self.interpreter.resize_tensor_input(self.input["index"], [len(x), *self.input_shape], strict=True)
            self.interpreter.allocate_tensors()
            self._batch = len(x)
        scale, zero = self.input["quantization"]
        self.interpreter.set_tensor(self.input["index"], np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8))
        self.interpreter.invoke()
        scale, zero = self.output["quantization"]
        return (self.interpreter.get_tensor(self.output["index"]).astype(np.float32) - zero) * scale

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = _check_images(images, self.input_shape, self.path)
        return np.concatenate([self._run(x[i : i + CHUNK]) for i in range(0, max(len(x), 1), CHUNK)])


def load(name: str, path: Path, label: str | None = None) -> OnnxModel | LiteRTInt8Model:
    """The runner of format `name` (FORMATS' keys) for the file at `path` (named `label` in errors)."""
    return OnnxModel(path, label=label) if name == "onnx" else LiteRTInt8Model(path, label=label)
