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
import functools
import os
from typing import Any

__all__ = ["give_back_free_heap", "keep_large_blocks_unmapped"]

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


@functools.cache
def _libc(name: str, *argtypes: Any) -> Any:
    """The C library's function ``name`` returning an int, looked up once; None where
    there is no C library to load or it has no such function (not glibc)."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


def keep_large_blocks_unmapped() -> bool:
    """Fix glibc's mmap threshold at its starting value; True when it was set."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    mallopt = _libc("mallopt", ctypes.c_int, ctypes.c_int)
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES))


def give_back_free_heap() -> bool:
    """Return the C heap's free pages to the operating system (glibc ``malloc_trim``);
    True when it gave any back. Nothing on other C libraries."""
    trim = _libc("malloc_trim", ctypes.c_size_t)
    return trim is not None and bool(trim(0))
