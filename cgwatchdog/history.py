"""Per-miner sample history for the rule engine: compact, bounded, clock-free.

Each miner keeps, per answered poll, four figures in float32 (no object per sample, 16
bytes a sample): the poll time and the hashrate in one ``array.array``, and in another
how much the hardware-error and work counters grew since the previous answer. 10,000
miners x one hour at a 30 s interval take about 17 MB with the packaged rules. Unknown
figures are NaN.

Times are kept to 1/128 s (see ``_TIME_GRID_S``): exactly when on that grid, as whole
and half seconds are.

``Elapsed`` is kept only for the samples that a startup grace may leave out: those whose
``Elapsed`` is below ``elapsed_kept_s`` (the engine sets it to the longest startup grace
of the rules that apply to the miner), a few after each (re)start. A miner running for
longer keeps none, and the samples' ``Elapsed`` is then unknown (NaN) to ``samples``.

Samples older than ``retention_s`` are trimmed as new ones arrive, except the newest one
at or before the cut (the anchor a counter increase over exactly ``retention_s`` is
measured from). The counters are trimmed the same way at ``counter_retention_s``, which
may be shorter: they are kept for the newest samples only, as far back as the rules that
read them look (15 minutes for the packaged hardware-error rule, where the hashrate's
baseline needs an hour). The engine sets both to the longest window or baseline of the
rules that apply to the miner, and may change them (and ``elapsed_kept_s``) on reload.

Counters are stored as increases, computed when a sample is recorded against the exact
previous value: a counter that went down (a restart, a board that left the sum) or any
restart counts from the new low (an increase of 0 for that sample, never negative), so
every later query is a plain sum. float32 holds whole increases below 2**24 per poll
exactly (a 1 PH/s miner does about 7M diff1 work in 30 s), others to 1e-7.

The work counter is diff1-equivalent work: ``Diff1 Work`` where the firmware reports it,
else the summary's ``Difficulty Accepted`` (bmminer, Avalon 1047, Hammer report no Diff1
Work). ``work_source`` says which; when it changes, the sample where it does counts as a
reset (both are in diff1 units, so increases before and after may be added).

Restarts: a miner restarted when ``Elapsed`` went down, or when it came back (from being
unreachable, or from the watchdog's own downtime) with ``Elapsed`` smaller than the last
``Elapsed`` plus the time it was away. ``last_restart_at`` is when the current run
started, estimated as ``at - Elapsed`` (the same on every replica of a shard, whoever
sent the restart); it is also set from the first sample a miner ever gives, so a miner
that just booted is recognised as such.

Nothing here reads the clock or does I/O: ``at`` and ``now`` are arguments.
"""

from __future__ import annotations

import base64
import math
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from itertools import compress, pairwise
from typing import Any, Final, Literal, NamedTuple

from cgwatchdog.jsonstate import opt_float
from cgwatchdog.snapshot import Snapshot

__all__ = [
    "DEFAULT_RETENTION_S",
    "MAX_SAMPLES",
    "RESTART_SLACK_S",
    "FleetHistory",
    "Increase",
    "Median",
    "MinerHistory",
    "Sample",
]

DEFAULT_RETENTION_S: Final = 3600.0

# Elapsed and the poll time are read at slightly different instants (the reply may come
# up to the poll timeout after ``at``), so "Elapsed grew less than the time that passed"
# needs this much slack before it means "restarted in between".
RESTART_SLACK_S: Final = 30.0

# Bound on samples per miner whatever the poll interval: past it, samples closer than
# retention_s / MAX_SAMPLES to the previous one replace the newest instead of adding one
# (a 1 s interval would otherwise keep 3,600 samples per miner per hour).
MAX_SAMPLES: Final = 240

_NAN: Final = math.nan
_STATE_VERSION: Final = 1
WorkSource = Literal["diff1", "difficulty_accepted"]
Counter = Literal["hardware_errors", "work"]
# The columns as saved (to_dict): time as float64 epochs; Elapsed, hashrate and per-poll
# counter increases keep 7 significant digits in float32, which is plenty. Elapsed is
# saved as kept: NaN for the samples whose Elapsed is not (see MinerHistory._young).
_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("t", "d"),
    ("elapsed", "f"),
    ("hashrate", "f"),
    ("hardware_errors_added", "f"),
    ("work_added", "f"),
)

