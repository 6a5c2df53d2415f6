"""The search stage's settings, suggestions and best-trial outputs (no training: that is test_team.py)."""

import optuna
import pytest
import yaml

from mnist_pipeline import search
from mnist_pipeline.core.errors import ConfigError
from mnist_pipeline.tuning import preset, space, study
from tests.helpers import compose


def composed(*overrides):
    return compose("search", *overrides)


@pytest.mark.parametrize("space", ["shallow_cnn", "quick"])
def test_shipped_search_spaces_are_valid(space):
    cfg = composed(f"space={space}")
    search.check_settings(cfg)
    assert cfg.study_name == space and cfg.storage == "sqlite:///mlruns/optuna.db"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["n_trials=0"], "n_trials: must be >= 1, got 0"),
        (["space.direction=up"], "space.direction: must be one of maximize, minimize; got 'up'"),
        (
            ["~space.params", "+space.params={optimizer.lr: {type: float, low: 0.1, high: 0.01}}"],
            "space.params[optimizer.lr]: low and high must be numbers with low < high, got 0.1 and 0.01",
        ),
        (
            ["~space.params", "+space.params={optimizer.lr: {type: float, low: 0, high: 0.1, log: true}}"],
            "space.params[optimizer.lr].low: must be > 0 on a log scale, got 0",
        ),
        (
            ["~space.params", "+space.params={augment: {type: choice, choices: [none]}}"],
            "space.params[augment].type: must be one of float, int, categorical; got 'choice'",
        ),
        (
            ["~space.params", "+space.params={augment: {type: categorical, choices: []}}"],
            "space.params[augment].choices: expected a non-empty list",
        ),
        (["space.train=[model]"], "space.train: expected a list of train overrides like model=shallow_cnn"),
    ],
)
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ConfigError) as raised:
        search.check_settings(composed("space=quick", *overrides))
    assert str(raised.value).startswith(message)


def test_suggestions_follow_the_space_and_floats_keep_every_digit():
    cfg = composed("space=shallow_cnn")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    trial = study.ask()
    values = space.suggest(trial, cfg.space.params)
    assert list(values) == ["optimizer.lr", "optimizer.warmup_fraction", "trainer.batch_size", "augment"]
    assert 3e-4 <= values["optimizer.lr"] <= 1e-2 and values["trainer.batch_size"] in (64, 128, 256, 512)
    assert values["augment"] in ("none", "light")
    lr = space.override("optimizer.lr", values["optimizer.lr"])
    assert float(lr.split("=")[1]) == values["optimizer.lr"]  # exactly the trial's value
    assert space.override("augment", "light") == "augment=light"


def test_a_trials_values_become_train_overrides_after_the_spaces_own():
    cfg = composed("space=shallow_cnn")
    assert space.overrides(cfg.space, {"optimizer.lr": 0.00123, "augment": "light", "trainer.batch_size": 128}) == [
        "model=shallow_cnn",
        "trainer.epochs=4",
        "optimizer.lr=0.00123",
        "augment=light",
        "trainer.batch_size=128",
    ]


def test_best_trial_becomes_a_command_and_a_preset():
    overrides = [
        "model=shallow_cnn",
        "trainer.epochs=4",
        "optimizer.lr=0.00123",
        "augment=light",
        "trainer.batch_size=128",
    ]
    assert preset.command(overrides) == (
        "python -m mnist_pipeline.train model=shallow_cnn trainer.epochs=4 optimizer.lr=0.00123 augment=light "
        "trainer.batch_size=128"
    )
    header = "# Best trial 7 of Optuna study 'shallow_cnn' (validation accuracy 0.9912).\n"
    text = preset.preset(overrides, header)
    assert text.startswith(
        "# @package _global_\n# Best trial 7 of Optuna study 'shallow_cnn' (validation accuracy 0.9912).\n"
    )
    # config groups (folders of conf/) become `override /group` defaults, dotted settings nested values
    assert yaml.safe_load(text) == {
        "defaults": [{"override /model": "shallow_cnn"}, {"override /augment": "light"}],
        "trainer": {"epochs": 4, "batch_size": 128},
        "optimizer": {"lr": 0.00123},
    }
    assert yaml.safe_load(preset.preset(["trainer.epochs=2"], "")) == {"trainer": {"epochs": 2}}  # no groups


def test_storage_password_is_never_shown():
    shown = study.shown("postgresql+psycopg://mlflow:s3cret@10.0.0.5:5432/optuna")
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
    shared = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction="maximize")
    trials = [shared.ask({"optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)}) for _ in range(3)]
    shared.tell(trials[0], 0.8)
    shared.tell(trials[2], 0.855)
    study.record_best(shared, parent)  # the worker of trial 2, while trial 1 runs
    shared.tell(trials[1], 0.895)
    study.record_best(shared, parent)  # the worker of trial 1
    run = client.get_run(parent)
    assert run.data.metrics["best_value"] == pytest.approx(0.895)
    assert [(m.step, m.value) for m in client.get_metric_history(parent, "best_value")] == [(2, 0.855), (3, 0.895)]
    assert run.data.tags["best.trial"] == "1"
    assert float(run.data.tags["best.optimizer.lr"]) == trials[1].params["optimizer.lr"]
