"""One normalized, immutable view of a miner at an instant.

:func:`build_snapshot` turns the decoded replies of one miner (command -> reply dict, as
protocol.py decodes them) into a :class:`Snapshot`: hashrate in H/s, devices (ASC/PGA/GPU
from ``devs``, else boards from STATS), pools, temperatures, fans, counters. It is pure (no
I/O, no clock: the poll time ``at`` is an argument) and never raises on odd input: a field
of the wrong type, a missing key or a reply with STATUS E/F simply yields ``None`` / nothing.

Where each figure comes from (first source that has it wins):

hashrate
    the shortest window a miner reports, else its average, else the sum of its devices
    or boards. Windows are ranked 5s, 20s, rolling, 30s, 1m, 5m, 15m, 24h,
    then ``av``, in any unit (KHS/MHS/GHS/THS/PHS ``<window>``, numbers or strings). A
    window is used only once the miner's ``Elapsed`` (per device: ``Device Elapsed``) covers
    three times its length: before that it is still filling and reads low -- BOSminer's
    ``MHS 24h`` says 0.56 TH/s an hour after a start, cgminer's decaying ``MHS 15m`` 65% of
    the rate after 15 minutes. When ``Elapsed`` is unknown only windows up to 1 minute rank
    before ``av``; longer ones are a last resort. Whole-miner figures come first, a window
    from any of them before an average: SUMMARY, the bmminer STATS entry (``GHS 5s``/
    ``GHS av``), Avalon ``MM ID<n>`` ``GHSavg``; then the sum of ``devs``; then the sum of
    boards (bmminer ``chain_rateN`` in the unit of the entry's own keys, Avalon ``MGHS``).
devices
    ``devs`` (STATUS E Code 10 "No ASCs"/"No PGAs" means none) or, only when it gives none,
    the boards bmminer-style STATS describe (slots with ``chain_acnN`` > 0, any of 1..16),
    else the boards of an Avalon ``MM ID<n>`` string (one per ``MGHS`` value).
pools
    ``pools``; unconfigured slots (``URL`` "", e.g. bmminer's third slot) are not pools and
    are left out (their count is kept in ``extra["unconfigured_pools"]``).
temperature
    the hottest plausible reading anywhere: devices/boards, bmminer ``temp_max``, Whatsminer
    ``Chip Temp Max``/``Temperature``, BOSminer ``temps``, Avalon ``TMax``. Readings of 0
    (cgminer's "no sensor"), <= -50 (-273, -83: absent or broken sensors) and > 200 are
    ignored.
fans
    BOSminer ``fans``, else STATS ``fan1``..``fan16`` / Avalon ``Fan1``..``Fan4``, else
    SUMMARY ``Fan Speed In``/``Out`` (Whatsminer) or ``Fan1``..``Fan8`` (StrongU); only fans
    that turn (> 0 RPM).
pool ``last_share_age_s``
    relative to the pools reply's STATUS ``When`` (the miner's own clock, so it also works
    where the clock is unset and both are seconds since boot). ``Last Share Time`` may be
    an epoch, ``"H:MM:SS"`` (already an age), or a ``ctime()`` date in the miner's local
    time zone (StrongU: ``"Tue Jun 16 10:16:42 2020\\n"``). The zone of such a date is
    learned from a "never" date in the same reply (epoch 0 as rendered, ``"Thu Jan  1
    08:00:00 1970"`` = UTC+8) or from the ``devs`` epochs of the same shares; when neither
    is available the age is ``None`` (unknown) rather than a guess hours off. 0, "0" and
    epoch-0 dates mean no share yet: ``None``.
"""

from __future__ import annotations

import calendar
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field
from types import MappingProxyType
from typing import Any, NamedTuple, TypeGuard, TypeVar

from cgwatchdog.errors import FailureKind

__all__ = [
    "FIELD_DOCS",
    "FIELD_PATHS",
    "Device",
    "Learned",
    "PollResult",
    "Pool",
    "Refusal",
    "Snapshot",
    "Unreachable",
    "build_snapshot",
    "parse_avalon_mm",
]

# Temperatures outside this range are placeholders or broken sensors (-273 on Avalon devs,
# -83 on a dead S9 chip sensor), not readings.
MIN_PLAUSIBLE_TEMP_C = -50.0
MAX_PLAUSIBLE_TEMP_C = 200.0

# cgminer's "MHS 1m/5m/15m" are exponentially decaying averages (decay_time) with the
# window as time constant: one window after a start they show ~63% of the rate (Avalon
# 1566: MHS 15m 124.6 TH/s against 192.8 at Device Elapsed 924 s), three windows ~95%.
# A window is used once Elapsed covers this many of it.
_WINDOW_SETTLE_FACTOR = 3.0

# When a miner's Elapsed is unknown, windows up to this length are trusted before "av".
_TRUSTED_WINDOW_S = 60.0

# A share "in the future" by more than this is a clock problem, not a share: age unknown.
_MAX_CLOCK_SKEW_S = 300.0

# Time zones are whole quarter hours within UTC-12..UTC+14.
_TZ_STEP_S = 900
_TZ_MIN_S = -12 * 3600
_TZ_MAX_S = 14 * 3600

# Counters past this are garbage (and would overflow float arithmetic in ratios).
_MAX_COUNTER = 2**63

# Below this an epoch-like number is seconds since boot (Avalon with its clock unset).
_EPOCH_MIN = 1e9

_UNITS: tuple[tuple[str, float], ...] = (
    ("MHS", 1e6),
    ("GHS", 1e9),
    ("THS", 1e12),
    ("KHS", 1e3),
    ("PHS", 1e15),
)
_WINDOWS: tuple[tuple[str, float], ...] = (
    ("5s", 5.0),
    ("20s", 20.0),  # bfgminer reports MHS 20s where cgminer has MHS 5s
    ("rolling", 20.0),  # bfgminer's rolling average
    ("30s", 30.0),  # Avalon cgminer 4.11 has no 5s window
    ("1m", 60.0),
    ("5m", 300.0),
    ("15m", 900.0),
    ("24h", 86400.0),  # BOSminer
)
_WINDOW_KEYS: tuple[tuple[str, float, float], ...] = tuple(
    (f"{unit} {window}", seconds, scale) for window, seconds in _WINDOWS for unit, scale in _UNITS
)
_AVERAGE_KEYS: tuple[tuple[str, float], ...] = tuple(
    (f"{unit} av", scale) for unit, scale in _UNITS
)

_ERROR_LETTERS = frozenset({"E", "F"})
_DEVICE_KINDS: tuple[str, ...] = ("ASC", "PGA", "GPU", "CPU")
_CHAIN_SLOTS = range(0, 17)  # bmminer slots 1..16 (S9 boards sit in 6..8); 0 for safety
_CHAIN_KEYS: tuple[tuple[int, str, str, str, tuple[str, ...]], ...] = tuple(
    (
        n,
        f"chain_acn{n}",
        f"chain_rate{n}",
        f"chain_hw{n}",
        (f"temp{n}", f"temp2_{n}", f"temp3_{n}", f"temp_pcb{n}", f"temp_chip{n}"),
    )
    for n in _CHAIN_SLOTS
)
_STATS_FAN_KEYS: tuple[str, ...] = tuple(f"fan{n}" for n in range(1, 17))
_MM_FAN_KEYS: tuple[str, ...] = ("Fan1", "Fan2", "Fan3", "Fan4")
_SUMMARY_FAN_KEYS: tuple[str, ...] = tuple(f"Fan{n}" for n in range(1, 9))
_WHATSMINER_FAN_KEYS: tuple[str, ...] = ("Fan Speed In", "Fan Speed Out")
_RATE_UNIT_SCALE: dict[str, float] = {
    "KH/S": 1e3,
    "MH/S": 1e6,
    "GH/S": 1e9,
    "TH/S": 1e12,
    "PH/S": 1e15,
}

# VERSION keys naming the program, most specific first (bmminer also carries CGMiner keys
# on some builds; BOSminer+ is the Braiins OS+ flavour).
_FORK_NAMES: dict[str, tuple[int, str]] = {
    "bosminer+": (0, "BOSminer+"),
    "bosminer": (1, "BOSminer"),
    "bmminer": (2, "bmminer"),
    "luxminer": (3, "LUXminer"),
    "btminer": (4, "btminer"),
    "bfgminer": (5, "bfgminer"),
    "sgminer": (6, "sgminer"),
    "cgminer": (7, "cgminer"),
}
_HEX_DIGITS = frozenset("0123456789abcdef")

_MONTHS: dict[str, int] = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}

_SECTIONS: dict[str, str] = {
    "version": "VERSION",
    "summary": "SUMMARY",
    "devs": "DEVS",
    "pools": "POOLS",
    "stats": "STATS",
    "estats": "STATS",
    "fans": "FANS",
    "temps": "TEMPS",
    "devdetails": "DEVDETAILS",
}

_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Texts every snapshot of a miner repeats (statuses, pool URLs and users, names, where
# a figure came from, the fork, API version and model) are interned: one object each
# instead of one per snapshot, ~1 KB a miner for each cycle's snapshots held at 10,000
# miners (``benchmarks/RESULTS.md``).
_intern = sys.intern
_NO_REFUSALS: Mapping[str, Refusal] = MappingProxyType({})


# --------------------------------------------------------------------------- the view


@dataclass(frozen=True, slots=True)
class Device:
    """One hashing device: an ASC/PGA/GPU/CPU from ``devs`` or a board from STATS."""

    id: int
    kind: str
    name: str
    status: str
    enabled: bool = True
    hashrate_hs: float | None = None
    temperature_c: float | None = None
    hardware_errors: int | None = None
    diff1_work: float | None = None

    def to_json(self) -> dict[str, object]:
        """The device object of ``poll --json``."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "enabled": self.enabled,
            "hashrate_hs": self.hashrate_hs,
            "temperature_c": self.temperature_c,
            "hardware_errors": self.hardware_errors,
        }


@dataclass(frozen=True, slots=True)
class Pool:
    """One configured pool, with the age of its last accepted share."""

    id: int
    url: str
    user: str = ""
    status: str = "Unknown"
    priority: int = 0
    active: bool = False
    accepted: int = 0
    rejected: int = 0
    stale: int = 0
    last_share_age_s: float | None = None
    stale_ratio: float | None = None

    def to_json(self) -> dict[str, object]:
        """The pool object of ``poll --json``."""
        return {
            "id": self.id,
            "url": self.url,
            "user": self.user,
            "status": self.status,
            "priority": self.priority,
            "active": self.active,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "stale": self.stale,
            "last_share_age_s": self.last_share_age_s,
            "stale_ratio": self.stale_ratio,
        }


@dataclass(frozen=True, slots=True)
class Learned:
    """What a first contact taught of a miner, for the snapshots of later polls (which
    do not ask VERSION again): its firmware family and the identity VERSION gave."""

    family: str | None = None
    firmware_version: str | None = None
    fork: str | None = None
    api_version: str | None = None


_NOTHING_LEARNED = Learned()


@dataclass(frozen=True, slots=True)
class Refusal:
    """A command the miner answered with STATUS E or F this poll.

    ``code`` is None when the miner sent no readable Code. ``devs`` Code 10 ("No ASCs")
    and ``pools`` Code 8 ("No pools") are refusals that say something about the miner.
    """

    code: int | None
    msg: str = ""
    status: str = "E"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A miner that answered, normalized: units in H/s, degrees C, RPM, seconds."""

    name: str
    host: str
    port: int
    at: float
    fork: str | None = None
    description: str | None = None
    api_version: str | None = None
    model: str | None = None
    elapsed_s: float | None = None
    hashrate_hs: float | None = None
    hashrate_source: str | None = None
    hardware_errors: int | None = None
    diff1_work: float | None = None
    accepted: int | None = None
    rejected: int | None = None
    stale: int | None = None
    temperature_max_c: float | None = None
    fans_rpm: tuple[int, ...] = ()
    devices: tuple[Device, ...] = ()
    pools: tuple[Pool, ...] = ()
    extra: Mapping[str, Any] = dataclass_field(default_factory=lambda: _EMPTY)
    fans_expected: int | None = None
    """Fan slots the firmware says it drives (bmminer ``fan_num``, StrongU ``Fan Num``)."""
    hardware_error_ratio_reported: float | None = None
    """The miner's own ``Device Hardware%`` / 100, used when ``diff1_work`` is unknown."""
    difficulty_accepted: float | None = None
    """SUMMARY ``Difficulty Accepted`` (diff1 units): work done where Diff1 Work is absent."""
    refused: Mapping[str, Refusal] = dataclass_field(default_factory=lambda: _NO_REFUSALS)
    """The commands of this poll the miner answered with STATUS E/F, by command name."""
    family: str | None = None
    """The firmware family the poller recognised (``antminer``, ``whatsminer``, ...)."""
    firmware_version: str | None = None
    """The firmware's version as its family reads it from the replies."""

    @property
    def up(self) -> bool:
        """Always True: an unreachable miner is not a Snapshot."""
        return True

    @property
    def error_kind(self) -> FailureKind | None:
        """Always None: the poll succeeded (see :attr:`Unreachable.kind`)."""
        return None

    @property
    def hardware_error_ratio(self) -> float | None:
        """Hardware errors among work done: hw / (hw + diff1 work), 0..1."""
        hw = self.hardware_errors
        work = self.diff1_work
        if hw is not None and work is not None and hw + work > 0:
            return hw / (hw + work)
        return self.hardware_error_ratio_reported

    @property
    def active_pool(self) -> Pool | None:
        """The pool the miner is mining on now, if any."""
        for pool in self.pools:
            if pool.active:
                return pool
        return None

    def field(self, path: str) -> float | None:
        """A normalized figure by name, for ``threshold`` rules; None when unknown.

        Paths (``FIELD_PATHS``): ``hashrate`` (= ``hashrate_hs``), ``temperature.max``
        (= ``temperature_max_c``), ``fans.min``, ``fans.max``, ``fans.count``,
        ``fans.missing`` (``fans_expected`` minus turning fans), ``elapsed``
        (= ``elapsed_s``), ``hardware_errors``, ``hardware_error_ratio``, ``diff1_work``,
        ``accepted``, ``rejected``, ``stale``, ``devices.count``, ``devices.alive``,
        ``devices.not_alive`` (enabled devices whose status is not Alive),
        ``devices.disabled``, ``devices.hashrate.min``, ``devices.temperature.max``,
        ``pools.count``, ``pools.alive``, ``pools.active.last_share_age``,
        ``pools.active.stale_ratio``, ``pools.active.alive`` (1 or 0),
        ``pools.active.accepted``, ``pools.active.rejected``.
        """
        getter = _FIELD_GETTERS.get(path)
        return None if getter is None else getter(self)

    def to_json(self) -> dict[str, object]:
        """The per-miner object of ``poll --json``, without ``labels`` and ``alerts``."""
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "up": True,
            "error": None,
            "error_kind": None,
            "family": self.family,
            "firmware_version": self.firmware_version,
            "fork": self.fork,
            "model": self.model,
            "elapsed_s": self.elapsed_s,
            "hashrate_hs": self.hashrate_hs,
            "hashrate_source": self.hashrate_source,
            "hardware_error_ratio": self.hardware_error_ratio,
            "temperature_max_c": self.temperature_max_c,
            "fans_rpm": list(self.fans_rpm),
            "devices": [device.to_json() for device in self.devices],
            "pools": [pool.to_json() for pool in self.pools],
        }


