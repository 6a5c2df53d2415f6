"""One access-log line per request: client, method, path, status, bytes in and out, latency.

uvicorn's own access log has neither sizes nor latency, so `mnist-pipeline serve` turns it off and this
middleware, outermost, writes the line once the response's last byte is sent (or when the client left).

    127.0.0.1:50312 "POST /invocations HTTP/1.1" 200 in=3,311B out=215B 1.9ms
"""

from __future__ import annotations

import logging
import time

from mnist_pipeline.serving.asgi import App, Message, Receive, Scope, Send, header

LOGGER = logging.getLogger("mnist_pipeline.serving.access")


class AccessLog:
    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, received, sent = time.perf_counter(), 0, 0, 0

        async def measured() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def counted(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, measured, counted)
        finally:
            client = scope.get("client") or ("-", 0)
            length = header(scope, b"content-length")  # a body refused unread (413) counts as declared
            size = max(received, int(length) if length is not None else 0)
            line = f"{scope['method']} {scope['path']} HTTP/{scope['http_version']}"
            LOGGER.info(
                '%s:%s "%s" %s in=%sB out=%sB %.1fms',
                *client,
                line,
                status or "-",  # no status: the client left before an answer
                f"{size:,}",
                f"{sent:,}",
                (time.perf_counter() - start) * 1e3,
            )