# In memory a miner's first two columns lie one after another in one array.array, each
# _cap long, the samples at [_head, _end) of each:
#     _a: [ time offsets | hashrate ]
# and the counters' two in another, each _ccap long, at [_chead, _cend):
#     _c: [ hardware_errors_added | work_added ]
# which holds the newest _cend - _chead samples: the counters of time index i are at
# i - (_end - _cend). One array for several columns pays an array's object and
# over-allocation once; the counters have their own because they are kept for less. Whole
# columns rather than records side by side: a query's slice of a column is a contiguous
# copy (a strided one, a[j::4], costs about four times as much) and bisect runs on the
# time column in place, bisect(a, x, _head, _end). Trimming only moves _head; when the
# newest sample reaches the columns' end, the whole array moves down by _head in one
# slice (every column moves by as much), every few records (see _capacity). The counters
# move the same way in their own array.
#
# Times are float32 offsets from a per-miner base, a whole second (float64): 4 bytes a
# sample instead of 8. Offsets, and every query's boundaries, are rounded to a grid of
# 1/128 s, on which float32 is exact up to 2**17 s (36 h) either side of the base. So
# times on the grid (whole and half seconds among them) are kept exactly, others move by
# 3.9 ms at most, and a sample taken exactly at a boundary stays on the same side of it,
# both rounded alike. The base being a whole second, where it lies changes no rounding:
# a rebase (when an offset would reach 2**17 s, every 36 h: the base moves to the new
# sample's second) subtracts a whole number of seconds from the offsets kept, exactly.
# Samples that span more than 2**17 s (a retention over 36 h, or an anchor from before a
# longer outage) are kept in a float64 array instead, the same grid counted from 0,
# until they fit again; the figures in it are still rounded to float32.
#
# Elapsed is read only to leave out the samples of a startup grace, so it is kept only
# where it is below elapsed_kept_s, in _young, a float64 array.array, or None when no
# sample keeps it: [n, q0, e0, q1, e1, ...], where n counts the samples added since the
# array was made and each pair is one sample's number in that count (the sample is at
# place _end - (n - q) of the columns, however they move) and its Elapsed, rounded to
# float32 as a column would keep it; oldest first. Numbers rather than times, as two
# samples may have the same time. Within one run of the miner Elapsed only grows (a drop
# is a restart), so these are the first few samples of each run. An Elapsed that is not
# kept is above every grace asked for, so leaving its sample in is what the full column
# would have said; a grace longer than elapsed_kept_s is served as far as elapsed_kept_s.
_TIME_GRID_S: Final = 2.0**-7
# (x + _ROUND) - _ROUND is x rounded to the grid (to even on a tie) while |x| < 2**44:
# x + _ROUND lies in [2**45, 2**46), where float64's step is the grid's. Written out
# where used: a call would cost more than the rounding.
_ROUND: Final = 1.5 * 2.0**52 * _TIME_GRID_S
_SPAN_S: Final = 2.0**24 * _TIME_GRID_S  # 24 bits of float32 mantissa
_ZERO: Final = (0.0,)


def _capacity(count: int) -> int:
    """The columns' length for ``count`` samples: a few places more, so that they move
    down every few records rather than at every one (6 or 7 at an hour of 30 s samples)."""
    return count + (count >> 5) + 3


def _with_room(
    a: array[float], cap: int, head: int, end: int, width: int
) -> tuple[array[float], int]:
    """``width`` columns of ``cap`` places, their samples at [head, end) of each, moved
    to the start of each with room for one more after them: (the array, its cap).

    In place where that frees a few places (one move of the whole array moves every
    column down by ``head``), else in a new array of the right size, larger or smaller.
    """
    count = end - head
    want = _capacity(count + 1)
    if (count >> 6) + 2 <= cap - count and cap <= 2 * want:
        a[: len(a) - head] = a[head:]
        return a, cap
    new = array(a.typecode, _ZERO) * (width * want)  # allocated to the size, not over
    for c in range(width):
        new[c * want : c * want + count] = a[c * cap + head : c * cap + head + count]
    return new, want


def _fits(oldest: float, newest: float) -> bool:
    """Whether samples from ``oldest`` to ``newest`` fit float32 offsets from the whole
    second of ``newest`` (False for NaN)."""
    return math.isfinite(newest) and (oldest - math.floor(newest) + _ROUND) - _ROUND > -_SPAN_S