@dataclass(frozen=True, slots=True)
class Unreachable:
    """A miner that gave no usable answer this poll, and why."""

    name: str
    host: str
    port: int
    at: float
    error: str
    """One line for the operator, e.g. ``connection refused: is the API enabled ...``."""
    kind: FailureKind
    family: str | None = None
    """The firmware family recognised at an earlier poll, if any."""
    firmware_version: str | None = None

    @property
    def up(self) -> bool:
        """Always False; a Snapshot's ``up`` is True."""
        return False

    @property
    def error_kind(self) -> FailureKind:
        """Why the poll failed (``error_kind`` in ``poll --json``)."""
        return self.kind

    def to_json(self) -> dict[str, object]:
        """The per-miner object of ``poll --json`` for a miner that is down."""
        return {
            "name": self.name, "host": self.host, "port": self.port, "up": False,
            "error": self.error, "error_kind": self.kind.value, "family": self.family,
            "firmware_version": self.firmware_version, "fork": None,
            "elapsed_s": None, "hashrate_hs": None, "hardware_error_ratio": None,
            "temperature_max_c": None, "fans_rpm": [], "devices": [], "pools": [],
        }  # fmt: skip


PollResult = Snapshot | Unreachable
"""What polling one miner gives: its snapshot, or why there is none."""


_T = TypeVar("_T")


def _fast_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A positional constructor of a frozen slotted dataclass, about 4x cheaper than its
    ``__init__``: every field must be given, in order.

    A frozen dataclass's ``__init__`` stores each field with ``object.__setattr__`` (a
    generic attribute lookup per field); here a mutable twin with the same slots is
    filled with plain attribute stores, then given the frozen class (the layouts are the
    same, so Python allows it). The result is an ordinary instance of ``cls``. Built
    from ``dataclasses.fields`` as dataclasses builds ``__init__``, so a field added to
    the class is never left out. Snapshots of 10,000 miners are built every cycle.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    twin = type(f"_{cls.__name__}Fields", (), {"__slots__": cls.__slots__})  # type: ignore[attr-defined]
    body = "".join(f"    o.{name} = {name}\n" for name in names)
    source = (
        f"def make({', '.join(names)}):\n    o = new(twin)\n{body}    o.__class__ = cls\n"
        "    return o\n"
    )
    namespace: dict[str, Any] = {"new": object.__new__, "twin": twin, "cls": cls}
    exec(source, namespace)  # our own field names, as dataclasses does
    make: Callable[..., _T] = namespace["make"]
    return make


_new_device = _fast_constructor(Device)
_new_pool = _fast_constructor(Pool)
_new_snapshot = _fast_constructor(Snapshot)


def _count_alive_devices(s: Snapshot) -> float:
    return float(sum(1 for d in s.devices if d.status == "Alive"))


def _count_not_alive_devices(s: Snapshot) -> float:
    return float(sum(1 for d in s.devices if d.enabled and d.status != "Alive"))


def _fans_missing(s: Snapshot) -> float | None:
    if s.fans_expected is None:
        return None
    return float(max(0, s.fans_expected - len(s.fans_rpm)))


def _min_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _max_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _as_float(value: int | float | None) -> float | None:
    return None if value is None else float(value)


def _active_attr(name: str) -> Callable[[Snapshot], float | None]:
    def get(s: Snapshot) -> float | None:
        pool = s.active_pool
        return None if pool is None else _as_float(getattr(pool, name))

    return get


def _active_alive(s: Snapshot) -> float | None:
    pool = s.active_pool
    return None if pool is None else float(pool.status == "Alive")


_FIELD_GETTERS: dict[str, Callable[[Snapshot], float | None]] = {
    "hashrate": lambda s: s.hashrate_hs,
    "hashrate_hs": lambda s: s.hashrate_hs,
    "temperature.max": lambda s: s.temperature_max_c,
    "temperature_max_c": lambda s: s.temperature_max_c,
    "fans.min": lambda s: float(min(s.fans_rpm)) if s.fans_rpm else None,
    "fans.max": lambda s: float(max(s.fans_rpm)) if s.fans_rpm else None,
    "fans.count": lambda s: float(len(s.fans_rpm)),
    "fans.missing": _fans_missing,
    "elapsed": lambda s: s.elapsed_s,
    "elapsed_s": lambda s: s.elapsed_s,
    "hardware_errors": lambda s: _as_float(s.hardware_errors),
    "hardware_error_ratio": lambda s: s.hardware_error_ratio,
    "diff1_work": lambda s: s.diff1_work,
    "accepted": lambda s: _as_float(s.accepted),
    "rejected": lambda s: _as_float(s.rejected),
    "stale": lambda s: _as_float(s.stale),
    "devices.count": lambda s: float(len(s.devices)),
    "devices.alive": _count_alive_devices,
    "devices.not_alive": _count_not_alive_devices,
    "devices.disabled": lambda s: float(sum(1 for d in s.devices if not d.enabled)),
    "devices.hashrate.min": lambda s: _min_or_none([d.hashrate_hs for d in s.devices]),
    "devices.temperature.max": lambda s: _max_or_none([d.temperature_c for d in s.devices]),
    "pools.count": lambda s: float(len(s.pools)),
    "pools.alive": lambda s: float(sum(1 for p in s.pools if p.status == "Alive")),
    "pools.active.last_share_age": _active_attr("last_share_age_s"),
    "pools.active.stale_ratio": _active_attr("stale_ratio"),
    "pools.active.alive": _active_alive,
    "pools.active.accepted": _active_attr("accepted"),
    "pools.active.rejected": _active_attr("rejected"),
}

