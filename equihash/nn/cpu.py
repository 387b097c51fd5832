"""CPU execution settings shared by training and encoding, chosen by measurement.

glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh mappings
and unmaps them when freed, so every batch's activations (66 MiB for the first
convolution of 256 MnistMosaic instances) fault in new zeroed pages. Serving them from
the heap and keeping freed memory there removes that cost: a training pass of 4096
instances went from 3.1 s to 1.9 s on 2 cores (benchmarks/train_step.py). The memory is
reused by the next batch, so the peak does not grow.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc malloc to keep freed memory for reuse; False where that is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 1 << 30) and mallopt(M_TOP_PAD, 1 << 28))


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set features of this CPU (``flags`` of /proc/cpuinfo; empty where unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()
