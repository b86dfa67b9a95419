"""MinerHistory's compact storage (cgwatchdog/history.py): one array a miner, times as
float32 offsets on a 1/128 s grid from a rebased per-miner base, float64 when the samples
span too much. Checked against the five-column implementation it replaced, kept here as
the oracle, and against saved documents of that implementation's form."""

from __future__ import annotations

import base64
import json
import math
import sys
import tracemalloc
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgwatchdog.history import (
    DEFAULT_RETENTION_S,
    MAX_SAMPLES,
    FleetHistory,
    Increase,
    Median,
    MinerHistory,
    Sample,
    _accumulate,
    _added,
    _json_float,
    _known,
    _nan_float,
    _restarted,
)
from cgwatchdog.jsonstate import opt_float

T0 = 1_800_000_000.0
TH = 1e12
GRID = 2.0**-7  # history._TIME_GRID_S
_NAN: Final = math.nan
WorkSource = Literal["diff1", "difficulty_accepted"]
Counter = Literal["hardware_errors", "work"]
# The saved form, written out here independently of history.py's _COLUMNS.
_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("t", "d"),
    ("elapsed", "f"),
    ("hashrate", "f"),
    ("hardware_errors_added", "f"),
    ("work_added", "f"),
)


# --------------------------------------------------------------------------- the oracle
# cgwatchdog/history.py's MinerHistory before the compact storage (commit d71607e): five
# array columns, float64 epochs. Pools, snapshots and frozen baselines left out. The
# counter and JSON helpers, which the compact storage did not change, are history.py's.