FIELD_PATHS: frozenset[str] = frozenset(_FIELD_GETTERS)
"""Every path :meth:`Snapshot.field` knows, for validating ``threshold`` rules."""

FIELD_DOCS: Mapping[str, str] = {
    "hashrate": "the miner's hashrate, H/s (write 12 TH/s)",
    "hashrate_hs": "the same as hashrate",
    "temperature.max": "the hottest plausible reading anywhere on the miner, °C",
    "temperature_max_c": "the same as temperature.max",
    "fans.min": "the slowest turning fan, RPM",
    "fans.max": "the fastest fan, RPM",
    "fans.count": "fans turning",
    "fans.missing": "fans the firmware drives that do not turn",
    "elapsed": "seconds since the mining process started (write 10m)",
    "elapsed_s": "the same as elapsed",
    "hardware_errors": "hardware errors since the start (a counter)",
    "hardware_error_ratio": "hardware errors among work done since the start (write 1%)",
    "diff1_work": "work done since the start, in difficulty-1 shares (a counter)",
    "accepted": "shares accepted since the start",
    "rejected": "shares rejected since the start",
    "stale": "stale shares since the start",
    "devices.count": "devices (ASC/PGA/GPU, or boards)",
    "devices.alive": "devices whose status is Alive",
    "devices.not_alive": "enabled devices whose status is not Alive",
    "devices.disabled": "disabled devices",
    "devices.hashrate.min": "the slowest device's hashrate, H/s",
    "devices.temperature.max": "the hottest device, °C",
    "pools.count": "configured pools",
    "pools.alive": "pools whose status is Alive",
    "pools.active.last_share_age": "seconds since the active pool accepted a share",
    "pools.active.stale_ratio": "the active pool's stale shares among those submitted",
    "pools.active.alive": "1 if the active pool is Alive, else 0",
    "pools.active.accepted": "shares the active pool accepted",
    "pools.active.rejected": "shares the active pool rejected",
}
"""What each field holds, in its unit (docs/RULES.md shows them)."""


# --------------------------------------------------------------------------- value helpers


def _num(value: object) -> float | None:
    """A finite number from a number or a numeric string ("13883.81"); else None."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            return None
    if type(value) is str:
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _scaled(value: float | None, scale: float) -> float | None:
    """A non-negative figure times its unit, None when absent, negative or overflowing."""
    if value is None or value < 0:
        return None
    result = value * scale
    return result if result != math.inf else None


def _count(value: object) -> int | None:
    """A non-negative counter; "156.0000" (Hammer) counts as 156."""
    if type(value) is int:
        return value if 0 <= value <= _MAX_COUNTER else None
    number = _num(value)
    if number is None or not 0 <= number <= _MAX_COUNTER:
        return None
    return int(number)


def _text(value: object) -> str | None:
    return value.strip() if type(value) is str else None


def _temp(value: object) -> float | None:
    """A plausible temperature in C; 0, placeholders and broken sensors are None."""
    f = _num(value)
    if f is None or f == 0.0 or f <= MIN_PLAUSIBLE_TEMP_C or f > MAX_PLAUSIBLE_TEMP_C:
        return None
    return f


def _hottest(value: object) -> float | None:
    """The hottest reading in a number, a numeric string or a dash list "59-57-59-57"."""
    if type(value) is str:
        text = value
        if "-" in text[1:]:
            best: float | None = None
            for part in text.split("-"):
                t = _temp(part) if part else None
                if t is not None and (best is None or t > best):
                    best = t
            return best
    return _temp(value)


def _max(current: float | None, value: float | None) -> float | None:
    if value is None:
        return current
    if current is None or value > current:
        return value
    return current


def _is_map(value: object) -> TypeGuard[Mapping[str, Any]]:
    return type(value) is dict or isinstance(value, Mapping)  # dict first: ABC checks cost


def _read_reply(reply: object, section: str) -> tuple[Mapping[str, Any] | None, list[Any]]:
    """(STATUS object, entries of the section); no entries when the STATUS is E or F."""
    if type(reply) is list:  # a multi-command reply's per-command list: [reply]
        reply = reply[0] if reply else None
    if not _is_map(reply):
        return None, []
    status = reply.get("STATUS")
    if type(status) is list:
        status = status[0] if status else None
    if type(status) is dict or _is_map(status):
        letter = status.get("STATUS")
        if type(letter) is str and letter in _ERROR_LETTERS:
            return status, []
    elif _is_error(status):  # cgminer's bare {"STATUS":"RESTART"} strings
        return None, []
    else:
        status = None
    body = reply.get(section)
    if type(body) is list:
        # dict first, inline: the ABC check (and a call) only for odd entries
        return status, [entry for entry in body if type(entry) is dict or _is_map(entry)]
    if _is_map(body):
        return status, [body]
    return status, []


def _is_error(letter: object) -> bool:
    return type(letter) is str and letter in _ERROR_LETTERS


# --------------------------------------------------------------------------- hashrate


# How good a hashrate figure is: a short window, the average since start, a window whose
# fill cannot be judged (Elapsed unknown).
_RANK_WINDOW = 0
_RANK_AVERAGE = 1
_RANK_UNJUDGED = 2


class _Rate(NamedTuple):
    hs: float
    key: str  # the reply key it came from, e.g. "MHS 5s"
    rank: int  # _RANK_WINDOW, _RANK_AVERAGE or _RANK_UNJUDGED: lower is better


def _window_hashrate(entry: Mapping[str, Any], elapsed: float | None) -> _Rate | None:
    """The shortest usable window of an entry, else its average."""
    get = entry.get
    late: _Rate | None = None
    for key, seconds, scale in _WINDOW_KEYS:
        raw = get(key)
        if raw is None:
            continue
        if elapsed is not None:
            if seconds * _WINDOW_SETTLE_FACTOR > elapsed:
                continue  # the window is still filling: its figure is diluted
        elif seconds > _TRUSTED_WINDOW_S:
            if late is None:
                value = _scaled(_num(raw), scale)
                if value is not None:
                    late = _Rate(value, key, _RANK_UNJUDGED)
            continue
        value = _scaled(_num(raw), scale)
        if value is not None:
            return _Rate(value, key, _RANK_WINDOW)
    for key, scale in _AVERAGE_KEYS:
        raw = get(key)
        if raw is None:
            continue
        value = _scaled(_num(raw), scale)
        if value is not None:
            return _Rate(value, key, _RANK_AVERAGE)
    return late


def _elapsed(entry: Mapping[str, Any], key: str = "Elapsed") -> float | None:
    value = _num(entry.get(key))
    return value if value is not None and value >= 0 else None


# --------------------------------------------------------------------------- Avalon


def parse_avalon_mm(text: str) -> dict[str, str]:
    """Split an Avalon ``MM ID<n>`` string of ``KEY[value]`` tokens into a dict.

    ``"Fan1[2896] FanR[31%] MGHS[12362.61 12812.16]"`` ->
    ``{"Fan1": "2896", "FanR": "31%", "MGHS": "12362.61 12812.16"}``. Values stay text;
    a key seen twice keeps its last value, like the JSON decoder.
    """
    out: dict[str, str] = {}
    find = text.find
    start = 0
    while True:
        open_at = find("[", start)
        if open_at < 0:
            break
        close_at = find("]", open_at + 1)
        if close_at < 0:
            break
        key = text[start:open_at].strip()
        if key:
            out[key] = text[open_at + 1 : close_at]
        start = close_at + 1
    return out


def _mm_numbers(mm: Mapping[str, str], key: str) -> list[float | None]:
    raw = mm.get(key)
    if raw is None:
        return []
    return [_num(part) for part in raw.split()]


def _mm_number(mm: Mapping[str, str], key: str) -> float | None:
    raw = mm.get(key)
    return None if raw is None else _num(raw.strip())


# --------------------------------------------------------------------------- pools


def _clock_age(when: float | None, at: float, value: float) -> float | None:
    """Age of an epoch or since-boot timestamp on the miner's clock (``When``)."""
    if when is not None:
        age = when - value
    elif value >= _EPOCH_MIN:
        age = at - value
    else:
        return None  # seconds since boot with no "now" on the same clock
    if age < 0:
        return 0.0 if age >= -_MAX_CLOCK_SKEW_S else None
    return age


