"""All-or-nothing outputs: staging left by killed writers is cleared, a signal cannot split a commit."""

import os
import signal
import subprocess
import sys

import pytest

from mnist_pipeline.core import atomic, signals
from mnist_pipeline.core.errors import Terminated


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_staging_of_a_dead_writer_is_cleared_a_live_ones_kept(tmp_path):
    out = tmp_path / "prepared"
    dead = tmp_path / f".prepared.{dead_pid()}.abc123.tmp"
    (dead / "inner").mkdir(parents=True)
    dead_file = tmp_path / f".prepared.{dead_pid()}.def456.tmp"
    dead_file.write_bytes(b"half")
    live = tmp_path / f".prepared.{os.getppid()}.ghi789.tmp"  # pytest's parent: alive, another writer's
    live.mkdir()
    other = tmp_path / ".other.1.x.tmp"  # another output's staging is not ours to judge
    other.mkdir()
    with atomic.atomic_dir(out) as staging:
        (staging / "x.npz").write_bytes(b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "prepared"])
    assert (out / "x.npz").read_bytes() == b"data"


def test_a_signal_during_a_commit_lands_after_it(tmp_path, monkeypatch):
    """SIGTERM sent while the first of three outputs is moved into place: all three are moved, then it raises."""
    real = atomic._replace
    calls = []

    def replace_then_signal(staging, final):
        real(staging, final)
        calls.append(final.name)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(atomic, "_replace", replace_then_signal)
    with signals.handled(), pytest.raises(Terminated), atomic.all_or_nothing() as outputs:
        for name in ("a", "b", "c"):
            outputs.file(tmp_path / name).write_text(name)
    assert calls == ["a", "b", "c"]
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a": "a", "b": "b", "c": "c"}
    assert signals.received[-1] == signal.SIGTERM


def test_a_failure_before_the_commit_leaves_the_old_outputs(tmp_path):
    (tmp_path / "a").write_text("old a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "f").write_text("old f")
    with pytest.raises(RuntimeError, match="disk full"), atomic.all_or_nothing() as outputs:
        outputs.file(tmp_path / "a").write_text("new a")
        (outputs.folder(tmp_path / "b") / "f").write_text("new f")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    assert (tmp_path / "a").read_text() == "old a" and (tmp_path / "b" / "f").read_text() == "old f"