class ReferenceHistory:
    """The recent samples of one miner, and what was learnt from them."""

    __slots__ = (
        "_active_pool_id",
        "_active_pool_since",
        "_el",
        "_frozen",
        "_hs",
        "_hw",
        "_last_at",
        "_last_elapsed",
        "_last_elapsed_at",
        "_last_hw",
        "_last_restart_at",
        "_last_work",
        "_retention_s",
        "_t",
        "_unreachable_since",
        "_work",
        "_work_source",
    )

    def __init__(self, retention_s: float = DEFAULT_RETENTION_S) -> None:
        self._t = array("d")
        self._el = array("f")
        self._hs = array("f")
        self._hw = array("f")  # increases since the previous sample
        self._work = array("f")
        self._retention_s = max(0.0, float(retention_s))
        self._last_at: float | None = None
        self._last_elapsed = _NAN
        self._last_elapsed_at = _NAN
        self._last_hw = _NAN
        self._last_work = _NAN
        self._last_restart_at: float | None = None
        self._unreachable_since: float | None = None
        self._work_source: WorkSource | None = None
        self._active_pool_id: int | None = None
        self._active_pool_since: float | None = None
        self._frozen: dict[str, float] | None = None  # created on first use: most never need it

    # ------------------------------------------------------------------ recording

    @property
    def retention_s(self) -> float:
        """How far back samples are kept (plus one anchor sample before that)."""
        return self._retention_s

    @retention_s.setter
    def retention_s(self, value: float) -> None:
        self._retention_s = max(0.0, float(value))
        if self._t:
            self._trim(self._t[-1])

    def record(
        self,
        at: float,
        *,
        elapsed_s: float | None = None,
        hashrate_hs: float | None = None,
        hardware_errors: float | None = None,
        work: float | None = None,
        work_source: WorkSource = "diff1",
    ) -> bool:
        """Add one answered poll; return whether it shows a restart since the last one.

        A sample older than the newest one is ignored (returns False).
        """
        t = self._t
        if t and at < t[-1]:
            return False
        self._unreachable_since = None
        elapsed = _known(elapsed_s)
        hw = _known(hardware_errors)
        done = _known(work)

        restarted = False
        if elapsed == elapsed:  # known
            if self._last_elapsed == self._last_elapsed:
                restarted = _restarted(self._last_elapsed_at, self._last_elapsed, at, elapsed)
            if restarted or self._last_restart_at is None:
                self._last_restart_at = min(at, at - elapsed)
            self._last_elapsed = elapsed
            self._last_elapsed_at = at

        hw_added = _NAN
        if hw == hw:
            hw_added = _added(self._last_hw, hw, restarted)
            self._last_hw = hw
        work_added = _NAN
        if done == done:
            switched = self._work_source is not None and work_source != self._work_source
            work_added = _added(self._last_work, done, restarted or switched)
            self._last_work = done
            self._work_source = work_source

        if len(t) >= 2 and t[-1] - t[-2] < self._retention_s / MAX_SAMPLES:
            # The newest sample is too close to the one before it: it moves forward to
            # this one (keeping what the counters added) instead of a sample being added.
            t[-1] = at
            self._el[-1] = elapsed
            self._hs[-1] = _known(hashrate_hs)
            self._hw[-1] = _accumulate(self._hw[-1], hw_added)
            self._work[-1] = _accumulate(self._work[-1], work_added)
        else:
            t.append(at)
            self._el.append(elapsed)
            self._hs.append(_known(hashrate_hs))
            self._hw.append(hw_added)
            self._work.append(work_added)
        self._last_at = at
        self._trim(at)
        return restarted

    def mark_unreachable(self, at: float) -> None:
        """The miner did not answer at ``at`` (its samples are left as they are)."""
        if self._unreachable_since is None:
            self._unreachable_since = at

    def _trim(self, newest: float) -> None:
        t = self._t
        cut = newest - self._retention_s
        if len(t) < 2 or t[1] > cut:
            return
        drop = bisect_right(t, cut) - 1  # keep the newest sample at or before the cut
        if drop > 0:
            for column in (t, self._el, self._hs, self._hw, self._work):
                del column[:drop]

    # ------------------------------------------------------------------ what is known

    def __len__(self) -> int:
        return len(self._t)

    def samples(self) -> list[Sample]:
        """Every stored sample, oldest first."""
        return [
            Sample(*row)
            for row in zip(self._t, self._el, self._hs, self._hw, self._work, strict=True)
        ]

    def median_hashrate(
        self, now: float, window_s: float, *, startup_grace_s: float = 0.0
    ) -> Median | None:
        """Median hashrate of the samples in [now - window_s, now], leaving out those
        taken less than ``startup_grace_s`` after a (re)start (``Elapsed`` below it) and
        those without a hashrate; None when no sample is left."""
        t = self._t
        start = bisect_left(t, now - window_s)
        end = bisect_right(t, now)
        if start >= end:
            return None
        hs = self._hs[start:end]
        total = sum(hs)
        # Fast path, the usual case: every hashrate known (a NaN makes the sum NaN) and
        # no sample in a startup grace (min() of the known Elapsed values, all C loops).
        values: list[float] | None = None
        if total - total == 0:
            if startup_grace_s <= 0:
                values = sorted(hs)
            else:
                lowest = min(self._el[start:end])  # NaN only if the first is NaN
                if lowest >= startup_grace_s:
                    values = sorted(hs)
        if values is not None:
            first, last = 0, len(values) - 1
        else:
            el = self._el[start:end]
            # An unknown Elapsed (NaN) compares False: its sample is kept.
            kept = [
                i for i, (h, e) in enumerate(zip(hs, el, strict=True))
                if h == h and not e < startup_grace_s
            ]  # fmt: skip
            if not kept:
                return None
            first, last = kept[0], kept[-1]
            values = sorted(hs[i] for i in kept)
        n = len(values)
        middle = n // 2
        value = values[middle] if n % 2 else (values[middle - 1] + values[middle]) / 2
        return Median(value, n, t[start + last] - t[start + first])

    def increase(self, counter: Counter, now: float, window_s: float) -> Increase | None:
        """How much a counter grew over [now - window_s, now], from the newest sample at
        or before the window's start (else the oldest one) to the newest sample; resets
        count from the new low. None with fewer than two samples where it is known."""
        t = self._t
        end = bisect_right(t, now)
        start = max(0, bisect_right(t, now - window_s) - 1)
        if end - start < 2:
            return None
        added = (self._hw if counter == "hardware_errors" else self._work)[start:end]
        total = sum(added[1:])  # NaN when unknown somewhere
        if total - total == 0 and added[0] == added[0]:
            return Increase(total, t[end - 1] - t[start])
        known = [i for i, value in enumerate(added) if value == value]
        if len(known) < 2:
            return None
        # The first known sample is the anchor: what it added lies before the window.
        amount = math.fsum(added[i] for i in known[1:])
        return Increase(amount, t[start + known[-1]] - t[start + known[0]])

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: columns as base64 of little-endian arrays, NaN as null."""
        columns = {}
        for (name, _), column in zip(_COLUMNS, self._columns(), strict=True):
            if sys.byteorder != "little":
                column = array(column.typecode, column)
                column.byteswap()
            columns[name] = base64.b64encode(column.tobytes()).decode("ascii")
        return {
            "retention_s": self._retention_s,
            "columns": columns,
            "last_at": self._last_at,
            "last_elapsed": _json_float(self._last_elapsed),
            "last_elapsed_at": _json_float(self._last_elapsed_at),
            "last_hw": _json_float(self._last_hw),
            "last_work": _json_float(self._last_work),
            "last_restart_at": self._last_restart_at,
            "unreachable_since": self._unreachable_since,
            "work_source": self._work_source,
            "active_pool_id": self._active_pool_id,
            "active_pool_since": self._active_pool_since,
            "frozen": dict(self._frozen) if self._frozen else {},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceHistory:
        """Inverse of :meth:`to_dict`; ValueError when malformed."""
        try:
            history = cls(float(data["retention_s"]))
            columns = data["columns"]
            loaded = []
            for name, typecode in _COLUMNS:
                column = array("d") if typecode == "d" else array("f")
                column.frombytes(base64.b64decode(columns[name], validate=True))
                if sys.byteorder != "little":
                    column.byteswap()
                loaded.append(column)
            if len({len(c) for c in loaded}) != 1:
                raise ValueError("columns differ in length")
            history._t, history._el, history._hs, history._hw, history._work = loaded
            if any(b < a for a, b in zip(history._t, history._t[1:], strict=False)):
                raise ValueError("sample times go backwards")
            history._last_at = opt_float(data.get("last_at"))
            history._last_elapsed = _nan_float(data.get("last_elapsed"))
            history._last_elapsed_at = _nan_float(data.get("last_elapsed_at"))
            history._last_hw = _nan_float(data.get("last_hw"))
            history._last_work = _nan_float(data.get("last_work"))
            history._last_restart_at = opt_float(data.get("last_restart_at"))
            history._unreachable_since = opt_float(data.get("unreachable_since"))
            source = data.get("work_source")
            if source not in (None, "diff1", "difficulty_accepted"):
                raise ValueError(f"unknown work_source {source!r}")
            history._work_source = source
            pool_id = data.get("active_pool_id")
            history._active_pool_id = None if pool_id is None else int(pool_id)
            history._active_pool_since = opt_float(data.get("active_pool_since"))
            frozen = data.get("frozen") or {}
            history._frozen = {str(k): float(v) for k, v in frozen.items()} or None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed miner history: {exc}") from None
        return history

    def _columns(self) -> tuple[array[float], ...]:
        return (self._t, self._el, self._hs, self._hw, self._work)




# --------------------------------------------------------------------------- helpers


def nan_key(value: Any) -> Any:
    """Comparable whatever NaN it holds (NaN != NaN): NaN as a string, item by item."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, tuple | list):
        return [type(value).__name__, *(nan_key(v) for v in value)]
    return value


