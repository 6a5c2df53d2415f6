"""The search stage's settings, suggestions and best-trial outputs (no training: that is test_team.py)."""

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir

from mnist_pipeline import search
from mnist_pipeline.core.errors import ConfigError
from mnist_pipeline.core.workspace import CONF_DIR


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("search", overrides=list(overrides), return_hydra_config=False)
    cfg.output_dir = "unused"
    return cfg


@pytest.mark.parametrize("space", ["shallow_cnn", "quick"])
def test_shipped_search_spaces_are_valid(space):
    cfg = composed(f"search={space}")
    search.check_settings(cfg)
    assert cfg.study_name == space and cfg.storage == "sqlite:///mlruns/optuna.db"


@pytest.mark.parametrize(("overrides", "message"), [
    (["n_trials=0"], "n_trials: must be >= 1, got 0"),
    (["search.direction=up"], "search.direction: must be one of maximize, minimize; got 'up'"),
    (["~search.params", "+search.params={optimizer.lr: {type: float, low: 0.1, high: 0.01}}"],
     "search.params[optimizer.lr]: low and high must be numbers with low < high, got 0.1 and 0.01"),
    (["~search.params", "+search.params={optimizer.lr: {type: float, low: 0, high: 0.1, log: true}}"],
     "search.params[optimizer.lr].low: must be > 0 on a log scale, got 0"),
    (["~search.params", "+search.params={augment: {type: choice, choices: [none]}}"],
     "search.params[augment].type: must be one of float, int, categorical; got 'choice'"),
    (["~search.params", "+search.params={augment: {type: categorical, choices: []}}"],
     "search.params[augment].choices: expected a non-empty list"),
    (["search.train=[model]"], "search.train: expected a list of train overrides like model=shallow_cnn"),
])
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ConfigError) as raised:
        search.check_settings(composed("space=quick", *overrides))
    assert str(raised.value).startswith(message)


def test_suggestions_follow_the_space_and_floats_keep_every_digit():
    cfg = composed("search=shallow_cnn")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    trial = study.ask()
    values = search.suggest(trial, cfg.search.params)
    assert list(values) == ["optimizer.lr", "optimizer.warmup_fraction", "trainer.batch_size", "augment"]
    assert 3e-4 <= values["optimizer.lr"] <= 1e-2 and values["trainer.batch_size"] in (64, 128, 256, 512)
    assert values["augment"] in ("none", "light")
    lr = search.override("optimizer.lr", values["optimizer.lr"])
    assert float(lr.split("=")[1]) == values["optimizer.lr"]  # exactly the trial's value
    assert search.override("augment", "light") == "augment=light"


def test_best_trial_becomes_a_command_and_a_preset():
    cfg = composed("search=shallow_cnn")
    cfg.study_name = "shallow_cnn"
    best = optuna.trial.create_trial(
        params={"optimizer.lr": 0.00123, "augment": "light", "trainer.batch_size": 128},
        distributions={"optimizer.lr": optuna.distributions.FloatDistribution(3e-4, 1e-2, log=True),
                       "augment": optuna.distributions.CategoricalDistribution(["none", "light"]),
                       "trainer.batch_size": optuna.distributions.CategoricalDistribution([64, 128])},
        value=0.9912)
    best.number = 7
    command, preset = search.best_outputs(cfg, best)
    assert command == ("python -m mnist_pipeline.train model=shallow_cnn trainer.epochs=4 optimizer.lr=0.00123 "
                       "augment=light trainer.batch_size=128")
    assert preset.startswith("# @package _global_\n# Best trial 7 of Optuna study 'shallow_cnn' (validation "
                             "accuracy 0.9912).\n")
    assert yaml.safe_load(preset) == {
        "defaults": [{"override /model": "shallow_cnn"}, {"override /augment": "light"}],
        "trainer": {"epochs": 4, "batch_size": 128}, "optimizer": {"lr": 0.00123}}


def test_storage_password_is_never_shown():
    shown = search.shown("postgresql+psycopg://mlflow:s3cret@10.0.0.5:5432/optuna")
    assert "s3cret" not in shown and shown.endswith("@10.0.0.5:5432/optuna")


def test_the_parent_run_keeps_the_final_best_whatever_order_workers_record_in(tmp_path, monkeypatch, request):
    """Two workers: trial 2 ends first and its worker records 0.855 while trial 1 still runs; trial 1 then
    ends with 0.895. The parent's latest best_value must be 0.895 (a CI run once kept the stale 0.855 when
    steps were trial numbers), and so must the best.* tags."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # a URI another test set in this process would win over the environment
    request.addfinalizer(lambda: mlflow.set_tracking_uri(None))
    client = MlflowClient()
    parent = client.create_run(client.create_experiment("mnist")).info.run_id
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction="maximize")
    trials = [study.ask({"optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)}) for _ in range(3)]
    study.tell(trials[0], 0.8)
    study.tell(trials[2], 0.855)
    search.record_best(study, parent)  # the worker of trial 2, while trial 1 runs
    study.tell(trials[1], 0.895)
    search.record_best(study, parent)  # the worker of trial 1
    run = client.get_run(parent)
    assert run.data.metrics["best_value"] == pytest.approx(0.895)
    assert [(m.step, m.value) for m in client.get_metric_history(parent, "best_value")] == [(2, 0.855), (3, 0.895)]
    assert run.data.tags["best.trial"] == "1"
    assert float(run.data.tags["best.optimizer.lr"]) == trials[1].params["optimizer.lr"]
