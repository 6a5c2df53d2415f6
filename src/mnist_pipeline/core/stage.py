"""The common entry point of the pipeline's Hydra apps."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from mnist_pipeline.core import console, signals, workspace
from mnist_pipeline.core.errors import PipelineError, Terminated

CONF_DIR = str(workspace.CONF_DIR)  # the workspace's conf/: a DVC experiment runs its own config

log = logging.getLogger(__name__)


def hydra_stage(config_name: str) -> Callable[[Callable[[DictConfig], object]], Callable[[], None]]:
    """Turn `fn(cfg)` into a Hydra app reading conf/<config_name>.yaml.

    Expected failures (PipelineError: bad settings, corrupt or missing data) end the process with exit
    code 1 and a single line naming the problem instead of a traceback.
    """

    def decorate(fn: Callable[[DictConfig], object]) -> Callable[[], None]:
        @functools.wraps(fn)
        def task(cfg: DictConfig) -> None:
            console.quiet()  # already on for `python -m mnist_pipeline.<stage>` (core/__init__.py); else here
            try:
                with signals.handled():  # SIGTERM raises, so staging folders and runs are cleaned up
                    fn(cfg)
            except PipelineError as exc:
                log.error("%s", exc, extra=console.FILE_ONLY)  # stderr has the line below
                print(f"error: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(1) from None
            except Terminated:
                print("terminated by SIGTERM", file=sys.stderr, flush=True)
                raise SystemExit(128 + 15) from None
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr, flush=True)
                raise SystemExit(128 + 2) from None

        return hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(task)

    return decorate
