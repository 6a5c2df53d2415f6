"""The `report` stage: a leaderboard of every variant, a comparison chart, and the champion gate.

    python -m mnist_pipeline.report

The best variant is the one with the highest validation accuracy (ties: lower validation loss). The
test set only ever reports: choosing by it would make its accuracy an optimistic, selected number.
The leaderboard also scores an ensemble: the average probabilities of the top-k variants by validation
accuracy, with k chosen on validation too. The best variant then challenges the registered champion
(champion.py decides; the registry alias moves only if it wins).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import yaml
from omegaconf import DictConfig

from mnist_pipeline import champion, ensemble, metrics, plots, validate
from mnist_pipeline.atomic import atomic_dir
from mnist_pipeline.data.prepared import DatasetInfo, describe, load_metadata, load_split
from mnist_pipeline.errors import ConfigError, PipelineError
from mnist_pipeline.evaluate import read_json, read_probabilities
from mnist_pipeline.stage import hydra_stage
from mnist_pipeline.tracking import logged_models, registry, runs, store

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


def load_probabilities(variants: list[str], probabilities_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every variant's validation and test probabilities (from evaluate), checked to be on the same data."""
    probs = {v: read_probabilities(probabilities_dir / f"{v}.npz", f"run `dvc repro evaluate@{v}`")
             for v in variants}
    first = probs[variants[0]]
    for name, p in probs.items():
        for split in ("val", "test"):
            if not np.array_equal(p[f"{split}_labels"], first[f"{split}_labels"]):
                raise PipelineError(f"{probabilities_dir / name}.npz: {split} labels differ from "
                                    f"{variants[0]}'s: the variants were evaluated on different data")
    return probs


def leaderboard_row(variant: str, models_dir: Path, metrics_dir: Path, probs: dict[str, np.ndarray]) -> dict:
    """Validation and test figures are both those of the saved model (the one logged, registered and
    served) as evaluate scored it; the training curves' validation accuracy was measured in the training
    precision (bfloat16 on some CPUs) and can differ by a few images."""
    hint = f"run `dvc repro` (train@{variant} and evaluate@{variant})"
    history = read_json(models_dir / variant / "history.json", hint)
    run = read_json(models_dir / variant / "run.json", hint)
    test = read_json(metrics_dir / f"{variant}.json", hint)
    val = ensemble.score(probs["val_probs"], probs["val_labels"])
    return {
        "variant": variant,
        "params": history["params"],
        "epochs": history["epochs_run"],
        "best_epoch": history["best_epoch"] or 0,
        "train_seconds": sum(history["history"].get("epoch_seconds", [])),
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "test_accuracy": test["test_accuracy"],
        "test_loss": test["test_loss"],
        "run_id": run["run_id"],
        "model_uri": run["model_uri"],
    }


def pick_best(rows: list[dict]) -> dict:
    """Highest validation accuracy, then lowest validation loss: never the test set."""
    return max(rows, key=lambda r: (r["val_accuracy"], -r["val_loss"]))


def ensemble_row(rows: list[dict], probs: dict[str, dict[str, np.ndarray]], max_k: int) -> dict:
    """The average of the top-k variants' probabilities (rows are ranked by validation accuracy), k chosen
    on validation accuracy; its test figures are only reported."""
    first = probs[rows[0]["variant"]]
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


def per_class_table(best: dict, probs: dict[str, np.ndarray], classes) -> list[str]:
    """The best variant's test precision, recall and F1 per class, by name."""
    rows = metrics.summarize(probs["test_labels"], probs["test_probs"], classes)["per_class"]
    return [f"Per class, best variant `{best['variant']}` on the test set:", "",
            "| class | precision | recall | F1 | images |", "|---|---:|---:|---:|---:|",
            *(f"| {r['class']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']:,} |"
              for r in rows), ""]


def markdown(rows: list[dict], best: dict, decision: dict, combined: dict, dataset: DatasetInfo,
             per_class: list[str]) -> str:
    lines = [f"# Leaderboard: {dataset.name}", "",
             f"{len(dataset.classes)} classes ({', '.join(dataset.classes)}), "
             f"{dataset.image_shape[0]}x{dataset.image_shape[1]} images, prepared data `{dataset.sha256[:12]}`.", "",
             "Sorted by validation accuracy; the best variant is chosen on validation, never on test.", "",
             "| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|" + "|".join("---" if k in ("variant", "run_id") else "---:" for k, _, _ in COLUMNS) + "|"]
    for row in rows:
        cells = [fmt.format(row[key]) for key, _, fmt in COLUMNS]
        if row is best:
            cells[0] = f"**{cells[0]}** (best)"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| " + " | ".join(fmt.format(combined[key]) if key != "run_id" else "-"
                                    for key, _, fmt in COLUMNS) + " |")
    lines += ["", f"Best variant: `{best['variant']}` (validation accuracy {best['val_accuracy']:.4f}, "
                  f"test accuracy {best['test_accuracy']:.4f}).", "",
              f"Registry: {decision['line']}.", "",
              f"Ensemble: the average of the probabilities of the top {combined['k']} variants by validation "
              f"accuracy ({', '.join(f'`{m}`' for m in combined['members'])}), k chosen on validation accuracy "
              "(by k: " + ", ".join(f"{a:.4f}" for a in combined["val_accuracy_by_k"]) + "); "
              f"test accuracy {combined['test_accuracy']:.4f}.", "", *per_class]
    return "\n".join(lines)


