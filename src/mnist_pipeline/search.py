"""The `search` stage: an Optuna study over the train stage's settings, shared by any number of workers.

    python -m mnist_pipeline.search                              # conf/search/shallow_cnn.yaml, 10 trials
    python -m mnist_pipeline.search search=quick n_trials=4
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
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import optuna
import sqlalchemy.exc
import yaml
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from sqlalchemy.engine import make_url

from mnist_pipeline import train, validate, workspace
from mnist_pipeline.errors import ConfigError, PipelineError
from mnist_pipeline.sqlite_files import first_open, resolve_uri
from mnist_pipeline.stage import hydra_stage
from mnist_pipeline.tracking import runs, store

log = logging.getLogger(__name__)

KINDS = ("float", "int", "categorical")
OPEN_ATTEMPTS = 5


class SearchError(PipelineError):
    """The study could not be opened or run; the message says why."""


def check_settings(cfg: DictConfig) -> None:
    validate.text(cfg, "study_name")
    validate.text(cfg, "storage")
    validate.integer(cfg, "n_trials", minimum=1)
    validate.integer(cfg, "heartbeat_interval", minimum=1)
    validate.integer(cfg, "grace_period", minimum=cfg.heartbeat_interval)
    validate.integer(cfg, "retries", minimum=0)
    if cfg.timeout is not None:
        validate.number(cfg, "timeout", above=0.0)
    validate.choice(cfg, "search.direction", ("maximize", "minimize"))
    if not OmegaConf.is_list(cfg.search.train) or not all("=" in str(o) for o in cfg.search.train):
        raise ConfigError(f"search.train: expected a list of train overrides like model=shallow_cnn, "
                          f"got {cfg.search.train!r}")
    if not cfg.search.params:
        raise ConfigError("search.params: the search space is empty")
    for key, spec in cfg.search.params.items():  # keys hold dots (optimizer.lr): checked here, not by select
        where = f"search.params[{key}]"
        kind = spec.get("type") if OmegaConf.is_dict(spec) else None
        if kind not in KINDS:
            raise ConfigError(f"{where}.type: must be one of {', '.join(KINDS)}; got {kind!r}")
        if kind == "categorical":
            if not spec.get("choices"):
                raise ConfigError(f"{where}.choices: expected a non-empty list")
            continue
        low, high = spec.get("low"), spec.get("high")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
            raise ConfigError(f"{where}: low and high must be numbers with low < high, got {low!r} and {high!r}")
        if spec.get("log") and low <= 0:
            raise ConfigError(f"{where}.low: must be > 0 on a log scale, got {low}")


def suggest(trial: optuna.Trial, space: Mapping) -> dict[str, Any]:
    """Optuna's values for this trial: {dotted train setting: value}."""
    values = {}
    for key, spec in space.items():
        if spec["type"] == "categorical":
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                              log=bool(spec.get("log")))
    return values


def override(key: str, value: Any) -> str:
    """`key=value` in Hydra's override grammar; floats keep every digit, so the trial can be rerun exactly."""
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


