"""Whether a process is alive, and which one a PID is: for leftovers of writers killed outright
(atomic.py), runs whose process died (tracking/stale.py) and the tracking server's PID file."""

from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, which tells a reused PID apart (Linux); `?`
    where /proc cannot say but the PID exists; None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc
        return "?" if alive(pid) else None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name may hold spaces and ')'
