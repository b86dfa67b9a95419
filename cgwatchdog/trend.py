"""A compact hour of hashrate per miner, for the status page's sparklines.

The page shows each miner's last hour, a point a minute (the mean of that minute's
samples). Where the rule engine's history keeps an hour of the miner's samples (the
packaged ``HashrateDrop`` compares with an hour's median), the hour is read from it
when drawn and nothing is kept twice. For the other miners (rules that look back less,
an ``expected_hashrate`` instead of a baseline) :class:`HashrateTrend` keeps one
``float32`` slot per minute, in flat arrays shared by the whole fleet: 60 slots, their
sample counts and the minute each row last wrote, about 310 bytes a miner (3.1 MB at
10,000 miners, plus the name index). Old minutes are overwritten in place, so memory
stays flat however long the daemon runs. Pure: the clock is an argument, nothing here
does I/O.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable
from typing import Final

from cgwatchdog.history import MinerHistory

__all__ = ["BUCKETS", "BUCKET_S", "HashrateTrend"]

BUCKET_S: Final = 60.0
"""One slot per minute: enough for a sparkline, and a 5 s poll interval costs no more."""
BUCKETS: Final = 60
"""An hour of slots."""
_MAX_COUNT: Final = 255  # a slot's sample count saturates (an unsigned byte)
_NAN: Final = float("nan")
_NEVER: Final = -(2**62)  # the minute of a row that never wrote


class HashrateTrend:
    """The mean hashrate of each miner per minute, over the last hour.

    Feed it each cycle's ``(name, hashrate_hs)`` pairs with :meth:`record` (None for a
    miner that gave none: a gap); read one miner with :meth:`series`. Miners absent from
    a whole :meth:`record` call are forgotten.

    ``history`` gives a miner's rule history, if it has one: a miner whose history keeps
    the whole span (``retention_s`` of at least ``buckets * bucket_s``) is read from it
    and gets no row here. A miner whose history comes to keep the span (a reload that
    adds a baseline) shows what the history has so far; one whose history stops keeping
    it starts a row from its next sample.
    """

    def __init__(
        self,
        *,
        buckets: int = BUCKETS,
        bucket_s: float = BUCKET_S,
        history: Callable[[str], MinerHistory | None] | None = None,
    ) -> None:
        if buckets < 2 or bucket_s <= 0:
            raise ValueError("a trend needs at least two buckets of a positive width")
        self.buckets = buckets
        self.bucket_s = bucket_s
        self._history = history
        self._rows: dict[str, int] = {}
        self._values = array("f")  # rows x buckets; NaN: no sample in that minute
        self._counts = array("B")  # samples averaged into each slot
        self._minute = array("q")  # per row: the absolute bucket its newest slot holds

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def record(self, samples: Iterable[tuple[str, float | None]], now: float) -> None:
        """Add one cycle's hashrate (H/s) per miner at ``now``; forget the miners left out."""
        bucket = math.floor(now / self.bucket_s)
        width = self.buckets
        values, counts, minutes = self._values, self._counts, self._minute
        seen: set[str] = set()
        for name, hashrate_hs in samples:
            if self._kept_by_history(name) is not None:
                continue  # read from the history when drawn; its row, if any, goes
            seen.add(name)
            row = self._rows.get(name)
            if row is None:
                row = self._add(name)
            base = row * width
            last = minutes[row]
            if bucket > last:
                # Clear the minutes skipped since this row last wrote (at most an hour).
                for b in range(max(last + 1, bucket - width + 1), bucket + 1):
                    values[base + b % width] = _NAN
                    counts[base + b % width] = 0
                minutes[row] = bucket
            elif bucket < last:
                continue  # the clock went back: keep what is newer
            if hashrate_hs is None or not math.isfinite(hashrate_hs):
                continue
            slot = base + bucket % width
            n = counts[slot]
            mean = values[slot]
            values[slot] = hashrate_hs if n == 0 else mean + (hashrate_hs - mean) / (n + 1)
            counts[slot] = min(n + 1, _MAX_COUNT)
        if len(seen) < len(self._rows):
            self.retain(seen)

    def _add(self, name: str) -> int:
        row = len(self._rows)
        self._rows[name] = row
        self._values.extend(array("f", [_NAN]) * self.buckets)
        self._counts.extend(bytes(self.buckets))
        self._minute.append(_NEVER)
        return row

    def retain(self, names: Iterable[str]) -> None:
        """Forget every miner not in ``names`` (the fleet changed)."""
        wanted = set(names)
        keep = [(name, row) for name, row in self._rows.items() if name in wanted]
        if len(keep) == len(self._rows):
            return
        width = self.buckets
        values, counts, minutes = array("f"), array("B"), array("q")
        rows: dict[str, int] = {}
        for new_row, (name, row) in enumerate(keep):
            rows[name] = new_row
            values.extend(self._values[row * width : (row + 1) * width])
            counts.extend(self._counts[row * width : (row + 1) * width])
            minutes.append(self._minute[row])
        self._rows, self._values, self._counts, self._minute = rows, values, counts, minutes

    def _kept_by_history(self, name: str) -> MinerHistory | None:
        """The miner's rule history if it keeps the whole span shown."""
        history = None if self._history is None else self._history(name)
        if history is None or history.retention_s < self.buckets * self.bucket_s:
            return None
        return history

    def series(self, name: str, now: float) -> list[float | None]:
        """The miner's per-minute mean hashrate over the last hour, oldest first, ending
        with the minute of ``now``; None where there was no sample (or the miner is unknown)."""
        width = self.buckets
        history = self._kept_by_history(name)
        if history is not None:
            return self._series_of(history, now)
        row = self._rows.get(name)
        if row is None:
            return [None] * width
        bucket = math.floor(now / self.bucket_s)
        last = self._minute[row]
        base = row * width
        out: list[float | None] = []
        for b in range(bucket - width + 1, bucket + 1):
            if b > last or b <= last - width:
                out.append(None)
                continue
            value = self._values[base + b % width]
            out.append(None if math.isnan(value) else float(value))
        return out

    def _series_of(self, history: MinerHistory, now: float) -> list[float | None]:
        """:meth:`series` from the samples of a rule history that keeps the span."""
        width = self.buckets
        first = math.floor(now / self.bucket_s) - width + 1
        sums = [0.0] * width
        counts = [0] * width
        for at, hashrate_hs in history.hashrates(first * self.bucket_s, now):
            slot = math.floor(at / self.bucket_s) - first
            if 0 <= slot < width and math.isfinite(hashrate_hs):
                sums[slot] += hashrate_hs
                counts[slot] += 1
        return [total / n if n else None for total, n in zip(sums, counts, strict=True)]

    def memory_bytes(self) -> int:
        """What the arrays hold, in bytes (the name index is extra: ~100 bytes a miner)."""
        return (
            self._values.itemsize * len(self._values)
            + self._counts.itemsize * len(self._counts)
            + self._minute.itemsize * len(self._minute)
        )
