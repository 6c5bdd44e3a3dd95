"""Process-wide settings for a long-running inference process (CLI, server, benchmarks; not Slicer itself)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def retain_freed_memory():
    """Keep freed memory in the process (glibc only) instead of returning it to the OS at once.

    Each scan segment allocates and frees tens of MB; by default glibc serves those with fresh ``mmap``s and
    every call page-faults them again, which made the scan 10-40% slower and erratic on our VMs (cpu-scan.md §9).
    The cost: the peak stays resident until the process exits. Returns True when the setting took effect.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    return bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) and mallopt(_M_TOP_PAD, 64 << 20))
