"""Per-miner sample history for the rule engine: compact, bounded, clock-free.

Each miner keeps, per answered poll, five figures in ``array.array`` columns (no object
per sample, 24 bytes a sample): the poll time, ``Elapsed``, the hashrate, and how much the
hardware-error and work counters grew since the previous answer. 10,000 miners x one
hour at a 30 s interval take about 40 MB. Unknown figures are NaN.

Samples older than ``retention_s`` are trimmed as new ones arrive, except the newest one
at or before the cut (the anchor a counter increase over exactly ``retention_s`` is
measured from). The engine sets ``retention_s`` to the longest window or baseline of the
rules that apply to the miner, and may change it on reload.

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
from collections.abc import Collection, Iterable, Iterator, Mapping
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
# Column type codes: time needs float64 (an epoch); Elapsed, hashrate and per-poll
# counter increases keep 7 significant digits in float32, which is plenty.
_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("t", "d"),
    ("elapsed", "f"),
    ("hashrate", "f"),
    ("hardware_errors_added", "f"),
    ("work_added", "f"),
)


class Sample(NamedTuple):
    """One stored poll (NaN for unknown figures); for inspection, not the hot path."""

    at: float
    elapsed_s: float
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
    def from_dict(cls, data: Mapping[str, Any]) -> MinerHistory:
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
            for key, value in frozen.items():
                history.freeze_baseline(str(key), float(value))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed miner history: {exc}") from None
        return history

    def _columns(self) -> tuple[array[float], ...]:
        return (self._t, self._el, self._hs, self._hw, self._work)


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

    def miner(self, name: str, retention_s: float = DEFAULT_RETENTION_S) -> MinerHistory:
        """The miner's history, created empty (with ``retention_s``) on first use."""
        history = self._miners.get(name)
        if history is None:
            history = self._miners[name] = MinerHistory(retention_s)
        return history

    def retain(self, names: Collection[str]) -> None:
        """Forget miners that are no longer configured."""
        for name in [n for n in self._miners if n not in names]:
            del self._miners[name]

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
