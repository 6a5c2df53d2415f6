"""Time to 99%: validation and test accuracy of the presets against their training time, 1..N epochs.

    python benchmarks/time_to_accuracy.py                  # sprint 1-3 epochs (10 s budget), fast 1-4 (25 s), seeds 1-3
    python benchmarks/time_to_accuracy.py --presets sprint:1,2,3@10 --seeds 1 2

Each point is a whole training run of the preset with that many epochs (the cosine schedule is set by the
run's length, so epoch 2 of a 4-epoch run is not a 2-epoch run): accuracy.py's `run_seed`, a real
`python -m mnist_pipeline.train experiment=<preset> trainer.epochs=<n> trainer.seed=<seed>` on
data/prepared/, scored on the test set. Seeds run in the outer loop, so drift of this noisy machine spreads
over every point. The epochs of each preset are chosen on validation: the most accurate on validation among
the points whose every seed trained within the preset's budget (`@seconds`: a preset that promises 10 s
should keep it in each run, not on average); test accuracy only reports. Writes
benchmarks/time_to_accuracy.json and .png and the "time to accuracy" section of benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import accuracy  # noqa: E402 - benchmarks/ is a folder of scripts, not a package
import report_md  # noqa: E402

PRESETS = ("sprint:1,2,3@10", "fast:1,2,3,4@25")
TARGET = 0.99


def parse_presets(specs: list[str]) -> dict[str, tuple[list[int], float]]:
    """PRESET:EPOCHS,...@BUDGET_SECONDS -> {preset: (sorted epochs, budget)}."""
    presets = {}
    for spec in specs:
        name, _, rest = spec.partition(":")
        epochs, _, budget = rest.partition("@")
        try:
            presets[name] = (sorted({int(e) for e in epochs.split(",")}), float(budget))
        except ValueError:
            raise SystemExit(f"--presets {spec!r}: expected PRESET:EPOCHS,...@SECONDS, e.g. sprint:1,2,3@10") from None
        if not name or min(presets[name][0]) < 1 or presets[name][1] <= 0:
            raise SystemExit(f"--presets {spec!r}: expected PRESET:EPOCHS,...@SECONDS with epochs >= 1, seconds > 0")
    return presets


def summarise(runs: list[dict], budgets: dict[str, float]) -> list[dict]:
    """One row per (preset, epochs): means over seeds, and which epochs validation chose per preset."""
    rows = []
    for preset in dict.fromkeys(r["preset"] for r in runs):
        for epochs in sorted({r["epochs"] for r in runs if r["preset"] == preset}):
            point = [r for r in runs if r["preset"] == preset and r["epochs"] == epochs]
            rows.append(
                {
                    "preset": preset,
                    "epochs": epochs,
                    "seeds": [r["seed"] for r in point],
                    "train_seconds": statistics.mean(r["train_seconds"] for r in point),
                    "train_seconds_max": max(r["train_seconds"] for r in point),
                    "val_accuracy": statistics.mean(r["val_accuracy"] for r in point),
                    "test_accuracy": statistics.mean(r["test_accuracy"] for r in point),
                    "test_min": min(r["test_accuracy"] for r in point),
                    "test_max": max(r["test_accuracy"] for r in point),
                    "budget": budgets[preset],
                    "chosen": False,
                }
            )
        within = [row for row in rows if row["preset"] == preset and row["train_seconds_max"] <= budgets[preset]]
        if within:
            max(within, key=lambda row: row["val_accuracy"])["chosen"] = True
    return rows


def chosen(row: dict) -> str:
    return f"**chosen** (<= {row['budget']:g} s)" if row["chosen"] else ""


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        f"Command: `{command}`.",
        "",
        "| preset | epochs | seeds | mean (max) training s | mean val accuracy | mean test accuracy (min-max) "
        "| chosen on validation within the budget |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['preset']} | {row['epochs']} | {' '.join(map(str, row['seeds']))} "
            f"| {row['train_seconds']:.1f} ({row['train_seconds_max']:.1f}) | {100 * row['val_accuracy']:.2f}% "
            f"| {100 * row['test_accuracy']:.2f}% ({100 * row['test_min']:.2f}-{100 * row['test_max']:.2f}) "
            f"| {chosen(row)} |"
        )
    lines.append("")
    for preset in dict.fromkeys(row["preset"] for row in rows):
        reached = [row for row in rows if row["preset"] == preset and row["test_accuracy"] >= TARGET]
        first = min(reached, key=lambda row: row["train_seconds"]) if reached else None
        lines.append(
            f"- `{preset}`: time to {100 * TARGET:g}% mean test accuracy "
            + (
                f"**{first['train_seconds']:.1f} s** ({first['epochs']} epochs)."
                if first
                else "not reached by the epochs measured."
            )
        )
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for preset in dict.fromkeys(row["preset"] for row in rows):
        own = [row for row in rows if row["preset"] == preset]
        seconds = [row["train_seconds"] for row in own]
        errors = [[100 * (1 - row["test_max"]) for row in own], [100 * (1 - row["test_min"]) for row in own]]
        line = ax.plot(seconds, [100 * (1 - row["test_accuracy"]) for row in own], marker="o", label=f"{preset}: test")[
            0
        ]
        ax.fill_between(seconds, *errors, color=line.get_color(), alpha=0.15)
        ax.plot(
            seconds,
            [100 * (1 - row["val_accuracy"]) for row in own],
            marker=".",
            linestyle="--",
            color=line.get_color(),
            label=f"{preset}: validation",
        )
        for row in own:
            ax.annotate(
                f"{row['epochs']} ep",
                (row["train_seconds"], 100 * (1 - row["test_accuracy"])),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
    ax.axhline(100 * (1 - TARGET), color="grey", linestyle=":", label=f"{100 * TARGET:g}% accuracy")
    ax.set_yscale("log")
    percent = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}%")
    ax.yaxis.set_major_formatter(percent)
    ax.yaxis.set_minor_formatter(percent)
    ax.set_xlabel("training seconds (sum of epoch times, validation included)")
    ax.set_ylabel("error (1 - accuracy), mean of seeds; band: test min-max")
    ax.set_title("time to 99%: presets at 1..N epochs")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), metavar="PRESET:EPOCHS,...")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args(argv)
    presets = parse_presets(args.presets)
    if not (ROOT / "data" / "prepared" / "test.npz").is_file():
        raise SystemExit("data/prepared/ not found: run `dvc repro prepare` first")

    runs = []
    with tempfile.TemporaryDirectory(prefix="mnist-time-to-accuracy-") as tmp:
        for seed in args.seeds:
            for preset, (epochs_list, _) in presets.items():
                for epochs in epochs_list:
                    workdir = Path(tmp) / f"{preset}-{epochs}"
                    workdir.mkdir(exist_ok=True)
                    run = accuracy.run_seed([f"experiment={preset}", f"trainer.epochs={epochs}"], seed, workdir)
                    runs.append({"preset": preset, **run, "epochs": epochs})
                    print(
                        f"{preset} {epochs} epochs seed {seed}: {run['train_seconds']:.1f} s, "
                        f"val {run['val_accuracy']:.4f}, test {run['test_accuracy']:.4f}",
                        flush=True,
                    )
    rows = summarise(runs, {preset: budget for preset, (_, budget) in presets.items()})
    command = "python benchmarks/time_to_accuracy.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    (ROOT / "benchmarks/time_to_accuracy.json").write_text(
        json.dumps({"command": command, "runs": runs, "rows": rows}, indent=2) + "\n"
    )
    chart(rows, ROOT / "benchmarks/time_to_accuracy.png")
    report_md.publish("time to accuracy", markdown(rows, command).splitlines())
    return 0


if __name__ == "__main__":
    sys.exit(main())