class Sample(NamedTuple):
    """One stored poll (NaN for unknown figures); for inspection, not the hot path."""

    at: float
    elapsed_s: float  # NaN unless below the history's elapsed_kept_s
    hashrate_hs: float
    hardware_errors_added: float  # since the previous sample; 0 after a reset
    work_added: float


class Median(NamedTuple):
    """A median over a window, with how much data it rests on."""

    value: float
    samples: int
    span_s: float  # from the first to the last sample used


class Increase(NamedTuple):
    """A counter's increase over a window, and the time its samples span."""

    amount: float
    span_s: float


def _known(value: float | int | None) -> float:
    return _NAN if value is None else float(value)


def _added(previous: float, value: float, reset: bool) -> float:
    """A counter's increase since its previous known value; from the new low after a
    reset or a decrease (0), and 0 for its first value."""
    if reset or previous != previous or value < previous:
        return 0.0
    return value - previous


def _accumulate(stored: float, added: float) -> float:
    if stored != stored:
        return added
    if added != added:
        return stored
    return stored + added


def _restarted(prev_at: float, prev_elapsed: float, at: float, elapsed: float) -> bool:
    """Whether a miner restarted between two samples whose Elapsed are known."""
    if elapsed < prev_elapsed:
        return True
    return elapsed + RESTART_SLACK_S < prev_elapsed + (at - prev_at)


