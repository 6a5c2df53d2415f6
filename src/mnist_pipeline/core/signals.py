"""Signals: SIGTERM raises Terminated (as SIGINT raises KeyboardInterrupt), so every `finally` runs and no
half-written output or RUNNING run is left behind; the signals that stopped work are recorded; a commit
defers them until it is complete.

kill -9 cannot be caught: what it leaves (staging folders, a RUNNING run) is cleaned up by the next run
(core/atomic.py, tracking/runs.py).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from mnist_pipeline.core.errors import Terminated

STOPPING = (signal.SIGTERM, signal.SIGINT)
received: list[int] = []  # every SIGTERM/SIGINT that arrived while handled here, in this process


@contextmanager
def _handlers(handler) -> Iterator[None]:
    """`handler` for SIGTERM and SIGINT inside the block, the previous ones restored after. Outside the
    main thread (where Python cannot set handlers) the block runs as is."""
    try:
        previous = {signum: signal.signal(signum, handler) for signum in STOPPING}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _on_signal(signum, frame):
    received.append(signum)
    raise Terminated(f"signal {signum}") if signum == signal.SIGTERM else KeyboardInterrupt


def handled():
    """SIGTERM raises Terminated and SIGINT KeyboardInterrupt inside the block, both recorded in `received`."""
    return _handlers(_on_signal)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back while the block runs (a commit of several renames): the first that
    arrives meanwhile is raised again, to the handler in place before, right after it. (Handlers, not
    pthread_sigmask: in a process with threads, as TensorFlow's, another thread would take the signal.)"""
    pending: list[int] = []
    with _handlers(lambda signum, frame: pending.append(signum)):
        yield
    if pending:
        signal.raise_signal(pending[0])


def since(mark: int) -> list[int]:
    """The signals received after `len(received)` was `mark`."""
    return received[mark:]
