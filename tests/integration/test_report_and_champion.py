"""The report stage and the champion gate, on variants whose numbers the test chooses, each backed by a real
logged Keras model in a temporary MLflow store; the registry command on the same store."""

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mnist_pipeline import report
from mnist_pipeline.data.prepared import data_hash
from mnist_pipeline.evaluation.files import save_probabilities
from mnist_pipeline.tracking import logged_models, runs
from mnist_pipeline.tracking import store as tracking_store
from tests.helpers import compose, registry_cli

NAME = "mnist-classifier"


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def prepared(root, name, labels, limit=0):
    """A prepared-data folder: its validation split (random images, these labels) and dataset.json."""
    folder = root / name
    folder.mkdir()
    x = np.random.default_rng(len(name)).random((len(labels), 28, 28, 1), dtype=np.float32)
    np.savez(folder / "val.npz", x=x, y=np.asarray(labels, np.uint8))
    (folder / "dataset.json").write_text(
        json.dumps(
            {
                "dataset": "mnist",
                "classes": [str(d) for d in range(10)],
                "image_shape": [28, 28, 1],
                "preprocess": {"box": 20, "centre": "mass"},
                "settings": {"limit": limit},
            }
        )
    )
    return folder


def fake_variant(root, name, val_accuracy, test_accuracy, store, predicts=0, tags=None):
    """A variant evaluated at these accuracies (its probabilities files), backed by a real logged model that
    always predicts `predicts` (for the champion's rescoring on other data)."""
    import keras

    tracking_store.setup({"tracking_uri": store, "experiment": "mnist"})
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros"),
        ]
    )
    model.layers[-1].bias.assign(np.eye(10, dtype=np.float32)[predicts] * 5)
    with runs.training_run(name, {"variant": name}, tags or {}) as run:
        uri = logged_models.log_keras_model(model, np.zeros((1, 28, 28, 1), np.float32), step=0)
    folder = root / "models" / name
    folder.mkdir(parents=True)
    (folder / "history.json").write_text(
        json.dumps(
            {
                "variant": name,
                "epochs_run": 2,
                "best_epoch": 1,
                "params": model.count_params(),
                "history": {"val_accuracy": [0.5, val_accuracy], "val_loss": [1.0, 0.1], "epoch_seconds": [1.5, 2.5]},
            }
        )
    )
    (folder / "run.json").write_text(json.dumps({"run_id": run.info.run_id, "model_uri": uri}))
    labels = np.arange(10_000) % 10  # fine enough for accuracies like 0.9903
    (root / "probabilities").mkdir(exist_ok=True)
    save_probabilities(
        root / "probabilities" / f"{name}.npz",
        val=(confident(labels, val_accuracy), labels),
        test=(confident(labels, test_accuracy), labels),
    )
    return uri


def confident(labels, accuracy):
    """Probabilities with that accuracy: 0.9 on the true label for the first images, else on the next digit."""
    right = np.arange(len(labels)) < round(accuracy * len(labels))
    predicted = np.where(right, labels, (labels + 1) % 10)
    probs = np.full((len(labels), 10), 0.1 / 9, np.float32)
    probs[np.arange(len(labels)), predicted] = 0.9
    return probs


def run_report(root, store, variants, data_dir, *overrides):
    (root / "params.yaml").write_text(json.dumps({"variants": {v: {} for v in variants}}))
    cfg = compose(
        "report",
        f"params_file={root / 'params.yaml'}",
        f"models_dir={root / 'models'}",
        f"reports_dir={root / 'reports'}",
        f"probabilities_dir={root / 'probabilities'}",
        f"data_dir={data_dir}",
        f"tracking.tracking_uri={store}",
        *overrides,
    )
    return report.report(cfg)


def alias_source(store):
    return MlflowClient(tracking_uri=store).get_model_version_by_alias(NAME, "champion").source


def registered(store):
    return sorted(int(v.version) for v in MlflowClient(tracking_uri=store).search_model_versions(f"name = '{NAME}'"))


