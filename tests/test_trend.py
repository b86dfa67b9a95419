"""The status page's hour of hashrate (cgwatchdog/trend.py): minutes, gaps, memory."""

from __future__ import annotations

import gc
import math
import tracemalloc

import pytest

from cgwatchdog.history import MinerHistory
from cgwatchdog.trend import BUCKETS, HashrateTrend

T0 = 1_800_000_000.0  # a whole minute


def test_samples_of_a_minute_are_averaged_into_its_slot() -> None:
    trend = HashrateTrend()
    trend.record([("m1", 100.0)], T0)
    trend.record([("m1", 200.0)], T0 + 30)
    trend.record([("m1", 400.0)], T0 + 60)
    series = trend.series("m1", T0 + 60)
    assert len(series) == BUCKETS
    assert series[-2:] == [150.0, 400.0]
    assert series[:-2] == [None] * (BUCKETS - 2)


def test_gaps_where_a_miner_gave_no_hashrate_and_unknown_miners() -> None:
    trend = HashrateTrend()
    trend.record([("m1", 100.0), ("m2", None)], T0)
    trend.record([("m1", None), ("m2", float("nan"))], T0 + 60)
    trend.record([("m1", 300.0), ("m2", 5.0)], T0 + 120)
    assert trend.series("m1", T0 + 120)[-3:] == [100.0, None, 300.0]
    assert trend.series("m2", T0 + 120)[-3:] == [None, None, 5.0]
    assert trend.series("nobody", T0) == [None] * BUCKETS


def test_an_hour_later_old_minutes_are_overwritten_not_kept() -> None:
    trend = HashrateTrend(buckets=4, bucket_s=60)
    for minute in range(6):
        trend.record([("m1", float(minute))], T0 + 60 * minute)
    assert trend.series("m1", T0 + 300) == [2.0, 3.0, 4.0, 5.0]
    # Reading later than the last sample: the newest minutes are empty, nothing wraps.
    assert trend.series("m1", T0 + 420) == [4.0, 5.0, None, None]
    assert trend.series("m1", T0 + 3600) == [None] * 4
    # A miner silent for longer than the window starts clean.
    trend.record([("m1", 9.0)], T0 + 3600)
    assert trend.series("m1", T0 + 3600) == [None, None, None, 9.0]


def test_the_clock_going_back_keeps_the_newer_minutes() -> None:
    trend = HashrateTrend(buckets=4)
    trend.record([("m1", 10.0)], T0 + 120)
    trend.record([("m1", 99.0)], T0)  # an older minute: ignored
    assert trend.series("m1", T0 + 120)[-1] == 10.0 and 99.0 not in trend.series("m1", T0 + 120)


def test_miners_left_out_of_a_cycle_are_forgotten() -> None:
    trend = HashrateTrend()
    trend.record([("a", 1.0), ("b", 2.0), ("c", 3.0)], T0)
    trend.record([("a", 1.5), ("c", 3.5)], T0 + 60)
    assert len(trend) == 2 and "b" not in trend
    assert trend.series("c", T0 + 60)[-2:] == [3.0, 3.5]
    assert trend.series("a", T0 + 60)[-2:] == [1.0, 1.5]
    trend.record([("b", 7.0)], T0 + 120)  # back again, from nothing
    assert trend.series("b", T0 + 120)[-3:] == [None, None, 7.0]


def test_float32_keeps_three_significant_figures_of_a_farm() -> None:
    trend = HashrateTrend()
    trend.record([("m1", 1.35e14)], T0)
    value = trend.series("m1", T0)[-1]
    assert value is not None and math.isclose(value, 1.35e14, rel_tol=1e-6)


def test_memory_at_ten_thousand_miners_stays_flat() -> None:
    """About 310 bytes a miner in the arrays plus the name index: under 4.5 MB at
    10,000, and nothing more once the hour has wrapped round."""
    names = [f"sim-{i:05d}" for i in range(10_000)]
    trend = HashrateTrend()
    gc.collect()
    tracemalloc.start()
    try:
        trend.record(((n, 1.3e14) for n in names), T0)  # every row made
        built, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert trend.memory_bytes() == 10_000 * (BUCKETS * 4 + BUCKETS + 8)  # 3.08 MB
    assert built < 4.5e6, built
    for cycle in range(1, 125):  # an hour at a 30 s interval, and past its wrap
        trend.record(((n, 1.3e14 + cycle) for n in names), T0 + 30 * cycle)
    gc.collect()
    tracemalloc.start()
    try:
        for cycle in range(125, 145):
            trend.record(((n, 1.3e14 + cycle) for n in names), T0 + 30 * cycle)
        gc.collect()
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grown < 4096, grown
    assert trend.series("sim-09999", T0 + 30 * 144)[-1] == pytest.approx(1.3e14 + 144, rel=1e-6)


def test_a_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="at least two buckets"):
        HashrateTrend(buckets=1)


def test_a_miner_whose_rule_history_keeps_the_hour_is_drawn_from_it() -> None:
    """Where the rule history keeps the hour (a baseline of an hour), the trend keeps no
    row for the miner and draws its minutes from the history's samples: the same means
    its own row would have made. A history that keeps less leaves the miner a row."""
    hour = MinerHistory(retention_s=3600.0)
    short = MinerHistory(retention_s=900.0)
    histories = {"long": hour, "short": short}
    trend = HashrateTrend(history=histories.get)
    alone = HashrateTrend()  # the same samples, every miner in rows of its own
    for step in range(150):  # 75 minutes at 30 s, a gap every 7th sample
        at = T0 + 30 * step
        rate = None if step % 7 == 3 else 1e14 + 1e11 * step
        hour.record(at, hashrate_hs=rate)
        short.record(at, hashrate_hs=rate)
        cycle = [("long", rate), ("short", rate), ("nohistory", rate)]
        trend.record(cycle, at)
        alone.record(cycle, at)
    now = T0 + 30 * 149
    assert len(trend) == 2 and "long" not in trend
    assert trend.memory_bytes() == 2 * (BUCKETS * 4 + BUCKETS + 8)
    drawn = trend.series("long", now)
    kept = alone.series("long", now)
    assert [v is None for v in drawn] == [v is None for v in kept]
    assert all(
        a is None or b is None or math.isclose(a, b, rel_tol=1e-6)
        for a, b in zip(drawn, kept, strict=True)
    )
    assert drawn[-1] is not None and drawn.count(None) < 10
    assert trend.series("short", now) == alone.series("short", now)
    assert trend.series("nohistory", now) == alone.series("nohistory", now)


def test_a_row_goes_once_the_rule_history_keeps_the_hour() -> None:
    """A reload that gives a miner an hour-long baseline: its row is dropped at the next
    cycle, and its minutes come from the history from then on."""
    histories: dict[str, MinerHistory] = {}
    trend = HashrateTrend(history=histories.get)
    trend.record([("m1", 100.0), ("m2", 5.0)], T0)
    assert len(trend) == 2
    history = histories["m1"] = MinerHistory(retention_s=3600.0)
    history.record(T0 + 60, hashrate_hs=300.0)
    trend.record([("m1", 300.0), ("m2", 6.0)], T0 + 60)
    assert len(trend) == 1 and "m1" not in trend
    assert trend.series("m1", T0 + 60)[-2:] == [None, 300.0]
    assert trend.series("m2", T0 + 60)[-2:] == [5.0, 6.0]
