"""Parent runs that group others: a search study's one parent, shared by workers on several machines, and
a Hydra multirun's parent (the train stage's sweep callback opens and closes it)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from mnist_pipeline.tracking import stale
from mnist_pipeline.tracking.params import param_value
from mnist_pipeline.tracking.store import guarded, setup

PARENT_RUN_ENV = "MNIST_PIPELINE_PARENT_RUN_ID"  # a multirun's jobs start their runs as its children


@guarded("finding or creating the shared parent run")
def shared_parent_run(
    experiment_id: str, run_name: str, identity: Mapping[str, str], params: Mapping[str, Any] | None = None
) -> str:
    """The id of the one run tagged with `identity`, shared by processes that may start at once on several
    machines: each creates one if it finds none, then every process keeps the earliest (start time, then
    id) and deletes any other it created itself."""
    client = MlflowClient()
    quoted = {k: str(v).replace("'", "\\'") for k, v in identity.items()}
    found = " and ".join(f"tags.`{k}` = '{v}'" for k, v in quoted.items())

    def existing() -> list:
        runs = client.search_runs([experiment_id], filter_string=found)
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    present = existing()
    if present:
        return present[0].info.run_id
    mine = client.create_run(experiment_id, run_name=run_name, tags=dict(identity)).info.run_id
    first = existing()[0].info.run_id
    if first != mine:
        client.delete_run(mine)
    elif params:
        client.log_batch(mine, params=[Param(k, param_value(v)) for k, v in params.items()])
    return first


@guarded("creating the sweep's parent run")
def open_sweep_parent(tracking: Mapping, sweep_dir: str) -> str:
    """A new parent run for a multirun writing to `sweep_dir`; its jobs find its id in PARENT_RUN_ENV."""
    experiment_id = setup(tracking)
    run = MlflowClient().create_run(
        experiment_id,
        run_name=f"sweep {os.path.basename(sweep_dir)}",
        tags={"sweep.dir": sweep_dir, stale.OWNER_TAG: stale.owner()},
    )
    os.environ[PARENT_RUN_ENV] = run.info.run_id
    return run.info.run_id


@guarded("ending the sweep's parent run")
def close_sweep_parent(run_id: str, status: str | None = None) -> None:
    """End the sweep's parent: `status` if given, else FAILED if any child did not finish, else FINISHED."""
    client = MlflowClient()
    if status is None:
        children = client.search_runs(
            [client.get_run(run_id).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
        )
        status = "FAILED" if any(child.info.status != "FINISHED" for child in children) else "FINISHED"
    client.set_terminated(run_id, status=status)
    os.environ.pop(PARENT_RUN_ENV, None)


def parent_from_environment() -> str | None:
    return os.environ.get(PARENT_RUN_ENV) or None