WINDOWS = (0.0, 30.0, 900.0, 3600.0, 3630.0, 86_400.0, 10.0**6)
GRACE = 600.0  # the startup grace asked for, and the Elapsed kept for it (as the engine sets)


def kept_below(new: MinerHistory) -> float:
    """Below what Elapsed ``new`` keeps it (the oracle kept every Elapsed)."""
    kept = new.elapsed_kept_s
    return new.retention_s if kept is None else kept


def as_kept(document: dict[str, Any], below: float) -> dict[str, Any]:
    """The oracle's saved form with only the Elapsed below ``below`` kept, as
    MinerHistory keeps it (NaN for the others)."""
    columns = dict(document["columns"])
    elapsed = decode("f", columns["elapsed"])
    columns["elapsed"] = encode("f", [e if e < below else _NAN for e in elapsed])
    return {**document, "columns": columns}


def kept_samples(samples: list[Sample], below: float) -> list[Sample]:
    return [s._replace(elapsed_s=s.elapsed_s if s.elapsed_s < below else _NAN) for s in samples]


def assert_same_state(new: MinerHistory, ref: ReferenceHistory) -> None:
    """The same, every column's saved bytes included, but the Elapsed that ``new`` does
    not keep (the oracle's are then above any grace it is asked for)."""
    below = kept_below(new)
    saved = new.to_dict()
    saved.pop("elapsed_kept_s", None)
    assert saved == as_kept(ref.to_dict(), below)
    assert len(new) == len(ref)
    assert nan_key(new.samples()) == nan_key(kept_samples(ref.samples(), below))
    assert new.retention_s == ref.retention_s


def assert_same_answers(new: MinerHistory, ref: ReferenceHistory, now: float) -> None:
    for window in WINDOWS:
        for grace in (0.0, GRACE):
            got = new.median_hashrate(now, window, startup_grace_s=grace)
            assert nan_key(got) == nan_key(ref.median_hashrate(now, window, startup_grace_s=grace))
        for counter in ("hardware_errors", "work"):
            assert nan_key(new.increase(counter, now, window)) == nan_key(
                ref.increase(counter, now, window)
            )


def encode(typecode: str, values: list[float]) -> str:
    column = array(typecode, values)
    if sys.byteorder != "little":
        column.byteswap()
    return base64.b64encode(column.tobytes()).decode("ascii")


def decode(typecode: str, text: str) -> array[float]:
    column = array(typecode, base64.b64decode(text))
    if sys.byteorder != "little":
        column.byteswap()
    return column


