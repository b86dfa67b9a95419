"""The cyclic garbage collector paused around work that makes many objects and no cycles,
and kept off what a daemon holds for good.

Reading a config of 10,000 miners, planning their rules, polling them or writing a
one-shot command's answer makes containers by the ten thousand that reference counting
frees on its own; the collector, triggered by the allocations, would only walk them
again and again (more than half of a config load's CPU, ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Final

__all__ = ["SETTLE_EVERY_S", "SETTLE_GROWTH", "CycleCollector", "gc_paused", "settle_long_lived"]


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


SETTLE_EVERY_S: Final = 600.0
"""How often :class:`CycleCollector` runs a full collection (a walk over the whole heap)
to find cyclic garbage: each cycle is designed to leave none."""

SETTLE_GROWTH: Final = 0.25
"""... and sooner once the exempt objects have grown by this share since the last one
(CPython's own rule for a full collection): asyncio's selector transports, which a miner
named by host name is read through, leave a few objects in reference cycles per
connection, and those wait for a full collection."""


def settle_long_lived() -> None:
    """A full collection, then every object alive exempted from later ones.

    What was exempted before is let back in first, so nothing stays exempt for good
    once it has become garbage; exempt objects that die are still freed at once by
    reference counting.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class CycleCollector:
    """The collector around a daemon's cycles.

    A daemon holds its configuration, each miner's state and an hour of history for as
    long as it runs, and each cycle leaves a new snapshot of every miner: hundreds of
    thousands of objects at 10,000 miners with no reference cycle among them, which the
    collector would walk through its generations every cycle to find nothing (a tenth
    of the daemon's CPU: 1.62 s a cycle before, 1.46 s after; ``benchmarks/RESULTS.md``,
    row 19). So the collector is paused while a cycle runs, what the cycle leaves is
    exempted from collection without a walk (``gc.freeze``), and a full collection runs
    after the first cycle, after a reload, every ``settle_every_s`` and whenever the
    exempt objects have grown by ``SETTLE_GROWTH``, for whatever cyclic garbage the
    process makes.
    """

    def __init__(self, settle_every_s: float = SETTLE_EVERY_S) -> None:
        self.settle_every_s = settle_every_s
        self._settled_at: float | None = None  # None: settle after the next cycle
        self._settled_count = 0  # exempt objects right after the last full collection
        self._grown = 0  # what the cycles' freezes have added since then

    def settle_next(self) -> None:
        """Run the full collection after the next cycle (the fleet's state is new)."""
        self._settled_at = None

    @contextlib.contextmanager
    def cycle(self, now: float) -> Iterator[None]:
        """Around one cycle; ``now`` is a monotonic clock's reading. The collector is
        left as found (enabled or not)."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            # Generation 0's count is the tracked objects made and not freed since the
            # last collection or freeze: what this freeze adds to the exempt ones. Not
            # gc.get_freeze_count(), which walks every exempt object (4 ms a cycle with
            # a 100-miner fleet, benchmarks/RESULTS.md row 31). Survivors of collections
            # between cycles are not counted: settle_every_s covers them.
            self._grown += gc.get_count()[0]
            # Exempt before enabling: the first allocation after would otherwise start
            # a collection of everything the cycle made.
            gc.freeze()
            due = self._settled_at is None or now - self._settled_at >= self.settle_every_s
            if due or self._grown > self._settled_count * SETTLE_GROWTH:
                settle_long_lived()
                self._settled_at = now
                self._settled_count = gc.get_freeze_count()
                self._grown = 0
            if enabled:
                gc.enable()