def _parse_hms(text: str) -> float | None:
    """ "0:00:05" -> 5.0 (bmminer, MSKminer, Hammer report the age, not the time)."""
    parts = text.split(":")
    if len(parts) != 3:
        return None
    try:
        hours, minutes, seconds = int(parts[0]), int(parts[1]), float(parts[2])
    except ValueError:
        return None
    if hours < 0 or not 0 <= minutes < 60 or not 0 <= seconds < 61:
        return None
    return hours * 3600 + minutes * 60 + seconds


def _parse_ctime(text: str) -> int | None:
    """ "Tue Jun 16 10:16:42 2020" read as if UTC (the zone is settled by the caller)."""
    parts = text.split()
    if len(parts) != 5:
        return None
    month = _MONTHS.get(parts[1])
    clock = parts[3].split(":")
    if month is None or len(clock) != 3:
        return None
    try:
        day, year = int(parts[2]), int(parts[4])
        hour, minute, second = int(clock[0]), int(clock[1]), int(clock[2])
    except ValueError:
        return None
    if not (1 <= day <= 31 and 1900 <= year <= 9999 and 0 <= hour < 24 and 0 <= minute < 60):
        return None
    if not 0 <= second <= 61:
        return None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def _is_epoch_zero_local(local_as_utc: int) -> bool:
    """Whether a local-time date is the epoch 0 rendered in some time zone ("never")."""
    return _TZ_MIN_S <= local_as_utc <= _TZ_MAX_S


def _tz_offset(dates: Sequence[int], devs: Sequence[Mapping[str, Any]]) -> int | None:
    """The miner's UTC offset in seconds for ctime dates, when it can be learned."""
    for local in dates:
        if _is_epoch_zero_local(local):
            return local  # StrongU: "Thu Jan  1 08:00:00 1970" is epoch 0 at UTC+8
    real = [d for d in dates if not _is_epoch_zero_local(d)]
    latest_dev: float | None = None
    for dev in devs:
        value = _num(dev.get("Last Share Time"))
        if value is not None and value >= _EPOCH_MIN:
            latest_dev = _max(latest_dev, value)
    if real and latest_dev is not None:
        # The latest share of any pool is the latest share of any device.
        offset = round((max(real) - latest_dev) / _TZ_STEP_S) * _TZ_STEP_S
        if _TZ_MIN_S <= offset <= _TZ_MAX_S:
            return int(offset)
    return None


def _share_age(raw: object, when: float | None, at: float, tz_offset: int | None) -> float | None:
    """``Last Share Time`` in any of its forms -> seconds since the last share."""
    value = _num(raw)
    if value is not None:
        if value <= 0:
            return None  # 0 before any share
        return _clock_age(when, at, value)
    text = _text(raw)
    if not text or text == "0":
        return None
    if ":" in text and " " not in text:
        return _parse_hms(text)
    local = _parse_ctime(text)
    if local is None or tz_offset is None or _is_epoch_zero_local(local):
        return None
    return _clock_age(when, at, float(local - tz_offset))


def _stale_ratio(
    entry: Mapping[str, Any], accepted: int, rejected: int, stale: int
) -> float | None:
    raw = entry.get("Pool Stale%")
    if raw is None:
        raw = entry.get("Pool Stale%%")  # bmminer 4.11 (MSKminer, Hammer) printf bug
    percent = _num(raw)
    if percent is not None:
        return percent / 100 if 0 <= percent <= 100 else None
    total = accepted + rejected + stale
    return stale / total if total > 0 else None


def _build_pools(
    entries: Sequence[Mapping[str, Any]],
    when: float | None,
    at: float,
    devs: Sequence[Mapping[str, Any]],
) -> tuple[tuple[Pool, ...], int]:
    """(pools, number of unconfigured slots left out)."""
    tz_offset: int | None = None
    dates: list[int] = []
    for entry in entries:
        raw = entry.get("Last Share Time")
        if type(raw) is str and len(raw) > 12:  # a ctime date, not "0:00:05"
            local = _parse_ctime(raw)
            if local is not None:
                dates.append(local)
    if dates:
        tz_offset = _tz_offset(dates, devs)

    rows: list[tuple[int, str, str, str, int, bool, int, int, int, float | None, float | None]] = []
    unconfigured = 0
    maximum = _MAX_COUNTER
    # As in _build_devs: the common types inline, the helpers for anything else.
    for index, entry in enumerate(entries):
        get = entry.get
        raw = get("URL")
        url = _intern(raw.strip()) if type(raw) is str else None
        if url == "":
            unconfigured += 1  # bmminer's empty third slot: not a pool
            continue
        raw = get("POOL")
        pool_id = raw if type(raw) is int and 0 <= raw <= maximum else _count(raw)
        raw = get("Priority")
        priority = raw if type(raw) is int and 0 <= raw <= maximum else _count(raw)
        raw = get("Accepted")
        accepted = (raw if type(raw) is int and 0 <= raw <= maximum else _count(raw)) or 0
        raw = get("Rejected")
        rejected = (raw if type(raw) is int and 0 <= raw <= maximum else _count(raw)) or 0
        raw = get("Stale")
        stale = (raw if type(raw) is int and 0 <= raw <= maximum else _count(raw)) or 0
        raw = get("User")
        user = (_intern(raw.strip()) if type(raw) is str else None) or ""
        raw = get("Status")
        status = (_intern(raw.strip()) if type(raw) is str else None) or "Unknown"
        number = index if pool_id is None else pool_id
        rows.append(
            (
                number, url or "", user, status, number if priority is None else priority,
                get("Stratum Active") is True, accepted, rejected, stale,
                _share_age(get("Last Share Time"), when, at, tz_offset),
                _stale_ratio(entry, accepted, rejected, stale),
            )
        )  # fmt: skip
    active_index = _pick_active(rows)
    pools = tuple(
        [
            _new_pool(
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                i == active_index,
                row[6],
                row[7],
                row[8],
                row[9],
                row[10],
            )
            for i, row in enumerate(rows)
        ]
    )
    return pools, unconfigured


