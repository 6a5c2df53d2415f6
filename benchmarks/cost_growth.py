"""How training cost grows: seconds per epoch against training-set size and against model FLOPs.

    python benchmarks/cost_growth.py                         # 6 architectures x 1/8, 1/4, 1/2, all
    python benchmarks/cost_growth.py --archs shallow_cnn --fractions 0.25 1 --repeats 2

Needs data/prepared/ (`dvc repro prepare`). Each point is one process of throughput.py's pipeline path (a):
`mnist_pipeline.ml.fit.prepare_fit` with conf/'s defaults, no augmentation, one warm-up epoch then
`--epochs` timed ones over the first N training images. The sizes of one architecture run in a shuffled
order per repeat, so that drift of this noisy machine does not line up with size. Writes
benchmarks/cost_growth.json, benchmarks/cost_growth.png and prints the markdown table for results.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import report_md  # noqa: E402 - benchmarks/ is a folder of scripts, not a package
import throughput  # noqa: E402

ARCHS = ("mlp_32x32", "dense_3x500", "shallow_cnn", "cnn_dnn", "deep_cnn", "bn_cnn")
FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def measure(args, train_images: int) -> list[dict]:
    points = []
    for repeat in range(args.repeats):
        for arch in args.archs:
            sizes = [round(train_images * f) for f in args.fractions]
            random.Random(repeat).shuffle(sizes)
            for size in sizes:
                result = throughput.run_child(
                    {
                        "path": "pipeline",
                        "arch": arch,
                        "augment": "none",
                        "repeat": repeat,
                        "epochs": args.epochs,
                        "limit": size,
                        "overrides": [],
                    }
                )
                seconds = statistics.median(result["epoch_seconds"][1:])
                points.append(
                    {
                        "arch": arch,
                        "images": result["images"],
                        "repeat": repeat,
                        "epoch_seconds": seconds,
                        "train_mflops_per_image": result["train_flops_per_image"] / 1e6,
                    }
                )
                print(f"{arch:12s} {result['images']:6d} images: {seconds:6.2f} s/epoch", flush=True)
    return points


def table(points: list[dict], archs, sizes: list[int]) -> list[dict]:
    rows = []
    for arch in archs:
        by_size = {
            n: statistics.median(p["epoch_seconds"] for p in points if p["arch"] == arch and p["images"] == n)
            for n in sizes
        }
        mflops = next(p["train_mflops_per_image"] for p in points if p["arch"] == arch)
        full = by_size[sizes[-1]]
        rows.append(
            {
                "arch": arch,
                "train_mflops_per_image": mflops,
                "seconds": by_size,
                # a straight line through the points: fixed seconds per epoch + seconds per image
                "per_1000_images": 1000 * (full - by_size[sizes[0]]) / (sizes[-1] - sizes[0]),
                "effective_gflops": sizes[-1] * mflops / 1e3 / full,
            }
        )
    return rows


def markdown(rows: list[dict], sizes: list[int], command: str, machine: str) -> str:
    head = " | ".join(f"{n:,} img" for n in sizes)
    lines = [
        f"Command: `{command}`; machine: {machine}.",
        "",
        f"| architecture | train MFLOP/img | {head} | s per 1,000 img (slope) | GFLOP/s at all |",
        "|---|---:|" + "---:|" * len(sizes) + "---:|---:|",
    ]
    for r in rows:
        cells = " | ".join(f"{r['seconds'][n]:.2f}" for n in sizes)
        lines.append(
            f"| {r['arch']} | {r['train_mflops_per_image']:.1f} | {cells} | {r['per_1000_images']:.3f} "
            f"| {r['effective_gflops']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_size, by_flops) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in rows:
        by_size.plot(sizes, [r["seconds"][n] for n in sizes], marker="o", label=r["arch"])
    by_size.set_xlabel("training images")
    by_size.set_ylabel("seconds per epoch")
    by_size.set_title("time per epoch against training-set size")
    by_size.legend(fontsize=8)
    by_size.grid(alpha=0.3)
    for r in rows:
        by_flops.scatter(r["train_mflops_per_image"], r["seconds"][sizes[-1]])
        by_flops.annotate(
            r["arch"],
            (r["train_mflops_per_image"], r["seconds"][sizes[-1]]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    by_flops.set_xscale("log")
    by_flops.set_yscale("log")
    by_flops.set_xlabel("training MFLOP per image (forward x 3)")
    by_flops.set_ylabel(f"seconds per epoch, {sizes[-1]:,} images")
    by_flops.set_title("time per epoch against model FLOPs")
    by_flops.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up (default: 1)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    import numpy as np

    with np.load(ROOT / "data/prepared/train.npz") as data:
        train_images = len(data["y"])
    points = measure(args, train_images)
    sizes = sorted({p["images"] for p in points})
    rows = table(points, args.archs, sizes)
    command = "python benchmarks/cost_growth.py" + "".join(f" {a}" for a in sys.argv[1:])
    machine = report_md.machine()
    (ROOT / "benchmarks/cost_growth.json").write_text(
        json.dumps({"machine": machine, "command": command, "points": points, "rows": rows}, indent=2, default=str)
        + "\n"
    )
    chart(rows, sizes, ROOT / "benchmarks/cost_growth.png")
    print(markdown(rows, sizes, command, f"{machine['cpu']}, {machine['cores']} cores, {machine['date']}"))


if __name__ == "__main__":
    main()
