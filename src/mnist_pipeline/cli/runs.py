"""`mnist-pipeline runs stale [--clean]`: RUNNING runs whose process died, ended KILLED with --clean."""

from __future__ import annotations

import argparse

from mnist_pipeline.cli.common import open_store, reported


def runs_command(args: argparse.Namespace) -> int:
    with reported():
        open_store(args)
        from mnist_pipeline.tracking import stale

        found, ended = stale.survey(clean=args.clean)
    if not found:
        print("no RUNNING runs")
    for item in found:
        run = item.run
        state = "dead, ended KILLED" if run.info.run_id in ended else item.verdict
        print(
            f"{run.info.run_id}  {run.info.run_name or '-':<24} {state:<18} "
            f"{run.data.tags.get(stale.OWNER_TAG, '(no owner tag)')}"
        )
    dead = sum(item.verdict == "dead" for item in found)
    if dead and not args.clean:
        print(f"{dead} dead: `mnist-pipeline runs stale --clean` ends them KILLED")
    return 0