def _pick_active(rows: Sequence[tuple[Any, ...]]) -> int | None:
    """The row the miner mines on: Stratum Active (Alive first), else the best Alive pool.

    Several pools may claim "Stratum Active" (load balancing, or a template like Hammer's);
    the one with the lowest priority number wins. With no pool alive the best configured
    one is "active", so that a rule sees the active pool is not Alive.
    """
    best: tuple[int, int, int, int] | None = None
    best_index: int | None = None
    for i, row in enumerate(rows):
        status = row[3]
        if status == "Disabled":
            continue
        key = (0 if row[5] else 1, 0 if status == "Alive" else 1, row[4], row[0])
        if best is None or key < best:
            best, best_index = key, i
    return best_index


# --------------------------------------------------------------------------- devices


def _build_devs(
    entries: Sequence[Mapping[str, Any]], miner_elapsed: float | None
) -> tuple[list[Device], list[object]]:
    """Devices from ``devs``, and each one's driver ``ID`` (BOSminer temps use it)."""
    devices: list[Device] = []
    driver_ids: list[object] = []
    # The common types (int counters, str texts, float readings) are handled inline; the
    # helpers take anything else. Every device of every miner passes here every cycle.
    for index, entry in enumerate(entries):
        get = entry.get
        kind = "ASC"
        number: int | None = None
        for candidate in _DEVICE_KINDS:
            if candidate in entry:
                kind = candidate
                raw = entry[candidate]
                number = raw if type(raw) is int and 0 <= raw <= _MAX_COUNTER else _count(raw)
                break
        driver_id = get("ID")
        if number is None:
            number = _count(driver_id)
        device_id = index if number is None else number
        raw = get("Status")
        status = (_intern(raw.strip()) if type(raw) is str else None) or "Unknown"
        enabled_raw = get("Enabled")
        if enabled_raw == "Y" or enabled_raw is True:
            enabled = True
        elif enabled_raw == "N" or enabled_raw is False:
            enabled = False
        else:
            enabled = status != "Disabled"
        elapsed = _elapsed(entry, "Device Elapsed")
        rate = _window_hashrate(entry, miner_elapsed if elapsed is None else elapsed)
        raw = get("Temperature")
        temperature = None if raw is None else _temp(raw)
        raw = get("Chip Temp Max")
        if raw is not None:
            temperature = _max(temperature, _temp(raw))
        raw = get("Diff1 Work")
        work = None if raw is None else _num(raw)
        raw = get("Hardware Errors")
        hardware_errors = raw if type(raw) is int and 0 <= raw <= _MAX_COUNTER else _count(raw)
        raw = get("Name")
        name = (_intern(raw.strip()) if type(raw) is str else None) or f"{kind}{device_id}"
        devices.append(
            _new_device(
                device_id,
                kind,
                name,
                status,
                enabled,
                None if rate is None else rate.hs,
                temperature,
                hardware_errors,
                work if work is not None and work >= 0 else None,
            )
        )
        driver_ids.append(driver_id)
    return devices, driver_ids


def _devs_hashrate(
    entries: Sequence[Mapping[str, Any]], miner_elapsed: float | None
) -> tuple[float, str] | None:
    total = 0.0
    keys: set[str] = set()
    for entry in entries:
        elapsed = _elapsed(entry, "Device Elapsed")
        rate = _window_hashrate(entry, miner_elapsed if elapsed is None else elapsed)
        if rate is not None:
            total += rate.hs
            keys.add(rate.key)
    if not keys or total == math.inf:
        return None
    if len(keys) == 1:
        return total, f"devs sum '{keys.pop()}'"
    return total, "devs sum (mixed windows)"


def _board_status(rate: float | None) -> str:
    if rate is None:
        return "Unknown"
    return "Alive" if rate > 0 else "Sick"  # chips answer but hash nothing


def _chain_scale(entry: Mapping[str, Any]) -> float:
    """chain_rateN unit: GH/s on bmminer, MH/s where the entry speaks MHS (Hammer scrypt)."""
    unit = entry.get("rate_unit")
    if type(unit) is str:
        scale = _RATE_UNIT_SCALE.get(unit.strip().upper())
        if scale is not None:
            return scale
    if "GHS 5s" in entry or "GHS av" in entry:
        return 1e9
    if "MHS 5s" in entry or "MHS av" in entry:
        return 1e6
    return 1e9


def _build_chains(entry: Mapping[str, Any]) -> list[Device]:
    """Boards of a bmminer-style STATS entry: slots whose chain_acnN is above 0."""
    boards: list[Device] = []
    get = entry.get
    scale: float | None = None
    for slot, acn_key, rate_key, hw_key, temp_keys in _CHAIN_KEYS:
        chips_raw = get(acn_key)
        if chips_raw == 0:  # the common empty slot, before any conversion
            continue
        rate_raw = get(rate_key)
        if chips_raw is None and rate_raw is None:
            continue
        chips = _num(chips_raw)
        rate = _num(rate_raw)
        if chips is not None:
            if chips <= 0:
                continue  # an empty slot (MSKminer still reports phantom rateideal/voltage)
        elif rate is None or rate <= 0:
            continue
        if scale is None:
            scale = _chain_scale(entry)
        temperature: float | None = None
        for key in temp_keys:
            temperature = _max(temperature, _hottest(get(key)))
        hashrate = _scaled(rate, scale)
        boards.append(
            _new_device(
                slot,
                "BOARD",
                _intern(f"chain{slot}"),
                _board_status(hashrate),
                True,
                hashrate,
                temperature,
                _count(get(hw_key)),
                None,
            )
        )
    return boards


def _build_mm_boards(mms: Mapping[str, Mapping[str, str]]) -> list[Device]:
    """Boards of Avalon ``MM ID<n>`` strings: one per MGHS value."""
    boards: list[Device] = []
    for mm_key, mm in mms.items():
        rates = _mm_numbers(mm, "MGHS")
        temps = _mm_numbers(mm, "MTmax")
        for i, rate in enumerate(rates):
            hashrate = _scaled(rate, 1e9)
            board_id = len(boards)
            boards.append(
                Device(
                    id=board_id,
                    kind="BOARD",
                    name=f"{mm_key} board{i}",
                    status=_board_status(hashrate),
                    enabled=True,
                    hashrate_hs=hashrate,
                    temperature_c=_temp(temps[i]) if i < len(temps) else None,
                )
            )
    return boards


# --------------------------------------------------------------------------- identity


