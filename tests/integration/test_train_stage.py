"""The train stage as users run it (subprocess Hydra app), tracked in a temporary SQLite MLflow store."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_pipeline.tracking import logged_models
from tests.helpers import REPO, UNTIL_STOPPED, client_for, compose, run_module, store_env, train_args

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds")
NO_EXPORTS = "export.formats=[]"  # not about the exported files (test_exports.py): no time spent converting
FAST = ("model=mlp_32x32", "trainer.batch_size=64", NO_EXPORTS)
# Every param the `trained` run below logs, as MLflow stores it (strings: JSON for lists and booleans): the
# resolved config of `model=shallow_cnn augment=standard trainer.epochs=2 optimizer.lr=3e-3` with the
# defaults of conf/ (trainer.seed from params.yaml) and every path of conf/paths/default.yaml. data_dir and
# output_dir are the test's own folders. A key added to or dropped from the config changes this on purpose.
TRAINED_PARAMS = {
    "variant": "shallow_cnn-standard",
    "model._target_": "mnist_pipeline.ml.models.convnet",
    "model.name": "shallow_cnn",
    "model.conv.0.filters": "32",
    "model.conv.0.kernel": "3",
    "model.conv.0.pool": "true",
    "model.conv.1.filters": "64",
    "model.conv.1.kernel": "3",
    "model.conv.1.pool": "true",
    "model.conv.2.filters": "128",
    "model.conv.2.kernel": "3",
    "model.conv.2.pool": "false",
    "model.dense": "[64]",
    "model.padding": "valid",
    "model.input_norm": "none",
    "optimizer.name": "adam",
    "optimizer.lr": "0.003",
    "optimizer.schedule": "cosine",
    "optimizer.warmup_fraction": "0.05",
    "optimizer.ema_momentum": "0.0",
    "augment.name": "standard",
    "augment.rotation": "15.0",
    "augment.width_shift": "0.2",
    "augment.height_shift": "0.2",
    "augment.shear": "0.2",
    "augment.zoom": "0.2",
    "trainer.epochs": "2",
    "trainer.batch_size": "256",
    "trainer.shuffle_buffer": "0",
    "trainer.seed": "42",
    "trainer.deterministic": "false",
    "trainer.precision": "auto",
    "trainer.label_smoothing": "0.0",
    "trainer.steps_per_execution": "1",
    "trainer.threads.intra_op": "0",
    "trainer.threads.inter_op": "0",
    "trainer.auto.images": "150000",  # logged, unused: this run's epochs are a number
    "trainer.auto.max_epochs": "100",
    "trainer.auto.min_steps_per_epoch": "30",
    "trainer.auto.min_batch": "32",
    "trainer.snapshot_seconds": "10",
    "trainer.early_stopping.enabled": "false",
    "trainer.early_stopping.patience": "3",
    "trainer.early_stopping.min_delta": "0.0",
    "export.formats": '["onnx", "int8"]',
    "export.representative_images": "300",
    "tracking.tracking_uri": "sqlite:///mlruns/mlflow.db",  # the config's; MLFLOW_TRACKING_URI won at run time
    "tracking.experiment": "mnist",
    "paths.datasets": "datasets",
    "paths.raw": "data/raw",
    "paths.prepared": "data/prepared",
    "paths.models": "models",
    "paths.metrics": "metrics",
    "paths.probabilities": "probabilities",
    "paths.plots": "plots",
    "paths.reports": "reports",
}


def all_runs(tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"
    if not db.exists():
        return []
    client = client_for(tmp_path)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_prepared):
    """One real 2-epoch training run of shallow_cnn with augmentation."""
    tmp = tmp_path_factory.mktemp("train")
    result = run_module(
        "mnist_pipeline.train",
        *train_args(
            tmp, small_prepared, "model=shallow_cnn", "augment=standard", "trainer.epochs=2", "optimizer.lr=3e-3"
        ),
        env=store_env(tmp),
    )
    assert result.returncode == 0, result.stderr
    run_info = json.loads((tmp / "out" / "run.json").read_text())
    return tmp, result, run_info, client_for(tmp).get_run(run_info["run_id"])


def test_run_finished_with_name_params_and_tags(trained, small_prepared):
    tmp, _, _, run = trained
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "shallow_cnn-standard"
    # The whole resolved config, flattened: every key present, nothing else.
    assert run.data.params == {**TRAINED_PARAMS, "data_dir": str(small_prepared), "output_dir": str(tmp / "out")}
    # ... and the same config, nested and resolved, as the config.yaml artifact.
    config = yaml.safe_load(
        Path(client_for(tmp).download_artifacts(run.info.run_id, "config.yaml", str(tmp))).read_text()
    )
    assert config["model"]["conv"][1] == {"filters": 64, "kernel": 3, "pool": True}
    assert config["trainer"]["epochs"] == 2 and config["data_dir"] == str(small_prepared)
    assert config["paths"] == {
        "datasets": "datasets",
        "raw": "data/raw",
        "prepared": "data/prepared",
        "models": "models",
        "metrics": "metrics",
        "probabilities": "probabilities",
        "plots": "plots",
        "reports": "reports",
    }
    tags = run.data.tags
    assert len(tags["git.commit"]) == 40 and tags["git.dirty"] in ("true", "false")
    assert len(tags["data.sha256"]) == 64
    assert tags["tensorflow.version"] == "2.21.0" and tags["keras.version"] == "3.15.1"


def test_epoch_metrics_have_one_step_per_epoch(trained):
    tmp, _, run_info, run = trained
    client = client_for(tmp)
    for key in EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == [0, 1], key
    # The default cosine schedule, read at each epoch's end: halfway (1.5e-3), then 0 after the last step.
    lr = sorted(client.get_metric_history(run.info.run_id, "learning_rate"), key=lambda m: m.step)
    assert run.data.params["optimizer.schedule"] == "cosine"
    assert [m.value for m in lr] == pytest.approx([1.5e-3, 0.0], abs=1e-7)
    saved = json.loads((tmp / "out" / "history.json").read_text())
    assert saved["epochs_run"] == 2 and saved["params"] == 167_114
    assert saved["history"]["val_loss"] == [
        m.value for m in sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)
    ]


def test_artifacts_and_outputs_exist(trained):
    tmp, _, _, run = trained
    names = {a.path for a in client_for(tmp).list_artifacts(run.info.run_id)}
    assert {
        "config.yaml",
        "overrides.txt",
        "model_summary.txt",
        "training_curves.png",
        "augmented_samples.png",
    } <= names
    assert sorted(p.name for p in (tmp / "out").iterdir()) == [
        "augmented_samples.png",
        "history.json",
        "model.keras",
        "run.json",
        "training_curves.png",
    ]
    overrides = client_for(tmp).download_artifacts(run.info.run_id, "overrides.txt", str(tmp))
    assert "augment=standard" in Path(overrides).read_text()


def test_logged_model_loads_and_predicts(trained, small_prepared, monkeypatch):
    tmp, _, run_info, _ = trained
    import mlflow

    # MLFLOW_TRACKING_URI alone (no mlflow.set_tracking_uri: it would stay set for every later test)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_env(tmp)["MLFLOW_TRACKING_URI"])
    model = logged_models.load_keras_model(run_info["model_uri"])
    x = np.load(small_prepared / "test.npz")["x"][:7]
    probs = model.predict(x, verbose=0)
    assert probs.shape == (7, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    info = mlflow.models.get_model_info(run_info["model_uri"])
    assert info.signature.inputs.inputs[0].shape == (-1, 28, 28, 1)
    assert info.signature.outputs.inputs[0].shape == (-1, 10)
    assert info.saved_input_example_info["type"] == "ndarray"


def test_first_test_prediction_is_printed(trained):
    _, result, _, _ = trained
    assert "first test image: label 7, predicted " in result.stdout
    assert "probabilities: 0:" in result.stdout and " 9:" in result.stdout


def _metrics_of(tmp_path, data_dir, seed):
    out = tmp_path / f"seed{seed}-{time.monotonic_ns()}"
    result = run_module(
        "mnist_pipeline.train",
        *train_args(
            out,
            data_dir,
            *FAST,
            "augment=standard",
            "trainer.epochs=1",
            "trainer.deterministic=true",
            f"trainer.seed={seed}",
        ),
        env=store_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    return json.loads((out / "out" / "history.json").read_text())["history"]


def test_same_seed_is_identical_other_seed_differs(tmp_path, small_prepared):
    first = _metrics_of(tmp_path, small_prepared, seed=1)
    again = _metrics_of(tmp_path, small_prepared, seed=1)
    other = _metrics_of(tmp_path, small_prepared, seed=2)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert first[key] == again[key], key
    assert first["loss"] != other["loss"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.epochs=-1", "error: trainer.epochs: must be >= 1, got -1"),
        ("trainer.epochs=abc", "error: trainer.epochs: expected an integer, got 'abc'"),
        ("optimizer.lr=0", "error: optimizer.lr: must be > 0.0, got 0"),
        ("augment.zoom=1.5", "error: augment.zoom: must be < 1.0, got 1.5"),
        ("optimizer.ema_momentum=1.0", "error: optimizer.ema_momentum: must be < 1.0, got 1.0"),
        ("trainer.label_smoothing=1", "error: trainer.label_smoothing: must be < 1.0, got 1"),
        ("model=nope", "Could not find 'model/nope'"),
    ],
)
def test_bad_overrides_fail_without_run_or_output(tmp_path, small_prepared, override, message):
    result = run_module(
        "mnist_pipeline.train", *train_args(tmp_path, small_prepared, override), env=store_env(tmp_path)
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert all_runs(tmp_path) == []
    assert not (tmp_path / "out").exists()


def test_exception_inside_training_leaves_run_failed(tmp_path, small_prepared, monkeypatch):
    """A failure mid-training (here: a callback raising) ends the run FAILED and writes no output."""
    import keras

    from mnist_pipeline import train
    from mnist_pipeline.ml import callbacks

    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("boom at epoch end")

    real = callbacks.callbacks
    monkeypatch.setattr(callbacks, "callbacks", lambda *cfgs: (lambda b, e: (b, [*e, Boom()]))(*real(*cfgs)))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_env(tmp_path)["MLFLOW_TRACKING_URI"])
    cfg = compose("train", *train_args(tmp_path, small_prepared)[:2], *FAST)  # data_dir, output_dir: no hydra.run.dir
    with pytest.raises(RuntimeError, match="boom at epoch end"):
        train.train(cfg)
    runs = all_runs(tmp_path)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def sigterm_after_first_epoch(proc, tmp_path) -> str:
    """SIGTERM `proc` once a run in the store has logged an epoch; returns its stderr."""
    try:
        deadline = time.monotonic() + 120
        while not any("loss" in r.data.metrics for r in all_runs(tmp_path)):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"no epoch was logged: {proc.communicate()[1]}")
            time.sleep(0.5)
        assert proc.poll() is None, "training ended before the signal: it must still be running"
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=120)[1]
    finally:
        proc.kill()


def test_sigterm_leaves_run_killed(tmp_path, small_prepared):
    args = train_args(tmp_path, small_prepared, *FAST, f"trainer.epochs={UNTIL_STOPPED}")
    client_for(tmp_path).search_experiments()  # create the store first: two processes must not both create its tables
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_pipeline.train", *args],
        cwd=REPO,
        env={**os.environ, **store_env(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = sigterm_after_first_epoch(proc, tmp_path)
    assert proc.returncode == 143, stderr
    assert "terminated by SIGTERM" in stderr
    assert [r.info.status for r in all_runs(tmp_path)] == ["KILLED"], stderr
    assert not (tmp_path / "out").exists()


def test_sigterm_during_a_multirun_ends_parent_and_child_killed(tmp_path, small_prepared):
    """A terminated sweep: the job running ends KILLED, and so does the parent run (not FAILED)."""
    client_for(tmp_path).search_experiments()  # create the store first
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_pipeline.train",
            "-m",
            f"data_dir={small_prepared}",
            "model=mlp_32x32,dense_2x350",
            f"trainer.epochs={UNTIL_STOPPED}",
            f"hydra.sweep.dir={tmp_path / 's'}",
        ],
        cwd=REPO,
        env={**os.environ, **store_env(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = sigterm_after_first_epoch(proc, tmp_path)
    assert proc.returncode == 143, stderr
    runs = all_runs(tmp_path)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [r.info.status for r in parents] == ["KILLED"], stderr
    assert [(r.info.run_name, r.info.status) for r in children] == [("mlp_32x32-none", "KILLED")]
    assert list(tmp_path.rglob(".*.tmp")) == []


def test_multirun_groups_runs_under_a_parent(tmp_path, small_prepared):
    result = run_module(
        "mnist_pipeline.train",
        "-m",
        f"data_dir={small_prepared}",
        "model=mlp_32x32,dense_2x350",
        "augment=none",
        "trainer.epochs=1",
        NO_EXPORTS,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        env=store_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    runs = all_runs(tmp_path)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == ["dense_2x350-none", "mlp_32x32-none"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in children)
    # Each job wrote its own model folder inside the sweep directory.
    assert len(list((tmp_path / "sweep").glob("*/model/model.keras"))) == 2


def test_epochs_auto_sizes_the_budget_to_the_training_split(tmp_path, small_prepared):
    """params.yaml's train.epochs: auto on 1,800 training images: 150,000 / 1,800 -> 84 epochs, capped here at
    4 to stay quick; batch 1,800 / 30 = 60; learning rate 0.004 x sqrt(60 / 256). The run logs the numbers
    it trained with, not `auto`."""
    result = run_module(
        "mnist_pipeline.train",
        *train_args(tmp_path, small_prepared, "model=mlp_32x32", "trainer.auto.max_epochs=4", NO_EXPORTS),
        env=store_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "trainer.epochs=auto: 4 epochs at batch 60, learning rate 0.00194 (1800 training images)" in (
        result.stdout + result.stderr
    )
    params = client_for(tmp_path).get_run(json.loads((tmp_path / "out" / "run.json").read_text())["run_id"]).data.params
    assert (params["trainer.epochs"], params["trainer.batch_size"]) == ("4", "60")
    assert float(params["optimizer.lr"]) == pytest.approx(0.004 * (60 / 256) ** 0.5)
    assert json.loads((tmp_path / "out" / "history.json").read_text())["epochs_run"] == 4
