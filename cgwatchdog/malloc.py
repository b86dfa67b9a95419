"""Hand freed memory back to the operating system (glibc).

glibc serves a block of 128 KB or more with its own ``mmap`` and unmaps it when freed,
but each such free raises that threshold to the block's size (up to 32 MB). After the
first ``/metrics`` render frees its 13 MB text at 10,000 miners, every later large block
(the next render, a cycle's replies, the state's records) comes from the heap instead,
whose freed space the process keeps: the daemon's resident set grew by ~70 MB over a
few scrapes and stayed there. A fixed threshold keeps the first behaviour
(``benchmarks/RESULTS.md``: the daemon's RSS after ten scrapes at 10,000 miners
282-288 MB and rising, now 201-210 MB and flat). An operator's
own ``MALLOC_MMAP_THRESHOLD_`` wins; on other C libraries this does nothing.

Smaller blocks freed between live ones leave holes inside the heap, which ``free()``
keeps resident; :func:`give_back_free_heap` (``malloc_trim``), called by the daemon after
each cycle, returns their pages (2 MB of the daemon's resident set at 10,000 miners).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

__all__ = ["give_back_free_heap", "keep_large_blocks_unmapped"]

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


_trim: Callable[[int], int] | bool | None = False  # False: not looked up yet


def give_back_free_heap() -> bool:
    """Return the C heap's free pages to the operating system (glibc ``malloc_trim``);
    True when it gave any back. Nothing on other C libraries."""
    global _trim
    if _trim is False:
        try:
            function = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _trim = None
        else:
            function.argtypes = (ctypes.c_size_t,)
            function.restype = ctypes.c_int
            _trim = function
    return bool(_trim(0)) if callable(_trim) else False
