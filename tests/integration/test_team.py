"""Working as a team, for real on 127.0.0.1: a throwaway PostgreSQL cluster and `mlflow server` on it
(started by `mnist-pipeline server start`), the pipeline run through the server and read back through it,
a teammate's clone that gets everything from a DVC remote without training, basic-auth, and an Optuna
study shared by two worker processes (SQLite and PostgreSQL storage)."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from mnist_pipeline.team import server as tracking_server
from mnist_pipeline.team.postgres import Cluster, free_port
from tests.helpers import REPO, compose, git_commit_all, model_server, quick_project, run_dvc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def postgresql_installed():
    """PostgreSQL's programs are needed: skipped locally without them, a failure in CI (.ci/run installs them)."""
    from mnist_pipeline.team.postgres import PostgresError, bin_dir

    try:
        bin_dir()
    except PostgresError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


ADMIN_PASSWORD = "a-long-admin-passw0rd"


def cli(*args, env=None, cwd=REPO, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def server_folder() -> Path:
    """Under /tmp, readable by the `postgres` user the cluster runs as when the tests run as root."""
    folder = Path(tempfile.mkdtemp(prefix="mnist-server-", dir="/tmp"))
    folder.chmod(0o755)
    return folder


def kill_recorded(folder: Path) -> None:
    """Whatever happened, stop the server and its PostgreSQL, by the PIDs recorded when they started."""
    state = tracking_server.read_state(folder) or {}
    with contextlib.suppress(Exception):  # the fallback below still runs
        tracking_server.stop(folder, timeout=20)
    for pid in (state.get("pid"), (state.get("postgres") or {}).get("pid")):
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def dead(pid: int) -> bool:
    """Gone, or a zombie waiting for a parent that will not reap it (this container's init)."""
    try:
        return "\tZ" in Path(f"/proc/{pid}/status").read_text().split("State:")[1][:4]
    except (FileNotFoundError, IndexError):
        return True


def start_server(folder: Path, *extra: str, env=None) -> dict:
    port = free_port()
    started = cli("server", "start", "--dir", str(folder), "--port", str(port), *extra, env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{port}" in started.stdout
    return tracking_server.read_state(folder)


@pytest.fixture(scope="module")
def server():
    folder = server_folder()
    try:
        yield start_server(folder) | {"folder": folder}
    finally:
        kill_recorded(folder)


@pytest.fixture(scope="module")
def team_repo(tmp_path_factory, mnist_mirror, server):
    """A project with two quick variants, `dvc repro`'d on the full data against the server."""
    repo = quick_project(tmp_path_factory.mktemp("alice") / "project", limit=0)
    env = {"MNIST_MIRROR": str(mnist_mirror), "MLFLOW_TRACKING_URI": server["url"]}
    result = run_dvc(repo, "repro", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return repo


def test_pipeline_runs_through_the_tracking_server(team_repo, server, tmp_path):
    client = MlflowClient(tracking_uri=server["url"])
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["dense_3x500-none", "mlp_32x32-none"]
    for run in runs:
        variant, run_id = run.info.run_name, run.info.run_id
        assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert run.data.params["variant"] == variant
        assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [0]
        written = json.loads((team_repo / "metrics" / f"{variant}.json").read_text())
        assert run.data.metrics["test_accuracy"] == pytest.approx(written["test_accuracy"])
        listed = {a.path for a in client.list_artifacts(run_id)} | {
            a.path for a in client.list_artifacts(run_id, "test")
        }
        assert {"config.yaml", "training_curves.png", "test/confusion_matrix.png", "test/evaluation.json"} <= listed
        config = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path)))
        assert f"variant: {variant}" in config.read_text()
        # the artifacts went through the server into its own folder, not into the client's
        stored = Path(server["artifacts"]) / run.info.experiment_id / run_id / "artifacts" / "config.yaml"
        assert stored.read_bytes() == config.read_bytes()
    assert not (team_repo / "mlruns").exists()

    # The logged model, the alias and prediction, all through the server.
    import mlflow

    board = json.loads((team_repo / "reports" / "leaderboard.json").read_text())
    assert board["registry"]["action"] == "first"
    champion = client.get_model_version_by_alias("mnist-classifier", "champion")
    assert champion.source == board["best"]["model_uri"]
    test = np.load(team_repo / "data" / "prepared" / "test.npz")
    mlflow.set_tracking_uri(server["url"])
    try:
        served = mlflow.pyfunc.load_model("models:/mnist-classifier@champion").predict(test["x"][:20])
    finally:
        mlflow.set_tracking_uri(None)
    import keras

    local = keras.saving.load_model(team_repo / "models" / board["best"]["variant"] / "model.keras")
    np.testing.assert_allclose(np.asarray(served), local.predict(test["x"][:20], verbose=0), atol=1e-5)

    np.save(tmp_path / "digit.npy", test["x"][0])
    predicted = cli("predict", str(tmp_path / "digit.npy"), env={"MLFLOW_TRACKING_URI": server["url"]})
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.startswith(f"{tmp_path / 'digit.npy'}: {int(np.argmax(served[0]))} (p=")

    body = json.dumps({"inputs": test["x"][:1].tolist()}).encode()
    hardened = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}  # docs/serving.md's hardening: Keras needs no pickle
    with model_server("models:/mnist-classifier@champion", server["url"], tmp_path, hardened) as port:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    np.testing.assert_allclose(answer["predictions"], served[:1], atol=1e-5)


