"""DVC experiments as a team runs them, on a temporary copy of the project with two quick variants: queued
experiments run by `dvc queue start -j 2` and a `--temp` experiment all land in the project's MLflow store,
each run of the code and config of its own workspace; `dvc exp show` as docs/experiments.md prints it; the champion
gate through real experiments, and the registry command rolling the alias back."""

import csv
import io
import json
import re
import shlex
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import REPO, git_commit_all, quick_project, ran_stages, registry_cli, run_dvc

pytestmark = pytest.mark.slow


def stop_processes_under(folder: Path) -> None:
    """Kill, by PID, every process still working in `folder` (DVC's queue workers run in its copies)."""
    for process in psutil.process_iter(["pid"]):
        try:
            if Path(process.cwd()).is_relative_to(folder):
                process.kill()
                process.wait(10)
        except (psutil.Error, OSError):
            continue


def runs_by(store: str) -> list:
    client = MlflowClient(tracking_uri=store)
    return client.search_runs([client.get_experiment_by_name("mnist").experiment_id])


def exp_table(repo: Path) -> dict[str, dict]:
    shown = run_dvc(repo, "exp", "show", "--csv")
    assert shown.returncode == 0, shown.stderr
    return {row["Experiment"] or row["rev"]: row for row in csv.DictReader(io.StringIO(shown.stdout))}


def documented_exp_show_commands() -> list[str]:
    """The narrow `dvc exp show --...` examples of docs/experiments.md (the bare `dvc exp show` is wide by
    nature)."""
    commands = re.findall(r"(?m)^(dvc exp show --[^#\n]*?)\s*(?:#.*)?$", (REPO / "docs" / "experiments.md").read_text())
    assert len(commands) == 3, commands
    return commands


def test_queued_and_temp_experiments_land_in_the_projects_store(tmp_path, mnist_mirror):
    repo = quick_project(tmp_path / "project", limit=500)
    env = {"MNIST_MIRROR": str(mnist_mirror)}
    store = f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}"
    try:
        base = run_dvc(repo, "repro", env=env)
        assert base.returncode == 0, base.stdout[-3000:] + base.stderr[-3000:]
        git_commit_all(repo, "baseline results")

        queued = run_dvc(repo, "exp", "run", "--queue", "-n", "q1", "-S", "train.seed=1", env=env)
        assert queued.returncode == 0, queued.stderr
        # The second experiment edits a config file every train stage depends on, then is queued: its
        # temporary workspace holds the edit and must run with it, not with the main checkout's file.
        trainer = repo / "conf" / "trainer" / "default.yaml"
        original = trainer.read_text()
        trainer.write_text(original.replace("batch_size: 256", "batch_size: 128"))
        queued = run_dvc(repo, "exp", "run", "--queue", "-n", "q2", env=env)
        assert queued.returncode == 0, queued.stderr
        trainer.write_text(original)

        started = run_dvc(repo, "queue", "start", "-j", "2", env=env)
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            status = run_dvc(repo, "queue", "status").stdout
            if not re.search(r"\b(Queued|Running)\b", status):
                break
            time.sleep(5)
        assert re.search(r"q1\s.*Success", status) and re.search(r"q2\s.*Success", status), (
            status + run_dvc(repo, "queue", "logs", "q2").stdout[-3000:]
        )

        temp = run_dvc(repo, "exp", "run", "--temp", "-n", "t1", "-S", "train.seed=2", env=env)
        assert temp.returncode == 0, temp.stdout[-3000:] + temp.stderr[-3000:]
    finally:
        run_dvc(repo, "queue", "stop", "--kill")
        stop_processes_under(repo)

    runs = runs_by(store)
    assert all(r.info.status == "FINISHED" for r in runs)
    by_exp: dict[str, dict[str, object]] = {}
    for run in runs:
        by_exp.setdefault(run.data.tags["dvc.exp"], {})[run.info.run_name] = run
    assert {exp: sorted(named) for exp, named in by_exp.items()} == {
        name: ["dense_3x500-none", "mlp_32x32-none"] for name in ("", "q1", "q2", "t1")
    }
    assert by_exp["q2"]["mlp_32x32-none"].data.params["trainer.batch_size"] == "128"  # the edited config
    assert by_exp["q1"]["mlp_32x32-none"].data.params["trainer.batch_size"] == "256"
    assert by_exp["q1"]["mlp_32x32-none"].data.params["trainer.seed"] == "1"
    assert by_exp["t1"]["mlp_32x32-none"].data.params["trainer.seed"] == "2"
    assert not list((repo / ".dvc" / "tmp" / "exps").glob("tmp*/mlruns")), "a store inside a temporary copy"

    # `dvc exp show` reports the same test accuracy as MLflow for every experiment's every variant.
    table = exp_table(repo)
    for exp in ("q1", "q2", "t1"):
        for variant, run in by_exp[exp].items():
            shown = float(table[exp][f"metrics/{variant}.json:test_accuracy"])
            assert shown == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-12), (exp, variant)
        assert table[exp]["best_variant"] in by_exp[exp]

    # The documented `dvc exp show` commands fit a 120-column terminal, with nothing cut off.
    for command in documented_exp_show_commands():
        shown = run_dvc(repo, *shlex.split(command)[1:], "--no-pager", env={"COLUMNS": "120"})
        assert shown.returncode == 0, (command, shown.stderr)
        lines = shown.stdout.splitlines()
        assert max(map(len, lines)) <= 120 and "…" not in shown.stdout, f"{command}:\n{shown.stdout}"
        assert all(exp in shown.stdout for exp in ("q1", "q2", "t1")), f"{command}:\n{shown.stdout}"


