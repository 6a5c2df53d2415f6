"""Serving under load: a mix of valid and bad requests with guarantees, and valid-only throughput per setup.

    python benchmarks/serve_load.py                        # trains a 1-epoch model, 2,000 requests, 8 clients
    python benchmarks/serve_load.py --max-body-mib 4       # the same behind nginx with client_max_body_size 4m
    python benchmarks/serve_load.py --threaded             # UVICORN_LOOP=auto: MLflow's threads, explicitly
    python benchmarks/serve_load.py --server pipeline      # the mix against mnist-pipeline serve, no proxy
    python benchmarks/serve_load.py --throughput            # valid-only requests/s of every setup, one run
    MLFLOW_TRACKING_URI=sqlite:///$PWD/mlruns/mlflow.db \
        python benchmarks/serve_load.py --model-uri models:/mnist-classifier@champion

The model: --model-uri from MLFLOW_TRACKING_URI's store, else `python -m mnist_pipeline.train experiment=fast
trainer.epochs=1` into a throwaway store. Images: data/prepared (else prepared from $MNIST_MIRROR into a
temporary folder).

The mix: every request is a POST /invocations of one of KINDS, drawn with --seed; each client keeps one
connection and sends its next request when the last is answered. Guarantees checked (exit status 1 and
`passed: false` otherwise): every valid request gets 200 with (n, 10) probabilities summing to 1, every other
request a 4xx (413 where a limit must refuse a valid batch), no 5xx, no connection error, all requests sent
within --time-limit, and the server process still alive at the end, answering /ping and a valid request.
The server: `mlflow models serve --env-manager local` on a free 127.0.0.1 port (tests/helpers.py::model_server,
stopped by its process group whatever happens) as docs/serving.md runs it; or with --server pipeline
`mnist-pipeline serve --max-body-mib N` (tests/helpers.py::pipeline_server; N: --max-body-mib, default 4).

Request size: `mlflow models serve` (MLflow 3.17.2: uvicorn running MLflow's FastAPI app, built without
`max_body_size`) enforces NO body size limit: a valid 51 MiB batch (6,890 images) was answered 200 after 26 s
with the server's RSS at 3.5 GiB; a 203 MiB one got 504 from the request timeout (`-t`, default 60 s) while
its prediction ran on for minutes, the RSS up to 11.6 GiB (benchmarks/results.md). So without a limit the
"oversized" requests are --oversized-mib bodies the server must refuse on content (the batch cut short:
invalid JSON; or the images without their channel axis), which it reads and parses in full first; MLflow
echoes invalid JSON back in its 400, as big as the request. With --max-body-mib, nginx in front
(`client_max_body_size`: a reverse proxy is the way to set a limit for MLflow's server) or mnist-pipeline
serve's own limit gets every request, and "oversized" is a *valid* batch over the limit, which must get 413.
KNOWN_500 are malformed requests MLflow 3.17.2 answers with 500: against `mlflow models serve` they are sent
once each after the load (recorded, outside the guarantee; the server must survive them); against
mnist-pipeline serve they are a kind of the mix (PIPELINE_KINDS) whose guarantee is a 4xx.

--throughput: one model logged twice into a throwaway store with the same weights, compiled (ml/compiled.py,
as train logs it) and with MLflow's own Keras loader (model.predict: today's baseline, which must be served
one prediction at a time); SETUPS: (a) the baseline, (b) `mlflow models serve -w 1/-w 2` of the compiled
model (no UVICORN_LOOP), (c) `mnist-pipeline serve --workers 1/2`. Valid requests only, 1 image and 32 images
per request (LOADS) from --clients connections, the bodies pre-built JSON as clients send it (the server's
parsing is part of the figure). The load generator is wrk (C, kept-alive connections, a Lua script rotating
over the bodies and counting non-2xx): a Python client on 2 cores takes CPU the server needs; without wrk
the Python client is used, and said so. Every distinct body is first checked once per server from Python
(200, (n, 10) probabilities summing to 1, digits mostly right), so a fast error page cannot pass as
throughput; then --rounds rounds over the setups, each a --warmup s warm-up and --duration s timed.
Reported: requests/s, images/s, p50, p99, non-2xx, ratios to the baseline within the same run, and where the
CPU went (the server's process group, the load generator, everything else: other people's jobs share the
machine), with the load average before and after and an in-process profile of one request's own work.

Writes benchmarks/serve_load.json (one entry per mix setup, and "throughput") and a section of
benchmarks/results.md each (report_md.publish: "serve load", "serve load nginx", "serve load threaded",
"serve load pipeline", "serve throughput"), with the command that reproduces it.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS_JSON = ROOT / "benchmarks" / "serve_load.json"  # one entry per setup of the mix, and "throughput"
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

import report_md  # noqa: E402 - benchmarks/ is a folder of scripts, not a package
from tests.helpers import model_server, pipeline_server  # noqa: E402 - the project's way to run servers

JSON = "application/json"
KINDS = {  # kind: share of the requests
    "valid, 1 image": 0.40,
    "valid, 32 images": 0.10,
    "malformed JSON": 0.10,
    "wrong shape": 0.14,
    "wrong type": 0.08,
    "empty body": 0.05,
    "wrong content type": 0.08,
    "oversized": 0.05,
}


@dataclass
class Body:
    data: bytes
    content_type: str | None = JSON
    labels: np.ndarray | None = None  # set for valid requests: the digits they hold
    status: int | None = None  # the exact status a refused request must get (else any 4xx)


def as_json(inputs) -> bytes:
    return json.dumps({"inputs": np.asarray(inputs).tolist()}).encode()


def bodies(
    x: np.ndarray, y: np.ndarray, oversized_mib: float, proxied: bool, rng, known_500: bool = False
) -> dict[str, list[Body]]:
    """The request bodies of each kind, built once (the load then only sends them). `proxied`: a body limit is
    enforced (nginx, or mnist-pipeline serve's own), so "oversized" is a valid batch that must get 413.
    `known_500`: KNOWN_500's requests are a kind of the mix too (PIPELINE_KINDS)."""
    pick = rng.permutation(len(x))
    one = as_json(x[:1])
    big = pick[np.arange(int(oversized_mib * 2**20 / len(one)) + 1) % len(x)]  # ~oversized_mib MiB of images
    big_valid = as_json(x[big])
    kinds = {
        "valid, 1 image": [Body(as_json(x[[i]]), labels=y[[i]]) for i in pick[:200]],
        "valid, 32 images": [Body(as_json(x[pick[i : i + 32]]), labels=y[pick[i : i + 32]]) for i in range(0, 640, 32)],
        "malformed JSON": [
            Body(one[:-3]),
            Body(b"not json"),
            Body(b'{"inputs": [[[0.5]]'),
            Body(b"\xff\xfe{}"),
            Body(one + b"}"),
        ],
        "wrong shape": [
            Body(as_json(x[:1, ..., 0])),
            Body(as_json(x[:1].reshape(1, 784))),
            Body(as_json(x[:1, :27])),
            Body(as_json(np.repeat(x[:1], 3, axis=-1))),
            Body(b'{"inputs": []}'),
            Body(json.dumps({"inputs": [x[0].tolist(), x[1, :27].tolist()]}).encode()),
        ],  # ragged
        "wrong type": [
            Body(as_json(np.full((1, 28, 28, 1), "a"))),
            Body(b'{"inputs": null}'),
            Body(b'{"inputs": {"a": 1}}'),
            Body(b'{"pixels": [0.5]}'),
            Body(b"[0.5]"),
        ],
        "empty body": [Body(b"")],
        "wrong content type": [
            Body(one, "text/plain"),
            Body(one, "application/x-www-form-urlencoded"),
            Body(one, "application/json; charset=latin-1"),
        ],
        # Over the limit (nginx's, or mnist-pipeline serve's own): a valid batch it must stop with 413. Without
        # one: big bodies refused on content.
        "oversized": [Body(big_valid, status=413)]
        if proxied
        else [Body(big_valid[:-3]), Body(as_json(x[big, ..., 0]))],
    }
    if known_500:
        kinds[KNOWN_500_KIND] = list(KNOWN_500.values())
    return kinds


KNOWN_500 = {  # malformed requests MLflow 3.17.2's scoring server answers with 500 (an uncaught exception)
    "no Content-Type header": Body(b'{"inputs": [[[[0.5]]]]}', None),  # content_type.split on None
    "JSON nested 100,000 deep": Body(b"[" * 100_000),  # RecursionError from json.loads
    "integer of 5,000 digits": Body(b'{"inputs": [[[[' + b"9" * 5000 + b"]]]]}"),  # ValueError from int()
}
KNOWN_500_KIND = "MLflow's 500s"
PIPELINE_MAX_BODY_MIB = 4.0  # mnist-pipeline serve's default --max-body-mib (cli/serve.py)
# mnist-pipeline serve must answer KNOWN_500 with a 4xx: there they are a kind of the mix, as often as empty bodies.
PIPELINE_KINDS = {**KINDS, KNOWN_500_KIND: 0.05}


def post(conn: http.client.HTTPConnection, body: Body) -> tuple[int | None, bytes, str | None]:
    headers = {"Content-Type": body.content_type} if body.content_type else {}
    try:
        conn.request("POST", "/invocations", body=body.data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), None
    except (OSError, http.client.HTTPException) as exc:
        conn.close()  # the next request opens a new connection
        return None, b"", repr(exc)


def check(body: Body, status: int | None, data: bytes) -> tuple[str | None, int]:
    """What breaks the guarantee in this answer (None if nothing), and how many digits it got right."""
    if status is None:
        return "connection error", 0
    if body.labels is None:
        if body.status is not None:
            return (None if status == body.status else f"status {status}, expected {body.status}"), 0
        return (None if 400 <= status < 500 else f"status {status}, expected 4xx"), 0
    if status != 200:
        return f"status {status}, expected 200", 0
    try:
        probs = np.asarray(json.loads(data)["predictions"], dtype=np.float64)
    except (ValueError, KeyError, TypeError):
        return f"unreadable predictions: {data[:80]!r}", 0
    if probs.shape != (len(body.labels), 10):
        return f"predictions of shape {probs.shape}, expected {(len(body.labels), 10)}", 0
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        return "probabilities do not sum to 1", 0
    return None, int((probs.argmax(axis=1) == body.labels).sum())


def run_load(
    port: int,
    payloads: dict[str, list[Body]],
    requests: int,
    clients: int,
    seed: int,
    time_limit: float,
    timeout: float = 120,
    shares: dict[str, float] = KINDS,
) -> dict:
    """Send `requests` requests from `clients` threads, of the kinds in `shares` (KINDS or PIPELINE_KINDS); per
    kind: statuses, latencies, broken guarantees."""
    rng = np.random.default_rng(seed)
    names = list(shares)
    kinds = rng.choice(len(names), size=requests, p=np.array([shares[n] for n in names]) / sum(shares.values()))
    schedule = [(names[k], payloads[names[k]][rng.integers(len(payloads[names[k]]))]) for k in kinds]
    results: list[dict | None] = [None] * requests
    counter, lock = itertools.count(), threading.Lock()
    deadline = time.monotonic() + time_limit

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)  # kept alive between requests
        while time.monotonic() < deadline:
            with lock:
                i = next(counter)
            if i >= requests:
                break
            kind, body = schedule[i]
            started = time.perf_counter()
            status, data, error = post(conn, body)
            seconds = time.perf_counter() - started
            failure, correct = check(body, status, data)
            results[i] = {
                "kind": kind,
                "status": status,
                "ms": seconds * 1000,
                "failure": error or failure,
                "images": 0 if body.labels is None else len(body.labels),
                "correct": correct,
            }
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(time_limit + timeout + 10)
    wall = time.perf_counter() - started

    done = [r for r in results if r is not None]
    per_kind = {}
    for name in names:
        rows = [r for r in done if r["kind"] == name]
        ms = [r["ms"] for r in rows]
        statuses = [str(r["status"]) for r in rows]
        per_kind[name] = {
            "share": shares[name] / sum(shares.values()),
            "expected": "200"
            if name.startswith("valid")
            else ", ".join(sorted({str(b.status) if b.status else "4xx" for b in payloads[name]})),
            "requests": len(rows),
            "body_bytes": [min(len(b.data) for b in payloads[name]), max(len(b.data) for b in payloads[name])],
            "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
            "p50_ms": float(np.percentile(ms, 50)) if ms else None,
            "p99_ms": float(np.percentile(ms, 99)) if ms else None,
            "failed": sum(bool(r["failure"]) for r in rows),
            "failures": [r["failure"] for r in rows if r["failure"]][:5],
        }
        if name.startswith("valid"):
            per_kind[name]["digits_right"] = [sum(r["correct"] for r in rows), sum(r["images"] for r in rows)]
    statuses = [r["status"] for r in done]
    ms = [r["ms"] for r in done]
    return {
        "requests": requests,
        "sent": len(done),
        "clients": clients,
        "seed": seed,
        "seconds": wall,
        "requests_per_s": len(done) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "status_counts": {str(s): statuses.count(s) for s in sorted(set(statuses), key=str)},
        "5xx": sum(s is not None and s >= 500 for s in statuses),
        "connection_errors": statuses.count(None),
        "failed": sum(bool(r["failure"]) for r in done),
        "kinds": per_kind,
    }