def _fork_from_version(entry: Mapping[str, Any] | None) -> str | None:
    if entry is None:
        return None
    best: tuple[int, str] | None = None
    best_key = ""
    for key in entry:
        if type(key) is not str:
            continue
        named = _FORK_NAMES.get(key.lower())
        if named is not None and (best is None or named[0] < best[0]):
            best, best_key = named, key
    if best is None:
        return None
    raw = entry.get(best_key)
    if type(raw) is str:
        version = raw.strip()
    elif type(raw) is float or type(raw) is int:
        try:
            version = str(raw)
        except ValueError:  # an int past Python's digit limit
            return best[1]
    else:
        return best[1]
    head, dash, tail = version.rpartition("-")
    if dash and head and 7 <= len(tail) <= 40 and set(tail) <= _HEX_DIGITS:
        version = head  # BOSminer+ "0.2.0-36c56a9363": the build hash is not the version
    return _intern(f"{best[1]} {version}") if version else best[1]


def _api_version(version: Mapping[str, Any]) -> str | None:
    text = _text(version.get("API"))
    return None if text is None else _intern(text)


def _model(*entries: Mapping[str, Any] | None) -> str | None:
    for entry in entries:
        if entry is None:
            continue
        for key in ("Type", "PROD", "MODEL"):
            text = _text(entry.get(key))
            if text:
                return _intern(" ".join(text.split()))  # "Antminer S9\nV1.3.58": one line
    return None


# --------------------------------------------------------------------------- the builder


