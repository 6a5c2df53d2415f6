"""The record of a skipped variant: a model that cannot take the dataset's images is skipped, not fatal.

The train stage writes models/<variant>/skipped.json (the reason) in place of a model; evaluate writes
outputs that say so and report lists the variant with its reason, so one unfit variant in params.yaml does not
stop `dvc repro`. Here, below every stage, because train, evaluate and report all read or write it.
"""

from __future__ import annotations

import json
from pathlib import Path

SKIPPED = "skipped.json"


def write_skip_record(folder: Path, variant: str, reason: str) -> None:
    (Path(folder) / SKIPPED).write_text(json.dumps({"variant": variant, "skipped": reason}, indent=2) + "\n")


def skip_reason(model_dir: Path) -> str | None:
    """Why train skipped the variant in `model_dir`, or None when it was trained."""
    path = Path(model_dir) / SKIPPED
    return str(json.loads(path.read_text())["skipped"]) if path.is_file() else None
