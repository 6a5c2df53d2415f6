"""The files the evaluate stage writes for the report: a JSON reader that names the missing stage, and each
variant's validation and test probabilities with their labels (probabilities/<variant>.npz)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mnist_pipeline.core.errors import PipelineError


def read_json(path: Path, hint: str) -> dict:
    """A JSON file another stage wrote; a missing one is a PipelineError that says what makes it."""
    if not path.is_file():
        raise PipelineError(f"{path} not found: {hint}")
    return json.loads(path.read_text())


def save_probabilities(path: Path, **splits: tuple[np.ndarray, np.ndarray]) -> None:
    """<split>_probs (n, classes) float32 and <split>_labels per split, in one .npz."""
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a staging name
        arrays = {
            f"{name}_{part}": array
            for name, (probs, labels) in splits.items()
            for part, array in (("probs", probs.astype(np.float32)), ("labels", labels))
        }
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub takes the keywords for allow_pickle


def save_skipped_probabilities(path: Path, reason: str) -> None:
    """A skipped variant's probabilities file: no probabilities, the reason (the file is a DVC output)."""
    with open(path, "wb") as f:
        np.savez(f, skipped=np.array(reason))


def read_probabilities(path: Path, hint: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise PipelineError(f"{path} not found: {hint}")
    with np.load(path, allow_pickle=False) as data:
        return dict(data)
