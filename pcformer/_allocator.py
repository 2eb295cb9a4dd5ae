"""glibc malloc tuning for the simulator: one arena, large blocks from the heap, no trimming.

Why. XLA's CPU runtime allocates a fresh buffer for every program output and temporary, and the
simulator's buffers are large (a comparison on 128 x 1536 values draws ~90 MB of dealer
material). By default glibc serves blocks above 32 MB with mmap and gives them back with munmap,
and each XLA worker thread gets an arena of its own, so every run touches new pages: page faults
cost more than the arithmetic (a jitted `iota + 1` on 94 MB: 46 ms per call by default, 7.7 ms
tuned). One arena that keeps freed memory (M_ARENA_MAX=1, M_MMAP_THRESHOLD=1 GiB,
M_TRIM_THRESHOLD=2 GiB) lets later runs reuse warm pages. The price: the process keeps its peak
heap instead of returning it to the system.

It must happen before JAX starts a backend (the worker threads pick their arena on their first
allocation), so `import pcformer` applies it first thing. Set PCFORMER_MALLOC=0 to leave the
allocator alone. `status()` says what happened.
"""
from __future__ import annotations

import ctypes
import os
import sys

ENV = "PCFORMER_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_STATUS = "not applied"


def _backends_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from pcformer.compiler import compat
    return compat.backends_initialized()


def tune() -> str:
    """Apply the tuning if possible; returns (and remembers) a one-line status."""
    global _STATUS
    if os.environ.get(ENV, "1") == "0":
        _STATUS = f"off ({ENV}=0)"
    elif not sys.platform.startswith("linux"):
        _STATUS = "unavailable (not Linux)"
    else:
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
        except (OSError, AttributeError):
            _STATUS = "unavailable (no glibc mallopt)"
        else:
            if _backends_started():
                _STATUS = "not applied (a JAX backend was already running: import pcformer first)"
            else:
                ok = all(mallopt(k, v) == 1 for k, v in (
                    (_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, (1 << 31) - 1)))
                _STATUS = "tuned (one arena, no mmap below 1 GiB, no trim)" if ok else "refused by mallopt"
    return _STATUS


def status() -> str:
    return _STATUS
