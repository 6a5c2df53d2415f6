"""The serving middleware called as uvicorn calls it (ASGI scope, receive, send), without a server or TensorFlow: the
body limit, the JSON checks and tensor fast path of /invocations, and the access log line."""

import asyncio
import json
import logging

import numpy as np
import pytest

from mnist_pipeline.serving.access_log import AccessLog
from mnist_pipeline.serving.asgi import media_type
from mnist_pipeline.serving.body_limit import BodyLimit
from mnist_pipeline.serving.invocations import Invocations


class Doubling:
    """A model: predict(images (n, 2, 2, 1)) -> (n, 2), the sum and twice the sum of each image."""

    input_shape = (2, 2, 1)

    def predict(self, images):
        total = images.reshape(len(images), -1).sum(axis=1)
        return np.stack([total, 2 * total], axis=1).astype(np.float32)


class Inner:
    """The app behind the middleware (MLflow's, in the server): records what reached it, answers 299."""

    def __init__(self):
        self.bodies = []

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})


def call(app, body_chunks, headers=(), path="/invocations", method="POST"):
    """(status, body, [chunks the app read]) of one request whose body arrives in `body_chunks`."""
    chunks = list(body_chunks)
    read = []

    async def receive():
        if not chunks:
            return {"type": "http.disconnect"}
        chunk = chunks.pop(0)
        read.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "http_version": "1.1",
        "client": ("127.0.0.1", 5555),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), read


JSON = ("Content-Type", "application/json")


def test_a_declared_body_over_the_limit_is_refused_unread_by_the_app_and_drained():
    inner = Inner()
    body = b"x" * 1000
    status, answer, read = call(BodyLimit(inner, 999), [body[:600], body[600:]], [("Content-Length", "1000")])
    assert status == 413 and inner.bodies == []
    assert json.loads(answer) == {
        "error_code": "REQUEST_TOO_LARGE",
        "message": "request body of 1,000 bytes is over the limit of 0.000952721 MiB (999 bytes; "
        "mnist-pipeline serve --max-body-mib): send fewer images per request",
    }
    assert read == [body[:600], body[600:]]  # read and dropped, so a client still sending sees the 413


def test_expect_100_continue_is_answered_before_the_body_is_asked_for():
    status, _, read = call(
        BodyLimit(Inner(), 999), [b"x" * 1000], [("Content-Length", "1000"), ("Expect", "100-continue")]
    )
    assert status == 413 and read == []  # uvicorn sends "100 Continue" only when the app first reads


def test_a_chunked_body_is_counted_and_refused_once_it_passes_the_limit():
    inner = Inner()
    status, answer, _ = call(BodyLimit(inner, 999), [b"x" * 500, b"x" * 500, b"x" * 500])
    assert status == 413 and inner.bodies == []
    assert "request body of at least 1,000 bytes" in json.loads(answer)["message"]


def test_bodies_within_the_limit_reach_the_app_whole():
    inner = Inner()
    assert call(BodyLimit(inner, 1000), [b"x" * 1000], [("Content-Length", "1000")])[0] == 299
    assert call(BodyLimit(inner, 1000), [b"y" * 400, b"y" * 600])[0] == 299  # chunked, handed on in one piece
    assert inner.bodies == [b"x" * 1000, b"y" * 1000]


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b'{"inputs": [[[[1]]]]}', [], 415, "no Content-Type header: send application/json"),
        (b"[" * 5000 + b"]" * 5000, [JSON], 400, "invalid JSON: depth limit exceeded"),
        (b'{"inputs": ' + b"9" * 5000 + b"}", [JSON], 400, "invalid JSON: number is infinity"),
        (b'{"inputs": [NaN]}', [JSON], 400, "invalid JSON: unexpected character"),
        (b'{"inputs": "\xff"}', [JSON], 400, "invalid JSON: str is not valid UTF-8"),
        (b"", [JSON], 400, "invalid JSON: Input is a zero-length, empty document"),
        (b'{"inputs": [[1, 2], [3, 4]]}', [JSON], 400, "must have the shape (n, 2, 2, 1) with n >= 1, got (2, 2)"),
        (b'{"inputs": []}', [JSON], 400, "got (0,)"),
        (b'{"inputs": [[[[1]], [[2]]], [[[3]]]]}', [JSON], 400, "'inputs' must be numbers in nested lists of shape"),
        (b'{"inputs": [[[["a"]]]]}', [JSON], 400, "could not convert string to float: 'a'"),
    ],
)
def test_malformed_requests_get_a_4xx_that_names_the_problem(body, headers, status, message):
    inner = Inner()
    got, answer, _ = call(Invocations(inner, Doubling()), [body], headers)
    assert got == status and inner.bodies == []
    error = json.loads(answer)
    assert error["error_code"] == ("UNSUPPORTED_MEDIA_TYPE" if status == 415 else "BAD_REQUEST")
    assert message in error["message"]


def test_the_tensor_form_is_answered_here_as_mlflow_writes_it():
    images = np.arange(8, dtype=np.float32).reshape(2, 2, 2, 1) / 10
    inner = Inner()
    headers = [("Content-Type", "application/json; charset=UTF-8")]
    body = json.dumps({"inputs": images.tolist()}).encode()
    status, answer, _ = call(Invocations(inner, Doubling()), [body], headers)
    expected = Doubling().predict(images)
    assert status == 200 and inner.bodies == []
    assert answer == json.dumps({"predictions": expected.tolist()}).encode()  # MLflow's predictions_to_json bytes


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"instances": [[[[1]]]]}', "application/json"),
        (b'{"inputs": [[[[1]]]], "params": {"k": 1}}', "application/json"),
        (b"a,b\n1,2\n", "text/csv"),
        (b'{"inputs": [[[[1]]]]}', "application/json; charset=latin-1"),
        (b'{"inputs": [[[[1]]]]}', "application/xml"),
    ],
)
def test_every_other_request_reaches_mlflows_app_unchanged(body, content_type):
    inner = Inner()
    status, answer, _ = call(Invocations(inner, Doubling()), [body[:5], body[5:]], [("Content-Type", content_type)])
    assert (status, answer, inner.bodies) == (299, b"inner", [body])


def test_other_paths_pass_through():
    inner = Inner()
    assert call(Invocations(inner, Doubling()), [b""], path="/ping", method="GET")[0] == 299


def test_media_type_reads_the_mime_type_and_its_parameters():
    scope = {"headers": [(b"content-type", b'Application/JSON; Charset="utf-8" ; x=1')]}
    assert media_type(scope) == ("application/json", {"charset": "utf-8", "x": "1"})
    assert media_type({"headers": []}) == (None, {})


def test_one_access_line_per_request_with_status_sizes_and_latency(caplog):
    with caplog.at_level(logging.INFO, logger="mnist_pipeline.serving.access"):
        call(AccessLog(Inner()), [b"x" * 1234], [("Content-Length", "1234")])
        call(AccessLog(BodyLimit(Inner(), 10)), [b"x" * 20], [("Content-Length", "20"), ("Expect", "100-continue")])
    lines = [r.getMessage() for r in caplog.records if r.name == "mnist_pipeline.serving.access"]
    assert len(lines) == 2
    assert lines[0].startswith('127.0.0.1:5555 "POST /invocations HTTP/1.1" 299 in=1,234B out=5B ')
    assert lines[1].startswith('127.0.0.1:5555 "POST /invocations HTTP/1.1" 413 in=20B out=')  # refused unread
    assert all(line.endswith("ms") for line in lines)
