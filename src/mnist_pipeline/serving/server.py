"""Running the app under uvicorn: one process, or a supervisor and N workers sharing one listening socket.

With --workers N, uvicorn 0.54 binds the socket in the supervisor without naming the protocol, so the
sockets it accepts report proto 0 and asyncio leaves Nagle's algorithm on: every keep-alive response then
waits ~40 ms for the client's delayed ACK (uvicorn issue #3149; single-image requests here went from 10 ms
to 48 ms p50). The listener is therefore made here, as uvicorn makes it plus IPPROTO_TCP (the fix proposed
upstream, PR #3155), and handed to uvicorn's own Multiprocess supervisor as `uvicorn.run` does.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from mnist_pipeline.serving.app import FACTORY


def run(app: Any, host: str, port: int, workers: int, graceful_seconds: float) -> None:
    """Serve until SIGTERM/SIGINT; `app` is the built app for one worker (ignored with more: each worker
    builds its own from the environment, see app.from_environment)."""
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,  # serving/access_log.py writes one line per request, with sizes and latency
        "server_header": False,
        "timeout_graceful_shutdown": graceful_seconds,
    }
    if workers == 1:
        uvicorn.run(app, **settings)
        return
    config = uvicorn.Config(FACTORY, factory=True, workers=workers, **settings)
    Multiprocess(config, sockets=[tcp_listener(host, port)]).run()


def tcp_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # the protocol uvicorn leaves out
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock
