import gzip
import hashlib
import http.server
import socket
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.data.fetch import DownloadError, FetchSettings, fetch_file
from tests.helpers import idx_bytes, write_gz

NAME = "train-labels-idx1-ubyte.gz"
PAYLOAD = idx_bytes(np.arange(100, dtype=np.uint8) % 10)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
FAST = FetchSettings(timeout=5, retries=2, backoff=0)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _FailFirst(_Quiet):
    """Answers 503 to the first request, then serves files: a transient error worth a retry."""

    failures_left = 1

    def do_GET(self):
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            self.send_error(503, "busy")
            return
        super().do_GET()


@pytest.fixture
def serve():
    """serve(folder, handler) -> base URL of a real HTTP server on 127.0.0.1 serving `folder`."""
    servers = []

    def start(folder: Path, handler=_Quiet) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def dead_url() -> str:
    """A localhost URL nobody listens on (the port was bound once, then freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def folder_with(tmp_path: Path, name: str, payload: bytes) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    write_gz(folder / NAME, payload)
    return folder


def leftovers(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir() if p.name.startswith("."))


def test_good_file_over_http_is_accepted(tmp_path, serve):
    url = serve(folder_with(tmp_path, "good", PAYLOAD))
    raw = tmp_path / "raw"
    got = fetch_file(NAME, SHA, raw, [url], FAST)
    assert got.path == raw / NAME and not got.cached
    assert got.source == url + NAME
    assert hashlib.sha256(gzip.decompress(got.path.read_bytes())).hexdigest() == SHA
    assert leftovers(raw) == []
    # Second call: served from the cache, provenance remembered.
    again = fetch_file(NAME, SHA, raw, [dead_url()], FAST)
    assert again.cached and again.source == url + NAME


def test_corrupt_file_is_rejected_and_next_source_used(tmp_path, serve):
    corrupt = PAYLOAD[:-1] + bytes([(PAYLOAD[-1] + 1) % 10])  # one label changed: still valid IDX
    bad_url = serve(folder_with(tmp_path, "bad", corrupt))
    good_url = serve(folder_with(tmp_path, "good", PAYLOAD))
    raw = tmp_path / "raw"
    got = fetch_file(NAME, SHA, raw, [bad_url, good_url], FAST)
    assert got.source == good_url + NAME
    assert leftovers(raw) == []


def test_transient_server_error_is_retried(tmp_path, serve):
    _FailFirst.failures_left = 1
    url = serve(folder_with(tmp_path, "flaky", PAYLOAD), _FailFirst)
    got = fetch_file(NAME, SHA, tmp_path / "raw", [url], FAST)
    assert got.source == url + NAME and _FailFirst.failures_left == 0


def test_every_source_failing_names_each_one(tmp_path, serve):
    dead = dead_url()
    corrupt_url = serve(folder_with(tmp_path, "bad", PAYLOAD + b"\x00"))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    raw = tmp_path / "raw"
    with pytest.raises(DownloadError) as info:
        fetch_file(NAME, SHA, raw, [str(empty_dir), corrupt_url, dead], FAST)
    message = str(info.value)
    assert f"could not get a verified copy of {NAME}" in message
    assert f"{raw / NAME} (cached): not present" in message
    assert f"{empty_dir / NAME}: no such file" in message
    assert f"{corrupt_url}{NAME}: payload sha256 " in message and "does not match the expected 000c2f6af964" in message
    assert f"{dead}{NAME}: URLError" in message and "Connection refused> (after 2 attempts)" in message
    assert not (raw / NAME).exists() and leftovers(raw) == []


def test_missing_file_on_server_is_not_retried(tmp_path, serve):
    url = serve(tmp_path)  # serves a folder without the file: 404
    with pytest.raises(DownloadError, match=rf"{url}{NAME}: HTTPError: HTTP Error 404: File not found$"):
        fetch_file(NAME, SHA, tmp_path / "raw", [url], FAST)


def test_cached_copy_failing_verification_is_fetched_again(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_gz(raw / NAME, PAYLOAD[:-3])  # truncated cache
    mirror = folder_with(tmp_path, "mirror", PAYLOAD)
    got = fetch_file(NAME, SHA, raw, [mirror.as_uri()], FAST)  # a file:// URL
    assert not got.cached and got.source == str(mirror / NAME)
    assert gzip.decompress(got.path.read_bytes()) == PAYLOAD


def test_unsupported_mirror_scheme(tmp_path):
    with pytest.raises(DownloadError, match=r"unsupported mirror 'ftp://x/': use a directory"):
        fetch_file(NAME, SHA, tmp_path / "raw", ["ftp://x/"], FAST)
