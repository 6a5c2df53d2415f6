"""resume.py's snapshots: written whole each epoch, the last two kept, verified before use."""

import logging

import keras
import numpy as np
import pytest

from mnist_pipeline.ml import callbacks, resume


def fit_with_checkpoint(root, epochs, start=None, config_sha="abc", every_seconds=0.0):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    best = callbacks.BestWeights()
    checkpoint = resume.Checkpoint(
        root, start, {"run_id": "r1", "config_sha256": config_sha}, {"BestWeights": best}, every_seconds
    )
    x, y = np.random.default_rng(0).random((32, 4), dtype=np.float32), np.arange(32) % 3
    model.fit(
        x,
        y,
        validation_data=(x, y),
        epochs=epochs,
        initial_epoch=start.epochs if start else 0,
        callbacks=[best, checkpoint],
        verbose=0,
    )
    return model, checkpoint


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "model.resume"
    fit_with_checkpoint(root, epochs=3)
    return root


def test_each_epoch_leaves_a_verified_snapshot_and_the_last_two_are_kept(root):
    assert sorted(p.name for p in (root / "snapshots").iterdir()) == ["epoch-0002", "epoch-0003"]
    newest = root / "snapshots" / "epoch-0003"
    assert sorted(p.name for p in newest.iterdir()) == [
        "SHA256SUMS",
        "best_weights.npz",
        "latest.weights.h5",
        "state.json",
        "training_metadata.json",
    ]
    start = resume.latest(root, "abc")
    assert (start.path, start.epochs, start.state["finished"]) == (newest, 3, True)
    assert len(start.state["history"]["loss"]) == 3 and start.state["run_id"] == "r1"


def test_snapshots_at_most_every_n_seconds_and_after_the_last_epoch(tmp_path, monkeypatch):
    saved, save = [], resume.Checkpoint._save_model
    monkeypatch.setattr(resume.Checkpoint, "_save_model", lambda self: saved.append(self._current_epoch) or save(self))
    fit_with_checkpoint(tmp_path / "model.resume", epochs=6, every_seconds=3600)
    assert saved == [6]  # epochs 1-5 took far less than an hour: only the last one is saved
    start = resume.latest(tmp_path / "model.resume", "abc")
    assert (start.epochs, start.state["finished"], len(start.state["history"]["loss"])) == (6, True, 6)


def test_resuming_continues_the_history_and_restores_the_best_epoch(root):
    start = resume.latest(root, "abc")
    start.state["finished"] = False  # as if killed before the last epochs: run two more
    _, checkpoint = fit_with_checkpoint(root, epochs=5, start=start)
    assert len(checkpoint.history["loss"]) == 5
    assert checkpoint.history["loss"][:3] == start.state["history"]["loss"]
    assert checkpoint.stateful["BestWeights"].best_epoch is not None


@pytest.mark.parametrize(
    "damage, problem",
    [
        (
            lambda f: f.write_bytes(f.read_bytes()[:100]),
            "latest.weights.h5 does not match its SHA-256 (truncated or changed)",
        ),
        (lambda f: f.unlink(), "latest.weights.h5 missing"),
        (lambda f: (f.parent / "SHA256SUMS").write_text("garbage\n"), "SHA256SUMS malformed"),
        (lambda f: (f.parent / "SHA256SUMS").unlink(), "SHA256SUMS missing"),
    ],
)
def test_a_damaged_snapshot_is_reported_in_one_line_and_the_one_before_used(root, damage, problem, caplog):
    damage(root / "snapshots" / "epoch-0003" / "latest.weights.h5")
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.ml.resume"):
        start = resume.latest(root, "abc")
    assert start.epochs == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"resume: {root / 'snapshots' / 'epoch-0003'} is damaged ({problem}): trying the one before"
    ]


def test_nothing_usable_or_other_settings_start_from_scratch(root, caplog):
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.ml.resume"):
        assert resume.latest(root, "other settings") is None
    assert caplog.records[-1].getMessage() == f"resume: {root} was saved with other settings: starting from scratch"
    assert not root.exists()
    fit_with_checkpoint(root, epochs=2)
    for snapshot in (root / "snapshots").iterdir():
        (snapshot / "state.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.ml.resume"):
        assert resume.latest(root, "abc") is None
    assert caplog.records[-1].getMessage() == f"resume: no usable snapshot in {root}: starting from scratch"
    assert not root.exists()
