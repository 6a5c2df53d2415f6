"""`mlflow models serve` under load: concurrent clients, a fixed-seed mix of valid and bad requests, p50/p99 latency.

    python benchmarks/serve_load.py                        # trains a 1-epoch model, 2,000 requests, 8 clients
    python benchmarks/serve_load.py --max-body-mib 4       # the same behind nginx with client_max_body_size 4m
    python benchmarks/serve_load.py --threaded             # predictions in MLflow's threads, at once (the baseline)
    MLFLOW_TRACKING_URI=sqlite:///$PWD/mlruns/mlflow.db \
        python benchmarks/serve_load.py --model-uri models:/mnist-classifier@champion

The model: --model-uri from MLFLOW_TRACKING_URI's store, else `python -m mnist_pipeline.train experiment=fast
trainer.epochs=1` into a throwaway store. Images: data/prepared (else prepared from $MNIST_MIRROR into a
temporary folder). The server: `mlflow models serve --env-manager local` on a free 127.0.0.1 port
(tests/helpers.py::model_server, stopped by its PID's process group whatever happens), as docs/serving.md runs it:
predictions one at a time (mnist_pipeline.serving); --threaded serves with uvicorn's own loop instead, where
MLflow predicts concurrent requests in concurrent threads. Every request is a
POST /invocations of one of KINDS, drawn with --seed; each client keeps one connection and sends its next
request when the last is answered. Guarantees checked (exit status 1 and `passed: false` otherwise): every
valid request gets 200 with (n, 10) probabilities summing to 1, every other request a 4xx, no 5xx, no
connection error, all requests sent within --time-limit, and the server process still alive at the end,
answering /ping and a valid request.

Request size: `mlflow models serve` (MLflow 3.17.2: uvicorn running MLflow's FastAPI app, built without
`max_body_size`) enforces NO body size limit: a valid 51 MiB batch (6,890 images) was answered 200 after 26 s
with the server's RSS at 3.5 GiB; a 203 MiB one got 504 from the request timeout (`-t`, default 60 s) while
its prediction ran on for minutes, the RSS up to 11.6 GiB (benchmarks/results.md). So without a proxy the
"oversized" requests are --oversized-mib bodies the server must refuse on content (the batch cut short:
invalid JSON; or the images without their channel axis), which it reads and parses in full first; MLflow
echoes invalid JSON back in its 400, as big as the request. With --max-body-mib, nginx in front
(`client_max_body_size`: a reverse proxy is the way to set a limit) gets every request, and "oversized" is
a *valid* batch over the limit, which must get 413 without reaching Python. After the load, KNOWN_500 are
sent once each: malformed requests MLflow 3.17.2 answers with 500 (recorded, not part of the guarantee; the
server must survive them).
Writes benchmarks/serve_load.json (one entry per setup) and a `serve load` section of benchmarks/results.md.
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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

import report_md  # noqa: E402 - benchmarks/ is a folder of scripts, not a package
from tests.helpers import model_server  # noqa: E402 - the project's one way to start and stop the server

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


def as_json(inputs) -> bytes:
    return json.dumps({"inputs": np.asarray(inputs).tolist()}).encode()


def bodies(x: np.ndarray, y: np.ndarray, oversized_mib: float, proxied: bool, rng) -> dict[str, list[Body]]:
    """The request bodies of each kind, built once (the load then only sends them)."""
    pick = rng.permutation(len(x))
    one = as_json(x[:1])
    big = pick[np.arange(int(oversized_mib * 2**20 / len(one)) + 1) % len(x)]  # ~oversized_mib MiB of images
    big_valid = as_json(x[big])
    return {
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
        # Over the proxy's limit: a valid batch it must stop. Without one: big bodies refused on content.
        "oversized": [Body(big_valid)] if proxied else [Body(big_valid[:-3]), Body(as_json(x[big, ..., 0]))],
    }


KNOWN_500 = {  # malformed requests MLflow 3.17.2's scoring server answers with 500 (an uncaught exception)
    "no Content-Type header": Body(b'{"inputs": [[[[0.5]]]]}', None),  # content_type.split on None
    "JSON nested 100,000 deep": Body(b"[" * 100_000),  # RecursionError from json.loads
    "integer of 5,000 digits": Body(b'{"inputs": [[[[' + b"9" * 5000 + b"]]]]}"),  # ValueError from int()
}


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
) -> dict:
    """Send `requests` requests from `clients` threads; per kind: statuses, latencies, broken guarantees."""
    rng = np.random.default_rng(seed)
    names = list(KINDS)
    kinds = rng.choice(len(names), size=requests, p=np.array([KINDS[n] for n in names]) / sum(KINDS.values()))
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
) -> dict:
    """The load, then the known 500s, then whether the server (process `pid`) still serves; verdict in `passed`."""
    load = run_load(port, payloads, requests, clients, seed, time_limit)
    load["server_peak_rss_mib"] = peak_rss_mib(pid)
    load["known_500"] = probe_known_500(port)
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
            else "4xx"
        )
        verdict = "held" if k["failed"] == 0 else f"**broken {k['failed']}x**: {k['failures'][0]}"
        lines.append(
            f"| {name} | {KINDS[name]:.0%} | {k['requests']:,} | {size} | "
            f"{', '.join(f'{s}: {n:,}' for s, n in k['statuses'].items())} | {ms(k['p50_ms'])} | "
            f"{ms(k['p99_ms'])} | {want}: {verdict} |"
        )
    after = load["after"]
    lines += [
        "",
        "After the load: "
        + ", ".join(f"{name}: {status}" for name, status in load["known_500"].items())
        + f" (known MLflow 500s, sent once each); then /ping {after['ping']}, a valid request "
        f"{after['valid_request']}, server process alive: {after['process_alive']}. "
        f"**Guarantees {'held' if load['passed'] else 'BROKEN'}.**",
    ]
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=900, help="seconds for the whole load (default 900)")
    parser.add_argument("--oversized-mib", type=float, default=8.0, help="size of the oversized bodies (default 8)")
    parser.add_argument("--max-body-mib", type=float, help="put nginx in front with this client_max_body_size")
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
    args = parser.parse_args(argv)
    if args.max_body_mib is not None and not 0 < args.max_body_mib < args.oversized_mib:
        sys.exit("--max-body-mib must be above 0 and below --oversized-mib")

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
        payloads = bodies(
            test["x"], test["y"], args.oversized_mib, args.max_body_mib is not None, np.random.default_rng(args.seed)
        )
        loop = {"UVICORN_LOOP": "auto"} if args.threaded else None  # else serving.ENV, model_server's default
        with model_server(model_uri, tracking_uri, scratch, loop) as direct:
            pid = server_pid(direct)
            proxy = nginx(direct, args.max_body_mib, scratch) if args.max_body_mib else nullcontext(direct)
            with proxy as port:
                load = benchmark(port, pid, payloads, args.requests, args.clients, args.seed, args.time_limit)

    setup = (
        f"`mlflow models serve` behind nginx (`client_max_body_size {args.max_body_mib:g}m`)"
        if args.max_body_mib
        else "`mlflow models serve` directly (no size limit)"
    )
    key = "direct" if args.max_body_mib is None else f"nginx client_max_body_size {args.max_body_mib:g}m"
    if args.threaded:
        setup, key = f"{setup}, predicting in MLflow's concurrent threads", f"{key}, threaded"
    command = (
        "python benchmarks/serve_load.py"
        + "".join(
            f" --{name.replace('_', '-')} {value:g}"
            if isinstance(value, float)
            else f" --{name.replace('_', '-')} {value}"
            for name, default in [
                ("requests", 2000),
                ("clients", 8),
                ("seed", 0),
                ("oversized_mib", 8.0),
                ("max_body_mib", None),
                ("model_uri", None),
            ]
            if (value := getattr(args, name)) != default
        )
        + (" --threaded" if args.threaded else "")
    )
    out = ROOT / "benchmarks" / "serve_load.json"
    saved = json.loads(out.read_text()) if out.is_file() else {}
    saved[key] = {
        "machine": report_md.machine(),
        "command": command,
        "model_uri": model_uri,
        "oversized_mib": args.oversized_mib,
        "max_body_mib": args.max_body_mib,
        **load,
    }
    out.write_text(json.dumps(saved, indent=2) + "\n")
    section = "serve load" + ("" if args.max_body_mib is None else " nginx") + (" threaded" if args.threaded else "")
    report_md.publish(section, markdown(setup, load, command))
    return 0 if load["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