def old_document(times: list[float], *, retention_s: float = 3600.0) -> dict[str, Any]:
    """A miner's history as the five-column code saved it, written out by hand."""
    n = len(times)
    return {
        "retention_s": retention_s,
        "columns": {
            "t": encode("d", times),
            "elapsed": encode("f", [7200.0 + 30 * i for i in range(n)]),
            "hashrate": encode("f", [13.5 * TH + i * 1e9 for i in range(n)]),
            "hardware_errors_added": encode("f", [float(i % 3) for i in range(n)]),
            "work_added": encode("f", [0.0, *(90_000.25 * i for i in range(1, n))]),
        },
        "last_at": times[-1] if times else None,
        "last_elapsed": 7200.0 + 30 * (n - 1) if times else None,
        "last_elapsed_at": times[-1] if times else None,
        "last_hw": 100.0,
        "last_work": 5e9,
        "last_restart_at": T0 - 7200.0,
        "unreachable_since": None,
        "work_source": "diff1",
        "active_pool_id": 0,
        "active_pool_since": T0 - 7200.0,
        "frozen": {"HashrateDrop": 13.5 * TH},
    }


def poll(history: MinerHistory | ReferenceHistory, at: float, i: int) -> bool:
    return history.record(
        at,
        elapsed_s=7200.0 + (at - T0),
        hashrate_hs=13.5 * TH + (i % 7) * 1e9,
        hardware_errors=i // 3,
        work=90_000.0 * i,
    )


def both(retention_s: float = 3600.0) -> tuple[MinerHistory, ReferenceHistory]:
    return MinerHistory(retention_s, elapsed_kept_s=GRACE), ReferenceHistory(retention_s)


# --------------------------------------------------------------------------- saved documents


def test_a_document_of_the_old_form_loads_exactly_and_saves_the_same_bytes() -> None:
    times = [T0 + 30 * i + (0.5 if i % 4 == 1 else 0.0) for i in range(121)]
    document = old_document(times)
    history = MinerHistory.from_dict(document)
    reference = ReferenceHistory.from_dict(document)
    assert [s.at for s in history.samples()] == times
    assert_same_state(history, reference)
    # The same bytes but Elapsed, whose values (2 h and more) are all above what is kept:
    # with no elapsed_kept_s saved, Elapsed below the retention (1 h).
    assert history.elapsed_kept_s is None
    assert history.to_dict()["columns"] == as_kept(document, 3600.0)["columns"]
    assert {**history.to_dict()["columns"], "elapsed": ""} == {**document["columns"], "elapsed": ""}
    assert_same_answers(history, reference, times[-1])
    # And through the fleet, as the daemon loads its state file.
    fleet = FleetHistory.from_records([("m", document)], FleetHistory.records_version)
    assert fleet["m"].to_dict() == history.to_dict()


def test_a_document_of_the_new_form_loads_in_the_old_code() -> None:
    new, _ = both()
    for i in range(200):
        poll(new, T0 + 30 * i + (i % 2) * 0.5, i)
    reference = ReferenceHistory.from_dict(new.to_dict())
    assert_same_state(new, reference)
    assert [s.at for s in reference.samples()] == [s.at for s in new.samples()]


def test_fractional_epochs_load_within_the_grid() -> None:
    times = [T0 + 30 * i + 0.123456789 * (i % 5) for i in range(50)]
    history = MinerHistory.from_dict(old_document(times))
    for sample, at in zip(history.samples(), times, strict=True):
        assert abs(sample.at - at) <= GRID / 2
    saved = decode("d", history.to_dict()["columns"]["t"])
    assert [abs(a - b) <= GRID / 2 for a, b in zip(saved, times, strict=True)] == [True] * 50


def test_an_empty_history_saves_and_loads() -> None:
    document = MinerHistory().to_dict()
    assert document == ReferenceHistory().to_dict()
    back = MinerHistory.from_dict(document)
    assert len(back) == 0 and back.samples() == []
    assert back.median_hashrate(T0, 3600.0) is None and back.increase("work", T0, 60.0) is None
    assert back.record(T0, elapsed_s=5.0) is False and len(back) == 1


@pytest.mark.parametrize(
    "times",
    [
        [T0, math.nan, T0 - 30],  # NaN compares False: the old code took it
        [T0, math.inf],
        [-math.inf, T0],
    ],
)
def test_non_finite_saved_times_load_as_before(times: list[float]) -> None:
    document = old_document(times)
    history = MinerHistory.from_dict(document)
    reference = ReferenceHistory.from_dict(document)
    assert_same_state(history, reference)
    history.record(T0 + 60, elapsed_s=1.0)  # no exception
    history.median_hashrate(T0 + 60, 3600.0)


