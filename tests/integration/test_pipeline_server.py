"""`mnist-pipeline serve` on the registered champion, driven over real sockets: MLflow's scoring protocol with the
same answers as `mlflow models serve`, a 4xx for every malformed request, the body limit, pictures, the access
log, concurrent requests and a graceful SIGTERM. Speed lives in benchmarks/serve_load.py."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.helpers import model_server, pipeline_server, run_cli
from tests.integration.test_predict_and_serve import as_photo

pytestmark = pytest.mark.slow  # each test starts a server (TensorFlow, ~10 s)

CHAMPION = "models:/mnist-classifier@champion"
ACCESS = re.compile(
    r'127\.0\.0\.1:\d+ "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.1" (?P<status>\d{3}|-) '
    r"in=(?P<size_in>[\d,]+)B out=(?P<size_out>[\d,]+)B (?P<ms>\d+\.\d)ms$"
)


def request(
    port: int,
    body: bytes | None,
    content_type: str | None = "application/json",
    path: str = "/invocations",
    method: str = "POST",
    headers: dict | None = None,
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        sent = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
        chunked = sent.get("Transfer-Encoding") == "chunked"
        connection.request(method, path, body=body, headers=sent, encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def as_json(x: np.ndarray, key: str = "inputs") -> bytes:
    return json.dumps({key: x.tolist()}).encode()


@pytest.fixture(scope="module")
def test_images(champion) -> tuple[np.ndarray, np.ndarray]:
    test = np.load(champion.test_npz)
    return test["x"], test["y"]


def test_the_same_requests_get_the_same_answers_as_mlflow_models_serve(champion, test_images, tmp_path):
    """Valid requests in every form MLflow's protocol has for a tensor model, the health routes, and requests
    both refuse: the same status, and for a 200 the same JSON to the last digit. MLflow's own client works."""
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    x, _ = test_images
    valid = {
        "inputs, 1 image": (as_json(x[:1]), "application/json"),
        "inputs, 32 images": (as_json(x[:32]), "application/json"),
        "inputs, charset": (as_json(x[5:7]), "application/json; charset=utf-8"),
        "instances": (as_json(x[3:5], "instances"), "application/json"),
    }
    refused = {
        "wrong shape": (as_json(x[:1, ..., 0]), "application/json"),
        "invalid JSON": (b'{"inputs": [[[0.5]]', "application/json"),
        "dataframe_split": (b'{"dataframe_split": {"columns": ["a"], "data": [[1]]}}', "application/json"),
        "CSV": (b"a,b\n1,2\n", "text/csv"),
        "unknown type": (as_json(x[:1]), "application/xml"),
        "latin-1": (as_json(x[:1]), "application/json; charset=latin-1"),
    }
    answers = {}
    with model_server(CHAMPION, champion.tracking_uri, tmp_path) as mlflow_port:
        answers["mlflow"] = {name: request(mlflow_port, *case) for name, case in {**valid, **refused}.items()}
        answers["mlflow"].update({path: request(mlflow_port, None, None, path, "GET") for path in ("/ping", "/health")})
        mlflow_version = request(mlflow_port, None, None, "/version", "GET")
    with pipeline_server(CHAMPION, champion.tracking_uri, tmp_path) as server:
        answers["ours"] = {name: request(server.port, *case) for name, case in {**valid, **refused}.items()}
        answers["ours"].update({path: request(server.port, None, None, path, "GET") for path in ("/ping", "/health")})
        assert request(server.port, None, None, "/version", "GET") == mlflow_version
        client = ScoringServerClient("127.0.0.1", server.port)
        client.ping()  # raises on anything but 200
        assert client.get_version() == mlflow_version[1].decode()
        predicted = client.invoke(x[:4]).get_predictions()
    for name in valid:
        (status, ours), (mlflow_status, theirs) = answers["ours"][name], answers["mlflow"][name]
        assert status == mlflow_status == 200, (name, ours[:200], theirs[:200])
        assert json.loads(ours) == json.loads(theirs), name
    assert json.loads(answers["ours"]["inputs, 1 image"][1]).keys() == {"predictions"}
    for name in refused:
        ours, theirs = answers["ours"][name], answers["mlflow"][name]
        assert ours[0] == theirs[0] and 400 <= ours[0] < 500, (name, ours, theirs)
    for path in ("/ping", "/health"):
        assert answers["ours"][path][0] == answers["mlflow"][path][0] == 200
    first_four = json.loads(answers["ours"]["inputs, 32 images"][1])["predictions"][:4]
    np.testing.assert_array_equal(np.asarray(predicted), np.asarray(first_four))