def test_champion_moves_only_forward_through_experiments(tmp_path, mnist_mirror):
    """Full data (the gate ignores reduced data) and two quick variants at 1 epoch: the baseline becomes v1;
    a prepare.limit smoke experiment keeps it; 4 epochs beat it and become v2; a rollback restores v1."""
    repo = quick_project(tmp_path / "project", limit=0)
    env = {"MNIST_MIRROR": str(mnist_mirror)}
    store = f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store)

    base = run_dvc(repo, "repro", env=env)
    assert base.returncode == 0, base.stdout[-3000:] + base.stderr[-3000:]
    board = json.loads((repo / "reports" / "leaderboard.json").read_text())
    assert board["registry"]["action"] == "first" and board["registry"]["version"] == 1
    assert f"; {board['registry']['line']} -> reports/leaderboard.md" in base.stdout  # report's last line
    v1 = client.get_model_version_by_alias("mnist-classifier", "champion")
    assert int(v1.version) == 1 and v1.source == board["best"]["model_uri"]
    assert v1.tags["dvc.exp"] == "" and v1.tags["data.limit"] == "0" and len(v1.tags["git.commit"]) == 40
    git_commit_all(repo, "baseline results")

    smoke = run_dvc(repo, "exp", "run", "-n", "smoke", "-S", "prepare.limit=2000", env=env)
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-3000:]
    kept = json.loads((repo / "reports" / "leaderboard.json").read_text())["registry"]
    assert kept["action"] == "kept" and kept["version"] == 1
    assert "was trained on reduced data (prepare.limit=2000), which never promotes" in kept["line"]
    assert int(client.get_model_version_by_alias("mnist-classifier", "champion").version) == 1

    better = run_dvc(repo, "exp", "run", "-n", "longer", "-S", "prepare.limit=0", "-S", "train.epochs=4", env=env)
    assert better.returncode == 0, better.stdout[-3000:] + better.stderr[-3000:]
    assert "train@mlp_32x32-none" in ran_stages(better)
    promoted = json.loads((repo / "reports" / "leaderboard.json").read_text())["registry"]
    assert promoted["action"] == "promoted" and promoted["version"] == 2, promoted["line"]
    v2 = client.get_model_version_by_alias("mnist-classifier", "champion")
    assert int(v2.version) == 2 and v2.tags["dvc.exp"] == "longer" and v2.tags["data.limit"] == "0"
    assert float(v2.tags["val_accuracy"]) >= float(v1.tags["val_accuracy"]) + 0.0005

    listed = registry_cli(store=store)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"(?m)^\* v2 .* longer\s*$", listed.stdout) and re.search(r"(?m)^  v1 .* -\s*$", listed.stdout)
    back = registry_cli("rollback", "1", store=store)
    assert back.returncode == 0 and back.stdout.startswith("@champion: v1 "), back.stdout + back.stderr
    assert client.get_model_version_by_alias("mnist-classifier", "champion").source == v1.source