def server_pid(port: int) -> int | None:
    """The process listening on `port` (uvicorn, under `mlflow models serve`)."""
    import psutil

    try:
        return next(
            (
                c.pid
                for c in psutil.net_connections("tcp")
                if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
            ),
            None,
        )
    except psutil.AccessDenied:
        return None


def peak_rss_mib(pid: int | None) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM")), None)


def still_serving(port: int, valid: Body) -> dict:
    """/ping and one valid request, on a fresh connection."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=30) as response:
            ping = response.status
    except OSError as exc:  # HTTPError (a status) or no answer at all
        ping = getattr(exc, "code", None)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    status, data, error = post(conn, valid)
    conn.close()
    return {"ping": ping, "valid_request": status, "problem": error or check(valid, status, data)[0]}


def probe_known_500(port: int) -> dict[str, int | None]:
    # A connection each: after a 500, uvicorn resets a kept-alive connection on its next request.
    statuses = {}
    for name, body in KNOWN_500.items():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        statuses[name] = post(conn, body)[0]
        conn.close()
    return statuses


@contextmanager
def nginx(upstream: int, max_body_mib: float, scratch: Path):
    """nginx on a free 127.0.0.1 port in front of `upstream`, refusing bodies over max_body_mib with 413;
    yields its port, stopped by its PID whatever happens."""
    from mnist_pipeline.team.postgres import free_port

    exe = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if exe is None:
        sys.exit("nginx not found (Debian: apt-get install nginx-light)")
    port, prefix = free_port(), scratch / "nginx"
    prefix.mkdir()
    # Streamed both ways, not buffered to temporary files: nginx's workers run as nobody when we are root and
    # could not write under the 0700 scratch folder.
    (prefix / "nginx.conf").write_text(f"""pid nginx.pid;
