"""`dvc repro` in a temporary copy of the repository, on a small slice of the real data."""

import contextlib
import csv
import io
import json
import os
import subprocess

import pytest

from tests.helpers import copy_repo, git_commit_all, ran_stages, run_dvc, set_param


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mnist_mirror):
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    set_param(repo, "limit", 2000)
    return repo


def test_repro_runs_prepare_once_then_nothing(repo, mnist_mirror):
    """Only the data stage (`dvc repro prepare`): the full pipeline is the slow test below."""
    env = {"MNIST_MIRROR": str(mnist_mirror)}
    first = run_dvc(repo, "repro", "prepare", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Running stage 'prepare'" in first.stdout
    meta = json.loads((repo / "data/prepared/dataset.json").read_text())
    assert meta["counts"] == {"train": 1800, "val": 200, "test": 2000}

    second = run_dvc(repo, "repro", "prepare", env=env)
    assert second.returncode == 0, second.stderr
    assert "Running stage" not in second.stdout
    assert "Data and pipelines are up to date." in second.stdout

    # Changing a tracked param reruns the stage; the raw cache (persist) means no new download.
    set_param(repo, "val_fraction", 0.2)
    third = run_dvc(repo, "repro", "prepare", env={"MNIST_MIRROR": str(repo / "no-such-mirror")})
    assert third.returncode == 0, third.stdout + third.stderr
    assert "Running stage 'prepare'" in third.stdout
    meta = json.loads((repo / "data/prepared/dataset.json").read_text())
    assert meta["counts"] == {"train": 1600, "val": 400, "test": 2000}


@pytest.mark.slow
def test_repro_trains_every_variant_then_nothing(tmp_path, mnist_mirror):
    """The whole pipeline on tiny settings (2,000 images, 1 epoch): every variant trained and evaluated, the
    report and champion, DVC's metrics and plots; editing one variant reruns only what depends on it."""
    from mlflow.tracking import MlflowClient

    repo = copy_repo(tmp_path)
    set_param(repo, "limit", 2000)
    set_param(repo, "epochs", 1)
    env = {"MNIST_MIRROR": str(mnist_mirror)}
    first = run_dvc(repo, "repro", env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    import yaml

    variants = yaml.safe_load((repo / "params.yaml").read_text())["variants"]
    assert len(variants) >= 7
    for variant in variants:
        assert f"Running stage 'train@{variant}'" in first.stdout
        assert (repo / "models" / variant / "model.keras").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(variants)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["dvc.stage"] for r in runs} == {f"train@{v}" for v in variants}
    assert all("test_accuracy" in r.data.metrics for r in runs)  # evaluate logged into the training runs
    board = json.loads((repo / "reports/leaderboard.json").read_text())
    assert sorted(r["variant"] for r in board["variants"]) == sorted(variants)
    # prepare.limit=2000 is reduced data: the champion gate registers nothing (test_dvc_experiments.py
    # takes the gate through full-data experiments).
    assert board["registry"]["action"] == "none" and client.search_registered_models() == []
    summary = json.loads((repo / "reports/summary.json").read_text())
    assert summary["best_variant"] == board["best"]["variant"] and summary["champion"] == "none"

    shown = run_dvc(repo, "metrics", "show")
    assert shown.returncode == 0, shown.stderr
    for variant in variants:
        assert f"metrics/{variant}.json" in shown.stdout
    assert "reports/summary.json" in shown.stdout and "best_test_accuracy" in shown.stdout
    plots = run_dvc(repo, "plots", "show", "-o", str(tmp_path / "dvc_plots"))
    assert plots.returncode == 0, plots.stdout + plots.stderr
    assert (tmp_path / "dvc_plots" / "index.html").is_file()
    listed = json.loads(run_dvc(repo, "plots", "show", "--json").stdout)["data"]
    for variant in variants:
        for path in (
            f"plots/predictions/{variant}.csv",
            f"plots/curves/{variant}.csv",
            f"plots/figures/{variant}/confusion_matrix.png",
        ):
            assert path in listed, path
    assert "reports/comparison.png" in listed

    second = run_dvc(repo, "repro", env=env)
    assert "Running stage" not in second.stdout and "Data and pipelines are up to date." in second.stdout

    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(
        text.replace(
            'mlp_32x32-none: {model: mlp_32x32, augment: none, overrides: ""}',
            'mlp_32x32-none: {model: mlp_32x32, augment: none, overrides: "model.hidden=[64,64]"}',
        )
    )
    third = run_dvc(repo, "repro", env=env)
    assert third.returncode == 0, third.stderr[-3000:]
    assert ran_stages(third) == ["train@mlp_32x32-none", "evaluate@mlp_32x32-none", "report"], third.stdout

    # An experiment on one variant: `dvc exp run -S` then `dvc exp show` lists it beside the baseline.
    git_commit_all(repo, "baseline")
    exp = run_dvc(
        repo,
        "exp",
        "run",
        "-n",
        "wider-mlp",
        "-S",
        "variants.mlp_32x32-none.overrides='model.hidden=[128,128]'",
        env=env,
    )
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-3000:]
    assert ran_stages(exp) == ["train@mlp_32x32-none", "evaluate@mlp_32x32-none", "report"], exp.stdout
    table = run_dvc(repo, "exp", "show", "--csv")
    assert table.returncode == 0, table.stderr
    rows = {row["Experiment"] or row["rev"]: row for row in csv.DictReader(io.StringIO(table.stdout))}
    baseline = rows[next(name for name in rows if name not in ("workspace", "wider-mlp"))]  # the branch
    accuracy = "metrics/mlp_32x32-none.json:test_accuracy"
    assert rows["wider-mlp"]["variants.mlp_32x32-none.overrides"] == "model.hidden=[128,128]"
    assert baseline["variants.mlp_32x32-none.overrides"] == "model.hidden=[64,64]"
    assert rows["wider-mlp"][accuracy] and rows["wider-mlp"][accuracy] == rows["workspace"][accuracy]
    assert rows["wider-mlp"][accuracy] != baseline[accuracy], table.stdout  # its own figure, not the baseline's
    # The experiment is applied to the workspace: `dvc metrics diff` compares it with the baseline commit.
    diff = run_dvc(repo, "metrics", "diff", "--json")
    assert diff.returncode == 0, diff.stderr
    changed = set(json.loads(diff.stdout))  # that variant's test metrics, and the summary if its figures moved
    assert "metrics/mlp_32x32-none.json" in changed, diff.stdout
    assert changed <= {"metrics/mlp_32x32-none.json", "reports/summary.json"}, diff.stdout


