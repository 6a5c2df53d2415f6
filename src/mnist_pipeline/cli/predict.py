"""`mnist-pipeline predict IMAGE [IMAGE ...]`: classify pictures or .npy arrays with a logged model."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Sequence

from mnist_pipeline.cli.common import defaults, fail, open_store, registered_model, reported


def format_prediction(name: str, probs: Sequence[float], top: int, classes: Sequence[str]) -> str:
    """`<name>: 7 (p=0.9987)  top-3: 7 0.9987, 2 0.0008, 3 0.0002`, classes by name."""
    ranked = sorted(range(len(probs)), key=lambda d: -probs[d])[:top]
    listed = ", ".join(f"{classes[d]} {probs[d]:.4f}" for d in ranked)
    return f"{name}: {classes[ranked[0]]} (p={probs[ranked[0]]:.4f})  top-{len(ranked)}: {listed}"


def predict_command(args: argparse.Namespace) -> int:
    """0: every file was predicted; 1: some file could not be read (the others are still predicted);
    2: the model cannot be loaded."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices are not for users
    with reported(code=2, also=(OSError,)):
        open_store(args)
        from mnist_pipeline.data import pictures
        from mnist_pipeline.tracking import logged_models

        model_uri = args.model or f"models:/{registered_model(args.dataset)}@{defaults()['alias']}"
        metadata = logged_models.model_metadata(model_uri)
        predict = logged_models.load_predictor(model_uri)

    # Read every file first, then predict all images in one call: one model call is much faster than many.
    names, batches, failed = [], [], False
    for path in args.images:
        try:
            file_names, batch = pictures.load_named_images(path, pictures.Preprocess.of_model(metadata))
        except pictures.ImageError as exc:
            fail(str(exc))
            failed = True
            continue
        names += file_names
        batches.append(batch)
    if batches:
        import numpy as np

        with contextlib.redirect_stdout(io.StringIO()):  # Keras's progress bar would mix with the results
            probs = predict(np.concatenate(batches))
        classes = metadata.get("classes") or [str(i) for i in range(probs.shape[1])]
        for name, p in zip(names, probs.tolist()):
            print(format_prediction(name, p, args.top, classes))
    sys.stdout.flush()
    return 1 if failed else 0