class PruneOnValidation(keras.callbacks.Callback):
    """Reports validation accuracy to Optuna after every epoch; if the pruner says so, stops the training
    (which then ends normally, its run FINISHED) and remembers the epoch, so the trial can be marked PRUNED."""

    def __init__(self, trial: optuna.Trial, monitor: str = "val_accuracy") -> None:
        super().__init__()
        self.trial, self.monitor = trial, monitor
        self.pruned_at: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        self.trial.report(float((logs or {})[self.monitor]), step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            self.model.stop_training = True


def shown(uri: str) -> str:
    """A storage URI without its password, for logs and tags."""
    try:
        return make_url(uri).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return uri


def on_dead_trial(study_name: str, retries: int):
    """What a worker does with a trial whose worker stopped sending heartbeats (Optuna has marked it FAIL):
    its MLflow run is ended KILLED, and its parameters are queued again up to `retries` times."""
    retry = optuna.storages.RetryFailedTrialCallback(max_retry=retries) if retries else None

    def handle(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.warning("trial %d's worker stopped sending heartbeats: trial FAIL%s", trial.number,
                    ", its parameters queued again" if retry else "")
        for run_id in runs.running_ids({"optuna.study": study_name, "optuna.trial": str(trial.number)}):
            runs.update_run(run_id, tags={"optuna.state": "FAIL"}, status="KILLED")
        if retry:
            retry(study, trial)

    return handle


def open_study(cfg: DictConfig, uri: str) -> optuna.Study:
    """Load the study, creating it (and the storage's tables) if new. Workers that start at once race to
    create tables: on one machine a lock serializes SQLite's first opening; across machines a lost race on
    PostgreSQL is an integrity error, after which the tables exist and a retry succeeds."""
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            with first_open(uri):
                storage = optuna.storages.RDBStorage(
                    uri, heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period,
                    failed_trial_callback=on_dead_trial(cfg.study_name, cfg.retries))
                return optuna.create_study(
                    study_name=cfg.study_name, storage=storage,
                    direction=cfg.search.direction, sampler=instantiate(cfg.search.sampler),
                    pruner=instantiate(cfg.search.pruner), load_if_exists=True)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            if attempt == OPEN_ATTEMPTS:
                raise SearchError(f"Optuna storage {shown(uri)}: cannot create study {cfg.study_name!r}: "
                                  f"{str(exc).splitlines()[0]}") from exc
            time.sleep(random.uniform(0.5, 2.0))
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise SearchError(f"Optuna storage {shown(uri)}: {str(exc).splitlines()[0]}; check `storage`") from exc
    raise AssertionError("unreachable")


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
        values = suggest(trial, cfg.search.params)
        overrides = [*map(str, cfg.search.train), *(override(k, v) for k, v in values.items())]
        pruning = PruneOnValidation(trial)
        tags = {"optuna.study": cfg.study_name, "optuna.trial": str(trial.number), "optuna.state": "RUNNING",
                "optuna.suggested": json.dumps(values)}
        record = train.train(trial_config(cfg, trial.number, overrides), callbacks=[pruning], tags=tags,
                             overrides=overrides, parent_run_id=parent_run_id)
        value = record["history"]["val_accuracy"][record["best_epoch"] or 0]
        if pruning.pruned_at is not None:
            runs.update_run(record["run_id"], tags={"optuna.state": "PRUNED",
                                                    "optuna.pruned_at_epoch": str(pruning.pruned_at)})
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_at}")
        runs.update_run(record["run_id"], tags={"optuna.state": "COMPLETE", "optuna.value": repr(value)})
        return value

    return objective


def best_outputs(cfg: DictConfig, best: optuna.trial.FrozenTrial) -> tuple[str, str]:
    """The best trial as a ready command and as an experiment preset (conf/experiment/ format)."""
    overrides = [*map(str, cfg.search.train), *(override(k, v) for k, v in best.params.items())]
    command = "python -m mnist_pipeline.train " + " ".join(overrides)
    groups, values = [], {}
    for item in overrides:
        key, value = item.split("=", 1)
        if (workspace.CONF_DIR / key).is_dir():  # a config group choice: model=shallow_cnn
            groups.append({f"override /{key}": value})
            continue
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    preset = {"defaults": groups, **values} if groups else values
    header = (f"# @package _global_\n# Best trial {best.number} of Optuna study {cfg.study_name!r} "
              f"(validation accuracy {best.value:.4f}).\n# Copy to conf/experiment/<name>.yaml, then: "
              f"python -m mnist_pipeline.train experiment=<name>\n")
    return command, header + yaml.safe_dump(preset, sort_keys=False)


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def record_best(study: optuna.Study, parent: str) -> None:
    """The best trial so far on the study's parent run. Workers record in any order, so the metric's step
    is how many trials had finished before the best was read: the step that has seen every trial carries
    the final best (a step per trial number let a slow worker's stale best land on the highest step)."""
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in finished):
        return
    best = study.best_trial  # read after the count: it has seen at least those trials
    runs.update_run(parent, metrics={"best_value": best.value}, step=len(finished),
                    tags={"best.trial": best.number, **{f"best.{k}": v for k, v in best.params.items()}})


def search(cfg: DictConfig) -> dict:
    check_settings(cfg)
    uri = resolve_uri(str(cfg.storage))
    study = open_study(cfg, uri)
    experiment_id = store.setup(cfg.tracking)
    parent = runs.shared_parent_run(
        experiment_id, f"study {cfg.study_name}",
        {"optuna.study": cfg.study_name, "optuna.storage": shown(uri), "mnist.role": "study"},
        params={"direction": cfg.search.direction, "train": list(cfg.search.train),
                **{f"space.{k}": OmegaConf.to_container(v) for k, v in cfg.search.params.items()}})
    runs.update_run(parent, status="RUNNING")
    log.info("study %s in %s: MLflow parent run %s", cfg.study_name, shown(uri), parent)

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the stage logs each trial itself
    study.optimize(objective_for(cfg, parent), n_trials=cfg.n_trials, timeout=cfg.timeout,
                   callbacks=[lambda study, trial: record_best(study, parent)], catch=(ConfigError,))

    states = [t.state for t in study.trials]
    counts = {s.name.lower(): states.count(s) for s in optuna.trial.TrialState if states.count(s)}
    summary = {"study": cfg.study_name, "storage": shown(uri), "parent_run_id": parent, "trials": counts}
    if counts.get("complete"):
        best = study.best_trial
        command, preset = best_outputs(cfg, best)
        preset_file = Path(cfg.output_dir) / f"best_{cfg.study_name}.yaml"
        preset_file.parent.mkdir(parents=True, exist_ok=True)
        preset_file.write_text(preset)
        runs.log_text_to(parent, preset, "best_trial.yaml")
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params, command=command,
                       preset=str(preset_file))
    if not any(s == optuna.trial.TrialState.RUNNING for s in
               (t.state for t in study.get_trials(deepcopy=False))):
        record_best(study, parent)  # tags have no step: the last worker out writes the final ones
        runs.update_run(parent, status="FINISHED")  # the last worker out ends the parent run

    print(f"study {cfg.study_name} ({shown(uri)}): " + ", ".join(f"{n} {s}" for s, n in counts.items())
          + " trials, all workers")
    if "command" in summary:
        print(f"best: trial {summary['best_trial']}, validation accuracy {summary['best_value']:.4f}\n"
              f"  {summary['command']}\npreset: {summary['preset']} (copy it to conf/experiment/)")
    return summary


main = hydra_stage("search")(search)

if __name__ == "__main__":
    main()
