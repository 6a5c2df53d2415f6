"""The prepare stage on a class folder of PNGs: MNIST written as train/<digit>/*.png and test/<digit>/*.png.

    python benchmarks/folder_prepare.py                          # all 70,000 images, in a temporary folder
    python benchmarks/folder_prepare.py --limit 2000 --dir /tmp/mnist_png
    python benchmarks/folder_prepare.py --write-only DIR --train-limit 1000   # only write the folder

MNIST comes from the mirror in MNIST_MIRROR (or --mirror): its four IDX files. Each image is written as
<split>/<label>/<index>.png, index its position in the IDX file (5 digits), so a folder sorts in MNIST's order.
`--write-only` writes the first --train-limit training images and the first --test-limit test images (default:
all 10,000) and stops: a small training set scored on the full test set.

Otherwise the folder is prepared by `python -m mnist_pipeline.prepare` in a subprocess, as a user's dataset
(a conf/data/<name>.yaml in a temporary config folder, passed with --config-dir), and its wall time and peak
memory (max RSS of the prepare process, from getrusage(RUSAGE_CHILDREN)) are printed as a markdown row.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_pipeline.data.idx import parse_images, parse_labels, read_payload

ROOT = Path(__file__).resolve().parents[1]
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DATASET = "mnist_png"


def read_mnist(mirror: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = IDX_FILES[split]
    return parse_images(read_payload(mirror / images), images), parse_labels(read_payload(mirror / labels), labels)


def write_folder(mirror: Path, out: Path, train_limit: int | None, test_limit: int | None) -> dict[str, int]:
    """MNIST's first `train_limit` training and `test_limit` test images (None: all) as out/<split>/<label>/*.png;
    the number written per split."""
    written = {}
    for split, limit in (("train", train_limit), ("test", test_limit)):
        x, y = read_mnist(mirror, split)
        x, y = x[:limit], y[:limit]
        for digit in range(10):
            (out / split / str(digit)).mkdir(parents=True, exist_ok=True)
        for index, (image, label) in enumerate(zip(x, y)):
            Image.fromarray(image).save(out / split / str(label) / f"{index:05d}.png")
        written[split] = len(y)
    return written


def dataset_yaml(folder: Path) -> str:
    """The user's conf/data/<name>.yaml for the folder: MNIST's classes and digit preprocessing."""
    return (
        f"name: {DATASET}\n"
        "format: folder\n"
        f"path: {folder}\n"
        'classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]\n'
        "image_size: [28, 28]\n"
        "channels: 1\n"
        "preprocess: {method: digit, box: 20, centre: mass}\n"
    )


def time_prepare(folder: Path, work: Path) -> tuple[float, float, str]:
    """Run prepare on `folder`; (wall seconds, peak RSS in MB, the command)."""
    conf = work / "conf"
    (conf / "data").mkdir(parents=True, exist_ok=True)
    (conf / "data" / f"{DATASET}.yaml").write_text(dataset_yaml(folder))
    command = [
        sys.executable,
        "-m",
        "mnist_pipeline.prepare",
        "--config-dir",
        str(conf),
        f"data={DATASET}",
        "data.limit=0",
        f"data.prepared_dir={work / 'prepared'}",
        f"hydra.run.dir={work / 'hydra'}",
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed ({proc.returncode}):\n{proc.stderr}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return seconds, peak_mb, " ".join(command[1:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", type=Path, default=os.environ.get("MNIST_MIRROR"), help="MNIST's IDX files")
    parser.add_argument("--limit", type=int, help="the first N training and N test images (default: all)")
    parser.add_argument("--dir", type=Path, help="write the folder here (default: a temporary folder)")
    parser.add_argument("--write-only", type=Path, metavar="DIR", help="only write the folder into DIR")
    parser.add_argument("--train-limit", type=int, help="with --write-only: the first N training images")
    parser.add_argument("--test-limit", type=int, help="with --write-only: the first N test images")
    args = parser.parse_args(argv)
    if args.mirror is None:
        parser.error("set MNIST_MIRROR or pass --mirror")

    if args.write_only:
        written = write_folder(args.mirror, args.write_only, args.train_limit, args.test_limit)
        print(f"wrote {written['train']} training and {written['test']} test images to {args.write_only}")
        return

    with tempfile.TemporaryDirectory(prefix="folder_prepare.") as tmp:
        work = Path(tmp)
        folder = args.dir or work / "images"
        start = time.perf_counter()
        written = write_folder(args.mirror, folder, args.limit, args.limit)
        write_seconds = time.perf_counter() - start
        seconds, peak_mb, command = time_prepare(folder, work)
    images = written["train"] + written["test"]
    print(f"wrote {images} PNGs in {write_seconds:.1f} s; prepare: {command}")
    print("| images | prepare wall time (s) | peak RSS (MB) |")
    print("|---|---|---|")
    print(f"| {images:,} | {seconds:.1f} | {peak_mb:.0f} |")


if __name__ == "__main__":
    main()
