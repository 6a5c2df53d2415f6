"""An Optuna study of 6 trials run by 1 worker against 2 workers sharing it (SQLite storage, one machine).

    python benchmarks/search_workers.py                       # search=quick on data/prepared, 2 repeats
    python benchmarks/search_workers.py --data-dir /tmp/small --repeats 1

Needs data/prepared/ (`python3 dev.py repro prepare`). The study is `search=quick` (the 32-32 MLP, 2 epochs)
narrowed so that every trial costs the same: the learning rate is the only searched value (it does not
change the work), the batch size is fixed at 64 and nothing is pruned, so the two setups do the same
work and differ only in how many processes share it. TPE seeded 5 (and 6 for the second worker). One
measurement: fresh storage and MLflow store, the workers started at once, timed until the last exits
(Python and TensorFlow start-up included, as a user waits for it). The setups alternate. Writes
benchmarks/search_workers.json and the `search workers` section of results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import report_md  # noqa: E402 - benchmarks/ is a folder of scripts, not a package

STUDY = [
    "space=quick",
    "~search.params",
    "+search.params={optimizer.lr: {type: float, low: 1e-5, high: 1e-1, log: true}}",
    "search.train=['model=mlp_32x32','trainer.epochs=2','trainer.batch_size=64']",
    "~search.pruner",
    "+search.pruner={_target_: optuna.pruners.NopPruner}",
]
SETUPS = {"1 worker, 6 trials": [(5, 6)], "2 workers, 3 trials each": [(5, 3), (6, 3)]}  # (seed, n_trials)


def run_study(workers: list[tuple[int, int]], data_dir: Path, scratch: Path) -> tuple[float, dict]:
    import optuna

    storage = f"sqlite:///{scratch / 'optuna.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{scratch / 'mlruns' / 'mlflow.db'}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnist_pipeline.search",
                *STUDY,
                f"n_trials={n}",
                f"data_dir={data_dir}",
                f"storage={storage}",
                f"search.sampler.seed={seed}",
                f"hydra.run.dir={scratch / f'worker{seed}'}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed, n in workers
    ]
    errors = [p.communicate()[1] for p in processes]
    seconds = time.perf_counter() - started
    for process, stderr in zip(processes, errors):
        if process.returncode != 0:
            sys.exit(f"a worker failed:\n{stderr[-3000:]}")
    trials = optuna.load_study(study_name="quick", storage=storage).get_trials()
    states = [t.state.name for t in trials]
    return seconds, {"trials": len(trials), "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED")}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "prepared")
    args = parser.parse_args(argv)
    if not (args.data_dir / "train.npz").is_file():
        sys.exit(f"{args.data_dir} has no prepared data: run `python3 dev.py repro prepare` first")

    names = list(SETUPS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    outcomes: dict[str, list[dict]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            with tempfile.TemporaryDirectory() as scratch:
                took, outcome = run_study(SETUPS[name], args.data_dir.resolve(), Path(scratch))
            seconds[name].append(took)
            outcomes[name].append(outcome)
            print(f"repeat {repeat + 1}: {name}: {took:.1f} s, {outcome}", flush=True)

    mean = {name: statistics.mean(values) for name, values in seconds.items()}
    baseline = names[0]
    (ROOT / "benchmarks" / "search_workers.json").write_text(
        json.dumps(
            {
                "machine": report_md.machine(),
                "data_dir": str(args.data_dir),
                "repeats": args.repeats,
                "setups": {
                    n: {"seconds": seconds[n], "outcomes": outcomes[n], "speedup": mean[baseline] / mean[n]}
                    for n in names
                },
            },
            indent=2,
        )
        + "\n"
    )
    data = "data/prepared" if args.data_dir.resolve() == (ROOT / "data" / "prepared").resolve() else str(args.data_dir)
    lines = [
        f"`python benchmarks/search_workers.py`: one study of 6 equal-cost trials (`search=quick` on {data}, "
        f"learning rate searched, batch 64, no pruning), wall time until the last worker exits, mean of "
        f"{args.repeats} repeat(s); speed-up = time of `{baseline}` / time.",
        "",
        "| setup | wall time (s) | speed-up | trials complete / pruned |",
        "|---|---:|---:|---|",
    ]
    for name in names:
        runs = ", ".join(f"{s:.0f}" for s in seconds[name])
        states = ", ".join(f"{o['complete']}/{o['pruned']}" for o in outcomes[name])
        lines.append(f"| {name} | {mean[name]:.0f} ({runs}) | {mean[baseline] / mean[name]:.2f} | {states} |")
    report_md.publish("search workers", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
