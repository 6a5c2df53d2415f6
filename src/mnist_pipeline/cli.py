"""The `mnist-pipeline` console script.

    mnist-pipeline predict IMAGE [IMAGE ...]      # classify pictures with the champion (--dataset, --model URI)
    mnist-pipeline registry                       # the registered versions, their tags, the alias holder
    mnist-pipeline registry rollback VERSION      # move the champion alias back to an earlier version
    mnist-pipeline server start | status | stop   # a shared MLflow tracking server on PostgreSQL
    mnist-pipeline runs stale [--clean]           # RUNNING runs whose process died; --clean ends them KILLED

predict's exit codes: 0 every file was predicted, 1 some file could not be read (the others are still
predicted), 2 usage error or the model cannot be loaded. registry, server and runs exit 1 on an error.
TensorFlow and MLflow are imported only once a command runs, so `--help` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_DATASET, ALIAS = "mnist", "champion"
REGISTERED_MODEL = "{dataset}-classifier"  # as in conf/report.yaml: one registered model per dataset
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"  # relative: the project's mlruns/, from any folder


def _top(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 256, got {value!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-pipeline",
                                     description="Use the models trained by the pipeline.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict", help="classify images (PNG, JPEG or .npy)",
        description="Print the predicted class of each image, one line per image. PNG/JPEG pictures of any "
                    "size or polarity are normalized like the model's dataset (MNIST: the digit fit to 20x20 and "
                    "centred by mass in 28x28); .npy arrays must already be in its form (for 28x28 images: "
                    "(28, 28), (28, 28, 1) or a batch (n, 28, 28[, 1]); uint8 0..255 or floats in [0, 1]). Class "
                    "names, image size and preprocessing come from the model's metadata.",
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE", type=Path, help="a PNG/JPEG picture or an .npy array")
    predict.add_argument("--dataset", default=DEFAULT_DATASET, metavar="NAME",
                         help="use this dataset's champion, models:/<NAME>-classifier@champion (default: %(default)s)")
    predict.add_argument("--model", metavar="URI", help="an MLflow model URI instead of the dataset's champion")
    _tracking_option(predict)
    predict.add_argument("--top", type=_top, default=3, metavar="K",
                         help="how many of the most likely classes to list (default: %(default)s)")
    predict.set_defaults(run=predict_command)

    registry = commands.add_parser(
        "registry", help="list the registered model's versions, or roll the champion alias back",
        description="Without an action: every version of the registered model with its tags (variant, "
                    "validation and test accuracy, data hash, git commit, DVC experiment); * marks the alias "
                    "holder. `rollback VERSION` moves the alias to that earlier version.")
    registry.add_argument("action", nargs="?", choices=("list", "rollback"), default="list")
    registry.add_argument("version", nargs="?", type=int, metavar="VERSION", help="for rollback: the version")
    registry.add_argument("--dataset", default=DEFAULT_DATASET, metavar="NAME",
                          help="the dataset whose registered model, <NAME>-classifier, to use (default: %(default)s)")
    registry.add_argument("--name", help="a registered model by name instead")
    registry.add_argument("--alias", default=ALIAS, help="alias (default: %(default)s)")
    _tracking_option(registry)
    registry.set_defaults(run=registry_command)

    server = commands.add_parser(
        "server", help="start, check or stop a shared MLflow tracking server on PostgreSQL",
        description="`start`: a PostgreSQL cluster of its own in --dir (unless --database-uri names one) and "
                    "`mlflow server` on it, artifacts served through the server; clients then need only "
                    "MLFLOW_TRACKING_URI=http://HOST:PORT. `stop` ends both. --auth turns on MLflow's basic-auth "
                    "app (needs MLFLOW_FLASK_SERVER_SECRET_KEY and MLFLOW_AUTH_ADMIN_PASSWORD).")
    server.add_argument("action", choices=("start", "status", "stop"))
    server.add_argument("--dir", type=Path, default=None, metavar="DIR",
                        help="where the server keeps everything (default: .mlflow-server in the project)")
    server.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    server.add_argument("--port", type=int, default=5000, help="(default: %(default)s)")
    server.add_argument("--database-uri", metavar="URI", help="an existing PostgreSQL database for the runs, "
                        "e.g. postgresql+psycopg://user:password@host:5432/mlflow")
    server.add_argument("--auth", action="store_true", help="MLflow's basic-auth app: every request needs a login")
    server.add_argument("--allowed-hosts", metavar="HOSTS", help="comma-separated Host headers the server answers, "
                        "e.g. mlflow.example.org,10.0.0.5:5000 (protection against DNS rebinding)")
    server.set_defaults(run=server_command)

    stale = commands.add_parser(
        "runs", help="find (and end) RUNNING runs whose process died",
        description="`stale`: every RUNNING run with the process that owns it and whether that process is "
                    "alive; a run whose process on this host is gone (kill -9, power loss) is `dead`. "
                    "--clean ends the dead ones KILLED. Runs owned on another host are listed, never ended.")
    stale.add_argument("action", choices=("stale",))
    stale.add_argument("--clean", action="store_true", help="end the dead runs KILLED")
    _tracking_option(stale)
    stale.set_defaults(run=runs_command)
    return parser


def _tracking_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", metavar="URI",
                        help=f"MLflow store (default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})")


def _open_store(args: argparse.Namespace) -> None:
    """Point MLflow at the store the user asked for; raises TrackingError if a SQLite store is missing."""
    from mnist_pipeline.tracking import store

    store.use(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


def registered_model(dataset: str) -> str:
    return REGISTERED_MODEL.format(dataset=dataset)


def format_prediction(name: str, probs, top: int, classes) -> str:
    """`<name>: 7 (p=0.9987)  top-3: 7 0.9987, 2 0.0008, 3 0.0002`, classes by name."""
    ranked = sorted(range(len(probs)), key=lambda d: -probs[d])[:top]
    listed = ", ".join(f"{classes[d]} {probs[d]:.4f}" for d in ranked)
    return f"{name}: {classes[ranked[0]]} (p={probs[ranked[0]]:.4f})  top-{len(ranked)}: {listed}"


def predict_command(args: argparse.Namespace) -> int:
    from mnist_pipeline.errors import PipelineError

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices are not for users
    try:
        _open_store(args)
        from mnist_pipeline import images
        from mnist_pipeline.tracking import logged_models

        model_uri = args.model or f"models:/{registered_model(args.dataset)}@{ALIAS}"
        metadata = logged_models.model_metadata(model_uri)
        predict = logged_models.load_predictor(model_uri)
    except (PipelineError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # Read every file first, then predict all images in one call: one model call is much faster than many.
    names, batches, failed = [], [], False
    for path in args.images:
        try:
            file_names, batch = images.load_named_images(path, images.Preprocess.of_model(metadata))
        except images.ImageError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            failed = True
            continue
        names += file_names
        batches.append(batch)
    if batches:
        import numpy as np

        with contextlib.redirect_stdout(io.StringIO()):  # Keras's progress bar would mix with the results
            probs = predict(np.concatenate(batches))
        classes = metadata.get("classes") or [str(i) for i in range(probs.shape[1])]
        for name, p in zip(names, probs.tolist()):
            print(format_prediction(name, p, args.top, classes))
    return 1 if failed else 0


def registry_command(args: argparse.Namespace) -> int:
    from mnist_pipeline.errors import PipelineError

    args.name = args.name or registered_model(args.dataset)
    try:
        _open_store(args)
        from mnist_pipeline.tracking import registry

        if args.action == "rollback":
            return _rollback(registry, args)
        versions = registry.versions(args.name)
        held = registry.holder(args.name, args.alias)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not versions:
        print(f"no versions of {args.name} registered yet: run the pipeline (dvc repro)")
        return 0
    print(format_versions(versions, args.alias, held.number if held else None))
    return 0


VERSION_COLUMNS = (("version", 7), ("variant", 22), ("val acc", 8), ("test acc", 8), ("data", 12),
                   ("commit", 10), ("dvc exp", 16))


def format_versions(versions, alias: str, holder: int | None) -> str:
    """One line per version; `*` marks the one `alias` points to (version `holder`)."""

    def cell(value: str, width: int) -> str:
        return value if len(value) <= width else value[: width - 1] + "~"

    def accuracy(text: str | None) -> str:
        try:
            return f"{float(text):.4f}"
        except (TypeError, ValueError):
            return "-"

    lines = ["  " + " ".join(f"{name:<{width}}" for name, width in VERSION_COLUMNS)]
    for v in versions:
        t = v.tags
        values = (f"v{v.number}", t.get("variant", "-"), accuracy(t.get("val_accuracy")),
                  accuracy(t.get("test_accuracy")), t.get("data.sha256", "-")[:12] or "-",
                  t.get("git.commit", "-")[:10] or "-", t.get("dvc.exp") or "-")
        mark = "*" if v.number == holder else " "
        lines.append(f"{mark} " + " ".join(f"{cell(x, w):<{w}}" for x, (_, w) in zip(values, VERSION_COLUMNS)))
    lines.append(f"* = @{alias}")
    return "\n".join(lines)


def _rollback(registry, args: argparse.Namespace) -> int:
    if args.version is None:
        print("error: rollback needs the VERSION to move the alias to (see `mnist-pipeline registry`)",
              file=sys.stderr)
        return 2
    versions = {v.number: v for v in registry.versions(args.name)}
    target = versions.get(args.version)
    if target is None:
        listed = ", ".join(f"v{n}" for n in versions) or "none"
        print(f"error: {args.name} has no version {args.version} (registered: {listed})", file=sys.stderr)
        return 1
    before = registry.holder(args.name, args.alias)
    registry.set_alias(args.name, args.alias, target.number)
    was = f"v{before.number} {before.tags.get('variant', '?')}" if before else "no version"
    print(f"@{args.alias}: v{target.number} {target.tags.get('variant', '?')} (was {was})")
    return 0


def server_command(args: argparse.Namespace) -> int:
    from mnist_pipeline import workspace
    from mnist_pipeline.errors import PipelineError
    from mnist_pipeline.tracking import server

    folder = args.dir or workspace.project_root() / ".mlflow-server"
    try:
        if args.action == "start":
            state = server.start(folder, host=args.host, port=args.port, database_uri=args.database_uri,
                                 auth=args.auth, allowed_hosts=args.allowed_hosts)
            print(f"tracking server at {state['url']} (pid {state['pid']}); use it with:\n"
                  f"  export MLFLOW_TRACKING_URI={state['url']}")
        elif args.action == "stop":
            stopped = server.stop(folder)
            print(f"stopped {', '.join(map(str, stopped)) or 'nothing (not running)'}")
        else:
            print(server.status(folder))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def runs_command(args: argparse.Namespace) -> int:
    from mnist_pipeline.errors import PipelineError

    try:
        _open_store(args)
        from mlflow.tracking import MlflowClient

        from mnist_pipeline.tracking import stale

        client = MlflowClient()
        found = stale.running(client)
        ended = {r.info.run_id for r in stale.end_dead(client, found)} if args.clean else set()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not found:
        print("no RUNNING runs")
    for item in found:
        run = item.run
        state = "dead, ended KILLED" if run.info.run_id in ended else item.verdict
        print(f"{run.info.run_id}  {run.info.run_name or '-':<24} {state:<18} "
              f"{run.data.tags.get(stale.OWNER_TAG, '(no owner tag)')}")
    dead = sum(item.verdict == "dead" for item in found)
    if dead and not args.clean:
        print(f"{dead} dead: `mnist-pipeline runs stale --clean` ends them KILLED")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the real command line: TensorFlow's start-up banners dropped (console.py)
        from mnist_pipeline import console

        console.quiet()
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