@pytest.mark.slow
def test_a_repro_killed_mid_training_then_rerun_is_consistent(tmp_path, mnist_mirror):
    """kill -9 of `dvc repro` and its stage (as power loss would) while a variant trains, then `dvc repro`:
    every stage completes, dvc.lock records all of them, the killed training resumed in its own MLflow run
    (one FINISHED run per variant, every epoch once), and no resume state or staging is left."""
    import signal
    import sys
    import time

    import yaml
    from mlflow.tracking import MlflowClient

    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"]["limit"], params["train"]["epochs"] = 2000, 4
    params["variants"] = {k: params["variants"][k] for k in ("mlp_32x32-none", "shallow_cnn-none")}
    for variant in params["variants"].values():  # a snapshot after every epoch: the kill waits for epoch 2's
        variant["overrides"] = "trainer.snapshot_seconds=0"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "MNIST_MIRROR": str(mnist_mirror), "PATH": bindir + os.pathsep + os.environ["PATH"]}
    proc = subprocess.Popen(
        [os.path.join(bindir, "dvc"), "repro"],
        cwd=repo,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while not list((repo / "models").glob("*.resume/snapshots/epoch-0002")):
            assert proc.poll() is None and time.monotonic() < deadline, "no training reached epoch 2"
            time.sleep(0.05)
        killed = next((repo / "models").glob("*.resume")).name.removesuffix(".resume")
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage it runs
        proc.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist").experiment_id
    assert [r.info.status for r in client.search_runs([experiment])] == ["RUNNING"]

    again = run_dvc(repo, "repro", env={"MNIST_MIRROR": str(mnist_mirror)})
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"Running stage 'train@{killed}'" in again.stdout
    status = run_dvc(repo, "status")
    assert "Data and pipelines are up to date." in status.stdout, status.stdout
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"prepare", "report", *(f"{s}@{v}" for s in ("train", "evaluate") for v in params["variants"])}
    runs = client.search_runs([experiment])
    assert sorted((r.info.run_name, r.info.status, r.data.tags["resume.count"]) for r in runs) == sorted(
        (v, "FINISHED", "1" if v == killed else "0") for v in params["variants"]
    )
    for run in runs:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")) == [0, 1, 2, 3]
        assert json.loads((repo / "models" / run.info.run_name / "run.json").read_text())["run_id"] == run.info.run_id
    assert list((repo / "models").glob("*.resume")) == [] and list(repo.rglob(".*.tmp")) == []