error_log stderr warn;
events {{}}
http {{
  access_log off;
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size {int(max_body_mib * 2**20)};
    location / {{
      proxy_pass http://127.0.0.1:{upstream};
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
""")
    log = (prefix / "nginx.log").open("w")
    proxy = subprocess.Popen(
        [exe, "-p", str(prefix), "-e", "stderr", "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                assert proxy.poll() is None, (prefix / "nginx.log").read_text()
                time.sleep(0.2)
        else:
            raise AssertionError(f"nginx did not answer on port {port}:\n{(prefix / 'nginx.log').read_text()}")
        yield port
    finally:
        proxy.terminate()
        try:
            proxy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
        log.close()


def prepared_data(data_dir: Path, scratch: Path) -> Path:
    """data_dir if it holds prepared data, else 10,000 images prepared from $MNIST_MIRROR into scratch."""
    if all((data_dir / f"{split}.npz").is_file() for split in ("train", "val", "test")):
        return data_dir
    if not os.environ.get("MNIST_MIRROR"):
        sys.exit(f"{data_dir} has no prepared data and MNIST_MIRROR is not set: run `python3 dev.py repro prepare`")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_pipeline.prepare",
            f"data.raw_dir={scratch / 'raw'}",
            "data.limit=10000",
            f"data.prepared_dir={scratch / 'prepared'}",
            f"hydra.run.dir={scratch / 'hydra-prepare'}",
            "data.sources=[]",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        sys.exit(f"prepare failed:\n{result.stderr[-3000:]}")
    return scratch / "prepared"


def train_model(prepared: Path, scratch: Path, epochs: int = 1) -> tuple[str, str]:
    """The fast preset's shallow CNN (1 epoch on data/prepared: ~98% accurate) logged into a throwaway store:
    (model URI, tracking URI)."""
    store = f"sqlite:///{scratch / 'mlruns' / 'mlflow.db'}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_pipeline.train",
            "experiment=fast",
            f"trainer.epochs={epochs}",
            f"data_dir={prepared}",
            f"output_dir={scratch / 'model'}",
            f"hydra.run.dir={scratch / 'hydra-train'}",
        ],
        cwd=ROOT,
        env={**os.environ, "MLFLOW_TRACKING_URI": store, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if result.returncode != 0:
        sys.exit(f"training failed:\n{result.stderr[-3000:]}")
    return json.loads((scratch / "model" / "run.json").read_text())["model_uri"], store


def benchmark(
    port: int,
    pid: int | None,
    payloads: dict[str, list[Body]],
    requests: int,
    clients: int,
    seed: int,
    time_limit: float,
    shares: dict[str, float] = KINDS,
) -> dict:
    """The load, then the known 500s once each, then whether the server (process `pid`) still serves; verdict in
    `passed`. With KNOWN_500_KIND in `shares` (mnist-pipeline serve) the known 500s must get a 4xx, in the mix
    and after it."""
    load = run_load(port, payloads, requests, clients, seed, time_limit, shares=shares)
    load["server_peak_rss_mib"] = peak_rss_mib(pid)
    load["known_500"] = probe_known_500(port)
    load["known_500_guaranteed_4xx"] = KNOWN_500_KIND in shares
    load["after"] = {
        **still_serving(port, payloads["valid, 1 image"][0]),
        "process_alive": pid is not None and Path(f"/proc/{pid}").exists(),
    }
    load["passed"] = (
        load["sent"] == requests
        and load["failed"] == 0
        and load["5xx"] == 0
        and load["connection_errors"] == 0
        and load["after"]["ping"] == 200
        and load["after"]["problem"] is None
        and load["after"]["process_alive"]
        and not (
            load["known_500_guaranteed_4xx"]
            and not all(status is not None and 400 <= status < 500 for status in load["known_500"].values())
        )
    )
    return load


def markdown(setup: str, load: dict, command: str) -> list[str]:
    def ms(value):
        return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"

    lines = [
        f"`{command}`: {load['sent']:,} of {load['requests']:,} requests from {load['clients']} clients "
        f"(seed {load['seed']}) to {setup}, in {load['seconds']:.1f} s: **{load['requests_per_s']:.1f} "
        f"requests/s**, latency p50 {ms(load['p50_ms'])} ms, p99 {ms(load['p99_ms'])} ms. Statuses: "
        + ", ".join(f"{s}: {n:,}" for s, n in load["status_counts"].items())
        + f"; 5xx: {load['5xx']}, connection errors: {load['connection_errors']}, broken guarantees: "
        f"{load['failed']}. Server peak RSS {ms(load['server_peak_rss_mib'])} MiB.",
        "",
        "| kind | share | requests | body bytes | statuses | p50 ms | p99 ms | guarantee |",
        "|---|---:|---:|---|---|---:|---:|---|",
    ]
    for name, k in load["kinds"].items():
        low, high = k["body_bytes"]
        size = f"{low:,}" if low == high else f"{low:,} to {high:,}"
        want = (
            f"200, (n, 10) summing to 1 ({k['digits_right'][0]:,}/{k['digits_right'][1]:,} digits right)"
            if name.startswith("valid")
            else k.get("expected", "4xx")
        )
        verdict = "held" if k["failed"] == 0 else f"**broken {k['failed']}x**: {k['failures'][0]}"
        lines.append(
            f"| {name} | {k.get('share', KINDS.get(name, 0)):.0%} | {k['requests']:,} | {size} | "
            f"{', '.join(f'{s}: {n:,}' for s, n in k['statuses'].items())} | {ms(k['p50_ms'])} | "
            f"{ms(k['p99_ms'])} | {want}: {verdict} |"
        )
    after = load["after"]
    lines += [
        "",
        "After the load: "
        + ", ".join(f"{name}: {status}" for name, status in load["known_500"].items())
        + (
            " (MLflow's 500s, sent once each on a new connection: a 4xx is guaranteed)"
            if load.get("known_500_guaranteed_4xx")
            else " (known MLflow 500s, sent once each)"
        )
        + f"; then /ping {after['ping']}, a valid request "
        f"{after['valid_request']}, server process alive: {after['process_alive']}. "
        f"**Guarantees {'held' if load['passed'] else 'BROKEN'}.**",
    ]
    return lines


# ---- valid-only throughput of every setup (--throughput) -----------------------------------------------------

LOADS = {"1 image": 1, "32 images": 32}  # load: images per request
DISTINCT = {"1 image": 48, "32 images": 24}  # distinct bodies each load rotates over
MOSTLY_RIGHT = 0.5  # share of digits a checked model must get right (chance: 10%)
TARGETS = {  # issue 24, through mnist-pipeline serve with 8 clients
    "1 image": "requests/s >= 500 and p99 <= 30 ms",
    "32 images": "images/s >= 3,000",
}


@dataclass(frozen=True)
class Setup:
    id: str  # --setups
    name: str
    server: str  # "mlflow": `mlflow models serve`; "pipeline": `mnist-pipeline serve`
    model: str  # "keras": logged with MLflow's Keras loader (model.predict); "compiled": as train logs it
    workers: int


SETUPS = (  # the first is the baseline every ratio is against
    Setup("a", "a. baseline: `mlflow models serve`, Keras loader, one at a time", "mlflow", "keras", 1),
    Setup("b1", "b1. `mlflow models serve -w 1`, compiled", "mlflow", "compiled", 1),
    Setup("b2", "b2. `mlflow models serve -w 2`, compiled", "mlflow", "compiled", 2),
    Setup("c1", "c1. `mnist-pipeline serve --workers 1`", "pipeline", "compiled", 1),
    Setup("c2", "c2. `mnist-pipeline serve --workers 2`", "pipeline", "compiled", 2),
)

# wrk's script: POST /invocations rotating over pre-built bodies (files 0.json .. n-1.json in args[1]), each
# thread from another one; non-2xx answers counted (wrk's own count is of statuses > 399); one JSON line at the end.
WRK_LUA = r"""
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local dir, n = args[1], tonumber(args[2])
  prepared = {}
  for k = 0, n - 1 do
    local f = assert(io.open(dir .. "/" .. k .. ".json", "rb"))
    local body = f:read("*a")
    f:close()
    prepared[k + 1] = wrk.format("POST", "/invocations", {["Content-Type"] = "application/json"}, body)
  end
  next_body = (id * 7) % n
  non2xx = 0
end

function request()
  next_body = next_body % #prepared + 1
  return prepared[next_body]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local non = 0
  for _, thread in ipairs(threads) do
    non = non + thread:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "non_2xx": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %.1f, "p99_us": %.1f, "max_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, non, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def valid_bodies(x: np.ndarray, y: np.ndarray, per_request: int, count: int, rng) -> list[Body]:
    """`count` distinct valid requests of `per_request` test images each, as JSON the way clients send it."""
    picks = [rng.choice(len(x), size=per_request, replace=False) for _ in range(count)]
    return [Body(as_json(x[pick]), labels=y[pick]) for pick in picks]


def check_answers(port: int, requests: list[Body]) -> dict:
    """Every distinct body once, from Python: 200, (n, 10) probabilities summing to 1, digits mostly right. A
    fast error page must not pass as throughput."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    problems, right, images = [], 0, 0
    for body in requests:
        status, data, error = post(conn, body)
        problem, correct = check(body, status, data)
        if error or problem:
            problems.append(error or problem)
        right, images = right + correct, images + len(body.labels)
    conn.close()
    if not problems and right < MOSTLY_RIGHT * images:
        problems.append(f"only {right:,} of {images:,} digits right")
    return {"requests": len(requests), "digits_right": [right, images], "problem": problems[0] if problems else None}


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of the live processes in process group `pgid` (the server: its supervisor and workers)."""
    ticks = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:  # fields from the state on: pgrp is the 3rd, utime and stime the 12th/13th
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_idle(pgid: int, most: float = 60) -> float:
    """Wait (at most `most` s) until the server's process group takes under 5% of a core over 0.25 s: the
    requests a load generator abandoned when it stopped are still being answered, and would otherwise count
    against the next load. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < most:
        before = group_cpu_seconds(pgid)
        time.sleep(0.25)
        if group_cpu_seconds(pgid) - before < 0.0125:
            break
    return time.monotonic() - started


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, every core (from /proc/stat)."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / ticks, (
        user + nice + system + idle + iowait + irq + softirq + steal
    ) / ticks


def load_average() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def wrk_load(port: int, requests: list[Body], connections: int, seconds: int, folder: Path) -> dict:
    """wrk (one thread, `connections` kept-alive connections) for `seconds` over the bodies in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, body in enumerate(requests):
        (folder / f"{i}.json").write_bytes(body.data)
    (folder / "load.lua").write_text(WRK_LUA)
    command = [
        *(shutil.which("wrk"), "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "60s"),
        *(
            "-s",
            str(folder / "load.lua"),
            f"http://127.0.0.1:{port}/invocations",
            "--",
            str(folder),
            str(len(requests)),
        ),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    out = json.loads(line.removeprefix("RESULT "))
    wall = out["duration_us"] / 1e6
    return {
        "requests": out["requests"],
        "seconds": wall,
        "requests_per_s": out["requests"] / wall,
        "p50_ms": out["p50_us"] / 1000,
        "p99_ms": out["p99_us"] / 1000,
        "max_ms": out["max_us"] / 1000,
        "non_2xx": out["non_2xx"],
        "errors": sum(out[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")),
    }


def python_load(port: int, requests: list[Body], connections: int, seconds: int) -> dict:
    """The same load from Python threads (http.client, a kept-alive connection each): the fallback without wrk.
    On 2 cores the client itself then takes much of the CPU the server needs."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    non_2xx, errors = [0] * connections, [0] * connections
    deadline = time.monotonic() + seconds

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in itertools.count(c * 7):
            if time.monotonic() >= deadline:
                break
            started = time.perf_counter()
            status, _, error = post(conn, requests[i % len(requests)])
            latencies[c].append((time.perf_counter() - started) * 1000)
            errors[c] += error is not None
            non_2xx[c] += status is not None and not 200 <= status < 300
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    wall = time.perf_counter() - started
    ms = [v for per in latencies for v in per]
    return {
        "requests": len(ms),
        "seconds": wall,
        "requests_per_s": len(ms) / wall,
        "p50_ms": float(np.percentile(ms, 50)) if ms else None,
        "p99_ms": float(np.percentile(ms, 99)) if ms else None,
        "max_ms": max(ms, default=None),
        "non_2xx": sum(non_2xx),
        "errors": sum(errors),
    }


def timed_load(
    port: int, pgid: int, requests: list[Body], connections: int, seconds: int, client: str, folder: Path
) -> dict:
    """One load, with where the machine's CPU went meanwhile: the server's process group, the load generator
    (wrk: a child process; the Python client: this process) and everything else (other people's jobs)."""
    import resource

    wait_idle(pgid)
    who = resource.RUSAGE_CHILDREN if client == "wrk" else resource.RUSAGE_SELF
    mine = resource.getrusage(who)
    server, (busy, total) = group_cpu_seconds(pgid), machine_cpu_seconds()
    sampled: list[list[int]] = []  # half-way through: which server processes hold the connections
    sampler = threading.Timer(seconds / 2, lambda: sampled.append(connections_per_process(port, pgid)))
    sampler.start()
    if client == "wrk":
        load = wrk_load(port, requests, connections, seconds, folder)
    else:
        load = python_load(port, requests, connections, seconds)
    sampler.join()
    server = group_cpu_seconds(pgid) - server
    used = resource.getrusage(who)
    generator = used.ru_utime + used.ru_stime - mine.ru_utime - mine.ru_stime
    busy, total = machine_cpu_seconds()[0] - busy, machine_cpu_seconds()[1] - total
    wall, cores = load["seconds"], os.cpu_count() or 1
    n = max(load["requests"], 1)
    load["drained_s"] = wait_idle(pgid)  # the requests still in flight when the generator stopped
    load["cpu"] = {  # cores busy on average during the load (of os.cpu_count())
        "server_cores": server / wall,
        "client_cores": generator / wall,
        "other_cores": max(busy - server - generator, 0) / wall,
        "idle_cores": max(total - busy, 0) / total * cores if total else None,
        "server_ms_per_request": server / n * 1000,
        "client_ms_per_request": generator / n * 1000,
    }
    load["connections_per_process"] = sampled[0] if sampled else []
    return load


def connections_per_process(port: int, pgid: int) -> list[int]:
    """The established connections to `port` each process of group `pgid` holds (those holding any, most
    first): with several workers sharing one listening socket, which worker accepted the clients."""
    import psutil

    counts: dict[int, int] = {}
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_ESTABLISHED and conn.pid:
                try:
                    if os.getpgid(conn.pid) == pgid:
                        counts[conn.pid] = counts.get(conn.pid, 0) + 1
                except ProcessLookupError:
                    continue
    except psutil.AccessDenied:
        return []
    return sorted(counts.values(), reverse=True)


@contextmanager
def serving(setup: Setup, uris: dict[str, str], store: str, folder: Path) -> Iterator[tuple[int, int]]:
    """The setup's server on a free port, stopped by its process group whatever happens: (port, pgid)."""
    folder.mkdir(parents=True, exist_ok=True)
    if setup.server == "mlflow":
        args = ("-w", str(setup.workers)) if setup.model == "compiled" else ()  # the baseline as the README runs it
        with model_server(uris[setup.model], store, folder, one_at_a_time=setup.model == "keras", args=args) as port:
            yield port, os.getpgid(server_pid(port))
    else:
        with pipeline_server(uris[setup.model], store, folder, "--workers", str(setup.workers)) as server:
            yield server.port, server.process.pid


LOG_BOTH = """
import json, sys
sys.path.insert(0, {benchmarks!r})
import serve_load
print(json.dumps(serve_load.log_both_here({model_uri!r}, {tracking_uri!r}, {store!r}, {images!r})))
"""


def log_both(model_uri: str, tracking_uri: str, scratch: Path, images: np.ndarray) -> dict:
    """The model logged twice into a throwaway store (scratch/throughput), weights unchanged: compiled as train
    logs it, and with MLflow's Keras loader (today's baseline); plus the in-process profile. In a subprocess:
    TensorFlow and MLflow's global store stay out of this one."""
    store = f"sqlite:///{scratch / 'throughput' / 'mlflow.db'}"
    (scratch / "throughput").mkdir(parents=True, exist_ok=True)
    np.save(scratch / "throughput" / "images.npy", images)
    code = LOG_BOTH.format(
        benchmarks=str(ROOT / "benchmarks"),
        model_uri=model_uri,
        tracking_uri=tracking_uri,
        store=store,
        images=str(scratch / "throughput" / "images.npy"),
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise RuntimeError(f"logging the model twice failed:\n{result.stderr[-3000:]}")
    return {"store": store, **json.loads(result.stdout.strip().splitlines()[-1])}


def log_both_here(model_uri: str, tracking_uri: str, store: str, images_npy: str) -> dict:
    """log_both's subprocess: the logged model URIs and what one request's own work costs in one thread."""
    import mlflow

    from mnist_pipeline.ml import compiled, runtime
    from mnist_pipeline.tracking import logged_models

    runtime.set_threads(1, 1)  # as `mnist-pipeline serve` runs it (--threads 1)
    mlflow.set_tracking_uri(tracking_uri)
    model = logged_models.load_keras_model(model_uri)
    metadata = logged_models.model_metadata(model_uri) or None
    images = np.load(images_npy)
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment("serve-load-throughput")
    with mlflow.start_run(run_name="one model, two pyfunc loaders"):
        uris = {
            "compiled": logged_models.log_keras_model(
                model, images[:1], 0, metadata, name="compiled", pyfunc_loader=compiled.__file__
            ),
            "keras": logged_models.log_keras_model(model, images[:1], 0, metadata, name="keras"),
        }
    return {"source": model_uri, "uris": uris, "profile": profile_request(model, images)}


def profile_request(model, images: np.ndarray) -> dict:
    """Median ms, in this process and one thread, of what the server does for one valid request besides HTTP:
    parse the JSON (orjson as mnist-pipeline serve, json as MLflow), make the array, predict (traced function;
    Keras' predict for the baseline), write the answer."""
    import gc

    import orjson

    from mnist_pipeline.ml.compiled import CompiledModel

    fast = CompiledModel(model)
    gc.collect()
    gc.freeze()  # as mnist-pipeline serve does after loading

    def median_ms(fn, reps: int) -> float:
        fn()
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return float(np.median(times) * 1000)

    out = {}
    for load, n in LOADS.items():
        body = as_json(images[:n])
        inputs = orjson.loads(body)["inputs"]
        array = np.asarray(inputs, dtype=np.float32)
        answer = fast.predict(array)
        reps = 200 if n == 1 else 50
        out[load] = {
            "body_bytes": len(body),
            "orjson.loads": median_ms(lambda body=body: orjson.loads(body), reps),
            "json.loads": median_ms(lambda body=body: json.loads(body), reps),
            "np.asarray": median_ms(lambda inputs=inputs: np.asarray(inputs, dtype=np.float32), reps),
            "compiled predict": median_ms(lambda array=array: fast.predict(array), reps),
            "Keras predict": median_ms(lambda array=array: model.predict(array, verbose=0), min(reps, 30)),
            "json.dumps answer": median_ms(
                lambda answer=answer: json.dumps({"predictions": answer.tolist()}).encode(), reps
            ),
        }
    return out


def throughput(
    model_uri: str,
    tracking_uri: str,
    x: np.ndarray,
    y: np.ndarray,
    scratch: Path,
    seconds: int,
    warmup: int,
    clients: int,
    client: str,
    rounds: int = 1,
    setups: tuple[Setup, ...] = SETUPS,
    seed: int = 0,
) -> dict:
    """Every setup's server started first (idle servers take no CPU), then for each of LOADS: every distinct
    body checked once from Python on each server, then `rounds` rounds over the setups (every other round in
    reverse order), each a warm-up of `warmup` s and `seconds` s timed. A setup's figures are its medians over
    the rounds; its ratio to setups[0] (the baseline) the median of the ratios within each round, so load from
    other jobs that drifts during the run touches both sides of a ratio alike."""
    os.environ.pop("UVICORN_LOOP", None)  # b: MLflow's own loop; the baseline gets the project's (one_at_a_time)
    load_before = load_average()
    logged = log_both(model_uri, tracking_uri, scratch, x[: max(LOADS.values())])
    rng = np.random.default_rng(seed)
    requests = {load: valid_bodies(x, y, n, DISTINCT[load], rng) for load, n in LOADS.items()}
    results = {s.name: {"server": s.server, "model": s.model, "workers": s.workers} for s in setups}
    with ExitStack() as stack:
        up: dict[str, tuple[int, int]] = {}
        for i, setup in enumerate(setups):
            row, started = results[setup.name], time.perf_counter()
            try:
                up[setup.name] = stack.enter_context(
                    serving(setup, logged["uris"], logged["store"], scratch / f"setup-{i}")
                )
                row["start_s"] = time.perf_counter() - started
            except (AssertionError, OSError, TypeError) as exc:  # did not start: recorded, the others go on
                row["error"] = f"did not start: {str(exc)[-2000:]}"
                print(f"{setup.name}: {row['error']}", flush=True)
        for load, n in LOADS.items():
            ready = []
            for setup in setups:
                if setup.name in up:
                    checked = check_answers(up[setup.name][0], requests[load])
                    results[setup.name][load] = {"check": checked, "rounds": []}
                    if checked["problem"] is None:
                        ready.append(setup)
                    else:
                        print(f"{setup.name}, {load}: refused, {checked['problem']}", flush=True)
            for r in range(rounds):
                for setup in ready if r % 2 == 0 else ready[::-1]:
                    row, (port, pgid) = results[setup.name], up[setup.name]
                    folder = scratch / "loads" / f"{setups.index(setup)}-{n}"
                    try:
                        if warmup:
                            timed_load(port, pgid, requests[load], clients, warmup, client, folder)
                        timed = timed_load(port, pgid, requests[load], clients, seconds, client, folder)
                    except RuntimeError as exc:  # wrk failed
                        row[load].setdefault("errors_seen", []).append(str(exc)[-2000:])
                        print(f"{setup.name}, {load}: {exc}", flush=True)
                        continue
                    timed["images_per_s"] = timed["requests_per_s"] * n
                    timed["round"] = r
                    row[load]["rounds"].append(timed)
                    print(
                        f"round {r + 1}, {setup.name}, {load}: {timed['requests_per_s']:,.1f} requests/s, "
                        f"{timed['images_per_s']:,.0f} images/s, p50 {timed['p50_ms']:.1f} ms, p99 "
                        f"{timed['p99_ms']:.1f} ms, non-2xx {timed['non_2xx']}, errors {timed['errors']}",
                        flush=True,
                    )
        for name, (port, _) in up.items():
            results[name]["after"] = still_serving(port, requests["1 image"][0])
    baseline = results[setups[0].name]
    for name, row in results.items():
        for load in LOADS:
            summarize(row.get(load), baseline.get(load), rounds)
        after = row.get("after", {})
        row["problem"] = row.get("error") or next(
            (f"{load}: {row[load]['problem']}" for load in LOADS if row.get(load, {}).get("problem")),
            None if after.get("ping") == 200 and after.get("problem") is None else f"after the loads: {after}",
        )
        row["passed"] = row["problem"] is None
        if row["problem"]:
            print(f"{name}: {row['problem']}", flush=True)
    targets = {}
    for setup in setups:
        row = results[setup.name]
        if setup.server == "pipeline" and row["passed"]:
            one, batch = row["1 image"], row["32 images"]
            targets[setup.name] = {
                "1 image": one["requests_per_s"] >= 500 and one["p99_ms"] <= 30,
                "32 images": batch["images_per_s"] >= 3000,
            }
    return {
        "model_uri": model_uri,
        "logged": logged,
        "client": client,
        "clients": clients,
        "seconds": seconds,
        "warmup_seconds": warmup,
        "rounds": rounds,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "setups": results,
        "targets_met": targets,
        "passed": all(row["passed"] for row in results.values()),
    }


def summarize(load: dict | None, baseline: dict | None, rounds: int) -> None:
    """A setup's figures under one load: medians over its rounds, sums of non-2xx and errors, the median ratio
    to the baseline within each round; `complete` if checked and every round ran free of non-2xx and errors."""
    if load is None:
        return
    runs = load["rounds"]
    load["problem"] = (
        f"answers refused: {load['check']['problem']}"
        if load["check"]["problem"]
        else f"{len(runs)} of {rounds} rounds ran: {'; '.join(load.get('errors_seen', [])) or '-'}"
        if len(runs) < rounds
        else None
    )
    load["complete"] = load["problem"] is None
    if not runs:
        return
    for key in ("requests_per_s", "images_per_s", "p50_ms", "p99_ms"):
        load[key] = float(np.median([run[key] for run in runs]))
    load["requests_per_s_range"] = [min(run["requests_per_s"] for run in runs), max(r["requests_per_s"] for r in runs)]
    load["requests"] = sum(run["requests"] for run in runs)
    load["non_2xx"] = sum(run["non_2xx"] for run in runs)
    load["errors"] = sum(run["errors"] for run in runs)
    load["cpu"] = {key: float(np.median([run["cpu"][key] for run in runs])) for key in runs[0]["cpu"]}
    load["connections_per_process"] = [run["connections_per_process"] for run in runs]
    if load["problem"] is None and (load["non_2xx"] or load["errors"]):
        load["problem"] = f"{load['non_2xx']:,} non-2xx answers and {load['errors']:,} errors under load"
    if load["problem"] is None and not all(run["requests"] > 0 for run in runs):
        load["problem"] = "a round with no request answered"
    load["complete"] = load["problem"] is None
    base = {run["round"]: run for run in (baseline or {}).get("rounds", [])}
    ratios = [
        (run["requests_per_s"] / base[run["round"]]["requests_per_s"], run["p99_ms"] / base[run["round"]]["p99_ms"])
        for run in runs
        if run["round"] in base and base[run["round"]]["requests_per_s"]
    ]
    if ratios:
        load["vs_baseline"] = {
            "requests_per_s": float(np.median([r for r, _ in ratios])),
            "p99": float(np.median([p for _, p in ratios])),
        }


def throughput_markdown(result: dict, command: str) -> list[str]:
    def num(value, digits=1):
        return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:,.{digits}f}"

    client = (
        "wrk (1 thread, kept-alive connections)"
        if result["client"] == "wrk"
        else "the Python client (wrk not installed; the client then takes CPU the server needs)"
    )
    before, after = result["load_average_before"], result["load_average_after"]
    rounds = result["rounds"]
    lines = [
        f"`{command}`: one model ({result['model_uri']}) logged twice with the same weights, compiled (as train "
        "logs it) and with MLflow's Keras loader (`model.predict`: the baseline, served one prediction at a "
        f"time). Valid requests only, {result['clients']} clients from {client}, rotating over "
        f"{', '.join(f'{DISTINCT[load]} distinct {load} bodies' for load in LOADS)} pre-built as JSON (the "
        "server's parsing is part of the figure). All servers up at once (idle ones take no CPU); per load, "
        "every distinct body first checked once on each server from Python (200, (n, 10) probabilities summing "
        f"to 1, digits right), then {rounds} round{'s' if rounds > 1 else ''} over the setups"
        + (" (every other one in reverse order)" if rounds > 1 else "")
        + f", each a {result['warmup_seconds']} s warm-up and {result['seconds']} s timed"
        + (
            "; figures are medians over the rounds, ratios the median of the ratios within each round"
            if rounds > 1
            else ""
        )
        + f". Load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in before)}; after: "
        f"{', '.join(f'{v:.2f}' for v in after)}: other jobs share these 2 cores, so absolute figures are "
        "noisy and the ratios within the run are the claim. CPU: cores busy on average during the timed "
        "load, from /proc (the server's process group, the load generator, everything else on the machine); "
        "connections: the established client connections each server process held half-way through each "
        "round's load (one figure per process holding any: a lone 8 with 2 workers means one of them accepted "
        "all 8).",
        "",
        "| setup | load | requests/s | images/s | p50 ms | p99 ms | non-2xx + errors | x baseline (requests/s) | "
        "server CPU ms/request | cores: server / client / others | connections per server process |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, row in result["setups"].items():
        if "error" in row:
            lines.append(f"| {name} | - | {row['error'].strip().splitlines()[-1][:200]} | | | | | | | | |")
            continue
        for load in LOADS:
            r = row.get(load, {})
            if "requests_per_s" not in r:
                lines.append(f"| {name} | {load} | refused: {r.get('check', {}).get('problem')} | | | | | | | | |")
                continue
            cpu = r["cpu"]
            ratio = r.get("vs_baseline", {}).get("requests_per_s")
            low, high = r["requests_per_s_range"]
            spread = f" ({num(low)}-{num(high)})" if rounds > 1 else ""
            lines.append(
                f"| {name} | {load} | {num(r['requests_per_s'])}{spread} | {num(r['images_per_s'], 0)} | "
                f"{num(r['p50_ms'])} | {num(r['p99_ms'])} | {r['non_2xx'] + r['errors']:,} | "
                f"{'-' if ratio is None else f'{ratio:,.1f}x'} | {num(cpu['server_ms_per_request'], 2)} | "
                f"{cpu['server_cores']:.2f} / {cpu['client_cores']:.2f} / {cpu['other_cores']:.2f} | "
                + ", ".join("+".join(map(str, c)) or "?" for c in r["connections_per_process"])
                + " |"
            )
    lines += [
        "",
        "Targets (issue 24, through `mnist-pipeline serve`, 8 clients): "
        + "; ".join(f"{load} per request: {goal}" for load, goal in TARGETS.items())
        + ".",
        "",
    ]
    for name, met in result["targets_met"].items():
        lines.append(f"- {name}: " + ", ".join(f"{load} {'met' if ok else '**not met**'}" for load, ok in met.items()))
    lines += [
        "",
        "One valid request's own work, in-process in one thread (median ms; no HTTP), the model as served:",
        "",
        "| load | body bytes | orjson.loads | json.loads | np.asarray | compiled predict | Keras predict | "
        "json.dumps answer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    steps = ("orjson.loads", "json.loads", "np.asarray", "compiled predict", "Keras predict", "json.dumps answer")
    for load, p in result["logged"]["profile"].items():
        lines.append(f"| {load} | {p['body_bytes']:,} | " + " | ".join(num(p[k], 2) for k in steps) + " |")
    lines += [
        "",
        "**Every setup's answers checked, every timed load free of non-2xx and errors, every server alive "
        f"after: {'yes' if result['passed'] else 'NO'}.**",
    ]
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=900, help="seconds for the whole load (default 900)")
    parser.add_argument("--oversized-mib", type=float, default=8.0, help="size of the oversized bodies (default 8)")
    parser.add_argument(
        "--max-body-mib",
        type=float,
        help="the body limit: nginx's client_max_body_size in front of mlflow models serve; "
        f"with --server pipeline, mnist-pipeline serve's own (default {PIPELINE_MAX_BODY_MIB:g})",
    )
    parser.add_argument(
        "--server",
        choices=("mlflow", "pipeline"),
        default="mlflow",
        help="the mix against `mlflow models serve` (default) or `mnist-pipeline serve` (no proxy)",
    )
    parser.add_argument(
        "--model-uri",
        help="serve this model of MLFLOW_TRACKING_URI's store (an absolute URI; "
        "default: the project's mlruns/mlflow.db) instead of training one",
    )
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "prepared")
    parser.add_argument(
        "--threaded",
        action="store_true",
        help="uvicorn's own event loop: MLflow predicts "
        "concurrent requests in concurrent threads (Keras' predict is not thread-safe)",
    )
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="valid requests only, every setup (SETUPS) in one run: requests/s, images/s, p50, p99",
    )
    parser.add_argument("--duration", type=int, default=10, help="--throughput: seconds timed per load (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="--throughput: warm-up seconds per load (default 3)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="--throughput: rounds over the setups per load (default 1)"
    )
    parser.add_argument(
        "--setups",
        default=",".join(s.id for s in SETUPS),
        help="--throughput: the setups to run, the baseline (a) first (default: all, "
        + "; ".join(f"{s.id}: {s.name}" for s in SETUPS).replace("`", "")
        + ")",
    )
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        help="--throughput's load generator (default: wrk if installed, else the Python client)",
    )
    args = parser.parse_args(argv)
    if args.server == "pipeline" and args.threaded:
        sys.exit("--threaded is about mlflow models serve's event loop: not with --server pipeline")
    limit = args.max_body_mib if args.max_body_mib is not None or args.server == "mlflow" else PIPELINE_MAX_BODY_MIB
    if limit is not None and not 0 < limit < args.oversized_mib:
        sys.exit("--max-body-mib must be above 0 and below --oversized-mib")
    if args.duration < 1 or args.warmup < 0 or args.rounds < 1:
        sys.exit("--duration must be at least 1 s, --warmup at least 0 s (whole seconds: wrk's), --rounds at least 1")
    chosen = [next((s for s in SETUPS if s.id == name.strip()), name.strip()) for name in args.setups.split(",")]
    if any(isinstance(s, str) for s in chosen) or chosen[0] is not SETUPS[0] or len(set(chosen)) < len(chosen):
        sys.exit(f"--setups: ids from {', '.join(s.id for s in SETUPS)}, each once, the baseline (a) first")
    client = args.client or ("wrk" if shutil.which("wrk") else "python")
    if args.throughput and client == "python" and args.client is None:
        print("wrk not found (Debian: apt-get install wrk): the Python client instead, itself CPU-bound", flush=True)
    if client == "wrk" and not shutil.which("wrk"):
        sys.exit("wrk not found (Debian: apt-get install wrk)")

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        prepared = prepared_data(args.data_dir.resolve(), scratch)
        if args.model_uri:
            model_uri = args.model_uri
            tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}"
        else:
            started = time.perf_counter()
            model_uri, tracking_uri = train_model(prepared, scratch)
            print(f"trained {model_uri} in {time.perf_counter() - started:.0f} s", flush=True)
        test = np.load(prepared / "test.npz")
        if args.throughput:
            result = throughput(
                model_uri,
                tracking_uri,
                test["x"],
                test["y"],
                scratch,
                args.duration,
                args.warmup,
                args.clients,
                client,
                rounds=args.rounds,
                setups=tuple(chosen),
                seed=args.seed,
            )
        else:
            pipeline = args.server == "pipeline"
            payloads = bodies(
                test["x"],
                test["y"],
                args.oversized_mib,
                limit is not None,
                np.random.default_rng(args.seed),
                known_500=pipeline,
            )
            shares = PIPELINE_KINDS if pipeline else KINDS
            if pipeline:
                with pipeline_server(model_uri, tracking_uri, scratch, "--max-body-mib", f"{limit:g}") as server:
                    load = benchmark(
                        server.port,
                        server.process.pid,
                        payloads,
                        args.requests,
                        args.clients,
                        args.seed,
                        args.time_limit,
                        shares,
                    )
            else:
                loop = {"UVICORN_LOOP": "auto"} if args.threaded else None  # else as docs/serving.md runs it
                with model_server(model_uri, tracking_uri, scratch, loop) as direct:
                    pid = server_pid(direct)
                    proxy = nginx(direct, limit, scratch) if limit else nullcontext(direct)
                    with proxy as port:
                        load = benchmark(port, pid, payloads, args.requests, args.clients, args.seed, args.time_limit)

    command = command_line(args)
    out = RESULTS_JSON
    saved = json.loads(out.read_text()) if out.is_file() else {}
    if args.throughput:
        saved["throughput"] = {"machine": report_md.machine(), "command": command, **result}
        out.write_text(json.dumps(saved, indent=2) + "\n")
        report_md.publish("serve throughput", throughput_markdown(result, command))
        return 0 if result["passed"] else 1
    if args.server == "pipeline":
        setup = f"`mnist-pipeline serve` directly (no proxy; `--max-body-mib {limit:g}`)"
        key, section = "pipeline", "serve load pipeline"
    else:
        setup = (
            f"`mlflow models serve` behind nginx (`client_max_body_size {limit:g}m`)"
            if limit
            else "`mlflow models serve` directly (no size limit)"
        )
        key = "direct" if limit is None else f"nginx client_max_body_size {limit:g}m"
        section = "serve load" + ("" if limit is None else " nginx")
        if args.threaded:
            setup, key, section = (
                f"{setup}, predicting in MLflow's concurrent threads",
                f"{key}, threaded",
                f"{section} threaded",
            )
    saved[key] = {
        "machine": report_md.machine(),
        "command": command,
        "model_uri": model_uri,
        "oversized_mib": args.oversized_mib,
        "max_body_mib": limit,
        **load,
    }
    out.write_text(json.dumps(saved, indent=2) + "\n")
    report_md.publish(section, markdown(setup, load, command))
    return 0 if load["passed"] else 1


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run: the options that differ from their defaults."""
    if args.throughput:
        names = [
            ("clients", 8),
            ("seed", 0),
            ("duration", 10),
            ("warmup", 3),
            ("rounds", 1),
            ("setups", ",".join(s.id for s in SETUPS)),
            ("client", None),
            ("model_uri", None),
        ]
    else:
        names = [
            ("requests", 2000),
            ("clients", 8),
            ("seed", 0),
            ("oversized_mib", 8.0),
            ("max_body_mib", None),
            ("server", "mlflow"),
            ("model_uri", None),
        ]
    options = "".join(
        f" --{name.replace('_', '-')} {value:g}" if isinstance(value, float) else f" --{name.replace('_', '-')} {value}"
        for name, default in names
        if (value := getattr(args, name)) != default
    )
    flags = (" --throughput" if args.throughput else "") + (" --threaded" if args.threaded else "")
    store = (
        f"MLFLOW_TRACKING_URI={os.environ['MLFLOW_TRACKING_URI']} "
        if args.model_uri and "MLFLOW_TRACKING_URI" in os.environ
        else ""
    )
    return f"{store}python benchmarks/serve_load.py{flags}{options}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
