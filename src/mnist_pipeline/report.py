"""The `report` stage: a leaderboard of every variant, a comparison chart, and the champion registered.

    python -m mnist_pipeline.report

The champion is the variant with the highest validation accuracy (ties: lower validation loss). The
test set only ever reports: choosing by it would make its accuracy an optimistic, selected number.
The leaderboard also scores an ensemble: the average probabilities of the top-k variants by validation
accuracy, with k chosen on validation too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import yaml
from omegaconf import DictConfig

from mnist_pipeline import ensemble, plots, tracking, validate
from mnist_pipeline.atomic import atomic_dir
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.evaluate import read_json, read_probabilities
from mnist_pipeline.stage import hydra_stage

log = logging.getLogger(__name__)

COLUMNS = [  # (key, markdown header, format)
    ("variant", "variant", "{}"),
    ("params", "params", "{:,}"),
    ("epochs", "epochs", "{}"),
    ("train_seconds", "train time (s)", "{:.0f}"),
    ("val_accuracy", "val accuracy", "{:.4f}"),
    ("test_accuracy", "test accuracy", "{:.4f}"),
    ("test_loss", "test loss", "{:.4f}"),
    ("run_id", "MLflow run", "`{}`"),
]


def variant_names(params_file: Path) -> list[str]:
    params = yaml.safe_load(Path(params_file).read_text()) or {}
    variants = params.get("variants") or {}
    if not variants:
        raise PipelineError(f"{params_file}: no `variants` to report")
    return list(variants)


def leaderboard_row(variant: str, models_dir: Path, metrics_dir: Path) -> dict:
    hint = f"run `dvc repro` (train@{variant} and evaluate@{variant})"
    history = read_json(models_dir / variant / "history.json", hint)
    run = read_json(models_dir / variant / "run.json", hint)
    test = read_json(metrics_dir / f"{variant}.json", hint)
    best = history["best_epoch"] or 0
    return {
        "variant": variant,
        "params": history["params"],
        "epochs": history["epochs_run"],
        "best_epoch": best,
        "train_seconds": sum(history["history"].get("epoch_seconds", [])),
        "val_accuracy": history["history"]["val_accuracy"][best],
        "val_loss": history["history"]["val_loss"][best],
        "test_accuracy": test["test_accuracy"],
        "test_loss": test["test_loss"],
        "run_id": run["run_id"],
        "model_uri": run["model_uri"],
    }


def pick_champion(rows: list[dict]) -> dict:
    """Highest validation accuracy, then lowest validation loss: never the test set."""
    return max(rows, key=lambda r: (r["val_accuracy"], -r["val_loss"]))


def ensemble_row(rows: list[dict], probabilities_dir: Path, max_k: int) -> dict:
    """The average of the top-k variants' probabilities (rows are ranked by validation accuracy), k chosen
    on validation accuracy; its test figures are only reported."""
    probs = {r["variant"]: read_probabilities(probabilities_dir / f"{r['variant']}.npz",
                                              f"run `dvc repro evaluate@{r['variant']}`") for r in rows}
    first = probs[rows[0]["variant"]]
    for name, p in probs.items():
        for split in ("val", "test"):
            if not np.array_equal(p[f"{split}_labels"], first[f"{split}_labels"]):
                raise PipelineError(f"{probabilities_dir / name}.npz: {split} labels differ from "
                                    f"{rows[0]['variant']}'s: the variants were evaluated on different data")
    ranked = [r["variant"] for r in rows]
    k, by_k = ensemble.top_k(ranked, {v: p["val_probs"] for v, p in probs.items()}, first["val_labels"], max_k)
    members = ranked[:k]
    val = ensemble.score(ensemble.average([probs[m]["val_probs"] for m in members]), first["val_labels"])
    test = ensemble.score(ensemble.average([probs[m]["test_probs"] for m in members]), first["test_labels"])
    chosen = [r for r in rows if r["variant"] in members]
    return {
        "variant": f"ensemble of top {k}", "members": members, "k": k, "val_accuracy_by_k": by_k,
        "params": sum(r["params"] for r in chosen), "epochs": max(r["epochs"] for r in chosen),
        "train_seconds": sum(r["train_seconds"] for r in chosen),
        "val_accuracy": val["accuracy"], "val_loss": val["loss"],
        "test_accuracy": test["accuracy"], "test_loss": test["loss"], "run_id": "-",
    }


def markdown(rows: list[dict], champion: dict, version: int | None, combined: dict) -> str:
    lines = ["# Leaderboard", "",
             "Sorted by validation accuracy; the champion is chosen on validation, never on test.", "",
             "| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|" + "|".join("---" if k in ("variant", "run_id") else "---:" for k, _, _ in COLUMNS) + "|"]
    for row in rows:
        cells = [fmt.format(row[key]) for key, _, fmt in COLUMNS]
        if row is champion:
            cells[0] = f"**{cells[0]}** (champion)"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| " + " | ".join(fmt.format(combined[key]) if key != "run_id" else "-"
                                    for key, _, fmt in COLUMNS) + " |")
    registered = f", registered as version {version}" if version is not None else ""
    lines += ["", f"Champion: `{champion['variant']}` (validation accuracy {champion['val_accuracy']:.4f}, "
                  f"test accuracy {champion['test_accuracy']:.4f}){registered}.", "",
              f"Ensemble: the average of the probabilities of the top {combined['k']} variants by validation "
              f"accuracy ({', '.join(f'`{m}`' for m in combined['members'])}), k chosen on validation accuracy "
              "(by k: " + ", ".join(f"{a:.4f}" for a in combined["val_accuracy_by_k"]) + "); "
              f"test accuracy {combined['test_accuracy']:.4f}.", ""]
    return "\n".join(lines)


def report(cfg: DictConfig) -> dict:
    models_dir, metrics_dir = Path(cfg.models_dir), Path(cfg.metrics_dir)
    variants = variant_names(Path(cfg.params_file))
    rows = sorted((leaderboard_row(v, models_dir, metrics_dir) for v in variants),
                  key=lambda r: (-r["val_accuracy"], r["val_loss"]))
    champion = pick_champion(rows)
    validate.integer(cfg, "ensemble.max_k", minimum=0)
    combined = ensemble_row(rows, Path(cfg.probabilities_dir), cfg.ensemble.max_k)
    curves = {v: read_json(models_dir / v / "history.json", "")["history"]["val_accuracy"] for v in variants}

    version = None
    if cfg.registry.enabled:
        tracking.setup(cfg.tracking)
        version = tracking.register_champion(
            champion["model_uri"], cfg.registry.model_name, cfg.registry.alias,
            {"variant": champion["variant"], "run_id": champion["run_id"],
             "val_accuracy": f"{champion['val_accuracy']:.4f}"})
        log.info("%s@%s -> version %s (%s)", cfg.registry.model_name, cfg.registry.alias, version,
                 champion["variant"])

    summary = {"champion": {**champion, "registered_model": cfg.registry.model_name if version else None,
                            "version": version},
               "selection": "max validation accuracy, then min validation loss", "variants": rows,
               "ensemble": combined}
    with atomic_dir(Path(cfg.reports_dir)) as staging:
        (staging / "leaderboard.json").write_text(json.dumps(summary, indent=2) + "\n")
        text = markdown(rows, champion, version, combined)
        (staging / "leaderboard.md").write_text(text)
        plots.comparison([*rows, combined], curves, staging / "comparison.png")
    print(text)
    return summary


main = hydra_stage("report")(report)

if __name__ == "__main__":
    main()
