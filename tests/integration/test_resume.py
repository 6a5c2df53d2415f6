"""Training killed with SIGKILL and started again with the same command resumes in the same MLflow run.

Real processes, real kill -9: a training (small data, deterministic) is killed once a snapshot exists,
then rerun. Reference: the same training uninterrupted, in its own store.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mnist_pipeline.ml import resume
from tests.helpers import REPO

EPOCHS = 5
# A CNN with dropout, augmentation and a cosine schedule: every kind of state a resume must restore.
SETTINGS = (
    "model=shallow_cnn",
    "augment=light",
    "optimizer.schedule=cosine",
    "optimizer.warmup_fraction=0.2",
    f"trainer.epochs={EPOCHS}",
    "trainer.batch_size=128",
    "trainer.deterministic=true",
    "trainer.precision=float32",
    "trainer.seed=7",
    "trainer.snapshot_seconds=0",  # a snapshot after every epoch: the kills below wait for a given one
    "export.formats=[]",  # not about the exported files (test_exports.py): no time spent converting
)
EPOCH_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds")


def command(folder, data_dir, *extra):
    return [
        sys.executable,
        "-m",
        "mnist_pipeline.train",
        f"data_dir={data_dir}",
        *SETTINGS,
        *extra,
        f"hydra.run.dir={folder / 'hydra'}",
        f"output_dir={folder / 'model'}",
    ]


def env(folder):
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}


def train(folder, data_dir, *extra):
    result = subprocess.run(
        command(folder, data_dir, *extra), cwd=REPO, env=env(folder), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def runs_of(folder):
    client = MlflowClient(tracking_uri=env(folder)["MLFLOW_TRACKING_URI"])
    return client, [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def weights(folder):
    return keras.saving.load_model(folder / "model" / "model.keras").get_weights()


def kill_after_snapshot(folder, data_dir, epochs_done, *extra):
    """Start the training and SIGKILL it as soon as the snapshot of `epochs_done` epochs exists."""
    snapshot = resume.state_dir(folder / "model") / "snapshots" / f"epoch-{epochs_done:04d}"
    proc = subprocess.Popen(
        command(folder, data_dir, *extra),
        cwd=REPO,
        env=env(folder),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not snapshot.is_dir():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no snapshot {snapshot.name} before the training ended ({proc.returncode})")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    return snapshot


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_prepared):
    folder = tmp_path_factory.mktemp("uninterrupted")
    train(folder, small_prepared)
    return folder


def assert_one_finished_run_with_every_step_once(folder, resumes):
    client, runs = runs_of(folder)
    assert [(r.info.status, r.data.tags["resume.count"]) for r in runs] == [("FINISHED", str(resumes))]
    for key in EPOCH_KEYS:
        steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, key)]
        assert sorted(steps) == list(range(EPOCHS)), key
    history = json.loads((folder / "model" / "history.json").read_text())
    assert history["epochs_run"] == EPOCHS and len(history["history"]["loss"]) == EPOCHS
    assert not resume.state_dir(folder / "model").exists()  # removed once the outputs were in place
    return client, runs[0]


def max_difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def test_sigkill_then_rerun_resumes_in_the_same_run(tmp_path, small_prepared, reference):
    kill_after_snapshot(tmp_path, small_prepared, epochs_done=2)
    client, runs = runs_of(tmp_path)
    assert [r.info.status for r in runs] == ["RUNNING"]  # what kill -9 leaves
    killed_run = runs[0].info.run_id
    result = train(tmp_path, small_prepared)
    assert f"resuming run {killed_run} after epoch 2 of {EPOCHS}" in result.stdout + result.stderr
    _, run = assert_one_finished_run_with_every_step_once(tmp_path, resumes=1)
    assert run.info.run_id == killed_run
    # Deterministic mode: the resumed training ends with the uninterrupted one's weights.
    assert max_difference(weights(tmp_path), weights(reference)) == 0.0
    ours, theirs = (json.loads((f / "model" / "history.json").read_text())["history"] for f in (tmp_path, reference))
    assert ours["val_loss"] == theirs["val_loss"]


def test_sigkill_with_weight_averaging_resumes_to_the_uninterrupted_weights(tmp_path, small_prepared):
    """With optimizer.ema_momentum, every snapshot holds the averaged weights in the model and the raw ones in
    the optimizer: the resumed training must swap them back before it trains on, and end where an
    uninterrupted one does."""
    ema = "optimizer.ema_momentum=0.9"
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    uninterrupted.mkdir(), killed.mkdir()
    train(uninterrupted, small_prepared, ema)
    kill_after_snapshot(killed, small_prepared, 2, ema)
    result = train(killed, small_prepared, ema)
    assert f"after epoch 2 of {EPOCHS}" in result.stdout + result.stderr
    assert_one_finished_run_with_every_step_once(killed, resumes=1)
    ours, theirs = (json.loads((f / "model" / "history.json").read_text())["history"] for f in (killed, uninterrupted))
    assert ours["loss"] == theirs["loss"] and ours["val_loss"] == theirs["val_loss"]
    assert max_difference(weights(killed), weights(uninterrupted)) == 0.0


def test_a_truncated_snapshot_is_reported_and_the_one_before_used(tmp_path, small_prepared, reference):
    snapshot = kill_after_snapshot(tmp_path, small_prepared, epochs_done=3)
    weights_file = snapshot / "latest.weights.h5"
    weights_file.write_bytes(weights_file.read_bytes()[: weights_file.stat().st_size // 2])
    result = train(tmp_path, small_prepared)
    output = result.stdout + result.stderr
    damaged = [line for line in output.splitlines() if "is damaged" in line]
    assert len(damaged) == 1 and "latest.weights.h5 does not match its SHA-256 (truncated or changed)" in damaged[0]
    assert f"after epoch 2 of {EPOCHS}" in output  # the snapshot before: 2 epochs done
    assert "Traceback" not in output
    assert_one_finished_run_with_every_step_once(tmp_path, resumes=1)
    assert max_difference(weights(tmp_path), weights(reference)) == 0.0


def stale_command(folder, *args):
    result = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.cli", "runs", "stale", *args],
        cwd=REPO,
        env=env(folder),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return {line.split()[0]: line for line in result.stdout.splitlines() if len(line.split()[0]) == 32}


def test_runs_whose_process_died_are_found_and_ended_killed(tmp_path, small_prepared):
    """kill -9 leaves a run RUNNING: `mnist-pipeline runs stale` lists it dead, --clean ends it KILLED, and
    the next training of the same variant ends such runs too. Live runs and other hosts' are left alone."""
    from mnist_pipeline.tracking import stale

    kill_after_snapshot(tmp_path / "a", small_prepared, epochs_done=1)
    client, (dead,) = runs_of(tmp_path / "a")
    # Two more RUNNING runs of the variant: one owned by this (live) process, one by another host.
    alive = client.create_run(
        dead.info.experiment_id, tags={"variant": dead.data.tags["variant"], stale.OWNER_TAG: stale.owner()}
    ).info.run_id
    remote = client.create_run(
        dead.info.experiment_id, tags={"variant": dead.data.tags["variant"], stale.OWNER_TAG: "elsewhere:123:456"}
    ).info.run_id
    listed = stale_command(tmp_path / "a")
    assert set(listed) == {dead.info.run_id, alive, remote}
    assert " dead " in listed[dead.info.run_id] and " alive " in listed[alive] and " other host " in listed[remote]
    assert client.get_run(dead.info.run_id).info.status == "RUNNING"  # listing changes nothing
    cleaned = stale_command(tmp_path / "a", "--clean")
    assert "dead, ended KILLED" in cleaned[dead.info.run_id]
    assert {r: client.get_run(r).info.status for r in (dead.info.run_id, alive, remote)} == {
        dead.info.run_id: "KILLED",
        alive: "RUNNING",
        remote: "RUNNING",
    }

    # The next run of the variant (another output folder: nothing to resume) ends a dead one by itself.
    (tmp_path / "b").mkdir()
    os.replace(tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db")
    kill_after_snapshot(tmp_path / "b", small_prepared, epochs_done=1)
    client, runs = runs_of(tmp_path / "b")
    second = next(r.info.run_id for r in runs if r.info.status == "RUNNING" and r.info.run_id not in (alive, remote))
    os.replace(tmp_path / "b" / "mlflow.db", tmp_path / "mlflow.db")
    train(tmp_path, small_prepared)
    client, runs = runs_of(tmp_path)
    statuses = {r.info.run_id: r.info.status for r in runs}
    new = [r for r in runs if r.info.run_id not in (dead.info.run_id, alive, remote, second)]
    assert statuses[second] == "KILLED" and statuses[alive] == statuses[remote] == "RUNNING"
    assert [r.info.status for r in new] == ["FINISHED"]
    assert client.get_run(second).data.tags[stale.KILLED_BY_TAG].startswith("stale-run check by ")
