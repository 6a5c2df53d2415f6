"""Which MLflow store a stage uses, how store failures read, and how threads are split between jobs."""

import sqlite3

import pytest
from mlflow.exceptions import MlflowException

from mnist_pipeline.core import workspace
from mnist_pipeline.ml import runtime
from mnist_pipeline.tracking import store


@pytest.fixture(autouse=True)
def no_store_from_the_environment(monkeypatch):
    """mlflow.set_tracking_uri() also sets MLFLOW_TRACKING_URI: undo it after each test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")


def test_relative_sqlite_uri_is_the_projects_not_the_current_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert store.resolve_uri("sqlite:///mlruns/mlflow.db") == f"sqlite:///{workspace.WORKSPACE}/mlruns/mlflow.db"
    # Inside a queued or --temp DVC experiment, DVC_ROOT names the project, not the temporary copy.
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "project"))
    assert store.resolve_uri("sqlite:///mlruns/mlflow.db") == f"sqlite:///{tmp_path}/project/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere/m.db")
    assert store.tracking_uri({"tracking_uri": "unused"}) == f"sqlite:///{tmp_path}/project/elsewhere/m.db"
    for kept in ("sqlite:////abs/mlflow.db", "http://127.0.0.1:5000", "postgresql://u@h/db", "sqlite:///:memory:"):
        assert store.resolve_uri(kept) == kept


def test_dvc_experiment_name_comes_from_dvc(monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert workspace.dvc_experiment() == ""
    monkeypatch.setenv("DVC_EXP_NAME", "wider-mlp")
    assert workspace.dvc_experiment() == "wider-mlp"


def test_store_errors_read_as_one_line_with_what_to_do():
    locked = MlflowException("(sqlite3.OperationalError) database is locked\n[SQL: INSERT INTO metrics ...]")
    text = store.describe(locked, "logging epoch 3's metrics", "sqlite:////p/mlflow.db")
    assert text == (
        "MLflow store sqlite:////p/mlflow.db: logging epoch 3's metrics failed: (sqlite3.OperationalError) "
        "database is locked; another process kept the SQLite store busy for over 20 s: retry, or give "
        "many parallel writers a tracking server (mlflow server) instead of one SQLite file"
    )
    other = store.describe(ValueError("boom"), "x", "http://h:1")
    assert (
        other
        == "MLflow store http://h:1: x failed: boom; check the store (MLFLOW_TRACKING_URI or tracking.tracking_uri)"
    )


def test_guarded_turns_store_exceptions_into_tracking_errors(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"this is not a database, it only has the name of one" * 100)
    with pytest.raises(
        store.TrackingError,
        match=r"opening experiment 'mnist' failed: .*file is not a database; "
        r"the file is not an SQLite database",
    ):
        store.setup({"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "mnist"})
    with pytest.raises(ZeroDivisionError), store.guarded("x"):  # not a store error: left alone
        _ = 1 / 0


def test_use_refuses_a_missing_sqlite_store_without_creating_it(tmp_path):
    with pytest.raises(store.TrackingError, match=f"no MLflow store at {tmp_path}/none/mlflow.db: run the pipeline"):
        store.use(f"sqlite:///{tmp_path}/none/mlflow.db")
    assert not (tmp_path / "none").exists()


def test_a_new_store_is_created_once_and_reused(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    first = store.setup({"tracking_uri": uri, "experiment": "mnist"})
    assert store.setup({"tracking_uri": uri, "experiment": "mnist"}) == first
    with sqlite3.connect(tmp_path / "store" / "mlflow.db") as db:
        assert db.execute("select count(*) from experiments where name = 'mnist'").fetchone() == (1,)
        artifact_root = db.execute("select artifact_location from experiments where name = 'mnist'").fetchone()[0]
    assert artifact_root == (tmp_path / "store" / "mnist").as_uri()


@pytest.mark.parametrize(
    ("threads", "jobs", "cores", "expected"),
    [
        ({"intra_op": 0, "inter_op": 0}, 1, 2, (0, 0)),  # one job: TensorFlow's default, every core
        ({"intra_op": 0, "inter_op": 0}, 2, 2, (1, 1)),  # two jobs on two cores: one each
        ({"intra_op": 0, "inter_op": 0}, 4, 2, (1, 1)),  # never below one
        ({"intra_op": 0, "inter_op": 0}, 2, 8, (4, 4)),
        ({"intra_op": 3, "inter_op": 0}, 2, 8, (3, 4)),  # an explicit setting wins
    ],
)
def test_threads_are_split_between_concurrent_jobs(threads, jobs, cores, expected):
    assert runtime.thread_counts(threads, jobs, cores) == expected