def test_loading_leaves_room_for_the_next_records() -> None:
    """The daemon loads every miner at start: the first records after it must not copy
    the columns into a larger array (the old arrays over-allocated on the first append)."""
    times = [T0 + 30 * i for i in range(121)]
    history = MinerHistory.from_dict(old_document(times))
    storage = history._a
    for i in range(121, 160):
        poll(history, T0 + 30 * i, i)
    assert history._a is storage  # moved down in place, never reallocated


@pytest.mark.parametrize(
    ("counter_retention_s", "most"),
    [(None, 2750), (900.0, 2000)],  # the packaged rules' 15 minutes of counters
)
def test_memory_per_miner_fresh_loaded_and_after_loading(
    counter_retention_s: float | None, most: int
) -> None:
    """Bytes a miner at an hour of 30 s samples: 16 a sample and ~650 more (the objects,
    their floats, the arrays and their spare places, the fleet's key); five arrays and
    float64 times took ~3,900 (and ~3,750 loaded), and Elapsed in a column of its own
    ~480 more than now (3,100 and 2,950; 2,380 and 2,210 with counters kept 15 minutes).
    Counters kept 15 minutes save 8 bytes a sample older than that. The miner runs for
    hours: no sample keeps its Elapsed."""
    count = 300

    def fill(fleet: FleetHistory) -> None:
        for n in range(count):
            history = fleet.miner(f"rack1-s9-{n:05d}", 3600.0, counter_retention_s)
            for i in range(121):
                poll(history, T0 + 30 * i, i)

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fleet = FleetHistory()
        fill(fleet)
        fresh = (tracemalloc.get_traced_memory()[0] - before) / count
        records = list(fleet.records())
        del fleet
        before = tracemalloc.get_traced_memory()[0]
        loaded = FleetHistory.from_records(records, FleetHistory.records_version)
        after_load = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert len(loaded["rack1-s9-00000"]) == 121
    print(f"\nhistory: {fresh:.0f} bytes a miner fresh, {after_load:.0f} loaded")
    assert fresh < most and after_load < most


# --------------------------------------------------------------------------- exact times


@pytest.mark.parametrize("start", [T0, 1_700_000_000.5, 0.0, 2.0**31 - 900.0, -86_400.0])
def test_whole_and_half_second_times_round_trip_exactly(start: float) -> None:
    history = MinerHistory(3600.0)  # nothing trimmed, nothing coalesced
    times = [start + 15.5 * i for i in range(200)]
    for i, at in enumerate(times):
        poll(history, at, i)
    assert [s.at for s in history.samples()] == times
    back = MinerHistory.from_dict(history.to_dict())
    assert [s.at for s in back.samples()] == times


def test_a_sample_exactly_at_a_window_boundary_is_in_the_window() -> None:
    new, ref = both()
    for i in range(121):
        for history in (new, ref):
            poll(history, T0 + 30 * i, i)
    now = T0 + 30 * 120
    for window in (600.0, 599.5, 600.5, 630.0, 0.0):
        median = new.median_hashrate(now, window)
        assert median == ref.median_hashrate(now, window)
        assert new.increase("work", now, window) == ref.increase("work", now, window)
    median = new.median_hashrate(now, 600.0)
    assert median is not None and median.samples == 21 and median.span_s == 600.0
    assert new.increase("work", now, 600.0) == (20 * 90_000.0, 600.0)  # from the sample at -600
    assert new.increase("work", now, 599.5) == (20 * 90_000.0, 600.0)  # anchor before the window
    assert new.median_hashrate(now - 0.5, 0.0) is None  # nothing at now - 0.5
    # ``now`` exactly at the newest sample takes it in; half a second before does not.
    assert new.increase("work", now, 60.0) == (180_000.0, 60.0)  # -60 .. 0
    assert new.increase("work", now - 0.5, 60.0) == (180_000.0, 60.0)  # -90 .. -30
    assert new.increase("work", now - 0.5, 60.0) == ref.increase("work", now - 0.5, 60.0)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.0, 1.0, exclude_max=True),
    st.lists(st.floats(21.0, 100.0), min_size=2, max_size=40),
)
def test_fractional_epochs_round_alike_samples_and_boundaries(
    fraction: float, steps: list[float]
) -> None:
    """Times off the grid move by at most half a step, and a window starting exactly at
    a sample takes it in and the ones after, as with exact times."""
    new, ref = both(4800.0)  # nothing trimmed, nothing coalesced (steps > 4800 / MAX_SAMPLES)
    at = T0 + fraction
    times = []
    for i, step in enumerate(steps):
        at += step
        times.append(at)
        assert poll(new, at, i) == poll(ref, at, i)
    assert [abs(s.at - t) <= GRID / 2 for s, t in zip(new.samples(), times, strict=True)] == [
        True
    ] * len(times)
    now = times[-1]
    for i, t in enumerate(times):
        window = now - t
        assert now - window == t  # exact here (Sterbenz): the boundary is the sample's time
        median = new.median_hashrate(now, window)
        expected_median = ref.median_hashrate(now, window)
        assert median is not None and expected_median is not None
        assert median.samples == expected_median.samples == len(times) - i
        assert median.value == expected_median.value
        assert abs(median.span_s - expected_median.span_s) <= GRID
        if i < len(times) - 1:
            increase = new.increase("work", now, window)
            expected = ref.increase("work", now, window)
            assert increase is not None and expected is not None
            assert increase.amount == expected.amount
            assert abs(increase.span_s - expected.span_s) <= GRID


