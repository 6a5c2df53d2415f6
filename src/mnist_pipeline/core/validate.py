"""Range and type checks for settings. Hydra does not validate values, so every stage checks its
settings with these before it creates any output or tracking run; each error names the dotted key."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_pipeline.core.errors import ConfigError

_MISSING = object()


def _get(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=_MISSING)
    if value is _MISSING:
        raise ConfigError(f"{key}: missing setting")
    return value


def integer(cfg: DictConfig, key: str, *, minimum: int | None = None, optional: bool = False) -> int | None:
    value = _get(cfg, key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {value}")
    return value


def number(
    cfg: DictConfig,
    key: str,
    *,
    above: float | None = None,
    below: float | None = None,
    at_least: float | None = None,
) -> float:
    """A real number with optional exclusive (`above`, `below`) or inclusive (`at_least`) bounds."""
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if above is not None and below is not None and not above < value < below:
        raise ConfigError(f"{key}: must be in ({above}, {below}), got {value}")
    if above is not None and not value > above:
        raise ConfigError(f"{key}: must be > {above}, got {value}")
    if below is not None and not value < below:
        raise ConfigError(f"{key}: must be < {below}, got {value}")
    if at_least is not None and value < at_least:
        raise ConfigError(f"{key}: must be >= {at_least}, got {value}")
    return float(value)


def choice(cfg: DictConfig, key: str, options: Iterable[str]) -> str:
    value = _get(cfg, key)
    options = tuple(options)
    if value not in options:
        raise ConfigError(f"{key}: must be one of {', '.join(options)}; got {value!r}")
    return value


def boolean(cfg: DictConfig, key: str) -> bool:
    value = _get(cfg, key)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def text(cfg: DictConfig, key: str) -> str:
    """A required, non-empty string (`???` in the config means the user must set it)."""
    if OmegaConf.is_missing(cfg, key):
        raise ConfigError(f"{key}: required; set it on the command line, e.g. {key}=<value>")
    value = _get(cfg, key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value
