"""What every command shares: the defaults read from conf/ (never copied into code), opening the MLflow
store, and turning a PipelineError into one `error: ...` line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

from omegaconf import OmegaConf

from mnist_pipeline.core.workspace import CONF_DIR


class CommandError(Exception):
    """A command failed; `code` is its exit code (the message was printed already)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@cache
def defaults() -> dict[str, str]:
    """The registered model's name template and alias (conf/report.yaml's registry) and the store
    (conf/tracking/mlflow.yaml), as the pipeline uses them."""
    registry = OmegaConf.load(CONF_DIR / "report.yaml").registry
    tracking = OmegaConf.load(CONF_DIR / "tracking" / "mlflow.yaml")
    return {
        "model_name": registry.model_name,
        "alias": registry.alias,
        "tracking_uri": tracking.tracking_uri,
        "dataset": "mnist",
    }


def registered_model(dataset: str) -> str:
    return defaults()["model_name"].format(dataset=dataset)


def tracking_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help=f"MLflow store (default: $MLFLOW_TRACKING_URI, else {defaults()['tracking_uri']})",
    )


def open_store(args: argparse.Namespace) -> None:
    """Point MLflow at the store the user asked for; raises TrackingError if a SQLite store is missing."""
    from mnist_pipeline.tracking import store

    store.use(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or defaults()["tracking_uri"])


def fail(message: str, code: int = 1) -> CommandError:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return CommandError(code)


@contextmanager
def reported(code: int = 1, also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """A PipelineError (or one of `also`) inside the block: its one line on stderr, then exit `code`."""
    from mnist_pipeline.core.errors import PipelineError

    caught: tuple[type[BaseException], ...] = (PipelineError, *also)
    try:
        yield
    except caught as exc:
        raise fail(str(exc), code) from None


def run(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return command(args)
    except CommandError as failed:
        return failed.code
