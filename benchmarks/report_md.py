"""benchmarks/results.md: the machine description plus one generated section per benchmark script.

A script replaces only the text between its own `<!-- begin NAME -->` / `<!-- end NAME -->` markers, so
the hand-written reading of the numbers around them stays.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path


def machine() -> dict:
    import keras
    import tensorflow as tf

    from mnist_pipeline.ml.runtime import BF16_CPU_FLAGS, cpu_flags

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"(?m)^model name\s*:\s*(.*)$", cpuinfo)
    flags = cpu_flags()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "bf16": sorted(flags & BF16_CPU_FLAGS),
        "avx512": "avx512f" in flags,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def describe(m: dict) -> str:
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']:.0f} GiB, AVX-512 {'yes' if m['avx512'] else 'no'}, "
        f"native bf16 {'/'.join(m['bf16']) or 'no'}; Python {m['python']}, TensorFlow {m['tensorflow']}, "
        f"Keras {m['keras']}; measured {m['date']}"
    )


def write_section(path: Path, name: str, body: str, machine_line: bool = True) -> None:
    """machine_line=False when the body names its machines itself (results gathered across sessions)."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    header = f"_Machine: {describe(machine())}._\n\n" if machine_line else ""
    block = f"{begin}\n{header}{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## {name}\n\n{block}\n"
    path.write_text(text)


def publish(name: str, lines: list[str]) -> None:
    """A benchmark's table: its section of benchmarks/results.md (this machine named), and the terminal."""
    write_section(Path(__file__).resolve().parent / "results.md", name, "\n".join(lines))
    print("\n".join(lines))