def test_a_teammate_gets_everything_from_the_remote_without_training(team_repo, server, tmp_path):
    remote = tmp_path / "remote"
    for args in (("remote", "add", "-d", "shared", str(remote)), ("push", "--run-cache")):
        done = run_dvc(team_repo, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    git_commit_all(team_repo, "results and the shared remote")

    clone = tmp_path / "bob"
    subprocess.run(["git", "clone", "-q", str(team_repo), str(clone)], check=True)
    env = {"MLFLOW_TRACKING_URI": server["url"], "MNIST_MIRROR": str(tmp_path / "no-mirror")}  # no download either
    pulled = run_dvc(clone, "pull", "--run-cache", env=env)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    repro = run_dvc(clone, "repro", env=env)
    assert repro.returncode == 0, repro.stdout + repro.stderr
    assert "Running stage" not in repro.stdout and "Data and pipelines are up to date." in repro.stdout
    shown = [json.loads(run_dvc(repo, "metrics", "show", "--json").stdout) for repo in (team_repo, clone)]
    assert shown[0][""]["data"] == shown[1][""]["data"]  # same figures, same files
    client = MlflowClient(tracking_uri=server["url"])
    for run_file in sorted(clone.glob("models/*/run.json")):
        run_id = json.loads(run_file.read_text())["run_id"]
        assert client.get_run(run_id).info.run_name == run_file.parent.name  # resolves through the server


def anonymous_status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1")
    if auth:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_basic_auth_refuses_anonymous_requests_and_serves_the_pipeline(small_prepared, tmp_path):
    folder = server_folder()
    secrets = {"MLFLOW_FLASK_SERVER_SECRET_KEY": "a-secret-key-for-csrf", "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}
    try:
        refused = cli("server", "start", "--dir", str(folder), "--auth")  # no secrets in the environment
        assert refused.returncode == 1
        assert refused.stderr.startswith(
            "error: --auth needs MLFLOW_FLASK_SERVER_SECRET_KEY and MLFLOW_AUTH_ADMIN_PASSWORD in the environment"
        )
        state = start_server(folder, "--auth", env=secrets)
        url = state["url"]
        assert anonymous_status(url) == 401
        assert anonymous_status(url, ("admin", "wrong-password-here")) == 401
        assert anonymous_status(url, ("admin", ADMIN_PASSWORD)) == 200

        train = [
            sys.executable,
            "-m",
            "mnist_pipeline.train",
            f"data_dir={small_prepared}",
            "model=mlp_32x32",
            "trainer.epochs=1",
            f"hydra.run.dir={tmp_path / 'h'}",
        ]
        anonymous = subprocess.run(
            [*train, f"output_dir={tmp_path / 'anonymous'}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
        )
        assert anonymous.returncode == 1 and "Traceback" not in anonymous.stderr
        assert anonymous.stderr.strip().splitlines()[-1].startswith(f"error: MLflow store {url}: opening experiment")
        credentials = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
        # the config group instead of MLFLOW_TRACKING_URI: tracking=server, here on the test's port
        without_uri = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        trained = subprocess.run(
            [*train, f"output_dir={tmp_path / 'admin'}", "tracking=server", f"tracking.tracking_uri={url}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            env={**without_uri, **credentials},
        )
        assert trained.returncode == 0, trained.stderr[-3000:]
        run_id = json.loads((tmp_path / "admin" / "run.json").read_text())["run_id"]
        os.environ.update(credentials)  # MlflowClient reads the credentials from the environment
        try:
            assert MlflowClient(tracking_uri=url).get_run(run_id).info.status == "FINISHED"
        finally:
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                os.environ.pop(key, None)
    finally:
        kill_recorded(folder)


def start_worker(tmp_path, name, data_dir, storage, tracking, seed):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_pipeline.search",
            "space=quick",
            "n_trials=3",
            f"data_dir={data_dir}",
            f"storage={storage}",
            f"space.sampler.seed={seed}",
            f"hydra.run.dir={tmp_path / name}",
            # aggressive: any trial under 50% validation accuracy after its first epoch stops there
            "space.pruner._target_=optuna.pruners.ThresholdPruner",
            "~space.pruner.n_startup_trials",
            "~space.pruner.n_warmup_steps",
            "+space.pruner.lower=0.5",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_share_one_study(backend, small_prepared, server, tmp_path):
    """Seeds 5 and 6 draw learning rates 7.7e-5 and 1.5e-5 among their six (TPE's random start-up trials are
    seeded per worker), which stay under 50% after one epoch: at least those two are pruned."""
    if backend == "sqlite":
        storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    else:
        cluster = Cluster(Path(server["folder"]) / "postgres", port=server["postgres"]["port"])
        storage, tracking = cluster.uri("optuna"), server["url"]
    started = time.monotonic()
    workers = [start_worker(tmp_path, f"worker{seed}", small_prepared, storage, tracking, seed) for seed in (5, 6)]
    try:
        outputs = [w.communicate(timeout=900) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    seconds = time.monotonic() - started
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    print(f"{backend}: 6 trials with 2 workers in {seconds:.1f} s")

    study = optuna.load_study(study_name="quick", storage=storage)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))  # none lost, none duplicated
    states = {t.number: t.state.name for t in trials}
    assert set(states.values()) <= {"COMPLETE", "PRUNED"} and list(states.values()).count("PRUNED") >= 2

    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    parents = [r for r in runs if r.data.tags.get("mnist.role") == "study"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["optuna.study"] == "quick"
    assert "password" not in json.dumps(parent.data.tags).lower() and cluster_password_absent(parent, storage)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == list(range(6))
    for child in children:
        number = int(child.data.tags["optuna.trial"])
        assert child.info.status == "FINISHED" and child.data.tags["optuna.state"] == states[number]
        suggested = json.loads(child.data.tags["optuna.suggested"])
        assert float(child.data.params["optimizer.lr"]) == pytest.approx(suggested["optimizer.lr"])
        assert child.data.params["trainer.batch_size"] == str(suggested["trainer.batch_size"])
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.tags["best.trial"] == str(study.best_trial.number)
    assert float(parent.data.tags["best.optimizer.lr"]) == pytest.approx(study.best_params["optimizer.lr"])

    # The best trial as a ready command (printed by the worker that finished last) and a preset.
    command = (
        "python -m mnist_pipeline.train model=mlp_32x32 trainer.epochs=2 "
        f"optimizer.lr={study.best_params['optimizer.lr']!r} "
        f"trainer.batch_size={study.best_params['trainer.batch_size']}"
    )
    assert any(command in stdout for stdout, _ in outputs), [o for o, _ in outputs]
    preset = Path(client.download_artifacts(parent.info.run_id, "best_trial.yaml", str(tmp_path)))
    assert_preset_reproduces(preset, study.best_params)


def cluster_password_absent(parent, storage: str) -> bool:
    from sqlalchemy.engine import make_url

    password = make_url(storage).password
    return not password or password not in json.dumps(parent.data.tags)


def assert_preset_reproduces(preset: Path, params: dict) -> None:
    """Dropped into conf/experiment/, the preset composes to the best trial's settings."""
    with tempfile.TemporaryDirectory() as extra:
        (Path(extra) / "experiment").mkdir()
        shutil.copy(preset, Path(extra) / "experiment" / "best_quick.yaml")
        cfg = compose("train", f"hydra.searchpath=[file://{extra}]", "experiment=best_quick")
    assert cfg.model.name == "mlp_32x32" and cfg.trainer.epochs == 2
    assert cfg.optimizer.lr == params["optimizer.lr"] and cfg.trainer.batch_size == params["trainer.batch_size"]


def test_server_commands_report_what_they_do(tmp_path):
    folder = server_folder()
    try:
        stopped = cli("server", "stop", "--dir", str(folder))
        assert stopped.returncode == 1 and stopped.stderr.startswith("error: no tracking server state in")
        assert cli("server", "status", "--dir", str(folder)).stdout.startswith("not running")
        state = start_server(folder)
        again = cli("server", "start", "--dir", str(folder), "--port", str(free_port()))
        assert again.returncode == 1 and "is already running at" in again.stderr
        assert cli("server", "status", "--dir", str(folder)).stdout.startswith(f"running at {state['url']}")
        done = cli("server", "stop", "--dir", str(folder))
        assert done.returncode == 0 and done.stdout.startswith(f"stopped {state['pid']}")
        assert dead(state["pid"]) and dead(state["postgres"]["pid"])
    finally:
        kill_recorded(folder)