def test_leaderboard_then_first_champion_with_its_tags(tmp_path, store):
    data = prepared(tmp_path, "data", np.arange(200) % 10)
    tags = {"git.commit": "0123456789abcdef", "dvc.exp": "wider-mlp"}
    uri_a = fake_variant(tmp_path, "a", val_accuracy=0.99, test_accuracy=0.90, store=store, tags=tags)
    fake_variant(tmp_path, "b", val_accuracy=0.95, test_accuracy=0.99, store=store)  # better on test only

    first = run_report(tmp_path, store, ["a", "b"], data)
    assert first["best"]["variant"] == "a"
    assert first["registry"]["action"] == "first" and first["registry"]["version"] == 1
    assert first["registry"]["line"] == "champion registered: v1 a, val 0.9900 (no champion before)"
    assert alias_source(store) == uri_a
    version = MlflowClient(tracking_uri=store).get_model_version(NAME, "1")
    run_id = json.loads((tmp_path / "models/a/run.json").read_text())["run_id"]
    assert version.tags == {
        "variant": "a",
        "val_accuracy": "0.99",
        "test_accuracy": "0.9",
        "dataset": "mnist",
        "data.sha256": data_hash(data),
        "data.limit": "0",
        "git.commit": "0123456789abcdef",
        "dvc.exp": "wider-mlp",
        "run_id": run_id,
    }

    board = json.loads((tmp_path / "reports" / "leaderboard.json").read_text())
    assert [r["variant"] for r in board["variants"]] == ["a", "b"]
    assert board["variants"][0]["train_seconds"] == 4.0 and board["best"]["model_uri"] == uri_a
    assert board["registry"]["line"] == first["registry"]["line"]
    md = (tmp_path / "reports" / "leaderboard.md").read_text()
    # test loss from a's test probabilities: -(0.9 ln 0.9 + 0.1 ln(0.1/9)) = 0.5448
    assert "| **a** (best) | 7,850 | 2 | 4 | 0.9900 | 0.9000 | 0.5448 |" in md
    assert "Registry: champion registered: v1 a, val 0.9900 (no champion before)." in md
    assert (tmp_path / "reports" / "comparison.png").read_bytes()[:4] == b"\x89PNG"

    # The ensemble: k chosen on validation among the top variants by validation accuracy, scored on test.
    # a alone: 0.99. a and b averaged: both right on images 0-9499; on 9500-9899 (a right, b on the next digit)
    # the two digits tie at (0.9 + 0.1/9) / 2 and argmax takes the lower one, right for labels 0-8 and wrong
    # for 9 (its next digit is 0): 360 of 400; both wrong from 9900. 9,860 of 10,000 < 0.99, so k = 1, and
    # the ensemble's test accuracy is a's own, 0.90.
    combined = board["ensemble"]
    assert (combined["k"], combined["members"]) == (1, ["a"])
    assert combined["val_accuracy_by_k"] == pytest.approx([0.99, 0.986], abs=1e-12)
    assert combined["test_accuracy"] == pytest.approx(0.90, abs=1e-12)
    assert "| ensemble of top 1 |" in md

    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary == {
        "best_variant": "a",
        "best_val_accuracy": 0.99,
        "best_test_accuracy": 0.9,
        "ensemble_k": 1,
        "ensemble_test_accuracy": 0.9,
        "champion": "first",
        "champion_version": 1,
    }


def test_alias_moves_only_for_a_gain_of_at_least_the_margin(tmp_path, store):
    data = prepared(tmp_path, "data", np.arange(200) % 10)
    uri_a = fake_variant(tmp_path, "a", val_accuracy=0.99, test_accuracy=0.90, store=store)
    run_report(tmp_path, store, ["a"], data)

    again = run_report(tmp_path, store, ["a"], data)["registry"]
    assert again["action"] == "unchanged" and again["version"] == 1
    assert again["line"] == "champion unchanged: v1 a is still the best variant (val 0.9900)"

    fake_variant(tmp_path, "c", val_accuracy=0.9903, test_accuracy=0.99, store=store)  # +0.0003 < margin 0.0005
    kept = run_report(tmp_path, store, ["a", "c"], data)["registry"]
    assert kept["action"] == "kept" and kept["version"] == 1 and kept["rescored"] is False
    assert kept["line"] == "champion kept: v1 a, val 0.9900 + margin 0.0005 > challenger c 0.9903"
    assert alias_source(store) == uri_a and registered(store) == [1]

    uri_d = fake_variant(tmp_path, "d", val_accuracy=0.9905, test_accuracy=0.95, store=store)  # exactly the margin
    promoted = run_report(tmp_path, store, ["a", "c", "d"], data)["registry"]
    assert promoted["action"] == "promoted" and promoted["version"] == 2
    assert promoted["line"] == "champion promoted: v2 d, val 0.9905 >= v1 a 0.9900 + margin 0.0005"
    assert alias_source(store) == uri_d and registered(store) == [1, 2]  # the old champion stays registered

    # A bigger margin keeps it (registry.margin is a setting); a margin outside [0, 1) is refused.
    fake_variant(tmp_path, "e", val_accuracy=0.9955, test_accuracy=0.95, store=store)
    assert run_report(tmp_path, store, ["d", "e"], data, "registry.margin=0.01")["registry"]["action"] == "kept"
    from mnist_pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"registry.margin: must be >= 0.0, got -0.1"):
        run_report(tmp_path, store, ["d", "e"], data, "registry.margin=-0.1")