def build_snapshot(
    replies: Mapping[str, Mapping[str, Any]],
    *,
    name: str,
    host: str,
    port: int,
    at: float,
    keep_raw: bool = False,
    learned: Learned | None = None,
) -> Snapshot:
    """Normalize one miner's decoded replies (command -> reply dict) into a Snapshot.

    Any reply may be missing; a reply whose STATUS is E or F counts as absent (a ``devs``
    answering Code 10 "No ASCs" is a miner with no devices). Never raises on odd input.

    ``learned`` is what the poller learned of the miner at its first contact (VERSION
    is asked only then): its family, and the identity VERSION gave.
    ``refused`` holds the commands answered with STATUS E/F. ``extra`` always holds the
    Avalon ``MM ID`` fields and the count of unconfigured pool slots; with ``keep_raw`` it also keeps the raw
    VERSION, SUMMARY and STATS entries by reference. The poller leaves them out: at
    10,000 miners they are most of a cycle's memory, and no rule reads them.
    """
    statuses: dict[str, Mapping[str, Any]] = {}
    sections: dict[str, list[Mapping[str, Any]]] = {}
    if _is_map(replies):
        for command, raw_reply in replies.items():
            section_key = _SECTIONS.get(command) if type(command) is str else None
            if section_key is None:
                continue
            status, entries = _read_reply(raw_reply, section_key)
            if status is not None:
                statuses[command] = status
            if entries:
                sections[command] = entries
    empty: list[Mapping[str, Any]] = []
    version_entries = sections.get("version", empty)
    summary_entries = sections.get("summary", empty)
    devs_entries = sections.get("devs", empty)
    pools_entries = sections.get("pools", empty)
    stats_entries = sections.get("stats") or sections.get("estats", empty)
    version = version_entries[0] if version_entries else None
    summary = summary_entries[0] if summary_entries else None
    extra: dict[str, Any] = {}

    # Identity: VERSION keys first, STATUS Description as sent.
    description: str | None = None
    for command in ("version", "summary", "stats", "devs", "pools", "estats"):
        status = statuses.get(command)
        if status is not None:
            description = _text(status.get("Description"))
            if description:
                description = _intern(description)
                break
    if learned is None:
        learned = _NOTHING_LEARNED
    fork = _fork_from_version(version) or learned.fork or description or None

    # STATS: an identity entry (bmminer: no ID), the miner entry, POOLn entries to skip,
    # Avalon MM ID<n> strings.
    stats_identity: Mapping[str, Any] | None = None
    stats_miner: Mapping[str, Any] | None = None
    mms: dict[str, dict[str, str]] = {}
    for entry in stats_entries:
        entry_id = entry.get("ID")
        if entry_id is None and "STATS" not in entry:
            if stats_identity is None:
                stats_identity = entry
            continue
        if type(entry_id) is str and entry_id.startswith("POOL"):
            continue
        if stats_miner is None:
            stats_miner = entry
        if "MM Count" in entry or "MM ID0" in entry:
            for key, value in entry.items():
                if type(key) is str and key.startswith("MM ID") and type(value) is str:
                    mms[key] = parse_avalon_mm(value)

    elapsed_s = None if summary is None else _elapsed(summary)
    if elapsed_s is None and stats_miner is not None:
        elapsed_s = _elapsed(stats_miner)

    # Devices: devs, else bmminer chains, else Avalon boards.
    devices, driver_ids = _build_devs(devs_entries, elapsed_s)
    chains = _build_chains(stats_miner) if stats_miner is not None else []
    mm_boards = _build_mm_boards(mms) if mms else []
    from_devs = bool(devices)
    if not devices:
        devices = chains or mm_boards

    # Temperatures and fans from every place firmware puts them.
    temperature_max: float | None = None
    temps_by_id: dict[object, float] = {}
    for entry in sections.get("temps", empty):  # BOSminer
        hottest = _max(_temp(entry.get("Board")), _temp(entry.get("Chip")))
        if hottest is not None:
            temperature_max = _max(temperature_max, hottest)
            entry_id = entry.get("ID")
            if type(entry_id) in (int, str):
                temps_by_id[entry_id] = hottest
    if temps_by_id and from_devs:
        devices = [
            _with_temperature(device, temps_by_id.get(driver_id))
            if device.temperature_c is None and type(driver_id) in (int, str)
            else device
            for device, driver_id in zip(devices, driver_ids, strict=True)
        ]
    for device in devices:
        temperature_max = _max(temperature_max, device.temperature_c)
    for board in chains:
        temperature_max = _max(temperature_max, board.temperature_c)
    if summary is not None:
        raw = summary.get("Chip Temp Max")  # Whatsminer
        if raw is not None:
            temperature_max = _max(temperature_max, _temp(raw))
        raw = summary.get("Temperature")
        if raw is not None:
            temperature_max = _max(temperature_max, _temp(raw))
    if stats_miner is not None:
        temperature_max = _max(temperature_max, _temp(stats_miner.get("temp_max")))  # bmminer
    for mm in mms.values():
        temperature_max = _max(temperature_max, _temp(mm.get("TMax")))
        for value in _mm_numbers(mm, "MTmax"):
            temperature_max = _max(temperature_max, _temp(value))

    fans: list[int] = []
    for entry in sections.get("fans", empty):  # BOSminer
        _add_fan(fans, entry.get("RPM"))
    if not fans and stats_miner is not None:
        stats_get = stats_miner.get
        for key in _STATS_FAN_KEYS:
            raw_rpm = stats_get(key)
            if raw_rpm:  # skips absent and 0 slots without conversion
                _add_fan(fans, raw_rpm)
    if not fans:
        for mm in mms.values():
            for key in _MM_FAN_KEYS:
                _add_fan(fans, mm.get(key))
    if not fans and summary is not None:
        summary_get = summary.get
        for key in _WHATSMINER_FAN_KEYS:
            raw = summary_get(key)
            if raw is not None:
                _add_fan(fans, raw)
        if not fans:
            for key in _SUMMARY_FAN_KEYS:  # StrongU
                raw = summary_get(key)
                if raw is not None:
                    _add_fan(fans, raw)
    fans_expected: int | None = None
    if stats_miner is not None:
        fans_expected = _count(stats_miner.get("fan_num"))
    if fans_expected is None and summary is not None:
        raw = summary.get("Fan Num")
        fans_expected = None if raw is None else _count(raw)

    # Hashrate: the whole miner's shortest window, else its average (SUMMARY,
    # then the bmminer STATS entry, then Avalon GHSavg), else the sum of devices or boards.
    rate: tuple[float, str] | None = None
    best_rank = _RANK_UNJUDGED + 1
    if summary is not None:
        found = _window_hashrate(summary, elapsed_s)
        if found is not None:
            rate, best_rank = (found.hs, f"summary '{found.key}'"), found.rank
    if best_rank > _RANK_WINDOW and stats_miner is not None:
        stats_elapsed = _elapsed(stats_miner)
        found = _window_hashrate(stats_miner, elapsed_s if stats_elapsed is None else stats_elapsed)
        if found is not None and found.rank < best_rank:
            rate, best_rank = (found.hs, f"stats '{found.key}'"), found.rank
    if best_rank > _RANK_AVERAGE and mms:
        total = 0.0
        keys: list[str] = []
        for mm_key, mm in mms.items():
            average = _scaled(_mm_number(mm, "GHSavg"), 1e9)
            if average is not None:
                total += average
                keys.append(mm_key)
        if keys and total != math.inf:
            label = f"stats {keys[0]} GHSavg" if len(keys) == 1 else "stats MM sum GHSavg"
            rate, best_rank = (total, label), _RANK_AVERAGE
    if best_rank > _RANK_AVERAGE and devs_entries:
        rate = _devs_hashrate(devs_entries, elapsed_s) or rate
    if rate is None:
        boards = chains or mm_boards
        known = [b.hashrate_hs for b in boards if b.hashrate_hs is not None]
        if known and sum(known) != math.inf:
            where = "chain_rate" if chains else "MGHS"
            rate = (sum(known), f"stats sum {where}")

    # Counters.
    hardware_errors = None if summary is None else _count(summary.get("Hardware Errors"))
    if hardware_errors is None and from_devs:
        hardware_errors = _sum_counts([d.hardware_errors for d in devices])
    if hardware_errors is None and chains:
        hardware_errors = _sum_counts([b.hardware_errors for b in chains])
    if hardware_errors is None:
        for mm in mms.values():
            hw = _mm_number(mm, "HW")
            if hw is not None and hw >= 0:
                hardware_errors = (hardware_errors or 0) + int(hw)
    raw = None if summary is None else summary.get("Diff1 Work")
    diff1_work = None if raw is None else _num(raw)
    if diff1_work is None and from_devs:
        works = [d.diff1_work for d in devices]
        if works and all(w is not None for w in works):
            diff1_work = sum(w for w in works if w is not None)
    reported_ratio: float | None = None
    for source in (summary, stats_miner):
        if source is not None:
            percent = _num(source.get("Device Hardware%"))
            if percent is not None and 0 <= percent <= 100:
                reported_ratio = percent / 100
                break

    pools_status = statuses.get("pools")
    when = None if pools_status is None else _num(pools_status.get("When"))
    pools, unconfigured = _build_pools(pools_entries, when, at, devs_entries)
    accepted = rejected = stale = None
    if summary is not None:
        accepted = _count(summary.get("Accepted"))
        rejected = _count(summary.get("Rejected"))
        stale = _count(summary.get("Stale"))
    if pools:
        if accepted is None:
            accepted = sum(p.accepted for p in pools)
        if rejected is None:
            rejected = sum(p.rejected for p in pools)
        if stale is None:
            stale = sum(p.stale for p in pools)

    refused: dict[str, Refusal] = {}
    for command, status in statuses.items():
        letter = status.get("STATUS")
        if _is_error(letter):  # e.g. devs Code 10 "No ASCs", Code 14 "Invalid command"
            refused[command] = Refusal(
                _status_code(status.get("Code")), _text(status.get("Msg")) or "", str(letter)
            )
    # Unmapped data kept by reference for whoever needs more than the normalized view.
    if keep_raw:
        if version is not None:
            extra["version"] = version
        if summary is not None:
            extra["summary"] = summary
        if stats_miner is not None:
            extra["stats"] = stats_miner
        if stats_identity is not None:
            extra["stats_identity"] = stats_identity
    if mms:
        extra["mm"] = mms
    if unconfigured:
        extra["unconfigured_pools"] = unconfigured

    # Positional, in field order (see _fast_constructor).
    return _new_snapshot(
        name,
        host,
        port,
        at,
        fork,
        description,
        _api_version(version) if version is not None else learned.api_version,
        _model(version, stats_identity, stats_miner),
        elapsed_s,
        None if rate is None else rate[0],
        None if rate is None else _intern(rate[1]),
        hardware_errors,
        diff1_work if diff1_work is None or diff1_work >= 0 else None,
        accepted,
        rejected,
        stale,
        temperature_max,
        tuple(fans),
        tuple(devices),
        pools,
        MappingProxyType(extra) if extra else _EMPTY,
        fans_expected,
        reported_ratio,
        _difficulty_accepted(summary),
        MappingProxyType(refused) if refused else _NO_REFUSALS,
        learned.family,
        learned.firmware_version,
    )


def _status_code(code: object) -> int | None:
    """A STATUS Code as sent (a number, or a numeric string on some forks); None if not."""
    if type(code) is int:
        return code
    if isinstance(code, str | float) and not isinstance(code, bool):
        try:
            return int(code)
        except (ValueError, OverflowError):
            pass
    return None


def _difficulty_accepted(summary: Mapping[str, Any] | None) -> float | None:
    if summary is None:
        return None
    value = _num(summary.get("Difficulty Accepted"))
    return value if value is not None and value >= 0 else None


def _add_fan(fans: list[int], raw: object) -> None:
    rpm = _num(raw)
    if rpm is not None and rpm > 0:
        fans.append(int(rpm))


def _sum_counts(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _with_temperature(device: Device, temperature: float | None) -> Device:
    if temperature is None:
        return device
    return Device(
        id=device.id,
        kind=device.kind,
        name=device.name,
        status=device.status,
        enabled=device.enabled,
        hashrate_hs=device.hashrate_hs,
        temperature_c=temperature,
        hardware_errors=device.hardware_errors,
        diff1_work=device.diff1_work,
    )