MALFORMED = {  # name: (body, content type, status, what the message says)
    "no Content-Type": (b'{"inputs": [[0.5]]}', None, 415, "no Content-Type header"),
    "JSON nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "depth limit exceeded"),
    "a 5,000-digit integer": (b'{"inputs": ' + b"7" * 5000 + b"}", "application/json", 400, "infinity"),
    "5,000 digits under instances": (b'{"instances": [' + b"7" * 5000 + b"]}", "application/json", 400, "infinity"),
    "not UTF-8": (b'{"inputs": "\xff\xfe"}', "application/json", 400, "not valid UTF-8"),
    "invalid JSON": (b'{"inputs": [[[0.5]]', "application/json", 400, "invalid JSON: unexpected end of data"),
    "NaN": (b'{"inputs": [[[[NaN]]]]}', "application/json", 400, "invalid JSON: unexpected character"),
    "empty body": (b"", "application/json", 400, "invalid JSON: Input is a zero-length, empty document"),
    "wrong shape": (json.dumps({"inputs": [[0.5] * 784]}).encode(), "application/json", 400, "(n, 28, 28, 1)"),
    "ragged": (
        json.dumps({"inputs": [[[[0.5]] * 28] * 28, [[[0.5]] * 28] * 27]}).encode(),
        "application/json",
        400,
        "(n, 28, 28, 1)",
    ),
    "strings": (json.dumps({"inputs": [[[["a"]] * 28] * 28]}).encode(), "application/json", 400, "numbers"),
    "no images": (b'{"inputs": []}', "application/json", 400, "n >= 1"),
    "picture without a type": (b"\x89PNG", None, 415, "no Content-Type header"),
}


def test_every_malformed_request_gets_a_4xx_naming_the_problem(champion, tmp_path):
    """The three requests `mlflow models serve` answers with 500 among them; the server keeps serving."""
    x = np.load(champion.test_npz)["x"][:1]
    with pipeline_server(CHAMPION, champion.tracking_uri, tmp_path) as server:
        for name, (body, content_type, status, says) in MALFORMED.items():
            path = "/predict" if name.startswith("picture") else "/invocations"
            got, answer = request(server.port, body, content_type, path)
            assert got == status, (name, got, answer[:300])
            error = json.loads(answer)
            assert error["error_code"] in {"BAD_REQUEST", "UNSUPPORTED_MEDIA_TYPE"}, (name, error)
            assert says in error["message"], (name, error["message"])
        status, answer = request(server.port, as_json(x))
        assert status == 200 and len(json.loads(answer)["predictions"][0]) == 10
        assert server.process.poll() is None
        log = server.log.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log


def test_bodies_over_the_limit_get_413_before_they_are_parsed(champion, tmp_path):
    """--max-body-mib 0.25: a valid batch over it is refused whether its size is declared, chunked, or announced
    with Expect: 100-continue (answered before the body is sent); a batch under it is answered."""
    x = np.load(champion.test_npz)["x"]
    small, big = as_json(x[:8]), as_json(x[:64])  # ~60 KB and ~490 KB
    limit = int(0.25 * 2**20)
    assert len(small) < limit < len(big)
    with pipeline_server(CHAMPION, champion.tracking_uri, tmp_path, "--max-body-mib", "0.25") as server:
        status, answer = request(server.port, big)
        assert status == 413, answer[:200]
        error = json.loads(answer)
        assert error["error_code"] == "REQUEST_TOO_LARGE"
        assert error["message"] == (
            f"request body of {len(big):,} bytes is over the limit of 0.25 MiB ({limit:,} bytes; "
            "mnist-pipeline serve --max-body-mib): send fewer images per request"
        )
        status, answer = request(
            server.port,
            iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
            headers={"Transfer-Encoding": "chunked"},
        )
        assert status == 413 and "request body of at least" in json.loads(answer)["message"], answer[:200]
        assert expect_continue(server.port, len(big)).startswith("HTTP/1.1 413 ")
        chunked = {"Transfer-Encoding": "chunked"}
        status, answer = request(server.port, iter([small[:1000], small[1000:]]), headers=chunked)
        assert status == 200 and len(json.loads(answer)["predictions"]) == 8
        status, answer = request(server.port, small)
        assert status == 200 and len(json.loads(answer)["predictions"]) == 8
    lines = [ACCESS.search(line) for line in server.log.read_text().splitlines()]  # complete once stopped
    statuses = [(m["path"], m["status"]) for m in lines if m and m["path"] == "/invocations"]
    assert statuses == [("/invocations", s) for s in ("413", "413", "413", "200", "200")]