def val_accuracy_of(model_uri: str, data_dir: Path) -> float:
    """A registered model's accuracy on this pipeline's validation split."""
    x_val, y_val = load_split(data_dir, "val")
    predict = logged_models.load_predictor(model_uri)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras's progress bar
        probs = predict(x_val)
    return float(np.mean(np.argmax(probs, axis=1) == y_val))


def registered_name(template: str, dataset: str) -> str:
    """registry.model_name with {dataset} filled in: one registered model per dataset, so a champion is
    only ever challenged by models of its own dataset."""
    try:
        return template.format(dataset=dataset)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"registry.model_name: {template!r} may only use the placeholder {{dataset}} "
                          f"({type(exc).__name__}: {exc})") from None


def gate_champion(cfg: DictConfig, best: dict, data_dir: Path, dataset: DatasetInfo) -> dict:
    """Let the best variant challenge the registry's champion; register and move the alias if it wins."""
    name, alias, margin = (registered_name(cfg.registry.model_name, dataset.name), cfg.registry.alias,
                           float(cfg.registry.margin))
    challenger = champion.Challenger(best["variant"], best["val_accuracy"], best["model_uri"],
                                     dataset.sha256, int(load_metadata(data_dir)["settings"]["limit"]))
    store.setup(cfg.tracking)
    held = registry.holder(name, alias)
    current = None if held is None else champion.Current(
        held.number, held.tags.get("variant", "?"), held.source, _number(held.tags.get("val_accuracy")),
        held.tags.get("data.sha256", ""), held.uri)
    decision = champion.decide(challenger, current, margin, score=lambda uri: val_accuracy_of(uri, data_dir))
    registered = None
    if decision.promote:
        trained = runs.run_tags(best["run_id"])
        registered = registry.register(best["model_uri"], name, {
            "variant": best["variant"], "val_accuracy": repr(best["val_accuracy"]),
            "test_accuracy": repr(best["test_accuracy"]), "dataset": dataset.name, "data.sha256": challenger.data_hash,
            "data.limit": str(challenger.limit), "git.commit": trained.get("git.commit", ""),
            "dvc.exp": trained.get("dvc.exp", ""), "run_id": best["run_id"]}).number
        registry.set_alias(name, alias, registered)
    line = decision.line(challenger, current, margin, registered)  # report's last line says it
    holder_now = registered if decision.promote else (current.number if current else None)
    return {"model": name, "alias": alias, "action": decision.action, "line": line, "margin": margin,
            "version": holder_now, "variant": best["variant"] if decision.promote else (current and current.variant),
            "champion_val_accuracy": decision.champion_val, "rescored": decision.rescored,
            "challenger": {"variant": best["variant"], "val_accuracy": best["val_accuracy"],
                           "model_uri": best["model_uri"], "data_sha256": challenger.data_hash,
                           "data_limit": challenger.limit}}


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def summary_metrics(best: dict, decision: dict, combined: dict) -> dict:
    """A few flat figures for `dvc exp show` / `dvc metrics show` (the per-variant files hold the rest)."""
    return {"best_variant": best["variant"], "best_val_accuracy": best["val_accuracy"],
            "best_test_accuracy": best["test_accuracy"], "ensemble_k": combined["k"],
            "ensemble_test_accuracy": combined["test_accuracy"], "champion": decision["action"],
            "champion_version": decision["version"]}


def report(cfg: DictConfig) -> dict:
    validate.integer(cfg, "ensemble.max_k", minimum=0)
    validate.boolean(cfg, "registry.enabled")
    validate.number(cfg, "registry.margin", at_least=0.0, below=1.0)
    models_dir, metrics_dir = Path(cfg.models_dir), Path(cfg.metrics_dir)
    variants = variant_names(Path(cfg.params_file))
    probs = load_probabilities(variants, Path(cfg.probabilities_dir))
    rows = sorted((leaderboard_row(v, models_dir, metrics_dir, probs[v]) for v in variants),
                  key=lambda r: (-r["val_accuracy"], r["val_loss"]))
    best = pick_best(rows)
    combined = ensemble_row(rows, probs, cfg.ensemble.max_k)
    dataset = describe(Path(cfg.data_dir))
    curves = {v: read_json(models_dir / v / "history.json", "")["history"]["val_accuracy"] for v in variants}

    if cfg.registry.enabled:
        decision = gate_champion(cfg, best, Path(cfg.data_dir), dataset)
    else:
        decision = {"action": "disabled", "version": None, "line": "champion not registered (registry.enabled=false)"}

    summary = {"dataset": dataset.name, "classes": list(dataset.classes), "best": best,
               "selection": "max validation accuracy, then min validation loss", "registry": decision,
               "variants": rows, "ensemble": combined}
    with atomic_dir(Path(cfg.reports_dir)) as staging:
        (staging / "leaderboard.json").write_text(json.dumps(summary, indent=2) + "\n")
        (staging / "summary.json").write_text(json.dumps(summary_metrics(best, decision, combined), indent=2) + "\n")
        text = markdown(rows, best, decision, combined, dataset,
                        per_class_table(best, probs[best["variant"]], dataset.classes))
        (staging / "leaderboard.md").write_text(text)
        plots.comparison([*rows, combined], curves, staging / "comparison.png")
    # the tables, each under its heading; the rest of the report is in the final line below
    print("\n".join(line for line in text.splitlines() if line.startswith(("|", "# ", "Per class"))))
    log.info("report: best %s (val %.4f, test %.4f); %s -> %s", best["variant"], best["val_accuracy"],
             best["test_accuracy"], decision["line"], Path(cfg.reports_dir) / "leaderboard.md")
    return summary


main = hydra_stage("report")(report)

if __name__ == "__main__":
    main()