# --------------------------------------------------------------------------- long runs


def test_four_days_at_30_s_rebase_twice_and_stay_exact() -> None:
    new, ref = both()
    bases = set()
    days = 4
    for i in range(days * 24 * 120 + 1):
        at = T0 + 30 * i
        assert poll(new, at, i) == poll(ref, at, i)
        bases.add(new._base)
        if i % 250 == 0:
            assert_same_state(new, ref)
            assert_same_answers(new, ref, at)
    assert_same_state(new, ref)
    assert_same_answers(new, ref, at)
    last = days * 24 * 120
    assert [s.at for s in new.samples()] == [T0 + 30 * i for i in range(last - 120, last + 1)]
    # The base followed the samples every 2**17 s: offsets stayed float32-exact.
    assert len(bases) == 3 and new._a.typecode == "f"
    assert all(abs(t) < 2**17 for t in new._a[new._head : new._end])


def test_an_anchor_from_before_a_long_outage_then_float32_again() -> None:
    new, ref = both()
    i = 0
    for i in range(200):
        poll(new, T0 + 30 * i, i)
        poll(ref, T0 + 30 * i, i)
    back = T0 + 30 * i + 3 * 86_400.0  # three days away: the anchor is 3 days old
    for j in range(200):
        at = back + 30 * j
        assert poll(new, at, i + j) == poll(ref, at, i + j)
        if j == 0:
            assert new._a.typecode == "d"  # a span past 2**17 s: float64 times
            assert_same_answers(new, ref, at)
        assert_same_state(new, ref)
    assert_same_answers(new, ref, at)
    assert new._a.typecode == "f"  # the old anchor trimmed: float32 offsets again


@pytest.mark.parametrize("start", [T0, -150_000.0])  # epochs below 2**17 s too
def test_a_retention_over_36_hours_keeps_float64_times_and_float32_figures(start: float) -> None:
    new, ref = both(50 * 3600.0)
    at = start
    for i in range(4 * 24 * 120):
        at = start + 30 * i
        figures = {"elapsed_s": at - start, "hashrate_hs": 1e14 + i * 1.37, "work": 1e6 * i + 0.3}
        assert new.record(at, **figures) == ref.record(at, **figures)
        if i % 200 == 0:
            assert_same_state(new, ref)
    assert new._a.typecode == "d"
    assert_same_state(new, ref)
    assert_same_answers(new, ref, at)
    new.retention_s = ref.retention_s = 3600.0
    poll(new, at + 30, 0)
    poll(ref, at + 30, 0)
    assert new._a.typecode == "f"
    assert_same_state(new, ref)


@pytest.mark.parametrize("at", [math.nan, math.inf, -math.inf])
def test_a_non_finite_time_does_what_it_did(at: float) -> None:
    new, ref = both()
    for i in range(5):
        poll(new, T0 + 30 * i, i)
        poll(ref, T0 + 30 * i, i)
    assert poll(new, at, 5) == poll(ref, at, 5)
    assert len(new) == len(ref)
    kept = kept_samples(ref.samples(), GRACE)
    assert nan_key([s[1:] for s in new.samples()]) == nan_key([s[1:] for s in kept])
    for i in range(6, 10):
        assert poll(new, T0 + 30 * i, i) == poll(ref, T0 + 30 * i, i)
    assert len(new) == len(ref)
    kept = kept_samples(ref.samples(), GRACE)
    assert nan_key([s[1:] for s in new.samples()]) == nan_key([s[1:] for s in kept])


# --------------------------------------------------------------------------- against the oracle

