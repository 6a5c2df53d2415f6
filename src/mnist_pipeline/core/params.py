"""params.yaml, the one home of what the pipeline varies under DVC, read by the Hydra configs.

A config writes `epochs: ${params:train.epochs}` instead of a second copy of the value, so `dvc repro` and a
stage run by hand (`python -m mnist_pipeline.train`) start from the same defaults, and `dvc exp run -S
train.epochs=5` changes both. The file is the workspace's: a DVC experiment's temporary copy reads its own.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from mnist_pipeline.core.errors import ConfigError
from mnist_pipeline.core.workspace import WORKSPACE

PARAMS_FILE = WORKSPACE / "params.yaml"
RESOLVER = "params"


@cache
def _load(path: Path, mtime_ns: int, size: int) -> dict:
    """Read once per version of the file (its time and size: a rewrite within one clock tick changes the size)."""
    return yaml.safe_load(path.read_text()) or {}


def value(key: str, path: Path = PARAMS_FILE) -> Any:
    """The value at dotted `key` in params.yaml; a missing file or key is a ConfigError naming it."""
    try:
        stat = path.stat()
        node: Any = _load(path, stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        raise ConfigError(f"${{params:{key}}}: {path} not found") from None
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"${{params:{key}}}: {path.name} has no {key!r}")
        node = node[part]
    return node


def register_resolver() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, value)
