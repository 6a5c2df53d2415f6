"""core/console.py: TensorFlow's C++ start-up banners are dropped from stderr, everything else comes through: the
filter on bytes through a pipe, and when it is on. The same in processes that import TensorFlow is
tests/integration/test_console_banners.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from mnist_pipeline.core import console

# What a process prints on its file descriptor 2 when it imports TensorFlow 2.21 here (console.py's docstring).
BANNERS = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1795600614.044446   15526 port.cc:153] oneDNN custom operations are on. You may see slightly "
    b"different numerical results due to floating-point round-off errors from different computation orders. "
    b"To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    b"I0000 00:00:1795600614.123309   15526 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    b"available CPU instructions in performance-critical operations.",
    b"To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, "
    b"rebuild TensorFlow with the appropriate compiler flags.",
    b"2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find cuda "
    b"drivers on your machine, GPU will not be used.",
]
KEPT = [
    b"E0000 00:00:1795600614.044446   15526 port.cc:153] oneDNN custom operations are on.",  # not INFO: kept
    b"I0000 00:00:1795600614.044446   15526 some_kernel.cc:12] an INFO line that is not a banner",
    b"To enable the following instructions: (not after cpu_feature_guard's line: kept)",
    b"Traceback (most recent call last):",
    b"\xff\xfe not UTF-8, kept byte for byte",
    b"",
]


def filtered(data: bytes, hold: float = 0.05) -> bytes:
    """`data` written to a pipe and read back through console.filter_stream."""
    source, sink = os.pipe(), os.pipe()
    reader = threading.Thread(target=console.filter_stream, args=(source[0], sink[1], hold))
    reader.start()
    os.write(source[1], data)
    os.close(source[1])
    reader.join(10)
    os.close(sink[1])
    out = b""
    while chunk := os.read(sink[0], 65536):
        out += chunk
    os.close(source[0]), os.close(sink[0])
    return out


def test_the_filter_drops_the_banners_and_keeps_everything_else_verbatim():
    lines = [KEPT[0], *BANNERS[:2], KEPT[1], BANNERS[2], BANNERS[3], KEPT[2], KEPT[3], BANNERS[4], KEPT[4], KEPT[5]]
    assert filtered(b"\n".join(lines) + b"\n") == b"\n".join(KEPT) + b"\n"
    assert filtered(b"no newline at the end") == b"no newline at the end"


def test_a_line_without_its_end_is_forwarded_after_a_moment_not_held_back():
    """A progress bar (`\\r` without `\\n`) or a prompt shows at once; the rest of its line is not matched."""
    source, sink = os.pipe(), os.pipe()
    reader = threading.Thread(target=console.filter_stream, args=(source[0], sink[1], 0.05))
    reader.start()
    try:
        os.write(source[1], b"50%\r")
        started = time.monotonic()
        assert os.read(sink[0], 100) == b"50%\r"
        assert time.monotonic() - started < 5
        os.write(source[1], BANNERS[0] + b"\n" + BANNERS[0] + b"\n")  # the first completes the partial line
        os.close(source[1])
        reader.join(10)
        assert os.read(sink[0], 1000) == BANNERS[0] + b"\n"
    finally:
        for fd in (source[0], sink[0], sink[1]):
            os.close(fd)


@pytest.mark.parametrize(
    ("argv", "app"),
    [
        (["python", "-m", "mnist_pipeline.train", "model=deep_cnn"], True),
        (["python", "-u", "-mmnist_pipeline.search"], True),
        (["python", "-X", "importtime", "-m", "mnist_pipeline.cli"], True),
        (["python", "-m", "pytest", "tests"], False),
        (["python", "-c", "import mnist_pipeline"], False),
        (["python", "script.py", "-m", "mnist_pipeline.train"], False),
        (["/venv/bin/mnist-pipeline", "predict", "x.png"], False),  # cli.main turns it on itself
    ],
)
def test_the_package_turns_the_filter_on_only_for_its_own_apps(argv, app):
    assert console.started_as_app(argv) is app


def test_the_package_import_leaves_this_process_alone():
    """pytest imports mnist_pipeline: its stderr is not redirected."""
    assert console._active is None and os.environ.get(console._FILTERED) is None


def test_what_a_crashing_process_wrote_last_still_comes_through():
    """TensorFlow's fatal errors (LOG(FATAL), failed checks) abort the process right after writing: the
    filter is a process of its own, so it forwards them all the same."""
    fatal = b"F0000 00:00:1.5   1 op.cc:1] Check failed: a fatal error\n"
    crash = (
        "import os\nfrom mnist_pipeline.core import console\nassert console.quiet()\n"
        f"os.write(2, {BANNERS[0] + bytes([10]) + fatal!r})\nos.abort()\n"
    )
    environ = {k: v for k, v in os.environ.items() if k not in (console.ENV, "TF_CPP_MIN_LOG_LEVEL")}
    result = subprocess.run([sys.executable, "-c", crash], env=environ, capture_output=True, timeout=60)
    assert result.returncode == -6, result.stderr
    assert result.stderr == fatal
