"""The search space (conf/space/<name>.yaml): checked before any trial, sampled by Optuna, and each sampled
value written back as a train override."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from mnist_pipeline.core.errors import ConfigError

KINDS = ("float", "int", "categorical")


def check(space: DictConfig) -> None:
    """`space.train` is a list of train overrides; every `space.params` entry is a valid distribution."""
    if not OmegaConf.is_list(space.train) or not all("=" in str(o) for o in space.train):
        raise ConfigError(
            f"space.train: expected a list of train overrides like model=shallow_cnn, got {space.train!r}"
        )
    if not space.params:
        raise ConfigError("space.params: the search space is empty")
    for key, spec in space.params.items():  # keys hold dots (optimizer.lr): checked here, not by select
        where = f"space.params[{key}]"
        kind = spec.get("type") if OmegaConf.is_dict(spec) else None
        if kind not in KINDS:
            raise ConfigError(f"{where}.type: must be one of {', '.join(KINDS)}; got {kind!r}")
        if kind == "categorical":
            if not spec.get("choices"):
                raise ConfigError(f"{where}.choices: expected a non-empty list")
            continue
        low, high = spec.get("low"), spec.get("high")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
            raise ConfigError(f"{where}: low and high must be numbers with low < high, got {low!r} and {high!r}")
        if spec.get("log") and low <= 0:
            raise ConfigError(f"{where}.low: must be > 0 on a log scale, got {low}")


def suggest(trial: optuna.Trial, params: Mapping) -> dict[str, Any]:
    """Optuna's values for this trial: {dotted train setting: value}."""
    values = {}
    for key, spec in params.items():
        if spec["type"] == "categorical":
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return values


def override(key: str, value: Any) -> str:
    """`key=value` in Hydra's override grammar; floats keep every digit, so the trial can be rerun exactly."""
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


def overrides(space: DictConfig, values: Mapping[str, Any]) -> list[str]:
    """The train overrides of one trial: the space's fixed ones, then the sampled values."""
    return [*map(str, space.train), *(override(k, v) for k, v in values.items())]
