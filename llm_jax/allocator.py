"""The host allocator: glibc malloc settings that keep XLA:CPU's per-step buffers mapped between steps.

XLA:CPU allocates a step's temporaries with malloc and frees them when the step ends. Under glibc's defaults
those pages go back to the kernel when freed — a buffer over the mmap threshold (which grows to at most 32 MiB)
is unmapped, and a worker thread's own arena (heaps of 64 MiB) is trimmed or maps anything larger directly —
so every step touches fresh pages again: 169,000 page faults (660 MiB) per step of `configs/bench_cpu.py`,
~15-20% of its step time on a 2-core VM. One arena, no mmap below 1 GiB and no trimming keep those pages mapped
(0 faults per step; docs/performance.md has the measurement).

The settings only work when made before the runtime starts its threads, so `llm-jax` makes them first thing
(`tune()` in `cli.main`); a process that has already imported jax (a notebook, pytest) is left as it is.
`LLM_JAX_MALLOC=system` keeps glibc's defaults. The cost: the process keeps its peak heap instead of returning
freed memory to the system, and all threads share one arena (host allocations on GPU/TPU hosts are few).
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV = "LLM_JAX_MALLOC"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's <malloc.h>
ARENAS, MMAP_THRESHOLD, TRIM_THRESHOLD = 1, 1 << 30, 2**31 - 1
SETTINGS = ((M_ARENA_MAX, ARENAS), (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))
# The same settings for a process that is not llm-jax (glibc reads these when it starts): MaxText in the comparison.
ENV_VARS = {"MALLOC_ARENA_MAX": str(ARENAS), "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
            "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}

_state = "system (not tuned in this process)"


def state() -> str:
    """'tuned', or 'system (why not)'."""
    return _state


def tune() -> str:
    """Applies SETTINGS through glibc's mallopt unless opted out or too late; returns `state()`."""
    global _state
    if os.environ.get(ENV, "tuned") == "system":
        _state = f"system ({ENV}=system)"
    elif "jax" in sys.modules:
        _state = "system (jax was imported before the allocator could be tuned)"
    else:
        try:
            libc = ctypes.CDLL(None)
            libc.gnu_get_libc_version  # noqa: B018 -- glibc only (musl and macOS have other allocators)
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            _state = "system (not glibc)"
            return _state
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        refused = [option for option, value in SETTINGS if mallopt(option, value) != 1]
        _state = f"system (mallopt refused {refused})" if refused else "tuned"
    return _state
