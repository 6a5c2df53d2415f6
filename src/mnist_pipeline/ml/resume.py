"""Resume a training killed at any moment (kill -9, power loss, the OOM killer) after its last completed epoch.

Keras' BackupAndRestore saves the weights and the optimizer (its step, so the learning-rate schedule, and its
moments) at an epoch's end (at most once per trainer.snapshot_seconds, and after the last epoch) and restores
them when `fit` starts again. `Checkpoint` uses that code and makes each save a verified snapshot: Keras
writes into a staging folder, beside it go the rest of the training's state (the history so far, the MLflow
run id, BestWeights' and EarlyStopping's state) and a SHA256SUMS; the files are fsynced and the folder renamed
into `snapshots/epoch-NNNN` (epochs completed). The last two are kept. On start the newest snapshot whose
hashes check is used; a corrupt or truncated one is reported in one line and the previous one (or a fresh
start) is used instead.

The state lives beside the output folder, `<output_dir>.resume` (DVC ignores it: .dvcignore), and is removed
once the training's outputs are in place. The data order and augmentation of each epoch depend only on
the seed and the epoch number (ml/inputs.train_dataset), so a resumed epoch sees the data it would have seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from mnist_pipeline.core.atomic import all_or_nothing

log = logging.getLogger(__name__)

SUFFIX = ".resume"
KEEP = 2  # snapshots kept: the newest, and the one before in case the newest is damaged
SUMS = "SHA256SUMS"
STATE = "state.json"
SNAPSHOT_PREFIX = "epoch-"


def state_dir(output_dir: Path) -> Path:
    return Path(f"{output_dir}{SUFFIX}")


def config_hash(config_json: str) -> str:
    return hashlib.sha256(config_json.encode()).hexdigest()


@dataclass
class Snapshot:
    """A verified snapshot: `epochs` completed, `state` its state.json."""

    path: Path
    epochs: int
    state: dict = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(folder: Path) -> str | None:
    """None when every file listed in SHA256SUMS is there with its hash (and no listed file is missing);
    else what is wrong."""
    sums = folder / SUMS
    if not sums.is_file():
        return f"{SUMS} missing"
    listed = {}
    for line in sums.read_text(errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        if not name or "/" in name or len(digest) != 64:
            return f"{SUMS} malformed"
        listed[name] = digest
    for name in ("latest.weights.h5", "training_metadata.json", STATE):
        if name not in listed:
            return f"{name} not listed in {SUMS}"
    for name, digest in listed.items():
        if not (folder / name).is_file():
            return f"{name} missing"
        if _sha256(folder / name) != digest:
            return f"{name} does not match its SHA-256 (truncated or changed)"
    return None


def _snapshots(root: Path) -> list[Path]:
    """The snapshot folders, newest first."""
    folder = root / "snapshots"
    found = [p for p in folder.glob(f"{SNAPSHOT_PREFIX}*") if p.is_dir() and p.name[len(SNAPSHOT_PREFIX) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(SNAPSHOT_PREFIX) :]), reverse=True)


def latest(root: Path, config_sha: str) -> Snapshot | None:
    """The newest verified snapshot made with the same settings, or None (start from scratch). Every
    snapshot passed over is reported in one line."""
    if not root.exists():
        return None
    for folder in _snapshots(root):
        problem = _verify(folder)
        if problem is None:
            state = json.loads((folder / STATE).read_text())
            if state.get("config_sha256") != config_sha:
                log.warning("resume: %s was saved with other settings: starting from scratch", root)
                discard(root)
                return None
            return Snapshot(folder, int(state["epochs"]), state)
        log.warning("resume: %s is damaged (%s): trying the one before", folder, problem)
    if _snapshots(root):
        log.warning("resume: no usable snapshot in %s: starting from scratch", root)
    discard(root)
    return None


def discard(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _callback_state(callback: keras.callbacks.Callback) -> dict:
    if isinstance(callback, keras.callbacks.EarlyStopping):
        best = callback.best
        return {
            "wait": int(callback.wait),
            "best": None if best is None else float(best),
            "best_epoch": int(callback.best_epoch),
            "stopped_epoch": int(callback.stopped_epoch),
        }
    return callback.get_state()


def _restore_callback(callback: keras.callbacks.Callback, state: dict, folder: Path) -> None:
    if isinstance(callback, keras.callbacks.EarlyStopping):
        callback.wait, callback.best_epoch = state["wait"], state["best_epoch"]
        callback.stopped_epoch = state["stopped_epoch"]
        callback.best = np.inf if state["best"] is None else state["best"]
        return
    callback.set_state(state, folder)


class Checkpoint(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose every save is a verified, atomically placed snapshot (see the module).

    `stateful`: callbacks whose state is saved and restored with the weights, by name (EarlyStopping, or
    any with get_state()/set_state(state, folder) that may write files into the snapshot folder via
    save_files(folder)). Put it after them in the callback list, so it saves what they made of the epoch,
    and before the MLflow logging, so an epoch is saved before it is logged. `history` holds every
    completed epoch's logs, restored ones included. Nothing is deleted at the end: the caller removes the
    state once its outputs are safe (discard)."""

    def __init__(
        self,
        root: Path,
        start: Snapshot | None,
        meta: dict,
        stateful: dict[str, keras.callbacks.Callback],
        every_seconds: float = 0.0,
    ) -> None:
        super().__init__(backup_dir=str(root), save_freq="epoch", delete_checkpoint=False)
        self.root, self.start, self.meta, self.stateful = root, start, meta, stateful
        # A snapshot (weights, optimizer, fsync) costs ~50 ms: after every 0.3-second epoch of a small
        # dataset it would add 15%. So at most one per `every_seconds`, and always after the last epoch.
        self.every_seconds, self._saved_at = every_seconds, time.monotonic()
        self.history: dict[str, list[float]] = {
            k: list(v) for k, v in (start.state["history"] if start else {}).items()
        }

    def _point_at(self, folder: Path) -> None:
        self._weights_path = str(folder / "latest.weights.h5")
        self._training_metadata_path = str(folder / "training_metadata.json")

    def on_train_begin(self, logs=None):
        if self.start is None:
            return
        self._point_at(self.start.path)
        super().on_train_begin(logs)  # Keras loads weights and optimizer, and sets the initial epoch
        if self.start.state["finished"]:  # all epochs ran (or early stopping ended it): run none
            self.model._initial_epoch = self.params["epochs"]
        for name, callback in self.stateful.items():
            _restore_callback(callback, self.start.state["callbacks"][name], self.start.path)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self._current_epoch = epoch + 1
        finished = epoch + 1 >= self.params["epochs"] or bool(self.model.stop_training)  # early stopping
        if not finished and time.monotonic() - self._saved_at < self.every_seconds:
            return
        snapshots = self.root / "snapshots"
        with all_or_nothing() as outputs:
            folder = outputs.folder(snapshots / f"{SNAPSHOT_PREFIX}{epoch + 1:04d}")
            self._point_at(folder)
            self._save_model()  # Keras' own save: weights, optimizer, epoch
            for callback in self.stateful.values():
                getattr(callback, "save_files", lambda folder: None)(folder)
            state = {
                **self.meta,
                "epochs": epoch + 1,
                "finished": finished,
                "history": self.history,
                "callbacks": {name: _callback_state(cb) for name, cb in self.stateful.items()},
            }
            (folder / STATE).write_text(json.dumps(state, indent=1) + "\n")
            names = sorted(p.name for p in folder.iterdir())
            (folder / SUMS).write_text("".join(f"{_sha256(folder / n)}  {n}\n" for n in names))
            for name in [*names, SUMS]:
                _fsync(folder / name)  # on disk before the rename makes it the snapshot
        _fsync(snapshots)
        for old in _snapshots(self.root)[KEEP:]:
            shutil.rmtree(old, ignore_errors=True)
        self._saved_at = time.monotonic()

    def on_train_end(self, logs=None):
        pass  # the state is removed by the caller, once the outputs are committed
