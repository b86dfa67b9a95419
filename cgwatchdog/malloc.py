"""Hand large freed blocks back to the operating system at once (glibc).

glibc serves a block of 128 KB or more with its own ``mmap`` and unmaps it when freed,
but each such free raises that threshold to the block's size (up to 32 MB). After the
first ``/metrics`` render frees its 13 MB text at 10,000 miners, every later large block
(the next render, a cycle's replies, the state's records) comes from the heap instead,
whose freed space the process keeps: the daemon's resident set grew by ~70 MB over a
few scrapes and stayed there. A fixed threshold keeps the first behaviour
(``benchmarks/RESULTS.md``: the daemon's RSS after ten scrapes at 10,000 miners
282-288 MB and rising, now 201-210 MB and flat). An operator's
own ``MALLOC_MMAP_THRESHOLD_`` wins; on other C libraries this does nothing.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["keep_large_blocks_unmapped"]

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


def keep_large_blocks_unmapped() -> bool:
    """Fix glibc's mmap threshold at its starting value; True when it was set."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library to load, or one without mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES))
