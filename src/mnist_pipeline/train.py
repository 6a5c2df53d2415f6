"""The `train` stage: one model variant trained on data/prepared/, tracked as one MLflow run.

    python -m mnist_pipeline.train model=deep_cnn augment=standard trainer.epochs=3 optimizer.lr=3e-4
    python -m mnist_pipeline.train -m model=shallow_cnn,deep_cnn augment=none,standard

Writes to `output_dir`: model.keras (the best epoch by val_loss), history.json and run.json (the MLflow
run id that the evaluate stage logs into). The folder appears only when training finished. Killed at any
moment and started again with the same output_dir and settings, it resumes after its last completed epoch
in the same MLflow run (ml/resume.py).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mnist_pipeline.core import plots, signals, validate, workspace
from mnist_pipeline.core.atomic import atomic_dir
from mnist_pipeline.core.errors import ConfigError
from mnist_pipeline.core.skipped import write_skip_record
from mnist_pipeline.core.stage import hydra_stage
from mnist_pipeline.data.dataset import file_sha256
from mnist_pipeline.data.prepared import DatasetInfo, describe, load_metadata, load_split
from mnist_pipeline.ml import augment, budget, callbacks, compiled, converters, export, inputs, resume, runtime
from mnist_pipeline.ml.fit import ModelFitError, augment_settings, prepare_fit, with_budget
from mnist_pipeline.tracking import artifacts, datasets, epochs, logged_models, parents, runs, store

log = logging.getLogger(__name__)


def check_settings(cfg: DictConfig) -> None:
    """Every value range Hydra cannot check, before any run or output exists."""
    if cfg.trainer.epochs != budget.AUTO:
        validate.integer(cfg, "trainer.epochs", minimum=1)
    validate.integer(cfg, "trainer.auto.images", minimum=1)
    validate.integer(cfg, "trainer.auto.max_epochs", minimum=1)
    validate.integer(cfg, "trainer.auto.min_steps_per_epoch", minimum=1)
    validate.integer(cfg, "trainer.auto.min_batch", minimum=1)
    validate.integer(cfg, "trainer.batch_size", minimum=1)
    validate.integer(cfg, "trainer.shuffle_buffer", minimum=0)
    validate.integer(cfg, "trainer.seed", minimum=0)
    validate.boolean(cfg, "trainer.deterministic")
    validate.choice(cfg, "trainer.precision", runtime.PRECISIONS)
    validate.integer(cfg, "trainer.steps_per_execution", minimum=1)
    validate.number(cfg, "trainer.snapshot_seconds", at_least=0.0)
    validate.number(cfg, "trainer.label_smoothing", at_least=0.0, below=1.0)
    validate.integer(cfg, "trainer.threads.intra_op", minimum=0)
    validate.integer(cfg, "trainer.threads.inter_op", minimum=0)
    validate.boolean(cfg, "trainer.early_stopping.enabled")
    validate.integer(cfg, "trainer.early_stopping.patience", minimum=1)
    validate.number(cfg, "trainer.early_stopping.min_delta", at_least=0.0)
    validate.choice(cfg, "optimizer.name", ("adam", "sgd"))
    validate.number(cfg, "optimizer.lr", above=0.0)
    validate.choice(cfg, "optimizer.schedule", ("constant", "cosine"))
    validate.number(cfg, "optimizer.warmup_fraction", at_least=0.0, below=1.0)
    validate.number(cfg, "optimizer.ema_momentum", at_least=0.0, below=1.0)
    if cfg.optimizer.name == "sgd":
        validate.number(cfg, "optimizer.momentum", at_least=0.0, below=1.0)
        validate.number(cfg, "optimizer.decay", at_least=0.0)
    validate.number(cfg, "augment.rotation", at_least=0.0, below=180.0)
    for key in ("width_shift", "height_shift", "zoom"):
        validate.number(cfg, f"augment.{key}", at_least=0.0, below=1.0)
    validate.number(cfg, "augment.shear", at_least=0.0, below=1.0)
    if "dropout" in cfg.model:
        validate.number(cfg, "model.dropout", at_least=0.0, below=1.0)
    validate.choice(cfg, "model.input_norm", ("none", "l2"))
    formats = cfg.export.formats
    if not OmegaConf.is_list(formats) or len(set(formats)) != len(formats):
        raise ConfigError(f"export.formats: expected a list without repeats, e.g. [onnx, int8] or [], got {formats}")
    for name in formats:
        if name not in converters.FORMATS:
            raise ConfigError(f"export.formats: {name!r} is not one of {', '.join(converters.FORMATS)}")
    validate.integer(cfg, "export.representative_images", minimum=1)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def run_tags(cfg: DictConfig, dataset: DatasetInfo) -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "variant": cfg.variant,
        "git.commit": _git("rev-parse", "HEAD") or "unknown",
        "git.dirty": str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower(),
        "dataset": dataset.name,
        "data.sha256": dataset.sha256,
        "dvc.stage": os.environ.get("DVC_STAGE", ""),
        "dvc.exp": workspace.dvc_experiment(),  # the MLflow UI filters one experiment's runs by it
        "precision": runtime.resolve_precision(cfg.trainer.precision),  # what `auto` chose on this CPU
        "threads": runtime.thread_pools(),  # split between a parallel launcher's jobs
        "tensorflow.version": tf.__version__,
        "keras.version": keras.__version__,
    }


def hydra_overrides() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not inside a Hydra app (e.g. called from a test)
        return []


def concurrent_jobs() -> int:
    """How many jobs Hydra's launcher runs at once: the joblib launcher's n_jobs (joblib's -1 is one per
    core, -2 all but one), 1 for a single run or the basic launcher."""
    try:
        n_jobs = HydraConfig.get().launcher.get("n_jobs")
    except ValueError:  # not inside a Hydra app
        return 1
    if not isinstance(n_jobs, int) or n_jobs == 0:
        return 1
    return n_jobs if n_jobs > 0 else max(1, runtime.cores() + 1 + n_jobs)


def print_first_prediction(model, x_test: np.ndarray, y_test: np.ndarray, classes) -> None:
    """As the notebooks end: the probabilities for the first test image and their argmax."""
    probs = model.predict(x_test[:1], verbose=0)[0]
    print(
        f"first test image: label {classes[int(y_test[0])]}, predicted {classes[int(np.argmax(probs))]} "
        f"(p={probs.max():.4f})"
    )
    print("probabilities: " + " ".join(f"{c}:{p:.4f}" for c, p in zip(classes, probs)), flush=True)


def settings_hash(cfg: DictConfig) -> str:
    """The SHA-256 of every resolved setting: a snapshot resumes only a training with the same ones."""
    return resume.config_hash(json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True))


def resume_point(cfg: DictConfig, state: Path, settings: str) -> resume.Snapshot | None:
    """The verified snapshot to resume from (made with `settings`, a settings_hash), if any, and only if
    its run is still in the store."""
    start = resume.latest(state, settings)
    if start is not None and not runs.find_run(start.state["run_id"]):
        log.warning(
            "resume: run %s is not in the store (%s): starting from scratch",
            start.state["run_id"],
            store.tracking_uri(cfg.tracking),
        )
        resume.discard(state)
        return None
    return start


def train(
    cfg: DictConfig,
    extra_callbacks: Sequence = (),
    tags: Mapping[str, str] | None = None,
    overrides: Sequence[str] | None = None,
    parent_run_id: str | None = None,
) -> dict:
    """One training, one MLflow run. Called by Hydra with the config alone; a caller that drives trainings
    itself (the search) adds Keras callbacks, run tags, the overrides that made `cfg` and a parent run."""
    check_settings(cfg)
    data_dir, output_dir = Path(cfg.data_dir), Path(cfg.output_dir)
    x_train, y_train = load_split(data_dir, "train")
    x_val, y_val = load_split(data_dir, "val")
    x_test, y_test = load_split(data_dir, "test")
    dataset = describe(data_dir)
    skipped = load_metadata(data_dir).get("skipped", [])
    if cfg.trainer.epochs == budget.AUTO:
        cfg = with_budget(cfg, len(x_train))
        log.info(
            "%s: trainer.epochs=auto: %d epochs at batch %d, learning rate %.3g (%d training images)",
            cfg.variant,
            cfg.trainer.epochs,
            cfg.trainer.batch_size,
            cfg.optimizer.lr,
            len(x_train),
        )
    store.setup(cfg.tracking)
    state = resume.state_dir(output_dir)
    settings = settings_hash(cfg)
    start = resume_point(cfg, state, settings)
    first_epoch = start.epochs if start else 0
    # a bad model config fails here, before any run
    model, train_ds, build = prepare_fit(
        cfg, x_train, y_train, len(dataset.classes), jobs=concurrent_jobs(), first_epoch=first_epoch
    )
    val_ds = inputs.eval_dataset(x_val, y_val)
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))

    with runs.training_run(
        cfg.variant,
        config,
        {**run_tags(cfg, dataset), "data.skipped": str(len(skipped)), **(tags or {})},
        parent_run_id,
        resume_run_id=start.state["run_id"] if start else None,
    ) as run:
        # The outputs are committed before the run ends FINISHED: a finished run always has its folder.
        with atomic_dir(output_dir) as staging:
            if start:
                log.info(
                    "%s: resuming run %s after epoch %d of %d",
                    cfg.variant,
                    run.info.run_id,
                    start.epochs,
                    cfg.trainer.epochs,
                )
                logged = epochs.log_missing_epochs(
                    run.info.run_id, start.state["history"], epochs.logged_epochs(run.info.run_id)
                )
            else:
                logged = set()
                log_setup(cfg, model, x_train, staging, overrides)
                if skipped:  # the bad inputs prepare left out (on_bad: skip), beside the data they shaped
                    artifacts.log_text(json.dumps(skipped, indent=2) + "\n", "dataset_skipped.json")
                datasets.log_splits(dataset, data_dir, {"train": (x_train, y_train), "val": (x_val, y_val)})

            best, stateful = callbacks.callbacks(cfg.trainer, cfg.optimizer)
            checkpoint = resume.Checkpoint(
                state,
                start,
                {"run_id": run.info.run_id, "config_sha256": settings},
                stateful={type(cb).__name__: cb for cb in stateful},
                every_seconds=cfg.trainer.snapshot_seconds,
            )
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=cfg.trainer.epochs,
                initial_epoch=first_epoch,
                steps_per_epoch=inputs.steps_per_epoch(len(x_train), cfg.trainer.batch_size),
                shuffle=False,  # train_ds shuffles
                # the epoch's state is saved (checkpoint) before it is logged: a kill between the two is
                # made good on resume (log_missing_epochs); one after leaves it logged once (`logged`)
                callbacks=[
                    callbacks.EpochStats(),
                    *stateful,
                    checkpoint,
                    callbacks.EpochLogger(epochs.log_epoch, logged),
                    *extra_callbacks,
                ],
                verbose=1 if sys.stdout.isatty() else 2,  # a progress bar on a terminal, a line per epoch in logs
            )
            record = {
                "variant": cfg.variant,
                "epochs_run": len(checkpoint.history["loss"]),
                "best_epoch": best.best_epoch,
                "params": int(model.count_params()),
                "history": checkpoint.history,  # every epoch, those before a resume included
            }
            curves = plots.training_curves(record["history"], staging / "training_curves.png", title=cfg.variant)
            artifacts.log_file(curves)
            model = export.export_copy(model, build)
            model_uri = logged_models.log_keras_model(
                model,
                x_val[:1],
                step=best.best_epoch or 0,
                metadata=dataset.as_metadata(),
                pyfunc_loader=compiled.__file__,  # served through a traced function, not model.predict
            )
            exported = log_exports(cfg, model, x_train, run.info.run_id)
            model.save(staging / "model.keras")
            (staging / "history.json").write_text(json.dumps(record, indent=2) + "\n")
            (staging / "run.json").write_text(
                json.dumps(
                    {
                        "run_id": run.info.run_id,
                        "experiment_id": run.info.experiment_id,
                        "tracking_uri": store.tracking_uri(cfg.tracking),
                        "model_uri": model_uri,
                        "variant": cfg.variant,
                        "exported": exported,  # what evaluate scores: {format: {artifact, sha256, bytes} or {error}}
                    },
                    indent=2,
                )
                + "\n"
            )
        resume.discard(state)  # the outputs are in place: nothing left to resume
    print_first_prediction(model, x_test, y_test, dataset.classes)
    log.info(
        "train %s: best epoch %d of %d, val_accuracy %.4f -> %s",
        cfg.variant,
        (best.best_epoch or 0) + 1,
        len(record["history"]["loss"]),
        record["history"]["val_accuracy"][best.best_epoch or 0],
        output_dir,
    )
    return {**record, "run_id": run.info.run_id}


EXPORTED = "exported"  # the run's artifact folder of the exported files


def log_exports(cfg: DictConfig, model, x_train: np.ndarray, run_id: str) -> dict[str, dict]:
    """The served model converted to each of export.formats (ml/converters.py) and logged into the run under
    exported/; returns what run.json records for evaluate, per format: the artifact, its SHA-256 and size, or
    the converter's error (also the run's tag export.<format>; the training stands)."""
    images = converters.representative_images(x_train, cfg.export.representative_images)
    record: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for result in converters.export_all(model, list(cfg.export.formats), Path(tmp), images):
            if result.path is None:
                record[result.name] = {"error": result.error}
                runs.update_run(run_id, tags={f"export.{result.name}": f"failed: {result.error}"[:1000]})
                continue
            artifacts.log_file(result.path, EXPORTED)
            record[result.name] = {
                "artifact": f"{EXPORTED}/{result.path.name}",
                "sha256": file_sha256(result.path),
                "bytes": result.path.stat().st_size,
            }
            log.info(
                "%s: exported %s (%s bytes) in %.1f s",
                cfg.variant,
                record[result.name]["artifact"],
                f"{record[result.name]['bytes']:,}",
                result.seconds,
            )
    return record


def log_setup(cfg: DictConfig, model, x_train: np.ndarray, staging: Path, overrides: Sequence[str] | None) -> None:
    """A new run's artifacts that describe the training: config, overrides, model summary, augmentation."""
    artifacts.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    given = hydra_overrides() if overrides is None else list(overrides)
    artifacts.log_text("\n".join(given) + "\n", "overrides.txt")
    summary: list[str] = []
    model.summary(print_fn=lambda line, **_: summary.append(line))
    artifacts.log_text("\n".join(summary) + "\n", "model_summary.txt")
    params = augment_settings(cfg)
    if not augment.is_identity(params):
        grid = augment.preview_grid(x_train[:8], staging / "augmented_samples.png", seed=cfg.trainer.seed, **params)
        artifacts.log_file(grid)


