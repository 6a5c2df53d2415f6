"""The `report` stage: a leaderboard of every variant, a comparison chart, and the champion gate.

    python -m mnist_pipeline.report

The best variant is the one with the highest validation accuracy (ties: lower validation loss). The
test set only ever reports: choosing by it would make its accuracy an optimistic, selected number.
The leaderboard also scores an ensemble: the average probabilities of the top-k variants by validation
accuracy, with k chosen on validation too (evaluation/leaderboard.py). The best variant then challenges the
registered champion (evaluation/champion.py decides; the registry alias moves only if it wins).
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

from mnist_pipeline.core import plots, validate
from mnist_pipeline.core.atomic import atomic_dir
from mnist_pipeline.core.errors import ConfigError, PipelineError
from mnist_pipeline.core.skipped import skip_reason
from mnist_pipeline.core.stage import hydra_stage
from mnist_pipeline.data.prepared import DatasetInfo, describe, load_metadata, load_split
from mnist_pipeline.evaluation import champion, leaderboard
from mnist_pipeline.evaluation.files import read_json, read_probabilities
from mnist_pipeline.tracking import logged_models, registry, runs, store

log = logging.getLogger(__name__)


def variant_names(params_file: Path) -> list[str]:
    params = yaml.safe_load(Path(params_file).read_text()) or {}
    variants = params.get("variants") or {}
    if not variants:
        raise PipelineError(f"{params_file}: no `variants` to report")
    return list(variants)


def load_probabilities(variants: list[str], probabilities_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every variant's validation and test probabilities (from evaluate), checked to be on the same data."""
    probs = {v: read_probabilities(probabilities_dir / f"{v}.npz", f"run `dvc repro evaluate@{v}`") for v in variants}
    first = probs[variants[0]]
    for name, p in probs.items():
        for split in ("val", "test"):
            if not np.array_equal(p[f"{split}_labels"], first[f"{split}_labels"]):
                raise PipelineError(
                    f"{probabilities_dir / name}.npz: {split} labels differ from "
                    f"{variants[0]}'s: the variants were evaluated on different data"
                )
    return probs


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
        raise ConfigError(
            f"registry.model_name: {template!r} may only use the placeholder {{dataset}} ({type(exc).__name__}: {exc})"
        ) from None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def gate_champion(cfg: DictConfig, best: dict, data_dir: Path, dataset: DatasetInfo) -> dict:
    """Let the best variant challenge the registry's champion; register and move the alias if it wins."""
    name, alias, margin = (
        registered_name(cfg.registry.model_name, dataset.name),
        cfg.registry.alias,
        float(cfg.registry.margin),
    )
    challenger = champion.Challenger(
        best["variant"],
        best["val_accuracy"],
        best["model_uri"],
        dataset.sha256,
        int(load_metadata(data_dir)["settings"]["limit"]),
    )
    store.setup(cfg.tracking)
    held = registry.holder(name, alias)
    current = (
        None
        if held is None
        else champion.Current(
            held.number,
            held.tags.get("variant", "?"),
            held.source,
            _number(held.tags.get("val_accuracy")),
            held.tags.get("data.sha256", ""),
            held.uri,
        )
    )
    decision = champion.decide(challenger, current, margin, score=lambda uri: val_accuracy_of(uri, data_dir))
    registered = None
    if decision.promote:
        trained = runs.run_tags(best["run_id"])
        registered = registry.register(
            best["model_uri"],
            name,
            {
                "variant": best["variant"],
                "val_accuracy": repr(best["val_accuracy"]),
                "test_accuracy": repr(best["test_accuracy"]),
                "dataset": dataset.name,
                "data.sha256": challenger.data_hash,
                "data.limit": str(challenger.limit),
                "git.commit": trained.get("git.commit", ""),
                "dvc.exp": trained.get("dvc.exp", ""),
                "run_id": best["run_id"],
            },
        ).number
        registry.set_alias(name, alias, registered)
    line = decision.line(challenger, current, margin, registered)  # report's last line says it
    holder_now = registered if decision.promote else (current.number if current else None)
    return {
        "model": name,
        "alias": alias,
        "action": decision.action,
        "line": line,
        "margin": margin,
        "version": holder_now,
        "variant": best["variant"] if decision.promote else (current and current.variant),
        "champion_val_accuracy": decision.champion_val,
        "rescored": decision.rescored,
        "challenger": {
            "variant": best["variant"],
            "val_accuracy": best["val_accuracy"],
            "model_uri": best["model_uri"],
            "data_sha256": challenger.data_hash,
            "data_limit": challenger.limit,
        },
    }


