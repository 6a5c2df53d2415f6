"""The `evaluate` stage: score one trained variant on the test images.

    python -m mnist_pipeline.evaluate variant=deep_cnn-standard

Logs test_* metrics, a confusion-matrix PNG and a grid of misclassified images (both with the dataset's
class names) and the test split as a dataset input into the variant's training run (the id in
models/<variant>/run.json), then writes metrics/<variant>.json and the files DVC plots:
plots/predictions/<variant>.csv (actual, predicted per test image), plots/per_class/<variant>.json,
plots/curves/<variant>.csv (per-epoch training history) and plots/figures/<variant>/*.png, and
probabilities/<variant>.npz (validation and test probabilities with their labels, for the report's ensemble).
The files train exported (run.json's `exported`: ONNX, int8 LiteRT) are downloaded from the run and scored
on the same test images: their agreement with the Keras model's classes, accuracy and accuracy drop go into
the metrics and the run (docs/exports.md).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from mnist_pipeline.core import plots, validate
from mnist_pipeline.core.atomic import all_or_nothing
from mnist_pipeline.core.model_files import load_keras
from mnist_pipeline.core.skipped import skip_reason
from mnist_pipeline.core.stage import hydra_stage
from mnist_pipeline.data.dataset import file_sha256
from mnist_pipeline.data.prepared import describe, load_split
from mnist_pipeline.evaluation import metrics
from mnist_pipeline.evaluation.files import read_json, save_probabilities, save_skipped_probabilities
from mnist_pipeline.ml import converters
from mnist_pipeline.tracking import artifacts, datasets, store

log = logging.getLogger(__name__)

CURVE_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _csv(header: list[str], rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def evaluate(cfg: DictConfig) -> dict:
    variant = validate.text(cfg, "variant")
    validate.integer(cfg, "misclassified_shown", minimum=0)
    model_dir, plots_dir = Path(cfg.model_dir), Path(cfg.plots_dir)
    reason = skip_reason(model_dir)
    if reason is not None:
        return record_skip(cfg, variant, reason)
    run_info = read_json(model_dir / "run.json", f"train the variant first (dvc repro train@{variant})")
    history = read_json(model_dir / "history.json", f"train the variant first (dvc repro train@{variant})")
    x_val, y_val = load_split(Path(cfg.data_dir), "val")
    x_test, y_test = load_split(Path(cfg.data_dir), "test")
    dataset = describe(Path(cfg.data_dir))
    classes = dataset.classes

    model = load_keras(model_dir / "model.keras")  # safe mode: a model carrying code is refused
    probs = model.predict(x_test, batch_size=1024, verbose=0)
    val_probs = model.predict(x_val, batch_size=1024, verbose=0)  # for the report's ensemble, chosen on val
    summary = metrics.summarize(y_test, probs, classes)
    y_pred = np.argmax(probs, axis=1)
    wrong = np.flatnonzero(y_pred != y_test)[: cfg.misclassified_shown]

    test_metrics = {
        f"test_{k}": summary[k] for k in ("loss", "accuracy", "macro_precision", "macro_recall", "macro_f1", "errors")
    }
    store.setup(cfg.tracking)
    test_metrics.update(score_exports(variant, run_info, x_test, y_test, probs))
    logged = dict(test_metrics)
    for row in summary["per_class"]:
        for key in ("precision", "recall", "f1"):
            logged[f"test_{key}_{row['index']}"] = row[key]  # by index: metric keys stay plain

    epochs = range(len(history["history"]["loss"]))
    evaluation = {
        "variant": variant,
        **test_metrics,
        "per_class": summary["per_class"],
        "confusion_matrix": summary["confusion_matrix"],
    }
    # Every output is staged first and logged to the run, then all are moved into place at once: a failure
    # or signal part-way leaves the previous outputs whole, never old and new mixed.
    with all_or_nothing() as outputs:
        figure_dir = outputs.folder(plots_dir / "figures" / variant)
        figures = [
            plots.confusion_matrix(
                np.array(summary["confusion_matrix"]),
                figure_dir / "confusion_matrix.png",
                classes,
                title=f"{variant}: test accuracy {summary['accuracy']:.4f}",
            ),
            plots.image_grid(
                x_test[wrong],
                [f"true {classes[y_test[i]]}\npred {classes[y_pred[i]]}" for i in wrong],
                figure_dir / "misclassified.png",
            ),
        ]
        _write(
            outputs.file(plots_dir / "predictions" / f"{variant}.csv"),
            _csv(["actual", "predicted"], zip(y_test.tolist(), y_pred.tolist())),
        )
        _write(
            outputs.file(plots_dir / "per_class" / f"{variant}.json"), json.dumps(summary["per_class"], indent=2) + "\n"
        )
        _write(
            outputs.file(plots_dir / "curves" / f"{variant}.csv"),
            _csv(["epoch", *CURVE_KEYS], ([e, *(history["history"][k][e] for k in CURVE_KEYS)] for e in epochs)),
        )
        save_probabilities(outputs.file(Path(cfg.probabilities_file)), val=(val_probs, y_val), test=(probs, y_test))
        _write(outputs.file(Path(cfg.metrics_file)), json.dumps(test_metrics, indent=2) + "\n")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
            artifacts.log_to_run(run_info["run_id"], logged, [*figures, Path(tmp) / "evaluation.json"], "test")
        datasets.log_splits_to_run(run_info["run_id"], dataset, Path(cfg.data_dir), {"test": (x_test, y_test)})
    log.info(
        "evaluate %s: test accuracy %.4f, loss %.4f -> %s, %s/*/%s* (run %s)",
        variant,
        summary["accuracy"],
        summary["loss"],
        cfg.metrics_file,
        plots_dir,
        variant,
        run_info["run_id"],
    )
    return evaluation


def score_exports(
    variant: str, run_info: dict, x_test: np.ndarray, y_test: np.ndarray, probs: np.ndarray
) -> dict[str, float]:
    """Each file train exported (run.json's `exported`; none for export.formats=[] or an older run),
    downloaded from the run, checked against the SHA-256 train recorded, and run on the test images:
    metrics.exported_scores against the Keras model's `probs`. A converter that failed in train is reported
    and skipped; a target missed is a warning, not a failure (docs/exports.md)."""
    run_id, scores, start = run_info["run_id"], {}, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, entry in run_info.get("exported", {}).items():
            if "error" in entry:
                log.warning(
                    "evaluate %s: no %s file to score: its export failed in train (%s)", variant, name, entry["error"]
                )
                continue
            where = f"{entry['artifact']} of run {run_id}"
            path = artifacts.download(run_id, entry["artifact"], Path(tmp))
            if file_sha256(path) != entry["sha256"]:
                raise converters.ExportedModelError(
                    f"{where}: corrupt or replaced: its SHA-256 is not the one train recorded in run.json; "
                    f"retrain with `dvc repro --force train@{variant}`"
                )
            exported = converters.load(name, path, label=where).predict(x_test)
            scores.update(metrics.exported_scores(name, y_test, probs, exported))
            log.info(
                "evaluate %s: %s agrees with Keras on %.2f%% of %d test images, accuracy %.4f",
                variant,
                entry["artifact"],
                100 * scores[f"{name}_agreement"],
                len(y_test),
                scores[f"{name}_accuracy"],
            )
    if scores:
        log.info("evaluate %s: exported files scored in %.1f s", variant, time.perf_counter() - start)
    for line in metrics.missed_export_targets(scores):
        log.warning("evaluate %s: exported model below target: %s", variant, line)
    return scores


def record_skip(cfg: DictConfig, variant: str, reason: str) -> dict:
    """A variant train skipped: every output DVC expects, saying so (no model, so no run to log into)."""
    plots_dir = Path(cfg.plots_dir)
    with all_or_nothing() as outputs:
        plots.notice(f"{variant}: skipped\n{reason}", outputs.folder(plots_dir / "figures" / variant) / "skipped.png")
        _write(outputs.file(plots_dir / "predictions" / f"{variant}.csv"), _csv(["actual", "predicted"], []))
        _write(outputs.file(plots_dir / "per_class" / f"{variant}.json"), "[]\n")
        _write(outputs.file(plots_dir / "curves" / f"{variant}.csv"), _csv(["epoch", *CURVE_KEYS], []))
        save_skipped_probabilities(outputs.file(Path(cfg.probabilities_file)), reason)
        _write(outputs.file(Path(cfg.metrics_file)), json.dumps({"skipped": reason}, indent=2) + "\n")
    log.warning("evaluate %s: skipped (%s)", variant, reason)
    return {"variant": variant, "skipped": reason}


main = hydra_stage("evaluate")(evaluate)

if __name__ == "__main__":
    main()
