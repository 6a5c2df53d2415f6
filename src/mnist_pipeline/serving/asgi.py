"""The few ASGI pieces the serving middleware shares: headers, reading a body, answering JSON errors."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"


class ClientGoneError(Exception):
    """The client went away before its whole body arrived."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first header `name` (lower case) of a request, or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def media_type(scope: Scope) -> tuple[str | None, dict[str, str]]:
    """Content-Type as (mime type lower case, {parameter: value}); (None, {}) without the header."""
    raw = header(scope, b"content-type")
    if raw is None:
        return None, {}
    mime, *params = (part.strip() for part in raw.decode("latin-1").split(";"))
    pairs = (param.partition("=") for param in params if param)
    return mime.lower(), {key.strip().lower(): value.strip().strip('"') for key, _, value in pairs}


async def read_body(receive: Receive) -> bytes:
    """The whole request body (the size limit is BodyLimit's, outside)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes) -> Receive:
    """A `receive` that hands an inner app a body already read."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def respond(send: Send, status: int, body: bytes, content_type: bytes = JSON) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def error(send: Send, status: int, code: str, message: str) -> None:
    """An error in MLflow's scoring server's form: {"error_code": ..., "message": ...}."""
    await respond(send, status, json.dumps({"error_code": code, "message": message}).encode())
