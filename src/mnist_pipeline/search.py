"""The `search` stage: an Optuna study over the train stage's settings, shared by any number of workers.

    python -m mnist_pipeline.search                              # conf/space/shallow_cnn.yaml, 10 trials
    python -m mnist_pipeline.search space=quick n_trials=4
    python -m mnist_pipeline.search storage=postgresql+psycopg://mlflow:PASSWORD@HOST:PORT/optuna  # each machine

A worker loads the study by name from Optuna's RDB storage (creating it if new) and runs `n_trials` trials.
A trial is one training (train.train) with the space's `train` overrides plus the values Optuna suggests;
validation accuracy is reported to Optuna after every epoch, so the pruner can stop a trial early, and the
kept model's validation accuracy is the objective. Each trial is an MLflow child run of the study's one
parent run (shared by every worker), tagged with its trial number, suggested values and state (COMPLETE or
PRUNED); the parent carries the best value and params. A worker ends by printing the best trial as a
ready `python -m mnist_pipeline.train ...` command and writing it as an experiment preset
(best_<study>.yaml in its output folder, and in the parent run).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict

from mnist_pipeline import train
from mnist_pipeline.core import validate
from mnist_pipeline.core.errors import ConfigError
from mnist_pipeline.core.sqlite_files import resolve_uri
from mnist_pipeline.core.stage import hydra_stage
from mnist_pipeline.tracking import artifacts, parents, runs, store
from mnist_pipeline.tuning import preset, space, study
from mnist_pipeline.tuning.pruning import PruneOnValidation

log = logging.getLogger(__name__)


def check_settings(cfg: DictConfig) -> None:
    validate.text(cfg, "study_name")
    validate.text(cfg, "storage")
    validate.integer(cfg, "n_trials", minimum=1)
    validate.integer(cfg, "heartbeat_interval", minimum=1)
    validate.integer(cfg, "grace_period", minimum=cfg.heartbeat_interval)
    validate.integer(cfg, "retries", minimum=0)
    if cfg.timeout is not None:
        validate.number(cfg, "timeout", above=0.0)
    validate.choice(cfg, "space.direction", ("maximize", "minimize"))
    space.check(cfg.space)


def trial_config(cfg: DictConfig, trial_number: int, overrides: list[str]) -> DictConfig:
    """The train stage's config for one trial: its overrides composed by Hydra; data, output folder, run
    name and tracking set directly (paths and URIs need no quoting that way)."""
    trial_cfg = compose(config_name="train", overrides=overrides)
    with open_dict(trial_cfg):
        trial_cfg.data_dir = str(cfg.data_dir)
        trial_cfg.output_dir = str(Path(cfg.output_dir) / f"trial-{trial_number}")
        trial_cfg.variant = f"trial-{trial_number}"
        trial_cfg.tracking = cfg.tracking
    return trial_cfg


def objective_for(cfg: DictConfig, parent_run_id: str):
    def objective(trial: optuna.Trial) -> float:
        values = space.suggest(trial, cfg.space.params)
        overrides = space.overrides(cfg.space, values)
        pruning = PruneOnValidation(trial)
        tags = {
            "optuna.study": cfg.study_name,
            "optuna.trial": str(trial.number),
            "optuna.state": "RUNNING",
            "optuna.suggested": json.dumps(values),
        }
        record = train.train(
            trial_config(cfg, trial.number, overrides),
            extra_callbacks=[pruning],
            tags=tags,
            overrides=overrides,
            parent_run_id=parent_run_id,
        )
        value = record["history"]["val_accuracy"][record["best_epoch"] or 0]
        if pruning.pruned_at is not None:
            runs.update_run(
                record["run_id"], tags={"optuna.state": "PRUNED", "optuna.pruned_at_epoch": str(pruning.pruned_at)}
            )
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
        runs.update_run(record["run_id"], tags={"optuna.state": "COMPLETE", "optuna.value": repr(value)})
        return value

    return objective


def search(cfg: DictConfig) -> dict:
    check_settings(cfg)
    uri = resolve_uri(str(cfg.storage))
    shared = study.open_study(cfg, uri)
    experiment_id = store.setup(cfg.tracking)
    parent = parents.shared_parent_run(
        experiment_id,
        f"study {cfg.study_name}",
        {"optuna.study": cfg.study_name, "optuna.storage": study.shown(uri), "mnist.role": "study"},
        params={
            "direction": cfg.space.direction,
            "train": list(cfg.space.train),
            **{f"space.{k}": OmegaConf.to_container(v) for k, v in cfg.space.params.items()},
        },
    )
    runs.update_run(parent, status="RUNNING")
    log.info("study %s in %s: MLflow parent run %s", cfg.study_name, study.shown(uri), parent)

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the stage logs each trial itself
    shared.optimize(
        objective_for(cfg, parent),
        n_trials=cfg.n_trials,
        timeout=cfg.timeout,
        callbacks=[lambda s, trial: study.record_best(s, parent)],
        catch=(ConfigError,),
    )

    states = [t.state for t in shared.trials]
    counts = {s.name.lower(): states.count(s) for s in optuna.trial.TrialState if states.count(s)}
    summary = {"study": cfg.study_name, "storage": study.shown(uri), "parent_run_id": parent, "trials": counts}
    if counts.get("complete"):
        best = shared.best_trial
        overrides = space.overrides(cfg.space, best.params)
        header = (
            f"# Best trial {best.number} of Optuna study {cfg.study_name!r} (validation accuracy "
            f"{best.value:.4f}).\n# Copy to conf/experiment/<name>.yaml, then: "
            "python -m mnist_pipeline.train experiment=<name>\n"
        )
        text = preset.preset(overrides, header)
        preset_file = Path(cfg.output_dir) / f"best_{cfg.study_name}.yaml"
        preset_file.parent.mkdir(parents=True, exist_ok=True)
        preset_file.write_text(text)
        artifacts.log_text_to(parent, text, "best_trial.yaml")
        summary.update(
            best_trial=best.number,
            best_value=best.value,
            best_params=best.params,
            command=preset.command(overrides),
            preset=str(preset_file),
        )
    if study.all_workers_done(shared):
        study.record_best(shared, parent)  # tags have no step: the last worker out writes the final ones
        runs.update_run(parent, status="FINISHED")  # the last worker out ends the parent run

    print(
        f"study {cfg.study_name} ({study.shown(uri)}): "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + " trials, all workers"
    )
    if "command" in summary:
        print(
            f"best: trial {summary['best_trial']}, validation accuracy {summary['best_value']:.4f}\n"
            f"  {summary['command']}\npreset: {summary['preset']} (copy it to conf/experiment/)"
        )
    return summary


main = hydra_stage("search")(search)

if __name__ == "__main__":
    main()
