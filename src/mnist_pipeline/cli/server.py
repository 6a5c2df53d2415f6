"""`mnist-pipeline server start | status | stop`: the shared MLflow tracking server on PostgreSQL."""

from __future__ import annotations

import argparse

from mnist_pipeline.cli.common import reported


def server_command(args: argparse.Namespace) -> int:
    from mnist_pipeline.core import workspace
    from mnist_pipeline.team import server

    folder = args.dir or workspace.project_root() / ".mlflow-server"
    with reported():
        if args.action == "start":
            state = server.start(
                folder,
                host=args.host,
                port=args.port,
                database_uri=args.database_uri,
                auth=args.auth,
                allowed_hosts=args.allowed_hosts,
            )
            print(
                f"tracking server at {state['url']} (pid {state['pid']}); use it with:\n"
                f"  export MLFLOW_TRACKING_URI={state['url']}"
            )
        elif args.action == "stop":
            stopped = server.stop(folder)
            print(f"stopped {', '.join(map(str, stopped)) or 'nothing (not running)'}")
        else:
            print(server.status(folder))
    return 0