def report(cfg: DictConfig) -> dict:
    validate.integer(cfg, "ensemble.max_k", minimum=0)
    validate.boolean(cfg, "registry.enabled")
    validate.number(cfg, "registry.margin", at_least=0.0, below=1.0)
    models_dir, data_dir = Path(cfg.models_dir), Path(cfg.data_dir)
    named = variant_names(Path(cfg.params_file))
    skipped = {v: reason for v in named if (reason := skip_reason(models_dir / v)) is not None}
    variants = [v for v in named if v not in skipped]
    if not variants:
        raise PipelineError(
            f"every variant was skipped: no model can take this dataset's images ({'; '.join(skipped.values())})"
        )
    probs = load_probabilities(variants, Path(cfg.probabilities_dir))
    histories = {v: read_json(models_dir / v / "history.json", f"run `dvc repro train@{v}`") for v in variants}
    ranked = leaderboard.rank(
        [
            leaderboard.variant_row(
                v, histories[v], read_json(models_dir / v / "run.json", f"run `dvc repro train@{v}`"), probs[v]
            )
            for v in variants
        ]
    )
    best = ranked[0]
    combined = leaderboard.ensemble_row(ranked, probs, cfg.ensemble.max_k)
    dataset = describe(data_dir)

    if cfg.registry.enabled:
        decision = gate_champion(cfg, best, data_dir, dataset)
    else:
        decision = {"action": "disabled", "version": None, "line": "champion not registered (registry.enabled=false)"}

    summary = {
        "dataset": dataset.name,
        "classes": list(dataset.classes),
        "best": best,
        "selection": leaderboard.SELECTION,
        "registry": decision,
        "variants": ranked,
        "skipped": skipped,
        "ensemble": combined,
    }
    description = (
        f"{len(dataset.classes)} classes ({', '.join(dataset.classes)}), {dataset.image_shape[0]}x"
        f"{dataset.image_shape[1]} images, prepared data `{dataset.sha256[:12]}`."
    )
    text = leaderboard.markdown(
        ranked,
        combined,
        decision["line"],
        dataset.name,
        description,
        leaderboard.per_class_table(best, probs[best["variant"]], dataset.classes),
        skipped,
    )
    with atomic_dir(Path(cfg.reports_dir)) as staging:
        (staging / "leaderboard.json").write_text(json.dumps(summary, indent=2) + "\n")
        (staging / "summary.json").write_text(
            json.dumps(leaderboard.summary_metrics(best, decision, combined), indent=2) + "\n"
        )
        (staging / "leaderboard.md").write_text(text)
        curves = {v: h["history"]["val_accuracy"] for v, h in histories.items()}
        plots.comparison([*ranked, combined], curves, staging / "comparison.png")
    # the tables, each under its heading; the rest of the report is in the final line below
    print("\n".join(line for line in text.splitlines() if line.startswith(("|", "# ", "Per class"))))
    log.info(
        "report: best %s (val %.4f, test %.4f); %s -> %s",
        best["variant"],
        best["val_accuracy"],
        best["test_accuracy"],
        decision["line"],
        Path(cfg.reports_dir) / "leaderboard.md",
    )
    return summary


main = hydra_stage("report")(report)

if __name__ == "__main__":
    main()
