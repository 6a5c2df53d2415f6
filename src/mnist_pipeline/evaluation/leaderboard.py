"""The leaderboard: one row per variant and one for the ensemble, ranked on validation, as markdown.

Every figure is scored the same way, from the probabilities evaluate saved (probabilities/<variant>.npz):
validation and test accuracy and loss of the saved model, the one logged, registered and served. The best
variant is the first by validation accuracy, then validation loss; the test set only ever reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mnist_pipeline.evaluation import ensemble, metrics

SELECTION = "max validation accuracy, then min validation loss"
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

Probabilities = Mapping[str, np.ndarray]  # val_probs, val_labels, test_probs, test_labels


def variant_row(variant: str, history: Mapping, run: Mapping, probs: Probabilities) -> dict:
    """A variant's row from its training record (history.json), its run (run.json) and its probabilities.
    The training curves' validation accuracy was measured in the training precision (bfloat16 on some
    CPUs) and can differ from the saved model's by a few images: the row has the saved model's."""
    val = ensemble.score(probs["val_probs"], probs["val_labels"])
    test = ensemble.score(probs["test_probs"], probs["test_labels"])
    return {
        "variant": variant,
        "params": history["params"],
        "epochs": history["epochs_run"],
        "best_epoch": history["best_epoch"] or 0,
        "train_seconds": sum(history["history"].get("epoch_seconds", [])),
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "run_id": run["run_id"],
        "model_uri": run["model_uri"],
    }


def rank(rows: Sequence[dict]) -> list[dict]:
    """Best first: highest validation accuracy, then lowest validation loss (SELECTION); never the test
    set. Exact ties keep the given order."""
    return sorted(rows, key=lambda r: (-r["val_accuracy"], r["val_loss"]))


def ensemble_row(ranked: Sequence[dict], probs: Mapping[str, Probabilities], max_k: int) -> dict:
    """The average of the top-k variants' probabilities (`ranked` best first), k chosen on validation
    accuracy; its test figures are only reported."""
    first = probs[ranked[0]["variant"]]
    names = [r["variant"] for r in ranked]
    k, by_k = ensemble.top_k(names, {v: p["val_probs"] for v, p in probs.items()}, first["val_labels"], max_k)
    members = names[:k]
    val = ensemble.score(ensemble.average([probs[m]["val_probs"] for m in members]), first["val_labels"])
    test = ensemble.score(ensemble.average([probs[m]["test_probs"] for m in members]), first["test_labels"])
    chosen = [r for r in ranked if r["variant"] in members]
    return {
        "variant": f"ensemble of top {k}",
        "members": members,
        "k": k,
        "val_accuracy_by_k": by_k,
        "params": sum(r["params"] for r in chosen),
        "epochs": max(r["epochs"] for r in chosen),
        "train_seconds": sum(r["train_seconds"] for r in chosen),
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "run_id": "-",
    }


def per_class_table(best: Mapping, probs: Probabilities, classes: Sequence[str]) -> list[str]:
    """The best variant's test precision, recall and F1 per class, by name."""
    rows = metrics.summarize(probs["test_labels"], probs["test_probs"], classes)["per_class"]
    return [
        f"Per class, best variant `{best['variant']}` on the test set:",
        "",
        "| class | precision | recall | F1 | images |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r['class']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']:,} |"
            for r in rows
        ),
        "",
    ]


def markdown(
    ranked: Sequence[dict],
    combined: Mapping,
    decision_line: str,
    title: str,
    description: str,
    per_class: Sequence[str],
    skipped: Mapping[str, str] | None = None,
) -> str:
    """The leaderboard page: the ranked table with the ensemble's row last, the variants skipped (whose
    model cannot take the images) with their reasons, then the decisions in words."""
    best = ranked[0]
    lines = [
        f"# Leaderboard: {title}",
        "",
        description,
        "",
        "Sorted by validation accuracy; the best variant is chosen on validation, never on test.",
        "",
        "| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|" + "|".join("---" if k in ("variant", "run_id") else "---:" for k, _, _ in COLUMNS) + "|",
    ]
    for row in ranked:
        cells = [fmt.format(row[key]) for key, _, fmt in COLUMNS]
        if row is best:
            cells[0] = f"**{cells[0]}** (best)"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "| " + " | ".join(fmt.format(combined[key]) if key != "run_id" else "-" for key, _, fmt in COLUMNS) + " |"
    )
    if skipped:
        lines += ["", "Skipped (the model cannot take this dataset's images):", ""]
        lines += [f"- `{variant}`: {reason}" for variant, reason in skipped.items()]
    lines += [
        "",
        f"Best variant: `{best['variant']}` (validation accuracy {best['val_accuracy']:.4f}, "
        f"test accuracy {best['test_accuracy']:.4f}).",
        "",
        f"Registry: {decision_line}.",
        "",
        f"Ensemble: the average of the probabilities of the top {combined['k']} variants by validation "
        f"accuracy ({', '.join(f'`{m}`' for m in combined['members'])}), k chosen on validation accuracy "
        "(by k: " + ", ".join(f"{a:.4f}" for a in combined["val_accuracy_by_k"]) + "); "
        f"test accuracy {combined['test_accuracy']:.4f}.",
        "",
        *per_class,
    ]
    return "\n".join(lines)


def summary_metrics(best: Mapping, decision: Mapping, combined: Mapping) -> dict:
    """A few flat figures for `dvc exp show` / `dvc metrics show` (the per-variant files hold the rest)."""
    return {
        "best_variant": best["variant"],
        "best_val_accuracy": best["val_accuracy"],
        "best_test_accuracy": best["test_accuracy"],
        "ensemble_k": combined["k"],
        "ensemble_test_accuracy": combined["test_accuracy"],
        "champion": decision["action"],
        "champion_version": decision["version"],
    }
