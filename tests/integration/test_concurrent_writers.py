"""Many writers on one MLflow store: trainings started at once on a new store, a parallel sweep through
Hydra's joblib launcher, and a store that fails under a running training."""

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from mnist_pipeline.ml import runtime
from mnist_pipeline.tracking.params import flatten
from tests.helpers import REPO, UNTIL_STOPPED, compose, run_module

WRITERS = 6
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds")


def start_training(tmp_path, data_dir, uri, name, *overrides):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_pipeline.train",
            f"data_dir={data_dir}",
            "model=mlp_32x32",
            "export.formats=[]",  # not about the exported files (test_exports.py): no time spent converting
            f"variant={name}",
            f"output_dir={tmp_path / name}",
            f"hydra.run.dir={tmp_path / 'hydra' / name}",
            *overrides,
        ],
        cwd=REPO,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(processes, timeout=900):
    """Wait for every process (bounded); kill any still running, whatever happens."""
    try:
        deadline = time.monotonic() + timeout
        return [p.communicate(timeout=max(1, deadline - time.monotonic())) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_trainings_started_at_once_on_a_new_store_all_finish(tmp_path, small_prepared):
    """MLflow creates a new SQLite store's tables unguarded: without the pipeline's lock, processes starting
    together die with `table experiments already exists` (3 of 4 did here)."""
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    names = [f"writer-{i}" for i in range(WRITERS)]
    processes = [
        start_training(tmp_path, small_prepared, uri, name, "trainer.epochs=2", f"trainer.seed={i}")
        for i, name in enumerate(names)
    ]
    outputs = finish(processes)
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr

    client = MlflowClient(tracking_uri=uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("mnist").experiment_id])}
    assert sorted(runs) == names
    param_keys = set(runs["writer-0"].data.params)
    composed = OmegaConf.to_container(compose("train", "model=mlp_32x32", "variant=x"), resolve=True)
    assert param_keys == set(flatten(composed))  # every setting of the composed config
    assert {"paths.prepared", "trainer.seed", "model.hidden"} <= param_keys
    for i, name in enumerate(names):
        run = runs[name]
        assert run.info.status == "FINISHED"
        assert set(run.data.params) == param_keys and run.data.params["trainer.seed"] == str(i)
        for key in EPOCH_METRICS:
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1], (name, key)
        model_uri = json.loads((tmp_path / name / "run.json").read_text())["model_uri"]
        logged = client.get_logged_model(model_uri.removeprefix("models:/"))
        assert logged.source_run_id == run.info.run_id and logged.status == "READY"


def test_joblib_sweep_runs_jobs_in_parallel_under_one_parent(tmp_path, small_prepared):
    """`hydra/launcher=joblib`: 4 jobs, 2 at a time in worker processes, each with its share of the cores."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    result = run_module(
        "mnist_pipeline.train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model=mlp_32x32,shallow_cnn",
        "augment=none,standard",
        "trainer.epochs=1",
        "export.formats=[]",
        f"data_dir={small_prepared}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    parents = [r for r in runs if r.info.run_name.startswith("sweep ")]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == [
        "mlp_32x32-none",
        "mlp_32x32-standard",
        "shallow_cnn-none",
        "shallow_cnn-standard",
    ]
    intra, inter = runtime.thread_counts({"intra_op": 0, "inter_op": 0}, jobs=2)
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.data.tags["threads"] == f"intra_op={intra} inter_op={inter}"
    spans = sorted((r.info.start_time, r.info.end_time) for r in children)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), f"no two jobs overlapped: {spans}"


def first_metric_logged(db, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
                if connection.execute("select count(*) from metrics where key = 'val_loss'").fetchone()[0]:
                    return
        except sqlite3.OperationalError:  # not created yet, or busy
            pass
        time.sleep(0.2)
    pytest.fail(f"no epoch was logged to {db} within {timeout} s")


def overwrite_between_transactions(db, data: bytes) -> None:
    """Overwrite the start of an SQLite file while holding its exclusive lock. Unlocked, the garbage can land
    while the trainer is mid-transaction; its commit then writes its cached first page back over it and the
    store is whole again (the trainer finished all its epochs in one CI run)."""
    lock = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # waits for the writer's transaction to end
        with open(db, "r+b") as f:
            f.write(data)
    finally:
        lock.close()  # nothing changed through this connection: closing writes nothing


def test_a_store_that_breaks_mid_training_is_reported_in_one_line(tmp_path, small_prepared):
    """The store file is overwritten with garbage after the first epoch: the next epoch's logging fails and
    the stage says so in one line, with no traceback and no output folder."""
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    process = start_training(tmp_path, small_prepared, uri, "victim", f"trainer.epochs={UNTIL_STOPPED}")
    try:
        first_metric_logged(db)
        overwrite_between_transactions(db, b"garbage!" * 512)
        _, stderr = finish([process], timeout=600)[0]
    finally:
        finish([process], timeout=1)
    assert process.returncode == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: MLflow store {uri}: logging epoch "), last
    assert "the file is not an SQLite database (corrupt?)" in last or "database disk image is malformed" in last, last
    assert "Traceback" not in stderr
    assert not (tmp_path / "victim").exists()


LOG_SAME_DATASET = """
import sys, time
import mlflow, numpy as np
from pathlib import Path
from types import SimpleNamespace
from mnist_pipeline.tracking import datasets
mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_experiment("race")
x, y = np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.uint8)
info = SimpleNamespace(name="mnist", sha256="ab" * 32)  # what log_splits reads of a DatasetInfo
with mlflow.start_run():
    while time.time() < float(sys.argv[2]):
        time.sleep(0.001)
    datasets.log_splits(info, Path(sys.argv[3]), {"train": (x, y), "val": (x, y)})
"""


@pytest.mark.parametrize("round_", range(3))
def test_two_runs_logging_the_same_new_dataset_at_once_both_get_it(tmp_path, round_):
    """MLflow's SQL store checks for a dataset row, then inserts it: two writers at the same moment both
    insert (without datasets._once_more_after_a_race, one of the two fails in nearly every round)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    subprocess.run(
        [sys.executable, "-c", f"import mlflow; mlflow.set_tracking_uri({uri!r}); mlflow.set_experiment('race')"],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    start = time.time() + 8  # both processes have imported MLflow and opened their run by then
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", LOG_SAME_DATASET, uri, str(start), str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        results = [(w.wait(timeout=120), w.stderr.read()) for w in writers]
    finally:
        for w in writers:
            w.kill()
    assert [rc for rc, _ in results] == [0, 0], [err[-1500:] for _, err in results]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == ["mnist-train", "mnist-val"]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 2  # one row per split, shared