class MultirunParentRun(Callback):
    """Hydra callback (conf/train.yaml): a multirun's jobs become child runs of one parent run named after
    the sweep; it ends FAILED if a job did not finish, KILLED if a signal stopped the sweep."""

    def __init__(self) -> None:
        self._run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._run_id = parents.open_sweep_parent(config.tracking, str(config.hydra.sweep.dir))
        atexit.register(self._end_early)  # a sweep that raised or was stopped never reaches on_multirun_end

    def _end_early(self) -> None:
        if self._run_id is not None:
            parents.close_sweep_parent(self._run_id, "KILLED" if signals.received else "FAILED")
            self._run_id = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._run_id is not None:
            parents.close_sweep_parent(self._run_id)
            self._run_id = None


def train_or_skip(cfg: DictConfig) -> dict:
    """The stage: a variant whose model cannot take the dataset's images is skipped, not fatal. Its
    output folder holds skipped.json (why) instead of a model, no MLflow run is made, and evaluate and
    report list it as skipped, so one unfit variant in params.yaml does not stop `dvc repro`. (The search
    calls train() itself and counts such a trial as failed.)"""
    try:
        return train(cfg)
    except ModelFitError as exc:
        log.warning("train %s: skipped: %s", cfg.variant, exc)
        with atomic_dir(Path(cfg.output_dir)) as staging:
            write_skip_record(staging, cfg.variant, str(exc))
        return {"variant": cfg.variant, "skipped": str(exc)}


main = hydra_stage("train")(train_or_skip)

if __name__ == "__main__":
    main()
