"""The prepared data as MLflow dataset inputs: what fills the runs table's Dataset column and the run
page's Datasets, and what `dataset.name = 'mnist-train'` filters on.

One input per split, named <dataset>-<split> (MLflow keeps one input per dataset and run, so the splits
need names of their own), its digest the prepared folder's hash (data_hash; MLflow stores 36 characters
of it), its source the split's .npz, its schema the arrays' (MLflow infers it), its context training,
validation or testing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import mlflow
import numpy as np
import sqlalchemy
from mlflow.data.numpy_dataset import from_numpy
from mlflow.entities import DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from mnist_pipeline.data.prepared import DatasetInfo
from mnist_pipeline.tracking.store import guarded

CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}
DIGEST_LENGTH = 36  # MLflow's datasets.digest column holds 36 characters

Splits = Mapping[str, tuple[np.ndarray, np.ndarray]]


def split_dataset(info: DatasetInfo, prepared_dir: Path, split: str, x: np.ndarray, y: np.ndarray):
    source = str((Path(prepared_dir) / f"{split}.npz").resolve())
    with warnings.catch_warnings():
        # a local path matches MLflow's two local sources (no scheme and file://), one class: not news
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
        return from_numpy(x, targets=y, source=source, name=f"{info.name}-{split}", digest=info.sha256[:DIGEST_LENGTH])


def _once_more_after_a_race(log) -> None:
    """MLflow's SQL store looks for the dataset row, then inserts it: two runs logging the same new dataset
    at once (two search workers) both insert, and the later one fails its unique constraint and rolls back.
    Logging again then finds the row the other writer committed."""
    try:
        log()
    except mlflow.exceptions.MlflowException as exc:
        if not isinstance(exc.__cause__, sqlalchemy.exc.IntegrityError):  # not another writer's row
            raise
        log()


@guarded("logging the datasets")
def log_splits(info: DatasetInfo, prepared_dir: Path, splits: Splits) -> None:
    """Log each split as an input of the active run."""
    for split, (x, y) in splits.items():
        dataset = split_dataset(info, prepared_dir, split, x, y)
        _once_more_after_a_race(lambda d=dataset, s=split: mlflow.log_input(d, context=CONTEXTS[s]))


@guarded("logging the datasets")
def log_splits_to_run(run_id: str, info: DatasetInfo, prepared_dir: Path, splits: Splits) -> None:
    """The same for an ended run (evaluate adds the test split to its training run without reopening it)."""
    inputs = [
        DatasetInput(
            split_dataset(info, prepared_dir, split, x, y)._to_mlflow_entity(),
            tags=[InputTag(MLFLOW_DATASET_CONTEXT, CONTEXTS[split])],
        )
        for split, (x, y) in splits.items()
    ]
    _once_more_after_a_race(lambda: MlflowClient().log_inputs(run_id, datasets=inputs))