def expect_continue(port: int, size: int) -> str:
    """Headers announcing `size` bytes with Expect: 100-continue, and no body: the server's first line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        return sock.recv(4096).decode("latin-1")


def test_a_picture_gets_the_class_names_and_probabilities_predict_prints(champion, test_images, tmp_path):
    """PNG and JPEG photos of test digits through POST /predict: the answer matches `mnist-pipeline predict` on
    the same files (the same preprocessing and model)."""
    x, _ = test_images
    files = []
    for (index, label), fmt in zip(champion.picks, ("PNG", "JPEG", "PNG")):
        path = tmp_path / f"digit-{label}.{fmt.lower()}"
        as_photo((x[index, ..., 0] * 255).round().astype(np.uint8)).save(path, fmt)
        files.append((path, label))
    printed = run_cli(
        "predict", *(str(p) for p, _ in files), "--top", "1", cwd=tmp_path, tracking_uri=champion.tracking_uri
    )
    assert printed.returncode == 0, printed.stderr
    with pipeline_server(CHAMPION, champion.tracking_uri, tmp_path) as server:
        for (path, label), line in zip(files, printed.stdout.splitlines()):
            kind = "image/png" if path.suffix == ".png" else "image/jpeg"
            status, answer = request(server.port, path.read_bytes(), kind, "/predict")
            assert status == 200, answer
            body = json.loads(answer)
            assert body["classes"] == [str(d) for d in range(10)]
            assert body["class"] == str(label) and body["probability"] == max(body["probabilities"])
            assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-4)
            assert line == f"{path}: {label} (p={body['probability']:.4f})  top-1: {label} {body['probability']:.4f}"
        status, answer = request(server.port, b"not a picture", "image/png", "/predict")
        assert status == 400 and json.loads(answer)["message"].startswith("the picture: not a picture")
        status, answer = request(server.port, files[0][0].read_bytes(), "text/plain", "/predict")
        assert status == 415 and "Content-Type text/plain" in json.loads(answer)["message"]
        status, answer = request(server.port, None, None, "/metadata", "GET")
        assert json.loads(answer)["classes"] == [str(d) for d in range(10)]


def test_concurrent_requests_get_the_answers_they_get_one_at_a_time(champion, test_images, tmp_path):
    """64 requests of 1 to 40 images from 8 threads at once, against two workers: every answer equals the one the
    same request got alone; one access-log line per request."""
    x, _ = test_images
    rng = np.random.default_rng(3)
    bodies = [as_json(x[rng.choice(len(x), size=int(rng.integers(1, 41)))]) for _ in range(64)]
    with pipeline_server(CHAMPION, champion.tracking_uri, tmp_path, "--workers", "2") as server:
        alone = [request(server.port, body) for body in bodies]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda body: request(server.port, body), bodies))
    log = server.log.read_text()  # once stopped: a line is written just after its response is sent
    assert all(status == 200 for status, _ in alone)
    assert [json.loads(a) for _, a in together] == [json.loads(a) for _, a in alone]
    lines = [m for m in map(ACCESS.search, log.splitlines()) if m and m["path"] == "/invocations"]
    assert len(lines) == 128 and {m["status"] for m in lines} == {"200"}
    assert sorted(int(m["size_in"].replace(",", "")) for m in lines) == sorted(len(b) for b in bodies * 2)


def test_sigterm_answers_the_request_in_flight_then_stops(champion, tmp_path):
    """Half a request's body is sent, then SIGTERM: the server stops listening but waits; the rest of the body is
    sent and answered 200; then the server exits 0, its downloaded copy of the model removed."""
    body = as_json(np.load(champion.test_npz)["x"][:4])
    with pipeline_server(CHAMPION, champion.tracking_uri, tmp_path, env={"TMPDIR": str(tmp_path)}) as server:
        assert len(list(tmp_path.glob("mnist-pipeline-serve-*"))) == 1
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        try:
            sock.sendall(
                f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[: len(body) // 2]
            )
            time.sleep(1)  # the request has reached the app, which waits for the rest of its body
            os.kill(server.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while "Waiting for connections to close" not in server.log.read_text():
                assert time.monotonic() < deadline, server.log.read_text()
                time.sleep(0.2)
            assert server.process.poll() is None  # still there for the request in flight
            with pytest.raises(OSError):  # but no longer listening
                socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
            sock.sendall(body[len(body) // 2 :])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        finally:
            sock.close()
        assert server.process.wait(timeout=60) == 0
        log = server.log.read_text()
    assert not list(tmp_path.glob("mnist-pipeline-serve-*"))
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert len(json.loads(payload)["predictions"]) == 4
    assert re.search(r'"POST /invocations HTTP/1\.1" 200 in=[\d,]+B', log)


def test_a_model_that_cannot_be_loaded_is_one_error_line(champion, tmp_path):
    """...and leaves no downloaded model behind."""
    result = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.cli", "serve", "--model", "models:/no-such-model/1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": champion.tracking_uri, "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot load model models:/no-such-model/1")
    assert not list(tmp_path.glob("mnist-pipeline-serve-*"))