class MinerHistory:
    """The recent samples of one miner, and what was learnt from them."""

    __slots__ = (
        "_a",
        "_active_pool_id",
        "_active_pool_since",
        "_base",
        "_c",
        "_cap",
        "_ccap",
        "_cend",
        "_chead",
        "_counter_retention_s",
        "_elapsed_kept_s",
        "_end",
        "_frozen",
        "_head",
        "_last_at",
        "_last_elapsed",
        "_last_elapsed_at",
        "_last_hw",
        "_last_restart_at",
        "_last_work",
        "_retention_s",
        "_unreachable_since",
        "_work_source",
        "_young",
    )

    def __init__(
        self,
        retention_s: float = DEFAULT_RETENTION_S,
        counter_retention_s: float | None = None,
        elapsed_kept_s: float | None = None,
    ) -> None:
        # The columns (see the comment above _TIME_GRID_S): times as offsets from _base
        # and the hashrate in _a; the counters' increases in _c; young Elapsed in _young.
        self._a: array[float] = array("f")
        self._base = _NAN  # the time offsets' origin: set by the first sample
        self._cap = 0
        self._head = 0
        self._end = 0
        self._c: array[float] = array("f")
        self._ccap = 0
        self._chead = 0
        self._cend = 0
        self._retention_s = max(0.0, float(retention_s))
        self._counter_retention_s = _retention(counter_retention_s)
        self._elapsed_kept_s = _retention(elapsed_kept_s)
        self._young: array[float] | None = None
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
        if self._end > self._head:
            self._trim(self._a[self._end - 1])

    @property
    def counter_retention_s(self) -> float | None:
        """How far back the counters' increases are kept (plus one anchor sample); None
        for as far as :attr:`retention_s`, which also bounds it."""
        return self._counter_retention_s

    @counter_retention_s.setter
    def counter_retention_s(self, value: float | None) -> None:
        self._counter_retention_s = _retention(value)
        if self._end > self._head:
            self._trim(self._a[self._end - 1])

    @property
    def elapsed_kept_s(self) -> float | None:
        """Below what ``Elapsed`` a sample keeps it (the longest startup grace that
        :meth:`median_hashrate` is asked for); None for :attr:`retention_s`."""
        return self._elapsed_kept_s

    @elapsed_kept_s.setter
    def elapsed_kept_s(self, value: float | None) -> None:
        self._elapsed_kept_s = _retention(value)
        young = self._young
        if young is not None:
            kept = self._kept_below()
            pairs = [x for q, e in zip(young[1::2], young[2::2], strict=True) if e < kept
                     for x in (q, e)]  # fmt: skip
            self._young = array("d", [young[0], *pairs]) if pairs else None

    def _kept_below(self) -> float:
        """Below what Elapsed a sample keeps it, :attr:`retention_s` standing for None."""
        kept = self._elapsed_kept_s
        return self._retention_s if kept is None else kept

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
        a = self._a
        head = self._head
        end = self._end
        off = (at - self._base + _ROUND) - _ROUND  # on the time grid, as stored
        if end > head and off < a[end - 1]:
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

        hashrate = _known(hashrate_hs)
        cap = self._cap
        c = self._c
        ccap = self._ccap
        if end - head >= 2 and a[end - 1] - a[end - 2] < self._retention_s / MAX_SAMPLES:
            # The newest sample is too close to the one before it: it moves forward to
            # this one (keeping what the counters added) instead of a sample being added.
            i = end - 1
            k = self._cend - 1  # the newest sample's counters: there are always some
            hw_added = _accumulate(c[k], hw_added)
            work_added = _accumulate(c[ccap + k], work_added)
            young = self._young
            if young is not None and young[-2] == young[0] - 1:
                del young[-2:]  # the newest's Elapsed goes with it
                if len(young) == 1:
                    self._young = None
        else:
            i = end
            k = self._cend
            if self._young is not None:
                self._young[0] += 1  # one more sample: it is numbered n - 1
        if i == cap or not off < _SPAN_S or a.itemsize != 4:
            # No room after the newest (one record in 7 at an hour of 30 s samples, see
            # _capacity), an offset past float32's exact range (or NaN), float64 times.
            i = self._make_place(at, i)
            a, cap = self._a, self._cap
            off = (at - self._base + _ROUND) - _ROUND
            if a.itemsize != 4:
                # The figures are float32 whatever the times: rounded as float32 stores them.
                (hashrate,) = array("f", (hashrate,))
        if k == ccap:
            k = self._make_counter_room()
            c, ccap = self._c, self._ccap
        a[i] = off
        a[cap + i] = hashrate
        c[k] = hw_added
        c[ccap + k] = work_added
        self._end = i + 1
        self._cend = k + 1
        self._last_at = at
        if elapsed < self._kept_below():  # False for NaN
            self._keep_young(elapsed)
        self._trim(off)
        return restarted

    def record_snapshot(self, snapshot: Snapshot) -> bool:
        """:meth:`record` the figures of an answered poll; also track the active pool."""
        work: float | None = snapshot.diff1_work
        source: WorkSource = "diff1"
        if work is None:
            work = snapshot.difficulty_accepted
            source = "difficulty_accepted"
        restarted = self.record(
            snapshot.at,
            elapsed_s=snapshot.elapsed_s,
            hashrate_hs=snapshot.hashrate_hs,
            hardware_errors=snapshot.hardware_errors,
            work=work,
            work_source=source,
        )
        pool = snapshot.active_pool
        pool_id = None if pool is None else pool.id
        if pool_id != self._active_pool_id or restarted or self._active_pool_since is None:
            if self._active_pool_since is None or restarted:
                # Never seen, or just restarted: it has been on this pool since it started.
                start = self._last_restart_at
                self._active_pool_since = snapshot.at if start is None else start
            else:
                self._active_pool_since = snapshot.at
            self._active_pool_id = pool_id
        return restarted

    def mark_unreachable(self, at: float) -> None:
        """The miner did not answer at ``at`` (its samples are left as they are)."""
        if self._unreachable_since is None:
            self._unreachable_since = at

    def _trim(self, newest: float) -> None:
        """Drop the samples before ``newest - retention_s`` (offsets) but the last one, with
        their kept Elapsed, and the counters before ``newest - counter_retention_s`` alike."""
        head = self._head
        end = self._end
        if end - head < 2:
            return
        a = self._a
        cut = (newest - self._retention_s + _ROUND) - _ROUND
        if not a[head + 1] > cut:  # (a NaN cut trims too, as it always did)
            first = bisect_right(a, cut, head, end) - 1  # the newest at or before the cut
            if first > head:
                self._head = first  # the columns move down when the newest reaches their end
                if self._young is not None:
                    self._drop_old_young()
        kept = self._counter_retention_s
        if kept is None or kept >= self._retention_s:
            # As far back as the other columns: the counters of the same samples.
            self._chead = max(self._chead, self._cend - (end - self._head))
            return
        shift = end - self._cend  # counters of time index i: at i - shift
        oldest = self._chead + shift
        if oldest < self._head:  # never older than the other columns
            oldest = self._head
            self._chead = oldest - shift
        if end - oldest < 2:
            return
        cut = (newest - kept + _ROUND) - _ROUND
        if not a[oldest + 1] > cut:
            first = bisect_right(a, cut, oldest, end) - 1
            if first > oldest:
                self._chead = first - shift

    def _keep_young(self, elapsed: float) -> None:
        """Keep the newest sample's Elapsed, rounded as float32 keeps it."""
        (elapsed,) = array("f", (elapsed,))
        young = self._young
        if young is None:
            self._young = array("d", (1.0, 0.0, elapsed))
        else:
            young.extend((young[0] - 1, elapsed))

    def _drop_old_young(self) -> None:
        """Forget the Elapsed of the samples trimmed (before _head)."""
        young = self._young
        assert young is not None
        oldest = young[0] - (self._end - self._head)  # the oldest sample's number
        if young[1] < oldest:
            del young[1 : 1 + 2 * bisect_left(young[1::2], oldest)]
            if len(young) == 1:
                self._young = None

    def _young_places(self) -> list[tuple[int, float]]:
        """(place in the columns, Elapsed) of the samples whose Elapsed is kept."""
        young = self._young
        if young is None:
            return []
        first = self._end - int(young[0])
        return [(first + int(q), e) for q, e in zip(young[1::2], young[2::2], strict=True)]

    def _make_counter_room(self) -> int:
        """Room for one sample's counters after the newest, as :meth:`_make_room` makes
        it for the other columns; where they go."""
        count = self._cend - self._chead
        self._c, self._ccap = _with_room(self._c, self._ccap, self._chead, self._cend, 2)
        self._chead = 0
        self._cend = count
        return count

    def _make_place(self, at: float, i: int) -> int:
        """Where :meth:`record` stores ``at`` when its fast path cannot (``i`` is
        ``_end``, or ``_end - 1`` to replace the newest): after making room, rebasing,
        or moving between float32 and float64 times."""
        a = self._a
        kept = i - self._head  # the samples before the new one
        narrow = a.itemsize == 4
        if narrow and (at - self._base + _ROUND) - _ROUND < _SPAN_S:
            self._make_room()  # the only reason to be here
        elif narrow or _fits(self._base + a[self._head] if kept else at, at):
            # An offset past float32's exact range: every 36 h (see _TIME_GRID_S). Or
            # float64 times whose span fits again (an anchor from before an outage gone).
            self._relayout(kept, at)
        elif i == self._cap:
            self._make_room()
        return self._head + kept

    def _make_room(self) -> None:
        """Room for one sample after the newest (see :func:`_with_room`)."""
        count = self._end - self._head
        self._a, self._cap = _with_room(self._a, self._cap, self._head, self._end, 2)
        self._head = 0
        self._end = count

    def _relayout(self, kept: int, newest: float) -> None:
        """The first ``kept`` samples laid out afresh for ``newest``, with room for it."""
        a = self._a
        base = self._base
        head = self._head
        old = self._cap
        times = [base + t for t in a[head : head + kept]]  # exact: base and t are on the grid
        columns = [a[old + head : old + head + kept]]
        self._lay_out(times, columns, newest, _capacity(kept + 1))

    def _lay_out(
        self,
        times: Sequence[float],
        columns: Sequence[array[float]],
        newest: float,
        cap: int,
    ) -> None:
        """Store these samples (epochs; the figures' columns) in a new array of ``cap``:
        float32 offsets from ``newest``'s whole second where they all fit, which leaves
        36 h before the next rebase, else float64 grid times from 0."""
        count = len(times)
        typecode = "d"
        base = 0.0
        if math.isfinite(newest):
            base = float(math.floor(newest))
            offsets = [(t - base + _ROUND) - _ROUND for t in times]
            total = sum(offsets)
            # All finite (else the sum is NaN or infinite), hence in order (record and
            # from_dict see to it): the first and the last tell whether all fit.
            if total - total == 0 and (not count or -_SPAN_S < offsets[0] <= offsets[-1] < _SPAN_S):
                typecode = "f"
        if typecode == "d":
            base = 0.0
            offsets = [(t + _ROUND) - _ROUND for t in times]
        a = array(typecode, _ZERO) * ((1 + len(columns)) * cap)  # allocated to the size
        a[:count] = array(typecode, offsets)
        for c, column in enumerate(columns, 1):
            if column.typecode != typecode:
                column = array(typecode, column)  # exact: float32 values
            a[c * cap : c * cap + count] = column
        self._a, self._base, self._cap, self._head, self._end = a, base, cap, 0, count

    # ------------------------------------------------------------------ what is known

    def __len__(self) -> int:
        return self._end - self._head

    def samples(self) -> list[Sample]:
        """Every stored sample, oldest first; the counters' increases are NaN in those
        older than the counters kept (see :attr:`counter_retention_s`), and ``Elapsed``
        in those where it was not below :attr:`elapsed_kept_s`."""
        base = self._base
        times, el, hs, hw, work = self._slices()
        missing = [_NAN] * (len(times) - len(hw))
        return [
            Sample(base + t, *row)
            for t, *row in zip(times, el, hs, missing + hw.tolist(), missing + work.tolist(), strict=True)
        ]

    @property
    def last_at(self) -> float | None:
        """When the miner last answered."""
        return self._last_at

    @property
    def last_elapsed_s(self) -> float | None:
        """The last known ``Elapsed``."""
        return None if self._last_elapsed != self._last_elapsed else self._last_elapsed

    @property
    def last_restart_at(self) -> float | None:
        """When the miner's current run started (at - Elapsed) if it was seen starting
        or restarting; None while its ``Elapsed`` is unknown."""
        return self._last_restart_at

    @property
    def unreachable_since(self) -> float | None:
        """The first unanswered poll since the last answer; None while it answers."""
        return self._unreachable_since

    @property
    def work_source(self) -> WorkSource | None:
        """What the work column counts: ``diff1`` or ``difficulty_accepted``."""
        return self._work_source

    @property
    def active_pool_id(self) -> int | None:
        """The pool the miner mined on at the last answer."""
        return self._active_pool_id

    @property
    def active_pool_since(self) -> float | None:
        """Since when (as far as seen) the miner has been on ``active_pool_id``."""
        return self._active_pool_since

    def frozen_baseline(self, key: str) -> float | None:
        """A reference a rule froze for this miner (see rules.eval_hashrate_drop)."""
        return None if self._frozen is None else self._frozen.get(key)

    def freeze_baseline(self, key: str, value: float | None) -> None:
        """Keep (or with None, forget) a rule's frozen reference for this miner."""
        if value is None:
            if self._frozen is not None:
                self._frozen.pop(key, None)
                if not self._frozen:
                    self._frozen = None
        else:
            if self._frozen is None:
                self._frozen = {}
            self._frozen[key] = float(value)

    def forget_baselines(self, keep: Collection[str]) -> None:
        """Drop frozen references of rules not in ``keep`` (removed on reload)."""
        if self._frozen is not None:
            for key in [k for k in self._frozen if k not in keep]:
                del self._frozen[key]
            if not self._frozen:
                self._frozen = None

    # ------------------------------------------------------------------ queries

    def _between(self, start: float, end: float) -> tuple[int, int]:
        """The places [first, last) of the samples taken in [start, end]: its ends on the
        time grid, as the stored times (bisect on the time column, the first of the
        array, between _head and _end)."""
        a = self._a
        base = self._base
        return (
            bisect_left(a, (start - base + _ROUND) - _ROUND, self._head, self._end),
            bisect_right(a, (end - base + _ROUND) - _ROUND, self._head, self._end),
        )

    def median_hashrate(
        self, now: float, window_s: float, *, startup_grace_s: float = 0.0
    ) -> Median | None:
        """Median hashrate of the samples in [now - window_s, now], leaving out those
        taken less than ``startup_grace_s`` after a (re)start (``Elapsed`` below it) and
        those without a hashrate; None when no sample is left."""
        a = self._a
        start, end = self._between(now - window_s, now)
        if start >= end:
            return None
        cap = self._cap
        hs = a[cap + start : cap + end]
        values = sorted(hs)
        # Sum of the sorted list: about half the time of the array's (whose items become
        # float objects one by one), and any order tells whether one is NaN or infinite.
        total = sum(values)
        graced = () if self._young is None else self._in_grace(start, end, startup_grace_s)
        # Fast path, the usual case: every hashrate known (a NaN makes the sum NaN) and
        # no sample in a startup grace. (Without a grace, the other path still leaves out
        # the samples that gave a negative Elapsed, as it always did.)
        if total - total == 0 and (startup_grace_s <= 0 or not graced):
            first, last = 0, len(values) - 1
        else:
            kept = [h == h for h in hs]
            for i in graced:
                kept[i - start] = False
            if True not in kept:
                return None
            first = kept.index(True)
            last = len(kept) - 1 - kept[::-1].index(True)
            values = sorted(compress(hs, kept))
        n = len(values)
        middle = n // 2
        value = values[middle] if n % 2 else (values[middle - 1] + values[middle]) / 2
        return Median(value, n, a[start + last] - a[start + first])

    def _in_grace(self, start: int, end: int, grace_s: float) -> list[int]:
        """The places in [start, end) of the samples whose kept Elapsed is below
        ``grace_s`` (an Elapsed not kept is above any grace, see _young)."""
        return [i for i, elapsed in self._young_places() if start <= i < end and elapsed < grace_s]

    def hashrates(self, start: float, end: float) -> list[tuple[float, float]]:
        """``(time, hashrate)`` of the samples in [start, end] whose hashrate is known,
        oldest first (the status page draws its hour from them where this keeps it)."""
        a = self._a
        base = self._base
        first, last = self._between(start, end)
        at = self._cap
        return [
            (base + t, h)
            for t, h in zip(a[first:last], a[at + first : at + last], strict=True)
            if h == h
        ]

    def increase(self, counter: Counter, now: float, window_s: float) -> Increase | None:
        """How much a counter grew over [now - window_s, now], from the newest sample at
        or before the window's start (else the oldest one) to the newest sample; resets
        count from the new low. None with fewer than two samples where it is known."""
        a = self._a
        base = self._base
        shift = self._end - self._cend  # the counters of time index i are at i - shift
        oldest = self._chead + shift  # the oldest sample whose counters are kept
        # The window's ends on the time grid, as in median_hashrate.
        end = bisect_right(a, (now - base + _ROUND) - _ROUND, oldest, self._end)
        start = bisect_right(a, (now - window_s - base + _ROUND) - _ROUND, oldest, self._end) - 1
        if start < oldest:
            start = oldest
        if end - start < 2:
            return None
        c = self._c
        column = (0 if counter == "hardware_errors" else self._ccap) - shift
        total = sum(c[column + start + 1 : column + end])  # NaN when unknown somewhere
        anchor = c[column + start]
        if total - total == 0 and anchor == anchor:
            return Increase(total, a[end - 1] - a[start])
        added = c[column + start : column + end]
        known = [i for i, value in enumerate(added) if value == value]
        if len(known) < 2:
            return None
        # The first known sample is the anchor: what it added lies before the window.
        amount = math.fsum(added[i] for i in known[1:])
        return Increase(amount, a[start + known[-1]] - a[start + known[0]])

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: columns as base64 of little-endian arrays, NaN as null. The
        counters' columns are shorter where fewer of them are kept: the newest samples'."""
        columns = {}
        for (name, _), column in zip(_COLUMNS, self._columns(), strict=True):
            if sys.byteorder != "little":
                column.byteswap()  # a copy already
            columns[name] = base64.b64encode(column.tobytes()).decode("ascii")
        kept: dict[str, float] = {}
        if self._counter_retention_s is not None:
            kept["counter_retention_s"] = self._counter_retention_s
        if self._elapsed_kept_s is not None:
            kept["elapsed_kept_s"] = self._elapsed_kept_s
        return {
            "retention_s": self._retention_s,
            **kept,
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
    def from_dict(cls, data: Mapping[str, Any]) -> MinerHistory:
        """Inverse of :meth:`to_dict`; ValueError when malformed."""
        try:
            kept = data.get("counter_retention_s")
            young_kept = data.get("elapsed_kept_s")
            history = cls(
                float(data["retention_s"]),
                None if kept is None else float(kept),
                None if young_kept is None else float(young_kept),
            )
            columns = data["columns"]
            loaded = []
            for name, typecode in _COLUMNS:
                column = array("d") if typecode == "d" else array("f")
                column.frombytes(base64.b64decode(columns[name], validate=True))
                if sys.byteorder != "little":
                    column.byteswap()
                loaded.append(column)
            times, elapsed, hashrate, hw, work = loaded
            if len({len(times), len(elapsed), len(hashrate)}) != 1 or len(hw) != len(work):
                raise ValueError("columns differ in length")
            if len(hw) > len(times) or (times and not hw):
                raise ValueError("the counters' columns are longer than the times or empty")
            if any(b < a for a, b in pairwise(times)):
                raise ValueError("sample times go backwards")
            if times:
                history._lay_out(times, (hashrate,), times[-1], _capacity(len(times)))
                below = history._kept_below()
                if any(map(below.__gt__, elapsed)):  # a C loop; False for NaN
                    history._young = array("d", [
                        len(times), *(x for i, e in enumerate(elapsed) if e < below for x in (i, e))
                    ])  # fmt: skip
                count = len(hw)
                cap = history._ccap = _capacity(count)
                c = history._c = array("f", _ZERO) * (2 * cap)
                c[:count] = hw
                c[cap : cap + count] = work
                history._cend = count
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
            for key, value in frozen.items():
                history.freeze_baseline(str(key), float(value))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed miner history: {exc}") from None
        return history

    def _slices(self) -> list[array[float]]:
        """The stored part of each column: time offsets, then the figures (the counters'
        for the newest samples only, where fewer are kept)."""
        a = self._a
        head = self._head
        end = self._end
        cap = self._cap
        c = self._c
        chead = self._chead
        cend = self._cend
        ccap = self._ccap
        elapsed = array("f", (_NAN,)) * (end - head)
        for i, value in self._young_places():
            if i >= head:
                elapsed[i - head] = value
        return [
            a[head:end],
            elapsed,
            a[cap + head : cap + end],
            c[chead:cend],
            c[ccap + chead : ccap + cend],
        ]

    def _columns(self) -> list[array[float]]:
        """The columns as saved (see _COLUMNS): epochs as float64, the figures float32."""
        base = self._base
        times, *figures = self._slices()
        return [
            array("d", [base + t for t in times]),
            *(c if c.typecode == "f" else array("f", c) for c in figures),
        ]


def _retention(value: float | None) -> float | None:
    return None if value is None else max(0.0, float(value))


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None



def _nan_float(value: Any) -> float:
    return _NAN if value is None else float(value)


class FleetHistory:
    """The histories of every configured miner, by name."""

    __slots__ = ("_miners",)

    records_version: Final = _STATE_VERSION
    """The form of :meth:`records`, which a store saves beside them."""

    def __init__(self) -> None:
        self._miners: dict[str, MinerHistory] = {}

    def __len__(self) -> int:
        return len(self._miners)

    def __contains__(self, name: object) -> bool:
        return name in self._miners

    def __getitem__(self, name: str) -> MinerHistory:
        return self._miners[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._miners)

    def get(self, name: str) -> MinerHistory | None:
        """The miner's history, if it has one."""
        return self._miners.get(name)

    def miner(
        self,
        name: str,
        retention_s: float = DEFAULT_RETENTION_S,
        counter_retention_s: float | None = None,
        elapsed_kept_s: float | None = None,
    ) -> MinerHistory:
        """The miner's history, created empty (with these retentions) on first use."""
        history = self._miners.get(name)
        if history is None:
            history = self._miners[name] = MinerHistory(
                retention_s, counter_retention_s, elapsed_kept_s
            )
        return history

    def retain(self, names: Iterable[str]) -> None:
        """Forget miners that are no longer configured; the others are kept under the
        name objects given (the configuration's, not those a state file was read with)."""
        miners = self._miners
        self._miners = {name: miners[name] for name in names if name in miners}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the store (baselines survive a restart)."""
        return {"version": _STATE_VERSION, "miners": dict(self.records())}

    def records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Each miner's JSON-safe history, one at a time (``records_version`` tells their
        form): a store writes them as they come, never the fleet's as one document."""
        for name, history in self._miners.items():
            yield name, history.to_dict()


    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FleetHistory:
        """Inverse of :meth:`to_dict`; ValueError when malformed or of another version."""
        if not isinstance(data, Mapping) or data.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported history document (expected version {_STATE_VERSION})")
        miners = data.get("miners")
        if not isinstance(miners, Mapping):
            raise ValueError("malformed history document: 'miners' is not a mapping")
        return cls.from_records(miners.items(), _STATE_VERSION)

    @classmethod
    def from_records(
        cls, records: Iterable[tuple[str, Mapping[str, Any]]], version: object
    ) -> FleetHistory:
        """Inverse of :meth:`records`; ValueError when one is malformed or ``version`` is
        not :attr:`records_version`."""
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported history records (expected version {_STATE_VERSION})")
        fleet = cls()
        for name, record in records:
            if not isinstance(record, Mapping):
                raise ValueError(f"malformed history of miner {name!r}")
            fleet._miners[str(name)] = MinerHistory.from_dict(record)
        return fleet