def test_reduced_data_never_promotes(tmp_path, store):
    small = prepared(tmp_path, "small", np.arange(200) % 10, limit=2000)
    fake_variant(tmp_path, "quick", val_accuracy=0.999, test_accuracy=0.99, store=store)
    none = run_report(tmp_path, store, ["quick"], small)["registry"]
    assert none["action"] == "none" and none["version"] is None and registered(store) == []
    assert none["line"] == (
        "no champion: challenger quick (val 0.9990) was trained on reduced data "
        "(prepare.limit=2000), which never promotes"
    )

    full = prepared(tmp_path, "full", np.arange(200) % 10)
    uri_a = fake_variant(tmp_path, "a", val_accuracy=0.98, test_accuracy=0.98, store=store)
    run_report(tmp_path, store, ["a"], full)
    kept = run_report(tmp_path, store, ["quick"], small)["registry"]
    assert kept["action"] == "kept" and kept["version"] == 1
    assert kept["line"] == (
        "champion kept: v1 a; challenger quick (val 0.9990) was trained on reduced data "
        "(prepare.limit=2000), which never promotes"
    )
    assert alias_source(store) == uri_a and registered(store) == [1]


def test_champion_is_rescored_when_the_data_differ(tmp_path, store):
    """The champion always predicts 3: on data whose labels are all 3 it scores 1.0 and is kept against a
    challenger at 0.999; on data without a 3 it scores 0.0 and loses."""
    uri_a = fake_variant(tmp_path, "a", val_accuracy=0.97, test_accuracy=0.97, store=store, predicts=3)
    run_report(tmp_path, store, ["a"], prepared(tmp_path, "first", np.arange(200) % 10))

    fake_variant(tmp_path, "b", val_accuracy=0.999, test_accuracy=0.99, store=store)
    threes = run_report(tmp_path, store, ["b"], prepared(tmp_path, "threes", np.full(50, 3)))["registry"]
    assert threes["action"] == "kept" and threes["rescored"] is True and threes["champion_val_accuracy"] == 1.0
    assert threes["line"] == (
        "champion kept: v1 a, val 1.0000 + margin 0.0005 > challenger b 0.9990 "
        "(v1 rescored on this validation split: it was registered on other data)"
    )
    assert alias_source(store) == uri_a

    no_threes = run_report(tmp_path, store, ["b"], prepared(tmp_path, "fives", np.full(50, 5)))["registry"]
    assert no_threes["action"] == "promoted" and no_threes["champion_val_accuracy"] == 0.0
    assert no_threes["version"] == 2


def test_registry_command_lists_versions_and_rolls_back(tmp_path, store):
    data = prepared(tmp_path, "data", np.arange(200) % 10)
    uri_a = fake_variant(
        tmp_path,
        "a",
        val_accuracy=0.95,
        test_accuracy=0.94,
        store=store,
        tags={"git.commit": "aaaaaaaaaaaa1111", "dvc.exp": "baseline"},
    )
    run_report(tmp_path, store, ["a"], data)
    uri_b = fake_variant(tmp_path, "b", val_accuracy=0.99, test_accuracy=0.98, store=store)
    run_report(tmp_path, store, ["a", "b"], data)
    assert alias_source(store) == uri_b

    listed = registry_cli(store=store)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["version", "variant", "val", "acc", "test", "acc", "data", "commit", "dvc", "exp"]
    assert lines[1].split() == ["v1", "a", "0.9500", "0.9400", data_hash(data)[:12], "aaaaaaaaaa", "baseline"]
    assert lines[2].split() == ["*", "v2", "b", "0.9900", "0.9800", data_hash(data)[:12], "-", "-"]
    assert lines[3] == "* = @champion"

    back = registry_cli("rollback", "1", store=store)
    assert back.returncode == 0, back.stderr
    assert back.stdout == "@champion: v1 a (was v2 b)\n"
    assert alias_source(store) == uri_a
    assert registry_cli(store=store).stdout.splitlines()[1].startswith("* v1 ")

    missing = registry_cli("rollback", "7", store=store)
    assert (
        missing.returncode == 1 and missing.stderr == "error: mnist-classifier has no version 7 (registered: v1, v2)\n"
    )
    assert registry_cli("rollback", store=store).returncode == 2
    assert alias_source(store) == uri_a


def test_report_names_a_variant_that_was_not_evaluated(tmp_path):
    from mnist_pipeline.core.errors import PipelineError

    with pytest.raises(PipelineError, match=r"probabilities/x.npz not found: run `dvc repro evaluate@x`"):
        run_report(tmp_path, "sqlite:///unused.db", ["x"], tmp_path)
