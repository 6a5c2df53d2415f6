"""A request body size limit, answered with 413 before anything parses the body.

`mlflow models serve` reads any body whole (a 51 MiB batch took 26 s and 3.5 GiB), so the limit sits in
front of everything else. A declared Content-Length over the limit is refused at once (uvicorn holds the
client to the length it declared); a chunked body is read here, counted, and refused when it passes the
limit. Before answering, the rest of the body is read and dropped (up to DRAIN_BYTES; nothing is kept): a
client still sending would otherwise meet a closed socket and never see the 413. A client that asked
`Expect: 100-continue` (curl does for large bodies) is answered before it sends anything.
"""

from __future__ import annotations

from mnist_pipeline.serving.asgi import App, Receive, Scope, Send, error, header, replay

DRAIN_BYTES = 64 * 2**20  # beyond this, answer and close instead of reading on


class BodyLimit:
    def __init__(self, app: App, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")  # uvicorn has refused a malformed one and holds it to it
        if declared is not None:
            if int(declared) <= self.max_bytes:
                await self.app(scope, receive, send)
                return
            if header(scope, b"expect") != b"100-continue":
                await _drain(receive, int(declared))
            await self._refuse(send, int(declared))
            return
        # Chunked: no size is declared, so the body is read here, counted, and handed on if it fits.
        chunks, received = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_bytes:
                await _drain(receive, DRAIN_BYTES)
                await self._refuse(send, received, "at least ")
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, replay(b"".join(chunks)), send)

    async def _refuse(self, send: Send, size: int, qualifier: str = "") -> None:
        limit = f"{self.max_bytes / 2**20:g} MiB"
        await error(
            send,
            413,
            "REQUEST_TOO_LARGE",
            f"request body of {qualifier}{size:,} bytes is over the limit of {limit} ({self.max_bytes:,} bytes; "
            "mnist-pipeline serve --max-body-mib): send fewer images per request",
        )


async def _drain(receive: Receive, most: int) -> None:
    """Read and drop what the client is still sending, at most `most` bytes."""
    seen = 0
    while seen <= min(most, DRAIN_BYTES):
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        seen += len(message.get("body", b""))
