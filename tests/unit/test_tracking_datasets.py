"""The prepared splits as MLflow dataset inputs: name, digest, source, schema and context, into a running
run and into an ended one, and filterable by dataset."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mnist_pipeline.data.prepared import DatasetInfo
from mnist_pipeline.tracking import datasets, store

INFO = DatasetInfo("fashion_mnist", tuple("abcdefghij"), (28, 28, 1), {"box": 28, "centre": "box"}, "f" * 8 + "0" * 56)


@pytest.fixture
def uri(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    store.setup({"tracking_uri": uri, "experiment": "datasets-test"})
    yield uri
    mlflow.set_tracking_uri(None)


def split(n: int):
    return np.zeros((n, 28, 28, 1), np.float32), np.arange(n, dtype=np.uint8) % 10


def test_splits_are_dataset_inputs_of_the_run_and_runs_filter_by_them(uri, tmp_path):
    with mlflow.start_run(run_name="trained") as run:
        datasets.log_splits(INFO, tmp_path / "prepared", {"train": split(12), "val": split(3)})
    client = MlflowClient()
    datasets.log_splits_to_run(run.info.run_id, INFO, tmp_path / "prepared", {"test": split(5)})

    done = client.get_run(run.info.run_id)
    assert done.info.status == "FINISHED"  # the ended run is not reopened
    inputs = {i.dataset.name: i for i in done.inputs.dataset_inputs}
    assert sorted(inputs) == ["fashion_mnist-test", "fashion_mnist-train", "fashion_mnist-val"]
    for name, context, count in (("train", "training", 12), ("val", "validation", 3), ("test", "testing", 5)):
        logged = inputs[f"fashion_mnist-{name}"]
        assert {t.key: t.value for t in logged.tags} == {"mlflow.data.context": context}
        assert logged.dataset.digest == INFO.sha256[:36]
        assert json.loads(logged.dataset.source)["uri"] == str((tmp_path / "prepared" / f"{name}.npz").resolve())
        schema = json.loads(logged.dataset.schema)["mlflow_tensorspec"]
        assert json.loads(schema["features"])[0]["tensor-spec"] == {"dtype": "float32", "shape": [-1, 28, 28, 1]}
        assert json.loads(logged.dataset.profile)["features_shape"] == [count, 28, 28, 1]

    with mlflow.start_run(run_name="other"):
        pass
    experiment = done.info.experiment_id
    found = client.search_runs([experiment], "dataset.name = 'fashion_mnist-train' and dataset.context = 'training'")
    assert [r.info.run_name for r in found] == ["trained"]
    assert len(client.search_runs([experiment], f"dataset.digest = '{INFO.sha256[:36]}'")) == 1
