"""Exported models: one trained model through Keras `predict`, the compiled path, ONNX Runtime and int8 LiteRT.

    python benchmarks/exported_models.py                                   # models/cnn_dnn-none/model.keras
    python benchmarks/exported_models.py --model outputs/train/<time>/model/model.keras --data data/prepared

The model is a `.keras` file the train stage wrote (the float32 copy it logs and serves). In one process, this
script converts it as the train stage does (ml/converters.py: ONNX, and int8 LiteRT calibrated on
`--representative` training images; the conversion seconds are reported, the cost each train stage pays), then
measures each way of predicting:

    Keras predict   model.predict(x, verbose=0)              the .keras file
    compiled        ml/compiled.CompiledModel(model).predict  the same file, one traced tf.function (what the
                                                             logged model's pyfunc serves)
    ONNX Runtime    ml/converters.OnnxModel                    model.onnx, float32, CPU provider
    int8 LiteRT     ml/converters.LiteRTInt8Model              model_int8.tflite; quantizes the float input
                                                             and dequantizes the output inside the timing

For each: the file's size, accuracy on the whole test split (and the fraction of test images whose class is
Keras' own), and the median latency of one call with 1 image and with 32 images (the same test images each
time). Latencies are taken in rounds that visit every runtime in turn, so this noisy machine's drift falls on
all of them alike; each runtime is warmed up first. Every runtime uses its own default threads (TensorFlow and
ONNX Runtime: every core; LiteRT: --litert-threads, default every core).

Writes benchmarks/exported_models.json and the "exported models" section of benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import report_md  # noqa: E402 - benchmarks/ is a folder of scripts, not a package

RUNTIMES = ("Keras predict", "compiled", "ONNX Runtime", "int8 LiteRT")
BATCHES = (1, 32)


def convert(model, x_train, representative: int, folder: Path) -> dict:
    """The train stage's conversions (ml/converters.export_all), each timed; raises if one fails."""
    from mnist_pipeline.ml import converters

    images = converters.representative_images(x_train, representative)
    done = {}
    for result in converters.export_all(model, list(converters.FORMATS), folder, images):
        if result.path is None:
            raise SystemExit(f"exported_models.py: the {result.name} converter failed: {result.error}")
        done[result.name] = {"path": result.path, "seconds": result.seconds}
    return done


def predictors(model, model_file: Path, files: dict, litert_threads: int) -> dict:
    """Per runtime: (predict function, the file it runs)."""
    from mnist_pipeline.ml.compiled import CompiledModel
    from mnist_pipeline.ml.converters import LiteRTInt8Model, OnnxModel

    compiled = CompiledModel(model)
    onnx = OnnxModel(files["onnx"]["path"])
    int8 = LiteRTInt8Model(files["int8"]["path"], threads=litert_threads)
    return {
        "Keras predict": (lambda x: model.predict(x, verbose=0), model_file),
        "compiled": (compiled.predict, model_file),
        "ONNX Runtime": (onnx.predict, files["onnx"]["path"]),
        "int8 LiteRT": (int8.predict, files["int8"]["path"]),
    }


def latencies(runs: dict, x, rounds: int, calls: int) -> dict:
    """Seconds of every timed call, per runtime and batch size: `rounds` rounds, each runtime in turn making
    `calls` calls per batch size, after 3 warm-up calls each."""
    import numpy as np

    batches = {n: np.ascontiguousarray(x[:n]) for n in BATCHES}
    for predict, _ in runs.values():
        for batch in batches.values():
            for _ in range(3):
                predict(batch)
    seconds: dict[str, dict[int, list[float]]] = {name: {n: [] for n in BATCHES} for name in runs}
    for _ in range(rounds):
        for name, (predict, _) in runs.items():
            for n, batch in batches.items():
                for _ in range(calls):
                    start = time.perf_counter()
                    predict(batch)
                    seconds[name][n].append(time.perf_counter() - start)
    return seconds


def measure(args) -> dict:
    import numpy as np

    from mnist_pipeline.core.model_files import load_keras
    from mnist_pipeline.data.prepared import load_split

    model = load_keras(args.model)
    x_train, _ = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "test")
    with tempfile.TemporaryDirectory() as tmp:
        files = convert(model, x_train, args.representative, Path(tmp))
        runs = predictors(model, args.model, files, args.litert_threads)
        rows = {}
        reference = None
        for name, (predict, path) in runs.items():
            classes = np.argmax(predict(x_test), axis=1)
            reference = classes if reference is None else reference  # Keras predict comes first
            rows[name] = {
                "file": Path(path).name,
                "bytes": Path(path).stat().st_size,
                "test_accuracy": float(np.mean(classes == y_test)),
                "agreement_with_keras": float(np.mean(classes == reference)),
            }
        timed = latencies(runs, x_test, args.rounds, args.calls)
    for name, row in rows.items():
        for n in BATCHES:
            row[f"median_ms_{n}"] = 1000 * statistics.median(timed[name][n])
            row[f"p90_ms_{n}"] = 1000 * float(np.percentile(timed[name][n], 90))
    return {
        "model": str(args.model),
        "test_images": len(y_test),
        "representative_images": args.representative,
        "conversion_seconds": {name: done["seconds"] for name, done in files.items()},
        "litert_threads": args.litert_threads,
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        "machine": report_md.machine(),
        "rows": rows,
    }


def markdown(result: dict, command: str) -> list[str]:
    rows = result["rows"]
    timed = result["rounds"] * result["calls_per_round"]
    lines = [
        f"`{command}`: `{result['model']}` on all {result['test_images']:,} test images; latency is the median of "
        f"{timed} calls per batch size (p90 in the JSON), in the same process, rounds alternating the runtimes.",
        "",
        "| runtime | file | size | test accuracy | same class as Keras | 1 image | 32 images |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in RUNTIMES:
        row = rows[name]
        lines.append(
            f"| {name} | `{row['file']}` | {row['bytes'] / 1024:,.0f} KiB | {row['test_accuracy']:.2%} "
            f"| {row['agreement_with_keras']:.2%} | {row['median_ms_1']:.2f} ms | {row['median_ms_32']:.2f} ms |"
        )
    seconds = result["conversion_seconds"]
    lines += [
        "",
        f"Converting took {seconds['onnx']:.1f} s (ONNX) and {seconds['int8']:.1f} s (int8, "
        f"{result['representative_images']} representative images) in this process: what each train stage "
        f"adds. LiteRT ran with {result['litert_threads']} threads.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    from mnist_pipeline.ml.runtime import cores

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "cnn_dnn-none" / "model.keras")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "prepared", help="the prepared data")
    parser.add_argument("--representative", type=int, default=300, help="int8 calibration images (export.*)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=40, help="timed calls per runtime, batch size and round")
    parser.add_argument("--litert-threads", type=int, default=cores())
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "exported_models.json")
    parser.add_argument("--no-results-md", action="store_true", help="write the JSON only")
    args = parser.parse_args(argv)
    result = measure(args)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    command = "python benchmarks/exported_models.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = markdown(result, command.strip())
    if args.no_results_md:
        print("\n".join(lines))
    else:
        report_md.publish("exported models", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
