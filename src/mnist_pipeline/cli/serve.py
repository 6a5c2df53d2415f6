"""`mnist-pipeline serve`: the champion (or --model URI) behind MLflow's scoring app and uvicorn, with a body
size limit, 4xx for malformed requests, picture upload, a draw-a-digit page and an access log (serving/app.py)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile

from mnist_pipeline.cli.common import defaults, fail, open_store, registered_model, reported

MAX_BODY_MIB = 4.0  # about 550 MNIST images as JSON; --max-body-mib


class _SignalledError(Exception):
    pass


def _stopped(signum, frame) -> None:
    raise _SignalledError(signum)


def serve_command(args: argparse.Namespace) -> int:
    """Runs until SIGTERM or SIGINT (uvicorn's graceful stop: requests in flight are answered); 2 if the model
    cannot be loaded."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.max_body_mib <= 0:
        raise fail(f"--max-body-mib must be more than 0, got {args.max_body_mib:g}", 2)
    folder = tempfile.mkdtemp(prefix="mnist-pipeline-serve-")
    try:
        with reported(code=2, also=(OSError,)):
            open_store(args)
            from mnist_pipeline.serving import app
            from mnist_pipeline.tracking import logged_models

            model_uri = args.model or f"models:/{registered_model(args.dataset)}@{defaults()['alias']}"
            model_path = logged_models.download_model(model_uri, folder)
            max_bytes = int(args.max_body_mib * 2**20)
            os.environ[app.MODEL_ENV], os.environ[app.MAX_BODY_ENV] = model_path, str(max_bytes)
            os.environ[app.THREADS_ENV] = str(args.threads)
            # One worker: the app is built here, so a model that cannot be loaded is one error line. More:
            # uvicorn starts each worker from the factory.
            target = app.from_environment() if args.workers == 1 else None
        from mnist_pipeline.serving import server

        print(f"serving {model_uri} at http://{args.host}:{args.port} ({args.workers} worker(s))", flush=True)
        # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again with the handlers it found:
        # these, so the downloaded model is removed and the command exits 0 instead of dying by the signal.
        previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with reported(code=2, also=(OSError,)):  # e.g. the port is taken
                server.run(target, args.host, args.port, args.workers, args.graceful_seconds)
        except _SignalledError:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0
