"""The default pipeline on a small dataset of the user's own pictures: accuracy, and where the time goes.

    python benchmarks/folder_prepare.py --write-only /tmp/mnist_1000 --train-limit 1000   # the pictures
    python benchmarks/small_data.py /tmp/mnist_1000                                         # this benchmark

Does what docs/datasets.md tells a user to do, in a fresh copy of this checkout (tracked and unignored
files, committed): copies the folder to datasets/<name>, `dvc add`s it, writes conf/data/<name>.yaml
(format: folder, MNIST's preprocessing), commits, then times `dvc exp run -S prepare.dataset=<name>` with
every other setting at its default. Each line DVC prints is timestamped as it arrives, so a stage's wall
time is from its "Running stage" line to the next one; a train stage's time outside its epochs is that minus
the epochs' own seconds (history.json's epoch_seconds, the leaderboard's train time).

Prints every variant's validation and test accuracy, the ensemble's, the chosen model, and the profile.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"Running stage '([^']+)'")
YAML = """name: {name}
format: folder
path: ${{paths.datasets}}/{name}
image_size: [28, 28]
channels: 1
preprocess: {{method: digit, box: 20, centre: mass}}
"""


def copy_checkout(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def run(cmd: list[str], cwd: Path, env: dict) -> None:
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


def timed_stages(cmd: list[str], cwd: Path, env: dict) -> tuple[float, list[tuple[str, float]]]:
    """Wall time of `cmd` and (stage, seconds) per stage, from the moments DVC announces each stage (the
    last stage's time includes DVC's own work after it: saving the outputs and the experiment)."""
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if match := STAGE_LINE.search(line):
                marks.append((match.group(1), time.perf_counter() - start))
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    ends = [t for _, t in marks[1:]] + [wall]
    return wall, [(name, end - began) for (name, began), end in zip(marks, ends)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="train/<class>/* and test/<class>/* (folder_prepare.py --write-only)")
    parser.add_argument("--name", default="mnist_1000")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    parser.add_argument("set", nargs="*", help="extra `-S` params, e.g. train.epochs=3")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="small_data_"))
    work.mkdir(parents=True, exist_ok=True)
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("MLFLOW_TRACKING_URI", None)
    copy_checkout(work)
    shutil.copytree(args.folder, work / "datasets" / args.name)
    (work / "conf" / "data" / f"{args.name}.yaml").write_text(YAML.format(name=args.name))
    run(["git", "init", "-q"], work, env)
    run(["dvc", "add", "-q", f"datasets/{args.name}"], work, env)
    run(["git", "add", "-A"], work, env)
    run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "data"], work, env)

    sets = [f"prepare.dataset={args.name}", *args.set]
    cmd = ["dvc", "exp", "run", *(x for s in sets for x in ("-S", s))]
    wall, stages = timed_stages(cmd, work, env)

    board = json.loads((work / "reports" / "leaderboard.json").read_text())
    epochs_s = {row["variant"]: row["train_seconds"] for row in board["variants"]}
    print(f"`{' '.join(cmd)}` on {args.folder} ({os.cpu_count()} cores)\n")
    print("| variant | epochs | val accuracy | test accuracy | epoch time (s) |\n|---|---:|---:|---:|---:|")
    for row in board["variants"]:
        print(
            f"| {row['variant']} | {row['epochs']} | {row['val_accuracy']:.4f} | {row['test_accuracy']:.4f} "
            f"| {row['train_seconds']:.1f} |"
        )
    ens = board["ensemble"]
    print(f"| {ens['variant']} | | {ens['val_accuracy']:.4f} | {ens['test_accuracy']:.4f} | |")
    for name, reason in board.get("skipped", {}).items():
        print(f"| {name} | skipped: {reason} | | | |")
    print(f"\nbest variant (on validation): {board['best']['variant']}, test {board['best']['test_accuracy']:.4f}")

    epochs_total = sum(epochs_s.values())
    print(f"\nwall {wall:.1f} s, epochs {epochs_total:.1f} s, outside the epochs {wall - epochs_total:.1f} s\n")
    print("| stage | wall (s) | epochs (s) | outside the epochs (s) |\n|---|---:|---:|---:|")
    print(f"| (DVC before the first stage) | {wall - sum(s for _, s in stages):.1f} | | |")
    for name, seconds in stages:
        inside = epochs_s.get(name.split("@", 1)[1], 0.0) if name.startswith("train@") else 0.0
        print(f"| {name} | {seconds:.1f} | {inside:.1f} | {seconds - inside:.1f} |")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
