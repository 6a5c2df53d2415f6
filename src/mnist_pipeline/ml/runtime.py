"""Where and how training runs on this machine: thread pools, the dtype policy (bfloat16 where the CPU has
it), seeds."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import keras
import tensorflow as tf

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}  # the CPU multiplies bfloat16 natively


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo does not exist."""
    try:
        match = re.search(r"(?m)^flags\s*:(.*)$", cpuinfo.read_text())
    except OSError:
        return set()
    return set(match.group(1).split()) if match else set()


def resolve_precision(name: str, flags: set[str] | None = None) -> str:
    """`auto` -> mixed_bfloat16 on a CPU with native bf16 (AVX512_BF16 or AMX), float32 elsewhere: without
    native support bf16 is emulated and slower than float32."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    if name != "auto":
        return name
    return "mixed_bfloat16" if BF16_CPU_FLAGS & (cpu_flags() if flags is None else flags) else "float32"


def cores() -> int:
    """CPU cores this process may use (its affinity, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_counts(threads: Mapping, jobs: int = 1, available: int | None = None) -> tuple[int, int]:
    """(intra_op, inter_op) for one of `jobs` trainings running at once. 0 means TensorFlow's default, every
    core, which is right for one job; with several, each gets an equal share of the cores (at least one),
    so they do not oversubscribe them. Explicit values are kept as set."""
    share = max(1, (available or cores()) // max(1, jobs))
    auto = share if jobs > 1 else 0
    return threads["intra_op"] or auto, threads["inter_op"] or auto


def set_threads(intra_op: int, inter_op: int) -> None:
    """TensorFlow's pool sizes (0: leave its default); before TensorFlow first runs."""
    pools = (
        (
            "intra_op",
            intra_op,
            tf.config.threading.get_intra_op_parallelism_threads,
            tf.config.threading.set_intra_op_parallelism_threads,
        ),
        (
            "inter_op",
            inter_op,
            tf.config.threading.get_inter_op_parallelism_threads,
            tf.config.threading.set_inter_op_parallelism_threads,
        ),
    )
    for name, wanted, get, put in pools:
        if not wanted or get() == wanted:
            continue
        try:
            put(wanted)
        except RuntimeError:  # TensorFlow already ran in this process: a launcher worker reused for a new job
            log.warning(
                "trainer.threads.%s=%d not applied: this process already fixed TensorFlow's pool at %d",
                name,
                wanted,
                get(),
            )


def thread_pools() -> str:
    """TensorFlow's pool sizes in force, e.g. `intra_op=1 inter_op=1` (0: its default, every core)."""
    return (
        f"intra_op={tf.config.threading.get_intra_op_parallelism_threads()} "
        f"inter_op={tf.config.threading.get_inter_op_parallelism_threads()}"
    )


def configure_runtime(trainer: Mapping, jobs: int = 1) -> str:
    """Keras state, thread pools and the dtype policy; returns the precision used.

    Call before any model or tensor exists: TensorFlow fixes its thread pools at first use, and layers
    take the dtype policy in force when they are built. `jobs` is how many trainings run at once on this
    machine (a parallel launcher's n_jobs); threads are split between them (thread_counts).
    """
    keras.backend.clear_session()  # a launcher worker reused for another job starts from a clean state
    set_threads(*thread_counts(trainer["threads"], jobs))
    precision = resolve_precision(trainer["precision"])
    keras.config.set_dtype_policy(precision)
    return precision


def seed_everything(seed: int, deterministic: bool) -> None:
    keras.utils.set_random_seed(seed)  # python, numpy and TF global seeds
    if deterministic:
        tf.config.experimental.enable_op_determinism()
