"""Screen an ensemble: one train-stage setup trained once per seed, the models' predicted probabilities
averaged, scored on validation only (a screen chooses nothing, so no test figure is shown).

    python benchmarks/ensemble_screen.py --seeds 1 2 -- experiment=best trainer.epochs=12

Each seed is a real training run by accuracy.py's `run_seed` (throwaway MLflow store, data/prepared/);
the training time printed is the sum over the seeds, to compare with one longer training's budget.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy import run_seed  # noqa: E402 - benchmarks/ is a folder of scripts, not a package
from mnist_pipeline.core import signals  # noqa: E402
from mnist_pipeline.core.model_files import load_keras  # noqa: E402
from mnist_pipeline.data.prepared import load_split  # noqa: E402
from mnist_pipeline.evaluation import ensemble  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="one training per seed")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the train stage (after --)")
    args = parser.parse_args(argv)
    x_val, y_val = load_split(ROOT / "data" / "prepared", "val")
    probs, seconds = [], 0.0
    with signals.handled(), tempfile.TemporaryDirectory(prefix="mnist-ensemble-") as tmp:
        for seed in args.seeds:
            run = run_seed(args.overrides, seed, Path(tmp))
            probs.append(
                load_keras(Path(tmp) / f"seed{seed}" / "model.keras").predict(x_val, batch_size=1024, verbose=0)
            )
            seconds += run["train_seconds"]
            print(
                f"seed {seed}: val accuracy {run['val_accuracy']:.4f}, training {run['train_seconds']:.1f} s",
                flush=True,
            )
    accuracy = ensemble.score(ensemble.average(probs), y_val)["accuracy"]
    print(
        f"average of seeds {' '.join(map(str, args.seeds))}: val accuracy {accuracy:.4f}, "
        f"training {seconds:.1f} s in all"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
