"""A compact hour of hashrate per miner, for the status page's sparklines.

The rule engine's history keeps only what the rules need (0 to 15 minutes); the page
shows the last hour. :class:`HashrateTrend` keeps, per miner, one ``float32`` slot per
minute (the mean of that minute's samples), in flat arrays shared by the whole fleet:
60 slots, their sample counts and the minute each row last wrote, about 310 bytes a
miner (3.1 MB at 10,000 miners, plus the name index). Old minutes are overwritten in
place, so memory stays flat however long the daemon runs. Pure: the clock is an
argument, nothing here does I/O.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from typing import Final

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
    """

    def __init__(self, *, buckets: int = BUCKETS, bucket_s: float = BUCKET_S) -> None:
        if buckets < 2 or bucket_s <= 0:
            raise ValueError("a trend needs at least two buckets of a positive width")
        self.buckets = buckets
        self.bucket_s = bucket_s
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

    def series(self, name: str, now: float) -> list[float | None]:
        """The miner's per-minute mean hashrate over the last hour, oldest first, ending
        with the minute of ``now``; None where there was no sample (or the miner is unknown)."""
        width = self.buckets
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

    def memory_bytes(self) -> int:
        """What the arrays hold, in bytes (the name index is extra: ~100 bytes a miner)."""
        return (
            self._values.itemsize * len(self._values)
            + self._counts.itemsize * len(self._counts)
            + self._minute.itemsize * len(self._minute)
        )
