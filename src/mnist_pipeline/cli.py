"""The `mnist-pipeline` console script: `mnist-pipeline predict IMAGE [IMAGE ...]`.

Exit codes: 0 every file was predicted, 1 some file could not be read (the others are still predicted),
2 usage error or the model cannot be loaded. TensorFlow and MLflow are imported only once a command runs,
so `--help` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_MODEL = "models:/mnist-classifier@champion"
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


def _top(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 10:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 10, got {value!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-pipeline",
                                     description="Use the MNIST models trained by the pipeline.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict", help="classify digit images (PNG, JPEG or .npy)",
        description="Print the predicted digit of each image, one line per image. PNG/JPEG pictures of any "
                    "size or polarity are normalized like MNIST; .npy arrays must already be MNIST-like "
                    "((28, 28), (28, 28, 1) or a batch (n, 28, 28[, 1]); uint8 0..255 or floats in [0, 1]).",
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE", type=Path, help="a PNG/JPEG picture or an .npy array")
    predict.add_argument("--model", default=DEFAULT_MODEL, metavar="URI",
                         help="MLflow model URI (default: %(default)s)")
    predict.add_argument("--tracking-uri", metavar="URI",
                         help="MLflow store holding the model "
                              f"(default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})")
    predict.add_argument("--top", type=_top, default=3, metavar="K",
                         help="how many of the most likely digits to list (default: %(default)s)")
    predict.set_defaults(run=predict_command)
    return parser


def format_prediction(name: str, probs, top: int) -> str:
    """`<name>: 7 (p=0.9987)  top-3: 7 0.9987, 2 0.0008, 3 0.0002`"""
    ranked = sorted(range(len(probs)), key=lambda d: -probs[d])[:top]
    listed = ", ".join(f"{d} {probs[d]:.4f}" for d in ranked)
    return f"{name}: {ranked[0]} (p={probs[ranked[0]]:.4f})  top-{top}: {listed}"


def predict_command(args: argparse.Namespace) -> int:
    from mnist_pipeline.errors import PipelineError

    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    store = tracking_uri.removeprefix("sqlite:///") if tracking_uri.startswith("sqlite:///") else None
    if store is not None and not Path(store).is_file():  # SQLite would silently create an empty store here
        print(f"error: no MLflow store at {store}: run the pipeline first, or pass --tracking-uri "
              "(or set MLFLOW_TRACKING_URI)", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices are not for users
    from mnist_pipeline import images, tracking

    try:
        predict = tracking.load_predictor(args.model, tracking_uri)
    except (PipelineError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # Read every file first, then predict all images in one call: one model call is much faster than many.
    names, batches, failed = [], [], False
    for path in args.images:
        try:
            file_names, batch = images.load_named_images(path)
        except images.ImageError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            failed = True
            continue
        names += file_names
        batches.append(batch)
    if batches:
        import numpy as np

        with contextlib.redirect_stdout(io.StringIO()):  # Keras's progress bar would mix with the results
            probs = predict(np.concatenate(batches))
        for name, p in zip(names, probs.tolist()):
            print(format_prediction(name, p, args.top))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
