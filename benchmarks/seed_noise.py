"""How small a difference between two setups a few seeds can tell apart, from benchmarks/accuracy.json.

    python benchmarks/seed_noise.py --prefix best --seeds 3 --delta 0.033 0.05 0.1

Pools the seed-to-seed variance of the stored entries whose name starts with --prefix and that ran on at
least --min-seeds seeds, each around its own mean (so the setups' different levels do not count as noise).
For validation and test accuracy it prints the pooled standard deviation of one seed, the standard error
of the difference between two setups' --seeds-seed means, and how many seeds per setup a true difference of
each --delta (accuracy points) needs to be found at 5% two-sided significance with 80% power (normal
approximation: 2 (1.96 + 0.84)^2 sd^2 / delta^2).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
Z_SIGNIFICANCE, Z_POWER = 1.959964, 0.841621  # two-sided 5%, 80% power


def pooled_sd(entries: dict, prefix: str, key: str, min_seeds: int) -> tuple[float, int, list[str]]:
    """Pooled standard deviation (in accuracy points) of one seed, its degrees of freedom, the entries used."""
    squares, dof, names = 0.0, 0, []
    for name, entry in entries.items():
        values = [100 * run[key] for run in entry["runs"]]
        if not name.startswith(prefix) or len(values) < max(min_seeds, 2):
            continue
        mean = sum(values) / len(values)
        squares += sum((v - mean) ** 2 for v in values)
        dof += len(values) - 1
        names.append(name)
    if not names:
        raise SystemExit(f"seed_noise: no entry starting with {prefix!r} has {min_seeds} or more seeds")
    return math.sqrt(squares / dof), dof, names


def seeds_needed(sd: float, delta: float) -> int:
    """Seeds per setup for a two-sample comparison to find a true difference `delta`."""
    return math.ceil(2 * (Z_SIGNIFICANCE + Z_POWER) ** 2 * sd**2 / delta**2)


def markdown(entries: dict, prefix: str, min_seeds: int, seeds: int, deltas: list[float]) -> str:
    head = (
        f"| accuracy | sd of one seed | degrees of freedom | SE of a difference of two {seeds}-seed means | "
        + " | ".join(f"seeds per setup to find {d:g} points" for d in deltas)
        + " |"
    )
    lines = [head, "|---" * (4 + len(deltas)) + "|"]
    for label, key in (("validation", "val_accuracy"), ("test", "test_accuracy")):
        sd, dof, names = pooled_sd(entries, prefix, key, min_seeds)
        lines.append(
            f"| {label} | {sd:.3f} | {dof} | {sd * math.sqrt(2 / seeds):.3f} | "
            + " | ".join(str(seeds_needed(sd, d)) for d in deltas)
            + " |"
        )
    return "\n".join([*lines, "", f"Pooled over {len(names)} entries: " + "; ".join(names) + "."])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default="", help="pool the entries whose name starts with this")
    parser.add_argument("--min-seeds", type=int, default=3, help="skip entries run on fewer seeds")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setup in the comparison")
    parser.add_argument("--delta", type=float, nargs="+", default=[0.05, 0.1], help="differences, in points")
    parser.add_argument("--store", type=Path, default=ROOT / "benchmarks" / "accuracy.json")
    args = parser.parse_args(argv)
    print(markdown(json.loads(args.store.read_text())["entries"], args.prefix, args.min_seeds, args.seeds, args.delta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
