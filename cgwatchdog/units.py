"""Units in and out: durations, hashrates, percentages and times, parsed and printed.

The config reads ``"500ms"``, ``"13.5 TH/s"`` and ``"80%"`` with the ``parse_*``
functions; messages, notifications and the command line print figures with the
``format_*`` ones, so a duration reads the same (``4m30s``) everywhere. Pure functions:
no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Final

__all__ = [
    "format_duration",
    "format_hashrate",
    "format_percent",
    "iso_seconds",
    "parse_duration",
    "parse_hashrate",
    "parse_ratio",
    "parse_rfc3339",
    "rfc3339",
    "short_time",
    "value_kind",
]


def value_kind(value: object) -> str:
    """What a YAML value is, in words, without showing it (it may be a secret)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        return "a date"
    return type(value).__name__


# --------------------------------------------------------------------------- parsing

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*(ms|s|m|h|d|w)")
_DURATION_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_HASHRATE = re.compile(rf"({_NUMBER}(?:e[+-]?\d+)?)\s*(?:([kmgtpe]?)h(?:/s|ps)?)?", re.IGNORECASE)
_HASHRATE_PREFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15, "e": 1e18}


def _finite(number: float, value: object, what: str) -> float:
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{value!r} is not {what}: it must be a finite number, not negative")
    return number


def _whole_number(value: int | float, what: str) -> float:
    """A YAML number as a float; an integer past float's range (10**400) is a ValueError."""
    try:
        return _finite(float(value), value, what)
    except OverflowError:
        raise ValueError(f"that number is too large for {what}") from None


def parse_duration(value: str | float) -> float:
    """``"500ms"``, ``"30s"``, ``"5m"``, ``"4h"``, ``"1d"``, ``"1h30m"`` or a number of
    seconds -> float seconds. Raises ValueError with a message for the operator."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration such as 30s or 5m, found {value_kind(value)}")
    if not isinstance(value, str):
        return _whole_number(value, "a duration")
    text = value.strip()
    try:
        return _finite(float(text), value, "a duration")
    except ValueError:
        pass
    seconds, pos = 0.0, 0
    while pos < len(text):
        part = _DURATION_PART.match(text, pos)
        if part is None:
            break
        seconds += float(part[1]) * _DURATION_UNIT_S[part[2]]
        pos = part.end()
    if not text or pos < len(text):
        raise ValueError(f"{value!r} is not a duration; write e.g. 500ms, 30s, 5m, 4h, 1d or 1h30m")
    return _finite(seconds, value, "a duration")  # 400 digits and a unit overflow to inf


def parse_hashrate(value: str | float) -> float:
    """``"13.5 TH/s"``, ``"90TH"``, ``"500 GH/s"``, ``"3.2 MH/s"`` or a number of H/s
    -> float H/s. Raises ValueError with a message for the operator."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a hashrate such as 13.5 TH/s, found {value_kind(value)}")
    if not isinstance(value, str):
        return _whole_number(value, "a hashrate")
    found = _HASHRATE.fullmatch(value.strip())
    if found is None:
        raise ValueError(
            f"{value!r} is not a hashrate; write e.g. 13.5 TH/s, 500 GH/s, 90TH "
            "or a plain number of H/s"
        )
    prefix = (found[2] or "").lower()
    return _finite(float(found[1]) * _HASHRATE_PREFIX[prefix], value, "a hashrate")


