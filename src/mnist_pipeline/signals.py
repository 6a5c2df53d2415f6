"""Signals: SIGTERM raises Terminated (as SIGINT raises KeyboardInterrupt), so every `finally` runs and no
half-written output or RUNNING run is left behind; the signals that stopped work are recorded; a commit
defers them until it is complete.

kill -9 cannot be caught: what it leaves (staging folders, a RUNNING run) is cleaned up by the next run
(atomic.py, tracking/runs.py).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from mnist_pipeline.errors import Terminated

STOPPING = (signal.SIGTERM, signal.SIGINT)
received: list[int] = []  # every SIGTERM/SIGINT that arrived while handled here, in this process


def _on_term(signum, frame):
    received.append(signum)
    raise Terminated(f"signal {signum}")


def _on_int(signum, frame):
    received.append(signum)
    raise KeyboardInterrupt


@contextmanager
def handled() -> Iterator[None]:
    """SIGTERM raises Terminated and SIGINT KeyboardInterrupt inside the block, both recorded in `received`.
    Outside the main thread (where Python cannot set handlers) the block runs as is."""
    try:
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_term),
                    signal.SIGINT: signal.signal(signal.SIGINT, _on_int)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back while the block runs (a commit of several renames): the first that
    arrives meanwhile is raised again, to the handler in place before, right after it. (Handlers, not
    pthread_sigmask: in a process with threads, as TensorFlow's, another thread would take the signal.)"""
    pending: list[int] = []
    try:
        previous = {signum: signal.signal(signum, lambda signum, frame: pending.append(signum))
                    for signum in STOPPING}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if pending:
            signal.raise_signal(pending[0])


def since(mark: int) -> list[int]:
    """The signals received after `len(received)` was `mark`."""
    return received[mark:]
