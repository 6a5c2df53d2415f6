"""A shared Optuna study in RDB storage: opened (or created) by any number of workers at once, dead trials
(a worker killed outright) handed on, and the best trial so far recorded on the study's MLflow parent run."""

from __future__ import annotations

import logging
import random
import time

import optuna
import sqlalchemy.exc
from hydra.utils import instantiate
from omegaconf import DictConfig
from sqlalchemy.engine import make_url

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.sqlite_files import first_open
from mnist_pipeline.tracking import runs

log = logging.getLogger(__name__)

OPEN_ATTEMPTS = 5
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


class SearchError(PipelineError):
    """The study could not be opened or run; the message says why."""


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
        log.warning(
            "trial %d's worker stopped sending heartbeats: trial FAIL%s",
            trial.number,
            ", its parameters queued again" if retry else "",
        )
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
                    uri,
                    heartbeat_interval=cfg.heartbeat_interval,
                    grace_period=cfg.grace_period,
                    failed_trial_callback=on_dead_trial(cfg.study_name, cfg.retries),
                )
                return optuna.create_study(
                    study_name=cfg.study_name,
                    storage=storage,
                    direction=cfg.space.direction,
                    sampler=instantiate(cfg.space.sampler),
                    pruner=instantiate(cfg.space.pruner),
                    load_if_exists=True,
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            if attempt == OPEN_ATTEMPTS:
                raise SearchError(
                    f"Optuna storage {shown(uri)}: cannot create study {cfg.study_name!r}: {str(exc).splitlines()[0]}"
                ) from exc
            time.sleep(random.uniform(0.5, 2.0))
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise SearchError(f"Optuna storage {shown(uri)}: {str(exc).splitlines()[0]}; check `storage`") from exc
    raise AssertionError("unreachable")


def record_best(study: optuna.Study, parent: str) -> None:
    """The best trial so far on the study's parent run. Workers record in any order, so the metric's step
    is how many trials had finished before the best was read: the step that has seen every trial carries
    the final best (a step per trial number let a slow worker's stale best land on the highest step)."""
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in finished):
        return
    best = study.best_trial  # read after the count: it has seen at least those trials
    assert best.value is not None  # a COMPLETE trial has its value
    runs.update_run(
        parent,
        metrics={"best_value": best.value},
        step=len(finished),
        tags={"best.trial": best.number, **{f"best.{k}": v for k, v in best.params.items()}},
    )


def all_workers_done(study: optuna.Study) -> bool:
    return not any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False))
