"""A search worker killed with kill -9: Optuna's heartbeat lets the next worker fail its trial, end the
trial's MLflow run KILLED and run the same parameters again (RetryFailedTrialCallback)."""

import os
import signal
import subprocess
import sys
import time

import optuna
from mlflow.tracking import MlflowClient

from tests.helpers import REPO, UNTIL_STOPPED


def worker(tmp_path, name, data_dir, epochs):
    return [
        sys.executable,
        "-m",
        "mnist_pipeline.search",
        "space=quick",
        "n_trials=1",
        f"data_dir={data_dir}",
        f"storage=sqlite:///{tmp_path / 'optuna.db'}",
        f"space.train=['model=mlp_32x32','trainer.epochs={epochs}']",
        "heartbeat_interval=1",
        "grace_period=2",
        f"hydra.run.dir={tmp_path / name}",
    ]


def test_a_killed_workers_trial_is_failed_and_run_again(tmp_path, small_prepared):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    first = subprocess.Popen(
        worker(tmp_path, "w1", small_prepared, epochs=UNTIL_STOPPED),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while not any(
            "loss" in r.data.metrics and "optuna.trial" in r.data.tags
            for e in (client.search_experiments() if (tmp_path / "mlflow.db").exists() else [])
            for r in client.search_runs([e.experiment_id])
        ):
            assert first.poll() is None and time.monotonic() < deadline, "the first trial never logged an epoch"
            time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        first.kill()
    time.sleep(3)  # past the grace period: its heartbeat is stale
    second = subprocess.run(
        worker(tmp_path, "w2", small_prepared, epochs=1), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "trial 0's worker stopped sending heartbeats: trial FAIL, its parameters queued again" in (
        second.stdout + second.stderr
    )
    study = optuna.load_study(study_name="quick", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = study.get_trials(deepcopy=False)
    assert [(t.number, t.state.name) for t in trials] == [(0, "FAIL"), (1, "COMPLETE")]
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == 0
    experiment = client.get_experiment_by_name("mnist").experiment_id
    by_trial = {
        r.data.tags["optuna.trial"]: r for r in client.search_runs([experiment]) if "optuna.trial" in r.data.tags
    }
    assert (by_trial["0"].info.status, by_trial["0"].data.tags["optuna.state"]) == ("KILLED", "FAIL")
    assert (by_trial["1"].info.status, by_trial["1"].data.tags["optuna.state"]) == ("FINISHED", "COMPLETE")
