"""Stale runs: RUNNING runs whose process died without ending them (kill -9, power loss, the OOM killer).

Every run this project opens is tagged with the process that owns it (`process.owner`: host, PID and the
process's start time, so a PID reused by another program does not look alive). A run is stale when it is
RUNNING, its owner was on this host, and that process is gone. Runs owned on another host cannot be judged
from here and are only listed; runs without the tag (made by other tools) are left alone.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

from mnist_pipeline.core import processes
from mnist_pipeline.tracking.store import guarded

OWNER_TAG = "process.owner"
KILLED_BY_TAG = "process.ended_by"


def owner(pid: int | None = None) -> str:
    """`host:pid:start` for this process (or `pid` on this host)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{processes.start_time(pid)}"


def verdict(run: Run) -> str:
    """`alive`, `dead` (stale), `other host` or `unknown` (no owner tag) for a RUNNING run."""
    tag = run.data.tags.get(OWNER_TAG)
    if not tag or tag.count(":") < 2:
        return "unknown"
    host, pid, start = tag.rsplit(":", 2)
    if host != socket.gethostname():
        return "other host"
    now = processes.start_time(int(pid)) if pid.isdigit() else None
    return "alive" if now is not None and (now == start or "?" in (now, start)) else "dead"


@dataclass
class Found:
    run: Run
    verdict: str


def running(client: MlflowClient, filter_string: str = "") -> list[Found]:
    """Every RUNNING run of every experiment (matching `filter_string` too), with its verdict."""
    query = " and ".join(filter(None, ["attributes.status = 'RUNNING'", filter_string]))
    with guarded("searching RUNNING runs"):
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, query, max_results=10_000) if experiments else []
    return [Found(run, verdict(run)) for run in runs]


def end_dead(client: MlflowClient, found: list[Found], keep: str | None = None) -> list[Run]:
    """End the dead ones KILLED (except `keep`, a run about to be resumed); returns them."""
    ended = []
    for item in found:
        if item.verdict == "dead" and item.run.info.run_id != keep:
            with guarded(f"ending stale run {item.run.info.run_id}"):
                client.set_tag(item.run.info.run_id, KILLED_BY_TAG, f"stale-run check by {owner()}")
                client.set_terminated(item.run.info.run_id, status=RunStatus.to_string(RunStatus.KILLED))
            ended.append(item.run)
    return ended


def survey(clean: bool = False) -> tuple[list[Found], set[str]]:
    """Every RUNNING run with its verdict, and (with `clean`) the ids of the dead ones, now ended KILLED."""
    client = MlflowClient()
    found = running(client)
    ended = {run.info.run_id for run in end_dead(client, found)} if clean else set()
    return found, ended
