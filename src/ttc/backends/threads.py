"""How many CPU threads the in-process transformers backend uses.

torch's default is one intra-op thread per core. On a machine where other processes also want
the CPU, that collapses: every small matrix product of a decode step waits at a barrier for all
its threads, and a thread the scheduler has parked holds up the whole step. Measured on the
2-core development machine with two `python -c "while True: pass"` processes running (see
`benchmarks/threads.md`): `ttc run --n 8` took many times longer with torch's default of 2 threads
than with 1. The default here ("auto") is therefore half the physical cores (at least 1): one
thread on a 2-core machine, and room for another job of the same size on a bigger one.
`OMP_NUM_THREADS`, when set, is the user's choice and wins over "auto".
"""

from __future__ import annotations

import os

from ttc.errors import InvalidInput

#: "auto" (the rule above), "torch" (leave torch's own setting alone), or a positive count
Threads = int | str


def physical_cores() -> int:
    """Physical cores this process may run on (logical CPUs / hyper-threads per core)."""
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        logical = os.cpu_count() or 1
    try:
        import psutil

        per_core = max(1, (psutil.cpu_count(logical=True) or 1) // (psutil.cpu_count(logical=False) or 1))
    except ImportError:  # pragma: no cover - psutil is a dependency of accelerate/transformers here
        per_core = 1
    return max(1, logical // per_core)


def resolve_threads(threads: Threads | None = "auto") -> int | None:
    """The thread count to set for `threads`; None means leave torch's setting as it is.

    "auto": `OMP_NUM_THREADS` if set (torch already follows it), else half the physical cores,
    at least 1. "torch" or None: torch's default. An int: that many (must be >= 1).
    """
    if threads is None or threads == "torch":
        return None
    if threads == "auto":
        if os.environ.get("OMP_NUM_THREADS", "").strip():
            return None
        return max(1, physical_cores() // 2)
    if isinstance(threads, str):
        if not threads.strip().isdigit():
            raise InvalidInput(f"threads must be a positive integer, 'auto' or 'torch'; got {threads!r}")
        threads = int(threads)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidInput(f"threads must be a positive integer, 'auto' or 'torch'; got {threads!r}")
    return threads


def parse_threads(text: str) -> Threads:
    """argparse type for `--threads`: 'auto', 'torch' or a positive integer."""
    text = text.strip().lower()
    if text in ("auto", "torch"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        import argparse

        raise argparse.ArgumentTypeError(f"expected a positive integer, 'auto' or 'torch', got {text!r}")
    return value