STARTS = st.sampled_from([T0, 1_700_000_000.5, 0.0, 86_400.5, 2.0**31 - 600.0])
RETENTIONS = st.sampled_from([0.0, 30.0, 900.0, 3600.0, 7200.0, 86_400.0, 200_000.0])
STEPS = st.one_of(
    st.integers(-60, 120).map(float),  # repeats and older polls among them
    st.integers(-20, 240).map(lambda half: half / 2),
    st.just(30.0),
    st.sampled_from([900.0, 3600.0, 40_000.0, 2.0**17, 2.0**17 + 0.5, 140_000.0, 3 * 86_400.0]),
)
ELAPSED = st.sampled_from(["run", "run", "run", "restart", "jitter", "none", "nan"])
HASHRATES = st.one_of(
    st.none(),
    st.just(math.nan),
    st.sampled_from([0.0, 13.5 * TH, math.inf]),
    st.floats(0.0, 2e14),
)
INCREMENTS = st.one_of(st.none(), st.integers(-5, 1000), st.integers(0, 10**8))
RECORD = st.tuples(
    st.just("record"), STEPS, ELAPSED, HASHRATES, INCREMENTS, INCREMENTS,
    st.sampled_from(["diff1", "difficulty_accepted"]),
)  # fmt: skip
RUN = st.tuples(st.just("run"), st.integers(1, 300), st.sampled_from([1.0, 15.5, 30.0, 61.0]))
OPERATION = st.one_of(
    RECORD,
    RECORD,
    RECORD,
    RUN,
    st.tuples(st.just("retention"), RETENTIONS),
    st.tuples(st.just("reload")),
    st.tuples(st.just("unreachable")),
)


History = MinerHistory | ReferenceHistory


def drive(
    histories: list[History],
    start: float,
    operations: list[tuple[Any, ...]],
    reload: Callable[[list[History]], list[History]],
    check: Callable[[list[History], float], None],
) -> None:
    """Apply each operation to every history alike, then ``check`` them (with the time
    of the last operation); a ``reload`` operation replaces them with ``reload``'s."""
    at = start
    elapsed = 10_000.0
    hw = work = 0
    for operation in operations:
        kind = operation[0]
        if kind == "record":
            _, step, elapsed_kind, hashrate, hw_step, work_step, source = operation
            at += step
            if elapsed_kind == "run":
                elapsed += max(step, 0.0)
            elif elapsed_kind == "restart":
                elapsed = 5.0
            elif elapsed_kind == "jitter":
                elapsed += step - 40.0
            reported = {"none": None, "nan": math.nan}.get(elapsed_kind, elapsed)
            if hw_step is not None:
                hw = max(0, hw + hw_step)
            if work_step is not None:
                work = max(0, work + work_step)
            figures: dict[str, Any] = {
                "elapsed_s": reported,
                "hashrate_hs": hashrate,
                "hardware_errors": None if hw_step is None else hw,
                "work": None if work_step is None else work,
                "work_source": source,
            }
            assert len({h.record(at, **figures) for h in histories}) == 1
        elif kind == "run":  # polls at a steady interval, a running miner
            _, count, step = operation
            for _ in range(count):
                at += step
                elapsed += step
                hw += 1
                work += 90_000
                figures = {"elapsed_s": elapsed, "hashrate_hs": 13.5 * TH + hw % 7 * 1e9,
                           "hardware_errors": hw, "work": work}  # fmt: skip
                assert len({h.record(at, **figures) for h in histories}) == 1
        elif kind == "retention":
            for history in histories:
                history.retention_s = operation[1]
        elif kind == "reload":
            histories = reload(histories)
        else:
            for history in histories:
                history.mark_unreachable(at)
        check(histories, at)


def swap_documents(histories: list[History]) -> list[History]:
    """Each from the other's document, as JSON."""
    new, ref = histories
    assert isinstance(new, MinerHistory)
    new_document = new.to_dict()
    # The oracle's document, with the Elapsed kept as the new form says.
    ref_document = {**ref.to_dict(), "elapsed_kept_s": new.elapsed_kept_s}
    return [
        MinerHistory.from_dict(json.loads(json.dumps(ref_document, allow_nan=False))),
        ReferenceHistory.from_dict(json.loads(json.dumps(new_document, allow_nan=False))),
    ]


def assert_same_as_reference(histories: list[History], at: float) -> None:
    new, ref = histories
    assert isinstance(new, MinerHistory) and isinstance(ref, ReferenceHistory)
    assert_same_state(new, ref)
    newest = ref._t[-1] if len(ref) else at
    assert_same_answers(new, ref, newest)
    assert_same_answers(new, ref, newest + 45.0)


@settings(max_examples=300, deadline=None)
@given(STARTS, RETENTIONS, st.lists(OPERATION, max_size=60))
def test_same_as_the_five_column_history(
    start: float, retention_s: float, operations: list[tuple[Any, ...]]
) -> None:
    drive(list(both(retention_s)), start, operations, swap_documents, assert_same_as_reference)


# --------------------------------------------------------------------------- counters kept for less


def reload_each(histories: list[History]) -> list[History]:
    """Each from its own document, as JSON."""
    return [
        MinerHistory.from_dict(json.loads(json.dumps(h.to_dict(), allow_nan=False)))
        for h in histories
    ]


