"""The collector around a daemon's cycles: paused during one, what it leaves exempted
without a walk, cyclic garbage found by the full collection every so often."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from cgwatchdog.gcpause import SETTLE_GROWTH, CycleCollector, gc_paused


class Node:
    """A container that can be part of a reference cycle."""

    def __init__(self) -> None:
        self.other: Any = None


def garbage_cycle() -> weakref.ref[Node]:
    """A reference cycle nobody holds, and a way to tell when it is collected."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generations of the collections that start while the test runs; the collector
    is left as the test found it (nothing exempt)."""
    started: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.collect()
    gc.callbacks.append(note)
    try:
        yield started
    finally:
        gc.callbacks.remove(note)
        gc.unfreeze()
        gc.enable()


def settled(settle_every_s: float = 600.0) -> CycleCollector:
    """A collector past its first cycle (its first full collection done)."""
    collector = CycleCollector(settle_every_s=settle_every_s)
    with collector.cycle(0.0):
        pass
    return collector


def test_a_cycle_runs_with_the_collector_paused_and_leaves_it_as_found(
    collections: list[int],
) -> None:
    collector = CycleCollector()
    with collector.cycle(0.0):
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    with collector.cycle(1.0):
        assert not gc.isenabled()
    assert not gc.isenabled()  # it was off before: off after


def test_the_first_cycle_collects_then_exempts_what_is_alive(collections: list[int]) -> None:
    before = garbage_cycle()
    kept = [Node() for _ in range(1000)]
    collector = CycleCollector(settle_every_s=600.0)
    with collector.cycle(0.0):
        made = [Node() for _ in range(1000)]
    assert before() is None  # the full collection found the garbage
    assert 2 in collections
    assert gc.get_freeze_count() >= len(kept) + len(made)
    del kept, made


def test_later_cycles_exempt_what_they_made_without_walking_it(collections: list[int]) -> None:
    kept = [Node() for _ in range(100_000)]  # a daemon's long-lived state
    collector = settled()
    frozen = gc.get_freeze_count()
    collections.clear()
    with collector.cycle(30.0):
        made = [Node() for _ in range(10_000)]  # many times gen 0's threshold
        during = garbage_cycle()
    assert collections == []  # no collection during the cycle, none at its end
    assert gc.get_freeze_count() >= frozen + len(made)
    assert during() is not None  # exempt for now, with what the cycle made
    with collector.cycle(300.0):
        pass
    assert during() is not None
    with collector.cycle(630.0):  # settle_every_s after the last full collection
        pass
    assert during() is None
    assert 2 in collections
    del kept


def test_a_reload_asks_for_a_full_collection_after_the_next_cycle(
    collections: list[int],
) -> None:
    collector = settled()
    with collector.cycle(30.0):
        old_config = garbage_cycle()  # the state a reload lets go of
    collector.settle_next()
    with collector.cycle(60.0):
        pass
    assert old_config() is None


def test_exempt_objects_that_die_are_still_freed(collections: list[int]) -> None:
    collector = settled()
    with collector.cycle(30.0):
        held = Node()
    gone = weakref.ref(held)
    frozen = gc.get_freeze_count()
    del held  # no cycle: reference counting frees it, exempt or not
    assert gone() is None
    # At most: freezing exempts every tracked object of the process, and a thread an
    # earlier test left (a server's, a worker's) may free some of its own meanwhile.
    assert gc.get_freeze_count() <= frozen - 1


def test_gc_paused_still_leaves_the_collector_as_found() -> None:
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def leave_garbage(objects: float) -> None:
    """Reference cycles, at least ``objects`` new tracked objects in all (the collector
    is paused: every new one is young)."""
    while len(gc.get_objects(generation=0)) < objects:
        for _ in range(1_000):
            garbage_cycle()


def test_cycles_that_leave_cyclic_garbage_get_a_full_collection_sooner(
    collections: list[int],
) -> None:
    # As a fleet read through asyncio's transports (miners named by host name) does:
    # a few objects in reference cycles a connection, every cycle.
    collector = settled()
    exempt = gc.get_freeze_count()  # the whole process's objects: the test suite's too
    collections.clear()
    first = garbage_cycle()
    with collector.cycle(15.0):
        leave_garbage(exempt * SETTLE_GROWTH / 2)  # half of a quarter: not yet
    assert first() is not None and collections == []
    with collector.cycle(30.0):
        leave_garbage(exempt * SETTLE_GROWTH * 0.6)  # past a quarter in all
    assert first() is None  # found long before settle_every_s
    assert 2 in collections


def test_cycles_that_replace_what_they_hold_do_not_count_as_growth(
    collections: list[int],
) -> None:
    # A daemon's steady cycle: each cycle's snapshots take the place of the last ones,
    # which reference counting frees; the exempt objects do not grow, so only
    # settle_every_s brings the next full collection.
    collector = settled()
    held = [Node() for _ in range(20_000)]
    collections.clear()
    for t in range(1, 40):
        with collector.cycle(float(t)):
            held = [Node() for _ in range(20_000)]
    assert 2 not in collections
    with collector.cycle(700.0):
        held = [Node() for _ in range(20_000)]
    assert 2 in collections
    del held
