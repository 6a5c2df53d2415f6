"""core/console.py in real processes that import TensorFlow: its C++ start-up banners are dropped from stderr,
warnings, errors and tracebacks come through in order, the banners come back on request, and a failing stage
prints one error line. (The filter itself, on bytes through a pipe, is tests/unit/test_console.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mnist_pipeline.core import console
from tests.helpers import run_module

# TensorFlow-style C++ log lines the probe writes to file descriptor 2 (not INFO banners: the filter keeps them)
PROBE_FD_LINES = [
    "E0000 00:00:1795600614.044446   15526 some_kernel.cc:42] a TensorFlow error\n",
    "W0000 00:00:1795600614.044446   15526 port.cc:153] oneDNN custom operations are on, at WARNING\n",
]
PROBE = r"""
import os, sys, warnings
from mnist_pipeline.core import console

print("filter on:", console.quiet(), flush=True)
import tensorflow as tf

print("sum", int(tf.constant(1) + 1), flush=True)
warnings.warn("a Python warning")
for line in FD_LINES:
    os.write(2, line.encode())
print("error: an error line", file=sys.stderr, flush=True)
print("last stdout line", flush=True)
raise RuntimeError("a traceback")
"""


def run_probe(**env: str) -> str:
    """PROBE in a fresh Python with stdout and stderr into one pipe, as a terminal or a log file sees them."""
    environ = {k: v for k, v in os.environ.items() if k not in (console.ENV, "TF_CPP_MIN_LOG_LEVEL")}
    result = subprocess.run(
        [sys.executable, "-c", f"FD_LINES = {PROBE_FD_LINES!r}\n{PROBE}"],
        env={**environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout
    return result.stdout


def in_order(output: str, *markers: str) -> bool:
    places = [output.find(m) for m in markers]
    return -1 not in places and places == sorted(places)


def test_tensorflow_banners_are_gone_and_warnings_errors_and_tracebacks_come_through():
    output = run_probe()
    assert "filter on: True" in output and "sum 2" in output
    for banner in (
        "absl::InitializeLog()",
        "oneDNN custom operations are on. You may see",
        "cpu_feature_guard",
        "To enable the following instructions",
    ):
        assert banner not in output, output
    # file-descriptor writes (TensorFlow's C++ logging) pass the filter: all there, whole lines, in their own order
    forwarded = [line for line in PROBE_FD_LINES if line in output]
    assert forwarded == PROBE_FD_LINES, output
    assert in_order(output, *PROBE_FD_LINES)
    # ... and asynchronously: they may land anywhere in Python's output, even inside a line it writes in pieces
    # (a traceback). Without them, Python's stderr (written directly) keeps its exact order against stdout.
    for line in PROBE_FD_LINES:
        output = output.replace(line, "", 1)
    assert in_order(
        output,
        "filter on: True",
        "sum 2",
        "UserWarning: a Python warning",
        "error: an error line",
        "last stdout line",
        "Traceback (most recent call last):",
        "RuntimeError: a traceback",
    ), output


@pytest.mark.parametrize("env", [{console.ENV: "1"}, {"TF_CPP_MIN_LOG_LEVEL": "0"}])
def test_the_banners_are_back_with_the_environment_variable(env):
    output = run_probe(**env)
    assert "filter on: False" in output
    assert "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR" in output
    assert "port.cc:153] oneDNN custom operations are on." in output  # x86-64 Linux builds print it
    assert in_order(output, "sum 2", "UserWarning: a Python warning", "last stdout line", "RuntimeError: a traceback")


def test_a_failing_stage_prints_one_error_line_and_no_banner(tmp_path, monkeypatch):
    """`python -m mnist_pipeline.evaluate` imports TensorFlow, then fails on a missing file: stderr is exactly
    the `error: ...` line; the console log does not repeat it; the job's log file keeps it with its level."""
    monkeypatch.delenv(console.ENV, raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    missing = tmp_path / "ghost" / "run.json"
    result = run_module(
        "mnist_pipeline.evaluate", "variant=ghost", f"model_dir={tmp_path / 'ghost'}", f"hydra.run.dir={tmp_path / 'h'}"
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {missing} not found: "), result.stderr
    assert "error" not in result.stdout, result.stdout
    assert f"[ERROR] - {missing} not found" in (tmp_path / "h" / "evaluate.log").read_text()