@settings(max_examples=300, deadline=None)
@given(
    STARTS,
    RETENTIONS,
    st.sampled_from([0.0, 30.0, 600.0, 900.0, 3600.0]),
    st.lists(OPERATION, max_size=60),
)
def test_counters_kept_for_less_answer_as_the_whole_history_within_their_retention(
    start: float, retention_s: float, counter_retention_s: float, operations: list[tuple[Any, ...]]
) -> None:
    """A history whose counters are kept ``counter_retention_s`` answers every query as
    one that keeps them as long as the rest, over windows as long as that and ending at
    or after the newest sample; its other columns are the same."""

    def check(histories: list[History], at: float) -> None:
        short, whole = histories
        assert isinstance(short, MinerHistory) and isinstance(whole, MinerHistory)
        assert short.counter_retention_s == counter_retention_s
        assert len(short) == len(whole) and short.retention_s == whole.retention_s
        short_samples, whole_samples = short.samples(), whole.samples()
        assert nan_key([s[:3] for s in short_samples]) == nan_key([s[:3] for s in whole_samples])
        kept = short._cend - short._chead
        assert 0 < kept <= len(whole) or kept == len(whole) == 0
        # The counters that are kept are those of the newest samples, and the same.
        assert nan_key([s[3:] for s in short_samples[len(short) - kept :]]) == nan_key(
            [s[3:] for s in whole_samples[len(whole) - kept :]]
        )
        newest = whole_samples[-1].at if len(whole) else at
        reach = min(counter_retention_s, whole.retention_s)
        for now in (newest, newest + 45.0):
            for window in WINDOWS:
                median = nan_key(short.median_hashrate(now, window, startup_grace_s=GRACE))
                assert median == nan_key(whole.median_hashrate(now, window, startup_grace_s=GRACE))
                if window > reach:
                    continue
                for counter in ("hardware_errors", "work"):
                    assert nan_key(short.increase(counter, now, window)) == nan_key(
                        whole.increase(counter, now, window)
                    ), (counter, now, window)

    histories: list[History] = [
        MinerHistory(retention_s, counter_retention_s, GRACE),
        MinerHistory(retention_s, None, GRACE),
    ]
    drive(histories, start, operations, reload_each, check)


def test_an_hour_at_30_s_keeps_the_counters_of_the_last_15_minutes_only() -> None:
    history = MinerHistory(3600.0, 900.0)
    for i in range(400):
        poll(history, T0 + 30 * i, i)
    samples = history.samples()
    assert len(samples) == 121  # the hour and its anchor
    with_counters = [s for s in samples if not math.isnan(s.work_added)]
    assert len(with_counters) == 31  # 15 minutes and their anchor
    assert with_counters[0].at == samples[-1].at - 900.0
    assert len(history._c) <= 2 * 36  # two columns of a few places more than 31
    assert history.increase("work", samples[-1].at, 900.0) == Increase(30 * 90_000.0, 900.0)
    assert history.increase("work", samples[-1].at, 3600.0) == Increase(30 * 90_000.0, 900.0)
    # Saved and loaded: the counters' columns are the newest 31 samples'.
    document = json.loads(json.dumps(history.to_dict()))
    assert document["counter_retention_s"] == 900.0
    assert len(decode("f", document["columns"]["work_added"])) == 31
    assert len(decode("d", document["columns"]["t"])) == 121
    back = MinerHistory.from_dict(document)
    assert back.to_dict() == history.to_dict()
    assert nan_key(back.samples()) == nan_key(samples)


def test_an_old_document_loads_whole_and_its_counters_go_as_the_retention_says() -> None:
    times = [T0 + 30 * i for i in range(121)]
    history = MinerHistory.from_dict(old_document(times))
    assert history.counter_retention_s is None
    assert sum(not math.isnan(s.work_added) for s in history.samples()) == 121
    storage = history._c
    history.counter_retention_s = 900.0  # as the engine sets it after loading
    assert sum(not math.isnan(s.work_added) for s in history.samples()) == 31
    for i in range(121, 140):
        poll(history, T0 + 30 * i, i)
    assert history._c is not storage and len(history._c) <= 2 * 36  # the room given back


@pytest.mark.parametrize(
    ("counters", "message"),
    [
        (122, "longer than the times"),
        (0, "longer than the times or empty"),
    ],
)
def test_a_document_whose_counters_do_not_fit_its_times_is_refused(
    counters: int, message: str
) -> None:
    times = [T0 + 30 * i for i in range(121)]
    document = old_document(times)
    for name in ("hardware_errors_added", "work_added"):
        document["columns"][name] = encode("f", [1.0] * counters)
    with pytest.raises(ValueError, match=message):
        MinerHistory.from_dict(document)
