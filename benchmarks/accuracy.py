"""Validation and test accuracy and training time of train-stage setups over several seeds.

    python benchmarks/accuracy.py --name best --seeds 1 2 3 -- experiment=best
    python benchmarks/accuracy.py --name "lr 2e-3" --choice "default learning rate=2e-3" -- optimizer.lr=0.002

Each seed is one real `python -m mnist_pipeline.train <overrides> trainer.seed=<seed>` on data/prepared/
(`dvc repro prepare` first), logged to a throwaway MLflow store so the project's mlruns/ stays clean. The
model it saves (the best epoch by validation loss) is scored on the 10,000 test images; training time is
the sum of the per-epoch wall times the run recorded (model.fit's epochs, validation included).

The test set only reports. Setups that compete for one setting carry `--choice "<setting>=<candidate>"`;
a candidate may span several rows (e.g. one learning rate on three architectures). The candidate with the
highest mean validation accuracy over all its runs is chosen, and test accuracy is shown for the rows of
chosen candidates and of rows that compete for nothing, never for the others. A row run with
`--max-train-seconds S` (a setting with a time budget, e.g. the flagship's 10 minutes) puts its candidate out
of the choice if any of its seeds trained longer than S. A candidate run on fewer seeds than the most-run
candidate of its setting is a screen (a first seed that did not validate well enough to run the others),
not chosen.

Stores the runs in benchmarks/accuracy.json under the name, each seed as soon as it is scored (so a run
stopped after seed 1 keeps seed 1): a rerun with the same overrides adds or replaces only the seeds given (so
seeds can be run in separate sessions), other overrides replace the entry. Each time it also rewrites the
accuracy section of benchmarks/results.md from the store.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import report_md  # noqa: E402 - benchmarks/ is a folder of scripts, not a package
from mnist_pipeline.core import signals  # noqa: E402
from mnist_pipeline.core.atomic import atomic_file  # noqa: E402
from mnist_pipeline.core.errors import Terminated  # noqa: E402


def run_seed(overrides: list[str], seed: int, workdir: Path) -> dict:
    out = workdir / f"seed{seed}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_pipeline.train",
            *overrides,
            f"trainer.seed={seed}",
            f"output_dir={out}",
            f"hydra.run.dir={workdir / f'hydra{seed}'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"training with seed {seed} failed:\n{proc.stderr[-4000:]}")
    history = json.loads((out / "history.json").read_text())
    return {
        "seed": seed,
        "test_accuracy": test_accuracy(out / "model.keras"),
        "train_seconds": sum(history["history"]["epoch_seconds"]),
        "epochs": history["epochs_run"],
        "best_epoch": history["best_epoch"],
        "val_accuracy": history["history"]["val_accuracy"][history["best_epoch"] or 0],
        "params": history["params"],
    }


@functools.cache
def _test_split():
    from mnist_pipeline.data.prepared import load_split

    return load_split(ROOT / "data" / "prepared", "test")


def test_accuracy(model_path: Path) -> float:
    import numpy as np

    from mnist_pipeline.core.model_files import load_keras

    x, y = _test_split()  # read once per process: time_to_accuracy.py scores many runs
    probs = load_keras(model_path).predict(x, batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(probs, axis=1) == y))


def machine_key(m: dict) -> str:
    return f"{m['cpu']}, {m['cores']} cores, native bf16 {'/'.join(m['bf16']) or 'no'}"


def choices(entries: dict) -> dict[str, dict]:
    """Per setting: each candidate's mean validation accuracy over all its runs, the candidates with a seed over
    their time budget and those run on fewer seeds than the most-run one (screens), both out of the choice, and
    the chosen one (None if none is left)."""
    groups: dict[str, dict[str, list[float]]] = {}
    over: dict[str, set[str]] = {}
    for entry in entries.values():
        if entry.get("choice"):
            setting, candidate = entry["choice"]
            groups.setdefault(setting, {}).setdefault(candidate, []).extend(r["val_accuracy"] for r in entry["runs"])
            budget = entry.get("max_train_seconds")
            if budget is not None and any(r["train_seconds"] > budget for r in entry["runs"]):
                over.setdefault(setting, set()).add(candidate)
    decided = {}
    for setting, cands in groups.items():
        means = {c: statistics.mean(v) for c, v in cands.items()}
        runs = {c: len(v) for c, v in cands.items()}
        screens = sorted(c for c in cands if runs[c] < max(runs.values()))
        left = [c for c in means if c not in over.get(setting, set()) and c not in screens]
        decided[setting] = {
            "val": means,
            "runs": runs,
            "over_budget": sorted(over.get(setting, set())),
            "screens": screens,
            "chosen": max(left, key=means.get) if left else None,
        }
    return decided


def reported(entry: dict, decided: dict) -> bool:
    """Whether the row's test accuracy may be shown: it competes for nothing, or its candidate won."""
    return not entry.get("choice") or decided[entry["choice"][0]]["chosen"] == entry["choice"][1]


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def markdown(entries: dict) -> str:
    """The table, with each seed's machine: seeds run in different sessions may have run on different CPUs."""
    labels: dict[str, str] = {}
    for entry in entries.values():
        for run in entry["runs"]:
            labels.setdefault(machine_key(run["machine"]), f"M{len(labels) + 1}")
    decided = choices(entries)
    lines = [
        "Machines: " + "; ".join(f"{label} = {k}" for k, label in labels.items()) + ".",
        "",
        "| setup | overrides | seed: val / test accuracy (training s, machine) | mean val | mean test "
        "| mean training s |",
        "|---|---|---|---:|---:|---:|",
    ]
    for name, entry in entries.items():
        runs, shown = entry["runs"], reported(entry, decided)
        per_seed = "; ".join(
            f"{r['seed']}: {_percent(r['val_accuracy'])} / {_percent(r['test_accuracy']) if shown else '-'} "
            f"({r['train_seconds']:.0f}, {labels[machine_key(r['machine'])]})"
            for r in runs
        )
        test = f"**{_percent(statistics.mean(r['test_accuracy'] for r in runs))}**" if shown else "not chosen"
        lines.append(
            f"| {name} | `{' '.join(entry['overrides'])}` | {per_seed} "
            f"| {_percent(statistics.mean(r['val_accuracy'] for r in runs))} | {test} "
            f"| {statistics.mean(r['train_seconds'] for r in runs):.0f} |"
        )
    if decided:
        lines += [
            "",
            "Settings chosen on validation (mean validation accuracy over every run of the candidate):",
            "",
            "| setting | candidate: mean val accuracy (runs) | chosen |",
            "|---|---|---|",
        ]
        for setting, d in decided.items():
            cands = "; ".join(
                f"{c}: {100 * v:.3f}% ({d['runs'][c]}{', a screen' if c in d['screens'] else ''}"
                f"{', over its time budget' if c in d['over_budget'] else ''})"
                for c, v in d["val"].items()
            )
            lines.append(f"| {setting} | {cands} | **{d['chosen'] or 'none'}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="the row name in the results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    parser.add_argument(
        "--choice",
        metavar="SETTING=CANDIDATE",
        help="this row is CANDIDATE for SETTING; settings are chosen on validation accuracy",
    )
    parser.add_argument(
        "--max-train-seconds",
        type=float,
        metavar="S",
        help="the setting's time budget: a seed training longer puts the candidate out of the choice",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the train stage (after --)")
    args = parser.parse_args(argv)
    if args.choice is not None and "=" not in args.choice:
        parser.error(f'--choice {args.choice!r}: expected SETTING=CANDIDATE, e.g. "default learning rate=4e-3"')
    if not (ROOT / "data" / "prepared" / "test.npz").is_file():
        raise SystemExit("data/prepared/ not found: run `dvc repro prepare` first")

    # SIGTERM raises inside the block: subprocess.run kills the training it waits for, the folder goes
    with signals.handled(), tempfile.TemporaryDirectory(prefix="mnist-accuracy-") as tmp:
        runs = []
        for seed in args.seeds:
            runs.append({**run_seed(args.overrides, seed, Path(tmp)), "machine": report_md.machine()})
            print(
                f"{args.name} seed {seed}: val accuracy {runs[-1]['val_accuracy']:.4f}, "
                f"test accuracy {runs[-1]['test_accuracy']:.4f}, "
                f"training {runs[-1]['train_seconds']:.1f} s",
                flush=True,
            )
            # stored seed by seed: a run stopped after seed 1 keeps seed 1 (and every seed stored before)
            table = store_runs(args.out, args.name, args.overrides, args.choice, runs, args.max_train_seconds)
    print(table)
    return 0


def store_runs(
    out: Path,
    name: str,
    overrides: list[str],
    choice: str | None,
    runs: list[dict],
    max_train_seconds: float | None = None,
) -> str:
    """Puts `runs` into out/accuracy.json under `name`, rewrites the accuracy section of out/results.md and
    returns its table. With the same overrides, runs of other seeds stored earlier are kept; other overrides
    replace the entry."""
    store = out / "accuracy.json"
    entries = json.loads(store.read_text())["entries"] if store.exists() else {}
    for entry in entries.values():  # older files kept one machine per entry, not per run
        for run in entry["runs"]:
            run.setdefault("machine", entry.get("machine"))
        entry.pop("machine", None)
    previous = entries.get(name, {})
    same = previous.get("overrides") == overrides
    if same:
        seeds = {r["seed"] for r in runs}
        runs = sorted([r for r in previous["runs"] if r["seed"] not in seeds] + runs, key=lambda r: r["seed"])
    entries[name] = {"overrides": overrides, "runs": runs}
    given = {
        "choice": choice and [part.strip() for part in choice.split("=", 1)],
        "max_train_seconds": max_train_seconds,
    }
    for key, value in given.items():  # given now, else kept from the same setup's earlier seeds
        if value is not None:
            entries[name][key] = value
        elif key in previous and same:
            entries[name][key] = previous[key]
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(store) as f:  # never half a store: it holds hours of training
        f.write((json.dumps({"entries": entries}, indent=2) + "\n").encode())
    table = markdown(entries)
    report_md.write_section(out / "results.md", "accuracy", table, machine_line=False)
    return table


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (Terminated, KeyboardInterrupt):
        sys.exit("stopped: the training in progress was killed; seeds scored before it are stored")
