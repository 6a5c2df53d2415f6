"""A 4-job Hydra sweep's wall time: the joblib launcher running 2 jobs at once against 1, and the basic launcher.

    python benchmarks/parallel_sweep.py                       # experiment=fast, seeds 1-4, 2 repeats
    python benchmarks/parallel_sweep.py --repeats 1 -- trainer.epochs=2

Needs data/prepared/ (`python3 dev.py repro prepare`). One measurement is one
`python -m mnist_pipeline.train -m <setup> <sweep>` process timed from start to exit, as a user waits for
it: Python and TensorFlow start-up, the four trainings, their MLflow logging (into a throwaway store, so
the project's is left alone). The setups run one after another in a rotated order on each repeat, so the
drift of this noisy machine falls on all of them. Every sweep must end with 4 FINISHED children.
Writes benchmarks/parallel_sweep.json and the `parallel sweep` section of benchmarks/results.md.
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

SWEEP = ["experiment=fast", "trainer.seed=1,2,3,4"]
JOBLIB = ["hydra/launcher=joblib"]
SETUPS = {  # name: launcher overrides
    "basic launcher: 1 job at a time, every core": [],
    "joblib n_jobs=1": [*JOBLIB, "hydra.launcher.n_jobs=1"],
    "joblib n_jobs=2, threads split (1 each, the default)": [*JOBLIB, "hydra.launcher.n_jobs=2"],
    "joblib n_jobs=2, threads not split (2 each)": [
        *JOBLIB,
        "hydra.launcher.n_jobs=2",
        "trainer.threads.intra_op=2",
        "trainer.threads.inter_op=2",
    ],
}
BASELINE = "joblib n_jobs=1"


def run_sweep(setup: list[str], sweep: list[str], scratch: Path) -> float:
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{scratch / 'mlruns' / 'mlflow.db'}"
    command = [
        sys.executable,
        "-m",
        "mnist_pipeline.train",
        "-m",
        *setup,
        *sweep,
        f"hydra.sweep.dir={scratch / 'multirun'}",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"sweep failed ({' '.join(setup)}):\n{result.stderr[-3000:]}")
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    if len(children) != 4 or any(r.info.status != "FINISHED" for r in runs):
        sys.exit(f"expected 4 FINISHED children, got {[(r.info.run_name, r.info.status) for r in runs]}")
    return seconds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("sweep", nargs="*", help=f"overrides replacing {' '.join(SWEEP)}")
    args = parser.parse_args(argv)
    sweep = args.sweep or SWEEP
    if not (ROOT / "data" / "prepared" / "train.npz").is_file():
        sys.exit("data/prepared/ not found: run `python3 dev.py repro prepare` first")

    names = list(SETUPS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            with tempfile.TemporaryDirectory() as scratch:
                seconds[name].append(run_sweep(SETUPS[name], sweep, Path(scratch)))
            print(f"repeat {repeat + 1}: {name}: {seconds[name][-1]:.1f} s", flush=True)

    mean = {name: statistics.mean(values) for name, values in seconds.items()}
    results = {
        "machine": report_md.machine(),
        "sweep": sweep,
        "repeats": args.repeats,
        "setups": {
            name: {
                "overrides": SETUPS[name],
                "seconds": seconds[name],
                "mean_seconds": mean[name],
                "speedup_vs_baseline": mean[BASELINE] / mean[name],
            }
            for name in names
        },
    }
    (ROOT / "benchmarks" / "parallel_sweep.json").write_text(json.dumps(results, indent=2) + "\n")

    command = "python benchmarks/parallel_sweep.py" + (f" --repeats {args.repeats}" if args.repeats != 2 else "")
    lines = [
        f"`{command}`: the sweep `{' '.join(sweep)}` (4 jobs), wall time per sweep, mean of "
        f"{args.repeats} repeat(s), setups interleaved; speed-up = time of `{BASELINE}` / time.",
        "",
        "| setup | wall time (s) | speed-up |",
        "|---|---:|---:|",
    ]
    for name in names:
        runs = ", ".join(f"{s:.0f}" for s in seconds[name])
        lines.append(f"| {name} | {mean[name]:.0f} ({runs}) | {mean[BASELINE] / mean[name]:.2f} |")
    report_md.publish("parallel sweep", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
