"""Quiet console output: TensorFlow's C++ start-up banners are dropped, everything else is left alone.

TensorFlow (2.19 to at least 2.21) prints its start-up banners through absl before any log setting is read,
so TF_CPP_MIN_LOG_LEVEL does not silence them (tensorflow/tensorflow#100442). Each process that imports
TensorFlow printed, on its file descriptor 2:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1795600614.044446   15526 port.cc:153] oneDNN custom operations are on. You may see ...
    I0000 00:00:1795600614.123309   15526 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...
    To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, ...
    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1795600616.974098   15526 port.cc:153] oneDNN custom operations are on. You may see ...

So `quiet()` points file descriptor 2 at a pipe read by a small filter process (this file run as a script)
that drops exactly the lines in BANNERS and forwards every other byte unchanged, in order. Python's own
stderr (tracebacks, warnings, log records, `error: ...` lines) bypasses the filter: sys.stderr is rebound to
the original stderr, so it is never delayed, reordered against stdout or filtered. A process, not a thread,
filters: it outlives a crash of the stage (abort, kill -9) and forwards what was written up to then.

MNIST_PIPELINE_TF_LOGS=1 (or an explicit TF_CPP_MIN_LOG_LEVEL=0) leaves stderr untouched: the banners show.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys

ENV = "MNIST_PIPELINE_TF_LOGS"
_FILTERED = "MNIST_PIPELINE_STDERR_FILTER"  # device:inode of the pipe: a child process writing to it is filtered

# An absl (`I0000 00:00:1795600614.044446   15526 port.cc:153] `) or TSL (`2025-09-17 14:44:05.157831: I
# external/.../cudart_stub.cc:32] `) INFO line: which file logged it and the message.
_INFO_LINE = re.compile(
    rb"^(?:I\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: I )"
    rb"(?:\S*/)?(?P<file>[\w.]+\.cc):\d+\] (?P<message>.*)$"
)
# (source file, start of the message): INFO notices TensorFlow prints at start-up, nothing else.
BANNERS = (
    (b"port.cc", b"oneDNN custom operations are on."),
    (b"cpu_feature_guard.cc", b"This TensorFlow binary is optimized to use available CPU instructions"),
    (b"cudart_stub.cc", b"Could not find cuda drivers on your machine, GPU will not be used."),  # `tensorflow` on a CPU
)
_ABSL_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_GUARD_SECOND_LINE = b"To enable the following instructions: "  # cpu_feature_guard's message has two lines

_active: dict | None = None


def wanted() -> bool:
    """Whether the banners are filtered: not if MNIST_PIPELINE_TF_LOGS is set (and not 0), nor if the user
    explicitly asked TensorFlow for every log (TF_CPP_MIN_LOG_LEVEL=0)."""
    return os.environ.get(ENV, "").strip() in ("", "0") and os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0"


def started_as_app(argv: list[str] | None = None) -> bool:
    """Whether this process is `python [options] -m mnist_pipeline.<module> ...` (sys.orig_argv)."""
    argv = list(getattr(sys, "orig_argv", []) if argv is None else argv)
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, "").startswith("mnist_pipeline.")
        if arg.startswith("-m"):
            return arg[2:].startswith("mnist_pipeline.")
        if arg in ("-W", "-X"):  # options with a separate value
            next(args, None)
        elif arg == "-c" or not arg.startswith("-"):
            return False
    return False


def quiet() -> bool:
    """Filter TensorFlow's start-up banners out of this process's stderr (and its children's) from now on,
    unless `wanted()` says no. Idempotent; returns whether the filter is on. Call it before TensorFlow is
    imported: the banners are printed at import."""
    global _active
    if _active is not None:
        return True
    if not wanted() or os.name != "posix":
        return False
    try:
        stderr = os.fstat(2)
    except OSError:  # no stderr at all: nothing to filter
        return False
    if os.environ.get(_FILTERED) == f"{stderr.st_dev}:{stderr.st_ino}":  # a parent's filter reads it already
        return False
    import atexit
    import io
    import subprocess

    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    original = os.dup(2)  # not inherited by child processes; stays open for the rebound sys.stderr
    read_end, write_end = os.pipe()
    try:
        # -I -S: the standard library only, whatever PYTHONPATH says; its own session: Ctrl-C (sent to the
        # terminal's process group) does not kill it before it has forwarded everything.
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__)],
            stdin=read_end,
            stdout=original,
            stderr=original,
            close_fds=True,
            start_new_session=True,
        )
    except OSError:
        for fd in (original, read_end, write_end):
            os.close(fd)
        return False
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    pipe = os.fstat(2)
    os.environ[_FILTERED] = f"{pipe.st_dev}:{pipe.st_ino}"
    old = sys.stderr
    sys.stderr = io.TextIOWrapper(
        io.FileIO(original, "w", closefd=False),
        encoding=getattr(old, "encoding", None) or "utf-8",
        errors=getattr(old, "errors", None) or "backslashreplace",
        line_buffering=True,
        write_through=True,
    )
    _active = {"pid": os.getpid(), "original": original, "process": process}
    atexit.register(_restore)
    return True


def _restore() -> None:
    """At exit: stderr back to the original, then wait (briefly) for the filter to forward what is left."""
    import subprocess

    if _active is None or _active["pid"] != os.getpid():  # a forked child inherits the handler
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    os.dup2(_active["original"], 2)  # this process's end of the pipe closes: the filter sees EOF
    with contextlib.suppress(subprocess.TimeoutExpired):
        _active["process"].wait(timeout=5)  # longer only if a child process of ours still holds the pipe


# Logging (conf/hydra/job_logging/console.yaml): the console shows messages, not timestamps and logger names
# (the job's log file keeps those); warnings and errors say so.
FILE_ONLY = {"console": False}  # `log.error(..., extra=FILE_ONLY)`: already printed another way


class ConsoleFormatter(logging.Formatter):
    """`message` for INFO and below, `warning: message` / `error: message` above; tracebacks as usual."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        message = record.getMessage()
        return message if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {message}"


class ConsoleFilter(logging.Filter):
    """Drops the records logged with extra=FILE_ONLY."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


def is_banner(line: bytes) -> bool:
    if line.rstrip(b"\r") == _ABSL_NOTICE:
        return True
    found = _INFO_LINE.match(line.rstrip(b"\r"))
    return found is not None and any(
        found["file"] == name and found["message"].startswith(start) for name, start in BANNERS
    )


def filter_stream(source: int, sink: int, hold: float = 0.05) -> None:
    """Copy `source` to `sink` until EOF, without the banner lines. A line without its end yet is held at
    most `hold` seconds, then forwarded as it is (a progress bar, a prompt): only whole lines are dropped."""
    import select

    pending, midline, after_guard, writable = b"", False, False, True

    def write(data: bytes) -> None:
        nonlocal writable
        while data and writable:
            try:
                data = data[os.write(sink, data) :]
            except InterruptedError:
                continue
            except OSError:  # stderr went away: keep reading so the writers never block
                writable = False

    while True:
        if pending and not select.select([source], [], [], hold)[0]:
            write(pending)  # not a whole line yet and nothing more coming: forward it now
            pending, midline = b"", True
            continue
        try:
            chunk = os.read(source, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        kept = []
        for line in lines:
            drop = not midline and (is_banner(line) or (after_guard and line.startswith(_GUARD_SECOND_LINE)))
            after_guard = drop and b"cpu_feature_guard.cc" in line
            midline = False
            if not drop:
                kept.append(line + b"\n")
        write(b"".join(kept))
    write(pending)


if __name__ == "__main__":  # the filter process quiet() starts: stdin is the pipe, stdout the real stderr
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    filter_stream(0, 1)