def parse_ratio(value: str | float) -> float:
    """``"80%"`` -> 0.8; a plain number is taken as a fraction (0.8). Must lie in 0..1."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a percentage such as 80%, found {value_kind(value)}")
    text = value.strip() if isinstance(value, str) else ""
    try:
        if text.endswith("%"):
            ratio = float(text[:-1]) / 100.0
        else:
            ratio = float(text if isinstance(value, str) else value)
    except (ValueError, OverflowError):  # OverflowError: an integer such as 10**400
        raise ValueError(
            f"{value!r} is not a ratio; write a percentage such as 80% or a fraction such as 0.8"
        ) from None
    if not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"{value!r} is not a ratio between 0% and 100%")
    if ratio > 1:
        hint = "" if text.endswith("%") else f"; write {value}% if you mean a percentage"
        raise ValueError(f"{value!r} is more than 100%{hint}")
    return ratio



# --------------------------------------------------------------------------- printing

_HASHRATE_UNITS: Final = (
    ("H/s", 1.0),
    ("kH/s", 1e3),
    ("MH/s", 1e6),
    ("GH/s", 1e9),
    ("TH/s", 1e12),
    ("PH/s", 1e15),
    ("EH/s", 1e18),
)


def format_hashrate(hs: float) -> str:
    """``1.35e13`` -> ``"13.5 TH/s"``; three significant figures, H/s to EH/s."""
    if not math.isfinite(hs):
        return "unknown"
    size = abs(hs)
    index = 0
    while index + 1 < len(_HASHRATE_UNITS) and size >= _HASHRATE_UNITS[index + 1][1]:
        index += 1
    while True:
        unit, scale = _HASHRATE_UNITS[index]
        scaled = hs / scale
        digits = 1 if abs(scaled) < 100 else 0
        if round(abs(scaled), digits) >= 1000 and index + 1 < len(_HASHRATE_UNITS):
            index += 1  # 999.96 GH/s reads 1.0 TH/s, not 1000 GH/s
            continue
        if scaled == 0:
            return f"0 {unit}"
        return f"{scaled:.{digits}f} {unit}"


def format_duration(seconds: float) -> str:
    """``840`` -> ``"14m"``, ``270`` -> ``"4m30s"``, ``7500`` -> ``"2h05m"``; under ten
    seconds a fraction is kept (``"0.5s"``)."""
    if not math.isfinite(seconds):
        return "unknown"
    if 0 < seconds < 10 and seconds != int(seconds):
        return f"{seconds:.2g}s"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 600:
        minutes, rest = divmod(s, 60)
        return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        hours, rest = divmod(s // 60, 60)
        return f"{hours}h{rest:02d}m" if rest else f"{hours}h"
    days, rest = divmod(s // 3600, 24)
    return f"{days}d{rest}h" if rest else f"{days}d"


def format_percent(ratio: float) -> str:
    """``0.032`` -> ``"3.2%"``; small ratios keep two significant digits (``0.018%``)."""
    if not math.isfinite(ratio):
        return "unknown"
    percent = ratio * 100
    if percent == 0:
        return "0%"
    if abs(percent) >= 10:
        return f"{percent:.0f}%"
    if abs(percent) >= 1:
        return f"{percent:.1f}%"
    return f"{percent:.2g}%"



# --------------------------------------------------------------------------- times


def rfc3339(ts: float) -> str:
    """Epoch seconds as RFC 3339 in UTC (``2026-11-25T21:00:00.5Z``), as Alertmanager takes."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def iso_seconds(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC to the second (``2026-11-25T21:00:00Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def short_time(ts: float) -> str:
    """Epoch seconds as a short UTC time for people (``2026-11-25 21:00 UTC``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_rfc3339(text: object) -> float | None:
    """Epoch seconds of an RFC 3339 time (``2026-11-25T21:00:00.123456789Z``, any number
    of fractional digits, ``Z`` or ``±hh:mm``); None if ``text`` is not one."""
    if not isinstance(text, str):
        return None
    found = _RFC3339.fullmatch(text.strip())
    if found is None:
        return None
    year, month, day, hour, minute, second = (int(found[i]) for i in range(1, 7))
    zone = found[8]
    try:
        if zone in ("Z", "z"):
            tz = UTC
        else:
            sign = -1 if zone[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        whole = datetime(year, month, day, hour, minute, second, tzinfo=tz).timestamp()
    except (ValueError, OverflowError):
        return None
    return whole + (float("0." + found[7]) if found[7] else 0.0)
