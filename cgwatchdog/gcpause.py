"""The cyclic garbage collector paused around work that makes many objects and no cycles.

Reading a config of 10,000 miners, planning their rules, polling them or writing a
one-shot command's answer makes containers by the ten thousand that reference counting
frees on its own; the collector, triggered by the allocations, would only walk them
again and again (more than half of a config load's CPU, ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused(pause: bool = True) -> Iterator[None]:
    """No cyclic collection while the block runs (when ``pause``); left as found after."""
    paused = pause and gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()
