"""The `mnist-pipeline` console script: its parser; each command lives in a module of its own.

    mnist-pipeline predict IMAGE [IMAGE ...]      # classify pictures with the champion (--dataset, --model URI)
    mnist-pipeline registry                       # the registered versions, their tags, the alias holder
    mnist-pipeline registry rollback VERSION      # move the champion alias back to an earlier version
    mnist-pipeline serve                          # the champion over HTTP: MLflow's protocol, pictures, a page
    mnist-pipeline server start | status | stop   # a shared MLflow tracking server on PostgreSQL
    mnist-pipeline runs stale [--clean]           # RUNNING runs whose process died; --clean ends them KILLED

predict's exit codes: 0 every file was predicted, 1 some file could not be read (the others are still
predicted), 2 usage error or the model cannot be loaded; serve's: 0 after a stop, 2 if the model cannot be
loaded. registry, server and runs exit 1 on an error.
TensorFlow and MLflow are imported only once a command runs, so `--help` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mnist_pipeline.cli.common import defaults, run, tracking_option
from mnist_pipeline.cli.predict import predict_command
from mnist_pipeline.cli.registry import registry_command
from mnist_pipeline.cli.runs import runs_command
from mnist_pipeline.cli.serve import MAX_BODY_MIB, serve_command
from mnist_pipeline.cli.server import server_command


def _top(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 256, got {value!r}")
    return int(value)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {value!r}")
    return int(value)


def model_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """--dataset (its champion), --model URI and --tracking-uri: which logged model a command uses."""
    parser.add_argument(
        "--dataset",
        default=defaults()["dataset"],
        metavar="NAME",
        help=f"{verb} this dataset's champion, models:/<NAME>-classifier@champion (default: %(default)s)",
    )
    parser.add_argument("--model", metavar="URI", help="an MLflow model URI instead of the dataset's champion")
    tracking_option(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-pipeline", description="Use the models trained by the pipeline.")
    commands = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict",
        help="classify images (pictures or .npy)",
        description="Print the predicted class of each image, one line per image. Pictures in any format "
        "Pillow reads (PNG, JPEG, BMP, GIF, WebP...), of any size and mode, are converted as the model's "
        "dataset was (MNIST: the digit fit to 20x20 and centred by mass in 28x28; your own pictures: fit "
        "and padded, in grayscale or RGB); .npy arrays must already be in its form (for 28x28 grayscale: "
        "(28, 28), (28, 28, 1) or a batch (n, 28, 28[, 1]); uint8 0..255 or floats in [0, 1]). Class "
        "names, image shape and preprocessing come from the model's metadata.",
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE", type=Path, help="a picture or an .npy array")
    model_options(predict, "use")
    predict.add_argument(
        "--top",
        type=_top,
        default=3,
        metavar="K",
        help="how many of the most likely classes to list (default: %(default)s)",
    )
    predict.set_defaults(command=predict_command)

    registry = commands.add_parser(
        "registry",
        help="list the registered model's versions, or roll the champion alias back",
        description="Without an action: every version of the registered model with its tags (variant, "
        "validation and test accuracy, data hash, git commit, DVC experiment); * marks the alias "
        "holder. `rollback VERSION` moves the alias to that earlier version.",
    )
    registry.add_argument("action", nargs="?", choices=("list", "rollback"), default="list")
    registry.add_argument("version", nargs="?", type=int, metavar="VERSION", help="for rollback: the version")
    registry.add_argument(
        "--dataset",
        default=defaults()["dataset"],
        metavar="NAME",
        help="the dataset whose registered model, <NAME>-classifier, to use (default: %(default)s)",
    )
    registry.add_argument("--name", help="a registered model by name instead")
    registry.add_argument("--alias", default=defaults()["alias"], help="alias (default: %(default)s)")
    tracking_option(registry)
    registry.set_defaults(command=registry_command)

    serve = commands.add_parser(
        "serve",
        help="serve the champion over HTTP (MLflow's scoring protocol, pictures, a page to draw on)",
        description="The champion (or --model URI) on MLflow's scoring app and uvicorn: POST /invocations "
        '({"inputs": images} JSON or CSV, as `mlflow models serve` takes it), GET /ping, /health, /version; '
        "POST /predict with a picture as the body (class names and probabilities); GET / a page to draw a "
        "digit on. Bodies over --max-body-mib get 413 before they are parsed, malformed requests a 4xx "
        "naming the problem; one access-log line per request on stderr. SIGTERM or Ctrl-C stops it after "
        "the requests in flight are answered.",
    )
    model_options(serve, "serve")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=5000, help="(default: %(default)s)")
    serve.add_argument(
        "--workers", type=_positive, default=1, metavar="N", help="server processes (default: %(default)s)"
    )
    serve.add_argument(
        "--threads",
        type=_positive,
        default=1,
        metavar="N",
        help="TensorFlow threads per worker (default: %(default)s)",
    )
    serve.add_argument(
        "--max-body-mib",
        type=float,
        default=MAX_BODY_MIB,
        metavar="MIB",
        help="larger request bodies get 413 (default: %(default)g MiB, about 550 MNIST images as JSON)",
    )
    serve.add_argument(
        "--graceful-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, how long requests in flight may take before the server stops anyway (default: %(default)g)",
    )
    serve.set_defaults(command=serve_command)

    server = commands.add_parser(
        "server",
        help="start, check or stop a shared MLflow tracking server on PostgreSQL",
        description="`start`: a PostgreSQL cluster of its own in --dir (unless --database-uri names one) and "
        "`mlflow server` on it, artifacts served through the server; clients then need only "
        "MLFLOW_TRACKING_URI=http://HOST:PORT. `stop` ends both. --auth turns on MLflow's basic-auth "
        "app (needs MLFLOW_FLASK_SERVER_SECRET_KEY and MLFLOW_AUTH_ADMIN_PASSWORD).",
    )
    server.add_argument("action", choices=("start", "status", "stop"))
    server.add_argument(
        "--dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the server keeps everything (default: .mlflow-server in the project)",
    )
    server.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    server.add_argument("--port", type=int, default=5000, help="(default: %(default)s)")
    server.add_argument(
        "--database-uri",
        metavar="URI",
        help="an existing PostgreSQL database for the runs, e.g. postgresql+psycopg://user:password@host:5432/mlflow",
    )
    server.add_argument("--auth", action="store_true", help="MLflow's basic-auth app: every request needs a login")
    server.add_argument(
        "--allowed-hosts",
        metavar="HOSTS",
        help="comma-separated Host headers the server answers, "
        "e.g. mlflow.example.org,10.0.0.5:5000 (protection against DNS rebinding)",
    )
    server.set_defaults(command=server_command)

    stale = commands.add_parser(
        "runs",
        help="find (and end) RUNNING runs whose process died",
        description="`stale`: every RUNNING run with the process that owns it and whether that process is "
        "alive; a run whose process on this host is gone (kill -9, power loss) is `dead`. "
        "--clean ends the dead ones KILLED. Runs owned on another host are listed, never ended.",
    )
    stale.add_argument("action", choices=("stale",))
    stale.add_argument("--clean", action="store_true", help="end the dead runs KILLED")
    tracking_option(stale)
    stale.set_defaults(command=runs_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the real command line: TensorFlow's start-up banners dropped (core/console.py)
        from mnist_pipeline.core import console

        console.quiet()
    args = build_parser().parse_args(argv)
    return run(args.command, args)


if __name__ == "__main__":
    sys.exit(main())
