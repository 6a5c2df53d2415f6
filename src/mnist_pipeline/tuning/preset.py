"""The best trial as a ready command and as an experiment preset (conf/experiment/ format)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from mnist_pipeline.core import workspace


def command(overrides: Sequence[str]) -> str:
    return "python -m mnist_pipeline.train " + " ".join(overrides)


def preset(overrides: Sequence[str], header: str) -> str:
    """A `# @package _global_` preset: config group choices (model=shallow_cnn) become `override /model`
    defaults, dotted settings nested values."""
    groups: list[dict[str, str]] = []
    values: dict[str, Any] = {}
    for item in overrides:
        key, value = item.split("=", 1)
        if (workspace.CONF_DIR / key).is_dir():  # a config group choice: model=shallow_cnn
            groups.append({f"override /{key}": value})
            continue
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    body = {"defaults": groups, **values} if groups else values
    return "# @package _global_\n" + header + yaml.safe_dump(body, sort_keys=False)
