"""A run's settings as MLflow params: the nested config flattened into dotted keys."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import mlflow

from mnist_pipeline.tracking.store import guarded

log = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values; the full config is an artifact anyway


def flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested config (plain containers) -> {"a.b.c": value}; lists of mappings are indexed ("model.conv.0.filters")."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
            flat.update(flatten({str(i): v for i, v in enumerate(value)}, f"{name}."))
        else:
            flat[name] = value
    return flat


def param_value(value: Any) -> str:
    """How a value is written as a param: JSON for lists, mappings, booleans and None; str() otherwise."""
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def log_config(config: Mapping) -> None:
    """The config as the active run's params; values longer than MLflow allows are left out, with a warning."""
    params = {k: param_value(v) for k, v in flatten(config).items()}
    for key in [k for k, v in params.items() if len(v) > MAX_PARAM_LENGTH]:
        log.warning("param %s is longer than MLflow allows; see config.yaml in the artifacts", key)
        params.pop(key)
    with guarded("logging the config as params"):
        mlflow.log_params(params)
