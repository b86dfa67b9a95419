"""Fake miners that speak the real cgminer API over real TCP, for the demo, tests and benchmarks.

Three layers, each usable alone:

- :class:`SimulatedMiner` is one miner's state machine. ``handle(request, now)`` returns
  the exact bytes a cgminer 4.11.1, bmminer (Antminer S9) or bfgminer 5.5 would send,
  without sockets. Counters (shares, hardware errors, work) are integrated lazily from
  the clock at request time, so ten thousand idle miners cost no CPU.
- :class:`Scenario` (named in :data:`SCENARIOS`) describes a failure and when it starts;
  every change is driven by the injected clock, so a :class:`FakeClock` jump makes it
  happen.
- :class:`Fleet` holds many miners with names and addresses and :func:`serve` puts them
  on asyncio TCP servers: one loopback address each (127.0.0.1, 127.0.0.2, ... port 4028;
  Linux routes all of 127/8 to ``lo``) or consecutive ports on one address.

Times are epoch seconds from one injected clock (``Callable[[], float]``); only
``slow`` replies wait in real seconds, because the client's read deadline is real.
Hot replies (summary, devs, pools, stats) are written from per-firmware templates with
the keys pre-escaped and numbers printed the way cgminer prints them (``%.2f`` for MHS,
``%.4f`` for Total MH, ``%.8f`` for difficulties); a fleet of 10,000 must answer a
poll cycle in well under the watchdog's own time.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import heapq
import json
import logging
import math
import re
import resource
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Literal, TextIO, TypeAlias, TypeVar

from cgwatchdog.errors import ConfigError, ConfigProblem, ProtocolError
from cgwatchdog.protocol import Request, decode_request, encode_reply, encode_text_reply

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "DEFAULT_FLAVOURS",
    "DEFAULT_PORT",
    "FLAVOURS",
    "SCENARIOS",
    "ControlServer",
    "ExtraCommand",
    "FakeClock",
    "Flavour",
    "Fleet",
    "FleetMember",
    "HttpControlServer",
    "MinerStates",
    "ScaledClock",
    "Scenario",
    "SimulatedMiner",
    "add_flavour",
    "ensure_file_limit",
    "flavours_named",
    "make_scenario",
    "run_simulator",
    "serve",
]

Clock: TypeAlias = Callable[[], float]
Reply: TypeAlias = dict[str, Any]
Mode: TypeAlias = Literal["normal", "down", "hang", "mute"]

_log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 4028
DIFF1_HASHES: Final = 2.0**32
"""Hashes per difficulty-1 share (SHA-256d)."""
REJECT_SHARE: Final = 0.002
STALE_SHARE: Final = 0.0005
BASE_HW_RATIO: Final = 0.0002
"""Hardware errors as a share of work on a healthy board (an S9 shows ~0.02%)."""
MAX_SEGMENTS: Final = 100_000
"""Bound on the piecewise integration of one request (a flapping period of 1 s over a
day is 86,400 segments); past it the rest is integrated at the last state."""


# -- clocks -----------------------------------------------------------------------------


class FakeClock:
    """A clock that tests move by hand: ``clock()`` is the time, ``advance(s)`` moves it."""

    __slots__ = ("now",)

    def __init__(self, start: float = 1_764_100_800.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward and return the new time."""
        self.now += seconds
        return self.now


class ScaledClock:
    """Epoch time that runs ``factor`` times faster than the wall clock (for the demo)."""

    __slots__ = ("_factor", "_origin", "_start")

    def __init__(self, factor: float, start: float | None = None) -> None:
        self._factor = factor
        self._origin = time.monotonic()
        self._start = time.time() if start is None else start

    def __call__(self) -> float:
        return self._start + (time.monotonic() - self._origin) * self._factor


# -- flavours ---------------------------------------------------------------------------


ApiHook: TypeAlias = "Callable[[SimulatedMiner, FleetMember | None, bytes, float], bytes | None]"
"""A flavour's own handling of raw API requests (Whatsminer's encrypted commands), tried
before the cgminer protocol: the reply bytes, or None to answer as cgminer."""
ControlFactory: TypeAlias = "Callable[[FleetMember, Fleet], ControlServer]"


@dataclass(frozen=True, slots=True)
class ExtraCommand:
    """An API command a flavour adds to cgminer's (LuxOS ``logon``, Avalon ``ascset``)."""

    name: str
    handler: Callable[[SimulatedMiner, str | None, float], Reply]
    privileged: bool = False
    joinable: bool = False


@dataclass(frozen=True, slots=True)
class Flavour:
    """What one firmware family answers: identity, devices, quirks and timings, and
    where a family has one, its control channel (``control``: a server per miner on its
    own port) and its own API handling (``api_hook``, ``commands``)."""

    name: str
    family: Literal["cgminer", "bmminer", "bfgminer"]
    description: str
    program: str
    """How the firmware names itself in Msg texts ("CGMiner versions", "BMMiner stats")."""
    version: tuple[tuple[str, str], ...]
    device_kind: Literal["ASC", "PGA"]
    device_driver: str
    device_dname: str
    device_model: str
    device_hs: float
    device_temp_c: float
    pool_difficulty: float
    log_interval_s: int
    multi_command: bool
    restart_downtime_s: float
    lists_devices: bool = True
    """False for bmminer: ``devs`` answers "No ASCs"; its boards appear only in STATS."""
    invalid_command_description: bool = True
    stats_brace_quirk: bool = False
    firmware: str = "cgminer"
    """The cgwatchdog firmware family this flavour should be recognised as."""
    api_write_access: bool = True
    """False where the firmware's API refuses every privileged command (stock Antminer
    ships ``api-allow: A:0/0,W:*``: Code 45 for everything)."""
    reboot_downtime_s: float = 60.0
    """How long a reboot keeps the API (and the control channel) away."""
    commands: tuple[ExtraCommand, ...] = ()
    api_hook: ApiHook | None = None
    control: ControlFactory | None = None
    api_server: ControlFactory | None = None
    """A server that takes the API port instead of the cgminer protocol (ePIC serves
    HTTP on 4028); it is also the control channel."""


_CGMINER = Flavour(
    name="cgminer",
    family="cgminer",
    description="cgminer 4.11.1",
    program="CGMiner",
    version=(("CGMiner", "4.11.1"), ("API", "3.7")),
    device_kind="ASC",
    device_driver="GSF",
    device_dname="gekko",
    device_model="GekkoScience CompacF BM1397",
    device_hs=400e9,
    device_temp_c=52.0,
    pool_difficulty=2048.0,
    log_interval_s=5,
    multi_command=True,
    restart_downtime_s=5.0,
    # cgminer: "Do not give out description for random probes" on Code 14.
    invalid_command_description=False,
)
_BMMINER = Flavour(
    name="bmminer",
    family="bmminer",
    description="bmminer 1.0.0",
    program="BMMiner",
    version=(
        ("BMMiner", "2.0.0"),
        ("API", "3.1"),
        ("Miner", "30.0.1.3"),
        ("CompileTime", "Wed Jul 31 16:18:27 CST 2019"),
        ("Type", "Antminer S9"),
        ("VER", "191008"),
    ),
    device_kind="ASC",
    device_driver="BC5",
    device_dname="bitmain_c5",
    device_model="Antminer S9",
    device_hs=4.6e12,
    device_temp_c=68.0,
    pool_difficulty=32768.0,
    log_interval_s=5,
    multi_command=True,
    restart_downtime_s=5.0,
    lists_devices=False,
    stats_brace_quirk=True,
)
FLAVOURS: Final[dict[str, Flavour]] = {
    "cgminer": _CGMINER,
    "bmminer": _BMMINER,
    # Antminer firmware with an old API answers "summary+devs+pools" with Code 14.
    "bmminer-nomulti": replace(_BMMINER, name="bmminer-nomulti", multi_command=False),
    "bfgminer": Flavour(
        name="bfgminer",
        family="bfgminer",
        description="bfgminer 5.5.0",
        program="BFGMiner",
        version=(("Miner", "bfgminer 5.5.0"), ("CGMiner", "5.5.0"), ("API", "3.1")),
        device_kind="PGA",
        device_driver="BFL",
        device_dname="bitforce",
        device_model="Monarch",
        device_hs=700e9,
        device_temp_c=47.0,
        pool_difficulty=4096.0,
        log_interval_s=20,
        multi_command=True,
        restart_downtime_s=1.0,
    ),
}
"""Every flavour by name: cgminer 4.11.1 (ASC, "MHS 5s", API 3.7), bmminer (Antminer S9,
"GHS 5s" as a string, boards in STATS), bmminer-nomulti (the same without multi-command)
and bfgminer 5.5 (PGA, "MHS 20s", API 3.1); the firmware families' flavours
(``cgwatchdog/simulator/families/``) add theirs with :func:`add_flavour`."""


def add_flavour(flavour: Flavour) -> Flavour:
    """Make ``flavour`` available by name (to ``Fleet.build`` and ``simulate``)."""
    if flavour.name in FLAVOURS:
        raise ValueError(f"flavour {flavour.name!r} is already defined")
    FLAVOURS[flavour.name] = flavour
    return flavour


DEFAULT_FLAVOURS: Final = ("cgminer", "bmminer", "bfgminer")


def flavours_named(names: Sequence[str]) -> list[str]:
    """Flavour names for ``simulate --firmware``: each name is a flavour, or a firmware
    family standing for its first flavour (``whatsminer`` -> ``whatsminer``); ConfigError
    naming the choices otherwise."""
    chosen = []
    for name in names:
        if name in FLAVOURS:
            chosen.append(name)
            continue
        of_family = [f.name for f in FLAVOURS.values() if f.firmware == name]
        if not of_family:
            known = sorted({*FLAVOURS, *(f.firmware for f in FLAVOURS.values())})
            raise _config_error(
                "--firmware", f"unknown firmware {name!r}; choose from {', '.join(known)}"
            )
        chosen.append(of_family[0])
    return chosen


def _flavour(name: str | Flavour) -> Flavour:
    if isinstance(name, Flavour):
        return name
    try:
        return FLAVOURS[name]
    except KeyError:
        raise _config_error(
            "flavour", f"unknown flavour {name!r}; choose from {', '.join(FLAVOURS)}"
        ) from None


def _config_error(where: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(where, None, message)])


# -- scenarios --------------------------------------------------------------------------

SCENARIOS: Final[Mapping[str, str]] = {
    "healthy": "every device Alive, hashrate steady, shares accepted",
    "hashrate_drop": "after fail_after_s every device hashes at hashrate_factor (50%)",
    "device_dead": "after fail_after_s device `device` is Dead and hashes nothing",
    "device_sick": "after fail_after_s device `device` is Sick at hashrate_factor (30%)",
    "hw_errors_rising": "after fail_after_s hardware errors are hw_ratio (5%) of the work",
    "pool_stale": "after fail_after_s shares to pool `pool` come back stale: Accepted "
    "stops, Last Share Time ages (switchpool repairs it)",
    "pool_dead_failover": "after fail_after_s pool `pool` is Dead and the miner fails over "
    "to the next pool",
    "unreachable": "after fail_after_s the API stops listening (connection refused)",
    "flapping": "after fail_after_s device `device` toggles Dead/Alive every period_s",
    "slow": "after fail_after_s every reply waits delay_s real seconds before it is sent",
    "garbage": "after fail_after_s replies are malformed: cut mid-way, or bytes that are "
    "not JSON (`garbage`: truncate, junk or alternate)",
    "read_only": "privileged commands are refused with Code 45 (no W: in --api-allow)",
}
"""Every scenario by name, with what it does in one line."""

_RECOVERS_ON_RESTART: Final = frozenset(
    {"hashrate_drop", "device_dead", "device_sick", "hw_errors_rising", "flapping"}
)
_SCENARIO_DEFAULTS: Final[Mapping[str, Mapping[str, Any]]] = {
    "device_sick": {"hashrate_factor": 0.3},
}
_DEVICE_SCENARIOS: Final = frozenset({"device_dead", "device_sick", "flapping"})
_GARBAGE_MODES: Final = ("truncate", "junk", "alternate")


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named behaviour and its timing; build one with :func:`make_scenario`.

    The fault is active from ``fail_after_s`` after the miner was created, for
    ``duration_s`` (``None``: until repaired). ``recovers_on_restart``: a restart (or, for
    device faults, ``ascdisable`` then ``ascenable`` of the faulty device) after the
    fault began repairs it for good.
    """

    name: str = "healthy"
    fail_after_s: float = 60.0
    duration_s: float | None = None
    recovers_on_restart: bool = False
    device: int = 1
    pool: int = 0
    hashrate_factor: float = 0.5
    hw_ratio: float = 0.05
    period_s: float = 60.0
    delay_s: float = 3.0
    garbage: str = "alternate"

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.name not in SCENARIOS:
            problems.append(f"unknown scenario {self.name!r}; choose from {', '.join(SCENARIOS)}")
        if self.fail_after_s < 0:
            problems.append("fail_after_s must be >= 0")
        if self.duration_s is not None and self.duration_s <= 0:
            problems.append("duration_s must be > 0 (or None: until repaired)")
        if self.period_s <= 0:
            problems.append("period_s must be > 0")
        if not 0.0 <= self.hashrate_factor <= 1.0:
            problems.append("hashrate_factor must be within 0..1")
        if not 0.0 <= self.hw_ratio < 1.0:
            problems.append("hw_ratio must be within 0..1 (1 excluded)")
        if self.delay_s < 0:
            problems.append("delay_s must be >= 0")
        if self.device < 0 or self.pool < 0:
            problems.append("device and pool are indexes >= 0")
        if self.garbage not in _GARBAGE_MODES:
            problems.append(f"garbage must be one of {', '.join(_GARBAGE_MODES)}")
        if problems:
            raise ConfigError([ConfigProblem("scenario", None, p) for p in problems])

    def __str__(self) -> str:
        return self.name


_SCENARIO_FIELDS: Final = frozenset(f.name for f in fields(Scenario)) - {"name"}


def make_scenario(name: str | Scenario, **options: Any) -> Scenario:
    """A :class:`Scenario` by name, with that scenario's defaults and ``options`` applied."""
    if isinstance(name, Scenario):
        return replace(name, **options) if options else name
    unknown = sorted(set(options) - _SCENARIO_FIELDS)
    if unknown:
        raise _config_error(
            "scenario",
            f"unknown scenario option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_SCENARIO_FIELDS))}",
        )
    settings: dict[str, Any] = {"recovers_on_restart": name in _RECOVERS_ON_RESTART}
    settings.update(_SCENARIO_DEFAULTS.get(name, {}))
    settings.update(options)
    return Scenario(name=name, **settings)


# -- reply templates --------------------------------------------------------------------

_FORMATS: Final = {
    "d": "%d", "s": "%s", "b": "%s", "2": "%.2f", "3": "%.3f", "4": "%.4f", "6": "%.6f",
    "8": "%.8f",
}  # fmt: skip
_PLAIN_STRING_RE: Final = re.compile(r"[ !#-\[\]-~]*")
_COMPACT_JSON: Final = json.JSONEncoder(separators=(",", ":")).encode


_QUOTED: dict[str, str] = {}


def _quote(text: str) -> str:
    """``text`` as a JSON string; the same few strings recur, so they are remembered."""
    quoted = _QUOTED.get(text)
    if quoted is None:
        quoted = '"' + text + '"' if _PLAIN_STRING_RE.fullmatch(text) else json.dumps(text)
        if len(_QUOTED) >= 100_000:
            _QUOTED.clear()
        _QUOTED[text] = quoted
    return quoted


class _Layout:
    """One entry's keys and the %-template of its JSON: the static part of a reply.

    Built from ``"Key:kind,Key:kind"`` where kind is ``d`` (integer), ``s`` (string),
    ``b`` (boolean) or a digit (a float with that many decimals, as cgminer prints it).
    """

    __slots__ = ("_bools", "_strings", "keys", "kinds", "template")

    def __init__(self, spec: str) -> None:
        pairs = [item.rsplit(":", 1) for item in spec.split(",")]
        self.keys = tuple(key for key, _ in pairs)
        self.kinds = tuple(kind for _, kind in pairs)
        self.template = (
            "{"
            + ",".join(
                json.dumps(key).replace("%", "%%") + ":" + _FORMATS[kind] for key, kind in pairs
            )
            + "}"
        )
        self._strings = tuple(i for i, kind in enumerate(self.kinds) if kind == "s")
        self._bools = tuple(i for i, kind in enumerate(self.kinds) if kind == "b")

    def json(self, values: Sequence[Any]) -> str:
        """The entry as compact JSON."""
        out = list(values)
        for i in self._strings:
            out[i] = _quote(out[i])
        for i in self._bools:
            out[i] = "true" if out[i] else "false"
        return self.template % tuple(out)

    def mapping(self, values: Sequence[Any]) -> dict[str, Any]:
        """The entry as a dict (for the plain-text form), numbers as the JSON prints them."""
        return {
            key: _as_kind(kind, value)
            for key, kind, value in zip(self.keys, self.kinds, values, strict=True)
        }

    def without(self, *keys: str) -> tuple[_Layout, tuple[int, ...]]:
        """This layout less some keys, and the indexes of the values it keeps."""
        keep = tuple(i for i, key in enumerate(self.keys) if key not in keys)
        return _Layout(",".join(f"{self.keys[i]}:{self.kinds[i]}" for i in keep)), keep


def _as_kind(kind: str, value: Any) -> Any:
    if kind == "d":
        return int(value)
    if kind == "b":
        return bool(value)
    if kind == "s":
        return str(value)
    return round(float(value), int(kind))


class _Row:
    """An entry of a reply: a layout and its values."""

    __slots__ = ("layout", "values")

    def __init__(self, layout: _Layout, values: Sequence[Any]) -> None:
        self.layout = layout
        self.values = values


_STATUS: Final = _Layout("STATUS:s,When:d,Code:d,Msg:s,Description:s")
_STATUS_NO_DESCRIPTION: Final = _Layout("STATUS:s,When:d,Code:d,Msg:s")

_TAIL: Final = (
    "Found Blocks:d,Getworks:d,Accepted:d,Rejected:d,Hardware Errors:d,Utility:{u},"
    "Discarded:d,Stale:d,Get Failures:d,Local Work:d,Remote Failures:d,Network Blocks:d,"
    "Total MH:4,{diff1}Work Utility:{u},Difficulty Accepted:8,Difficulty Rejected:8,"
    "Difficulty Stale:8,Best Share:{best},Device Hardware%:4,Device Rejected%:4,"
    "Pool Rejected%:4,Pool Stale%:4,Last getwork:d"
)
_SUMMARY: Final[Mapping[str, _Layout]] = {
    "cgminer": _Layout(
        "Elapsed:d,MHS av:2,MHS 5s:2,MHS 1m:2,MHS 5m:2,MHS 15m:2,"
        + _TAIL.format(u="2", diff1="", best="d")
    ),
    # bmminer: "GHS 5s" is a string, "GHS av" a number.
    "bmminer": _Layout("Elapsed:d,GHS 5s:s,GHS av:2," + _TAIL.format(u="2", diff1="", best="d")),
    "bfgminer": _Layout(
        "Elapsed:d,MHS av:3,MHS 20s:3," + _TAIL.format(u="3", diff1="Diff1 Work:8,", best="8")
    ),
}
_ASC_DEVICE: Final = _Layout(
    "ASC:d,Name:s,ID:d,Enabled:s,Status:s,Temperature:2,MHS av:2,MHS 5s:2,MHS 1m:2,"
    "MHS 5m:2,MHS 15m:2,Accepted:d,Rejected:d,Hardware Errors:d,Utility:2,"
    "Last Share Pool:d,Last Share Time:d,Total MH:4,Diff1 Work:d,Difficulty Accepted:8,"
    "Difficulty Rejected:8,Last Share Difficulty:8,No Device:b,Last Valid Work:d,"
    "Device Hardware%:4,Device Rejected%:4,Device Elapsed:d"
)
_PGA_DEVICE: Final = _Layout(
    "PGA:d,Name:s,ID:d,Enabled:s,Status:s,Temperature:2,Device Elapsed:d,MHS av:3,"
    "MHS 20s:3,MHS rolling:3,Accepted:d,Rejected:d,Hardware Errors:d,Utility:3,Stale:d,"
    "Last Share Pool:d,Last Share Time:d,Total MH:4,Diff1 Work:8,Work Utility:3,"
    "Difficulty Accepted:8,Difficulty Rejected:8,Difficulty Stale:8,"
    "Last Share Difficulty:8,Last Valid Work:d,Device Hardware%:4,Device Rejected%:4"
)
# bfgminer leaves out the share keys until a share, and Last Valid Work until work.
_PGA_NO_SHARE: Final = _PGA_DEVICE.without(
    "Last Share Pool", "Last Share Time", "Last Share Difficulty"
)
_PGA_NO_WORK: Final = _PGA_DEVICE.without(
    "Last Share Pool", "Last Share Time", "Last Share Difficulty", "Last Valid Work"
)
_POOL: Final[Mapping[str, _Layout]] = {
    "cgminer": _Layout(
        "POOL:d,URL:s,Status:s,Priority:d,Quota:d,Long Poll:s,Getworks:d,Accepted:d,"
        "Rejected:d,Works:d,Discarded:d,Stale:d,Get Failures:d,Remote Failures:d,User:s,"
        "Last Share Time:d,Diff1 Shares:d,Proxy Type:s,Proxy:s,Difficulty Accepted:8,"
        "Difficulty Rejected:8,Difficulty Stale:8,Last Share Difficulty:8,"
        "Work Difficulty:8,Has Stratum:b,Stratum Active:b,Stratum URL:s,"
        "Stratum Difficulty:8,Has Vmask:b,Has GBT:b,Best Share:d,Pool Rejected%:4,"
        "Pool Stale%:4,Bad Work:d,Current Block Height:d,Current Block Version:d"
    ),
    # bmminer: Last Share Time is "H:MM:SS" since the share ("0" before any), Diff "32.8K".
    "bmminer": _Layout(
        "POOL:d,URL:s,Status:s,Priority:d,Quota:d,Long Poll:s,Getworks:d,Accepted:d,"
        "Rejected:d,Discarded:d,Stale:d,Get Failures:d,Remote Failures:d,User:s,"
        "Last Share Time:s,Diff:s,Diff1 Shares:d,Proxy Type:s,Proxy:s,"
        "Difficulty Accepted:8,Difficulty Rejected:8,Difficulty Stale:8,"
        "Last Share Difficulty:8,Has Stratum:b,Stratum Active:b,Stratum URL:s,Has GBT:b,"
        "Best Share:d,Pool Rejected%:4,Pool Stale%:4"
    ),
    "bfgminer": _Layout(
        "POOL:d,URL:s,Status:s,Priority:d,Quota:d,Mining Goal:s,Long Poll:s,Getworks:d,"
        "Accepted:d,Rejected:d,Works:d,Discarded:d,Stale:d,Get Failures:d,"
        "Remote Failures:d,User:s,Last Share Time:d,Diff1 Shares:8,Proxy:s,"
        "Difficulty Accepted:8,Difficulty Rejected:8,Difficulty Stale:8,"
        "Last Share Difficulty:8,Has Stratum:b,Stratum Active:b,Stratum URL:s,"
        "Best Share:8,Pool Rejected%:4,Pool Stale%:4"
    ),
}
_STATS_HEAD: Final = "STATS:d,ID:s,Elapsed:d,Calls:d,Wait:6,Max:6,Min:6"
_DEVICE_STATS: Final = _Layout(_STATS_HEAD + ",Frequency:2,Temperature:2,Nonces:d")
_POOL_STATS: Final = _Layout(
    _STATS_HEAD + ",Pool Calls:d,Pool Attempts:d,Pool Wait:6,Pool Max:6,Pool Min:6,"
    "Pool Av:6,Work Had Roll Time:b,Work Can Roll:b,Work Had Expire:b,Work Roll Time:d,"
    "Work Diff:8,Min Diff:8,Max Diff:8,Min Diff Count:d,Max Diff Count:d,Times Sent:d,"
    "Bytes Sent:d,Times Recv:d,Bytes Recv:d,Net Bytes Sent:d,Net Bytes Recv:d"
)
_SLOTS: Final = range(1, 17)


@functools.cache
def _bmminer_stats_layout(slots: tuple[int, ...]) -> _Layout:
    """STATS[1] of an Antminer S9 with boards in ``slots`` (6, 7, 8 on a stock S9)."""
    spec = [
        _STATS_HEAD,
        "GHS 5s:s,GHS av:2,miner_count:d,frequency:d,fan_num:d",
        ",".join(f"fan{i}:d" for i in range(1, 9)),
        "temp_num:d",
        ",".join(f"temp{i}:d" for i in _SLOTS),
        ",".join(f"temp2_{i}:d" for i in _SLOTS),
        ",".join(f"temp3_{i}:d" for i in _SLOTS),
        ",".join(f"freq_avg{i}:2" for i in _SLOTS),
        "total_rateideal:2,total_freqavg:2,total_acn:d,total_rate:2",
        ",".join(f"chain_rateideal{i}:2" for i in _SLOTS),
        "temp_max:d,Device Hardware%:4,no_matching_work:d",
        ",".join(f"chain_acn{i}:d" for i in _SLOTS),
        ",".join(f"chain_acs{i}:s" for i in _SLOTS),
        ",".join(f"chain_hw{i}:d" for i in _SLOTS),
        ",".join(f"chain_rate{i}:s" for i in _SLOTS),
    ]
    spec += [f"chain_offside_{i}:s,chain_opencore_{i}:s" for i in slots]
    spec.append("miner_version:s")
    return _Layout(",".join(spec))


def _reply_json(reply: Reply, *, stats_glued: bool = False) -> bytes:
    """Encode a reply whose entries may be :class:`_Row` (JSON, without the NUL)."""
    parts = []
    for key, value in reply.items():
        if isinstance(value, list):
            items = [
                v.layout.json(v.values) if isinstance(v, _Row) else _COMPACT_JSON(v) for v in value
            ]
            # bmminer 1.0 writes STATS[0] and STATS[1] back to back: '...}{"STATS":0...'.
            glue = "" if stats_glued and key == "STATS" else ","
            parts.append(f'"{key}":[{glue.join(items)}]')
        else:
            parts.append(f'"{key}":{_COMPACT_JSON(value)}')
    return ("{" + ",".join(parts) + "}").encode()


def _plain(reply: Reply) -> Reply:
    """The reply with every :class:`_Row` turned into a dict (for the plain-text form)."""
    return {
        key: [v.layout.mapping(v.values) if isinstance(v, _Row) else v for v in value]
        if isinstance(value, list) else value
        for key, value in reply.items()
    }  # fmt: skip


# -- miner state ------------------------------------------------------------------------


def _jitter(seed: int, slot: int) -> float:
    """A deterministic pseudo-random number in [-1, 1) for (seed, slot); no RNG state."""
    h = (seed * 0x9E3779B1 + slot * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & 0xFFFFFFFF
    h ^= h >> 12
    h = (h * 0x297A2D39) & 0xFFFFFFFF
    h ^= h >> 15
    return h / 2147483648.0 - 1.0


class _Device:
    """One ASC/PGA (or bmminer chain); counts are floats, reported as integers."""

    __slots__ = (
        "accepted",
        "diff1",
        "enabled",
        "hashes",
        "hw",
        "index",
        "last_share_at",
        "last_share_pool",
        "last_valid_work_at",
        "nominal_hs",
        "rejected",
        "stale",
    )

    def __init__(self, index: int, nominal_hs: float) -> None:
        self.index = index
        self.nominal_hs = nominal_hs
        self.enabled = True
        self.hashes = 0.0
        self.diff1 = 0.0
        self.hw = 0.0
        self.accepted = 0.0
        self.rejected = 0.0
        self.stale = 0.0
        self.last_share_at = 0.0
        self.last_share_pool = -1
        self.last_valid_work_at = 0.0


class _Pool:
    """One configured (or added) pool and the shares it received."""

    __slots__ = (
        "accepted",
        "active_s",
        "diff1",
        "enabled",
        "index",
        "last_share_at",
        "rejected",
        "stale",
        "url",
        "user",
    )

    def __init__(self, index: int, url: str, user: str) -> None:
        self.index = index
        self.url = url
        self.user = user
        self.enabled = True
        self.active_s = 0.0
        self.diff1 = 0.0
        self.accepted = 0.0
        self.rejected = 0.0
        self.stale = 0.0
        self.last_share_at = 0.0


class _View:
    """What the miner reports at one instant, computed once per request."""

    __slots__ = ("active", "devices", "now", "rate_hs", "short_hs")

    def __init__(
        self, active: int | None, devices: list[tuple[str, float, float]], now: float
    ) -> None:
        self.active = active
        self.devices = devices  # (Status, short-window H/s, true H/s) per device
        self.now = now
        self.short_hs = sum(d[1] for d in devices)
        self.rate_hs = sum(d[2] for d in devices)


_POOL_URLS: Final = (
    "stratum+tcp://pool.example.org:3333",
    "stratum+tcp://pool-backup.example.org:3333",
    "stratum+tcp://pool.example.net:443",
)

Handler: TypeAlias = Callable[["SimulatedMiner", "str | None", float], Reply]


@dataclass(frozen=True, slots=True)
class _Command:
    handler: Handler
    privileged: bool
    joinable: bool


# cgminer's Code and Msg per device kind (api.c).
_KIND_MESSAGES: Final[Mapping[str, Mapping[str, tuple[int, str]]]] = {
    "ASC": {
        "none": (105, "No ASCs"),
        "dev": (106, "ASC{id}"),
        "invalid": (107, "Invalid ASC id {id} - range is 0 - {max}"),
        "already_enabled": (108, "ASC {id} already enabled"),
        "already_disabled": (109, "ASC {id} already disabled"),
        "enable": (110, "ASC {id} sent enable message"),
        "disable": (111, "ASC {id} set disable flag"),
        "count": (104, "ASC count"),
    },
    "PGA": {
        "none": (56, "No PGAs"),
        "dev": (57, "PGA{id}"),
        "invalid": (58, "Invalid PGA id {id} - range is 0 - {max}"),
        "already_enabled": (61, "PGA {id} already enabled"),
        "already_disabled": (62, "PGA {id} already disabled"),
        "enable": (63, "PGA {id} sent enable message"),
        "disable": (64, "PGA {id} set disable flag"),
        "count": (59, "PGA count"),
    },
}
_ATOI_RE: Final = re.compile(r"\s*([+-]?\d+)")
_JUNK: Final = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n\xff\xfe\x00\x17not json"


def _atoi(text: str | None) -> int:
    """C ``atoi``: the leading integer, 0 when there is none (how cgminer reads ids)."""
    match = _ATOI_RE.match(text or "")
    return int(match.group(1)) if match else 0


def _hms(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _suffix(value: float) -> str:
    """bmminer's short difficulty ("32.8K")."""
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:g}"


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else 0.0


class SimulatedMiner:
    """One miner's state machine: ``handle(request, now)`` answers as the firmware would.

    ``now`` is when the miner is created; ``uptime_s`` how long it has already run then
    (default: a few hours to two days, fixed by ``seed``). ``devices=0`` makes a miner
    with no devices (``devs`` answers Code 10). ``write_access=False`` (or the
    ``read_only`` scenario) refuses privileged commands with Code 45.
    """

    __slots__ = (
        "_accounted_at",
        "_api_down_until",
        "_commands",
        "_devices",
        "_fault_end",
        "_fault_start",
        "_garbage_seq",
        "_n_devices",
        "_n_pools",
        "_pool_config",
        "_pool_order",
        "_pools",
        "_repaired_at",
        "_running",
        "_sleeping",
        "_started_at",
        "_view",
        "flavour",
        "name",
        "reboots",
        "restart_downtime_s",
        "restarts",
        "scenario",
        "seed",
        "write_access",
    )

    def __init__(
        self,
        name: str = "miner",
        flavour: str | Flavour = "cgminer",
        scenario: str | Scenario = "healthy",
        *,
        now: float,
        seed: int = 0,
        devices: int = 3,
        pools: int = 3,
        uptime_s: float | None = None,
        restart_downtime_s: float | None = None,
        write_access: bool = True,
    ) -> None:
        if devices < 0 or not 1 <= pools <= 16:
            raise _config_error("miner", "devices must be >= 0 and pools within 1..16")
        self.name = name
        self.flavour = _flavour(flavour)
        self.scenario = make_scenario(scenario)
        self.seed = seed
        self.write_access = (
            write_access and self.flavour.api_write_access and self.scenario.name != "read_only"
        )
        self.restart_downtime_s = (
            self.flavour.restart_downtime_s if restart_downtime_s is None else restart_downtime_s
        )
        self.restarts = 0
        self.reboots = 0
        self._sleeping = False
        self._commands = _command_table(self.flavour)
        self._n_devices = devices
        self._n_pools = pools
        self._fault_start = now + self.scenario.fail_after_s
        duration = self.scenario.duration_s
        self._fault_end = math.inf if duration is None else self._fault_start + duration
        self._repaired_at = math.inf
        self._garbage_seq = 0
        self._view: _View | None = None
        if uptime_s is None:
            uptime_s = 3600.0 * (2 + (seed * 7919) % 46) + (seed * 131) % 3600
        self._devices: list[_Device] = []
        self._pool_config: list[tuple[str, str]] = [
            (
                _POOL_URLS[i] if i < len(_POOL_URLS) else f"stratum+tcp://pool{i}.example.org:3333",
                f"farm.{name}",
            )
            for i in range(pools)
        ]
        self._pools: list[_Pool] = []
        self._pool_order: list[int] = []
        self._running = True
        self._started_at = 0.0
        self._accounted_at = 0.0
        self._api_down_until = -math.inf
        self._boot(now - uptime_s)

    def __repr__(self) -> str:
        return f"SimulatedMiner({self.name!r}, {self.flavour.name!r}, {self.scenario.name!r})"

    # -- lifecycle ----------------------------------------------------------------------

    def _boot(self, at: float) -> None:
        """A fresh process: counters zero, configured pools, every device enabled."""
        fl = self.flavour
        self._devices = [
            _Device(i, fl.device_hs * (1.0 + 0.03 * _jitter(self.seed, 1000 + i)))
            for i in range(self._n_devices)
        ]
        self._pools = [_Pool(i, url, user) for i, (url, user) in enumerate(self._pool_config)]
        self._pool_order = list(range(len(self._pools)))
        self._started_at = at
        self._accounted_at = at
        self._running = True

    def power_on(self, now: float) -> None:
        """Start a miner that was told to ``quit`` (its counters start from zero)."""
        if not self._running:
            self._boot(now)
            self._api_down_until = now + self.restart_downtime_s

    # -- control: what a family's channel does to the miner ------------------------------

    def restart(self, now: float) -> None:
        """Restart the mining process: the API is away for ``restart_downtime_s``, then
        ``Elapsed`` counts from now and every counter from zero."""
        self._repair(now)
        self.restarts += 1
        self._boot(now)
        self._view = None
        self._api_down_until = now + self.restart_downtime_s

    def reboot(self, now: float, downtime_s: float | None = None) -> None:
        """Reboot the machine: away (API and control channel) for the flavour's
        ``reboot_downtime_s``, then back with ``Elapsed`` counting from its return."""
        down = self.flavour.reboot_downtime_s if downtime_s is None else downtime_s
        self._repair(now)
        self.reboots += 1
        self._boot(now + down)
        self._view = None
        self._api_down_until = now + down

    def pool_list(self) -> list[tuple[str, str]]:
        """The configured pools, (url, user), highest priority first."""
        return [(self._pools[i].url, self._pools[i].user) for i in self._pool_order]

    def set_pools(self, pools: Sequence[tuple[str, str]], now: float) -> None:
        """Save a new pool list (url, user; first is highest priority) and restart the
        mining process with it, as a firmware's "save and apply" does."""
        if not pools:
            raise ValueError("a miner needs at least one pool")
        self._pool_config = list(pools)
        self.restart(now)

    def switch_pool(self, index: int) -> None:
        """Mine on pool ``index`` now (cgminer's ``switchpool``: not saved)."""
        self._pools[index].enabled = True
        self._pool_order.remove(index)
        self._pool_order.insert(0, index)

    def set_device_enabled(self, index: int, enabled: bool, now: float) -> bool:
        """Enable or disable device ``index``; False if there is none such."""
        if not 0 <= index < len(self._devices):
            return False
        self._advance(now)
        self._devices[index].enabled = enabled
        self._view = None
        sc = self.scenario
        if enabled and sc.name in _DEVICE_SCENARIOS and index == sc.device % len(self._devices):
            self._repair(now)  # re-enabling the board re-initialises it
        return True

    @property
    def sleeping(self) -> bool:
        """Whether the miner was told to sleep (hashing stopped, control board up)."""
        return self._sleeping

    def sleep(self, now: float) -> None:
        """Stop hashing, keep answering (LuxOS curtail, Antminer sleep mode)."""
        self._advance(now)
        self._sleeping = True
        self._view = None

    def wake(self, now: float) -> None:
        """Hash again after :meth:`sleep`."""
        self._advance(now)
        self._sleeping = False
        self._view = None

    def elapsed_s(self, now: float) -> int:
        """``Elapsed`` as the miner reports it: whole seconds since its process started."""
        return max(0, int(now - self._started_at))

    def available(self, now: float) -> bool:
        """Whether the API accepts connections at ``now``."""
        if not self._running or now < self._api_down_until:
            return False
        return not (self.scenario.name == "unreachable" and self._fault_active(now))

    def next_availability_change(self, now: float) -> float | None:
        """When :meth:`available` may next change by itself (None: not by the clock)."""
        if not self._running:
            return None
        candidates = [self._api_down_until]
        if self.scenario.name == "unreachable":
            candidates += [self._fault_start, self._fault_end]
        future = [t for t in candidates if now < t < math.inf]
        return min(future) if future else None

    def reply_delay(self, now: float) -> float:
        """Real seconds to wait before sending a reply (the ``slow`` scenario)."""
        if self.scenario.name == "slow" and self._fault_active(now):
            return self.scenario.delay_s
        return 0.0

    def fault_active(self, now: float) -> bool:
        """Whether the scenario's fault is in effect at ``now``."""
        return self.scenario.name != "healthy" and self._fault_active(now)

    def _fault_active(self, t: float) -> bool:
        return self._fault_start <= t < self._fault_end and t < self._repaired_at

    def _repair(self, now: float) -> None:
        if self.scenario.recovers_on_restart and self._fault_start <= now < self._repaired_at:
            self._repaired_at = now

    # -- ground truth, for tests and benchmarks -----------------------------------------

    def hashrate_hs(self, now: float) -> float:
        """The hashrate the miner really has at ``now`` (H/s), before report noise."""
        if not self._running or self._active_pool(now) is None:
            return 0.0
        return sum(self._device_state(dev, now)[1] for dev in self._devices)

    def device_statuses(self, now: float) -> list[str]:
        """Each device's Status at ``now`` ("Alive", "Dead", "Sick")."""
        return [self._device_state(dev, now)[0] for dev in self._devices]

    def active_pool(self, now: float) -> int | None:
        """Index of the pool the miner mines on at ``now``."""
        return self._active_pool(now)

    # -- the scenario's effect at an instant --------------------------------------------

    def _device_state(self, dev: _Device, t: float) -> tuple[str, float]:
        """(Status, hashes per second) of one device at ``t``."""
        rate = dev.nominal_hs if dev.enabled and not self._sleeping else 0.0
        sc = self.scenario
        name = sc.name
        if name == "healthy" or not self._fault_active(t):
            return "Alive", rate
        if name == "hashrate_drop":
            return "Alive", rate * sc.hashrate_factor
        if name in _DEVICE_SCENARIOS and dev.index == sc.device % self._n_devices:
            if name == "device_dead":
                return "Dead", 0.0
            if name == "device_sick":
                return "Sick", rate * sc.hashrate_factor
            # flapping: Dead in the first period, Alive in the next, and so on.
            if int((t - self._fault_start) // sc.period_s) % 2 == 0:
                return "Dead", 0.0
        return "Alive", rate

    def _hw_ratio(self, t: float) -> float:
        if self.scenario.name == "hw_errors_rising" and self._fault_active(t):
            return self.scenario.hw_ratio
        return BASE_HW_RATIO

    def _pool_dead(self, index: int, t: float) -> bool:
        sc = self.scenario
        return sc.name == "pool_dead_failover" and index == sc.pool and self._fault_active(t)

    def _pool_stale(self, index: int, t: float) -> bool:
        sc = self.scenario
        return sc.name == "pool_stale" and index == sc.pool and self._fault_active(t)

    def _active_pool(self, t: float) -> int | None:
        for index in self._pool_order:
            if self._pools[index].enabled and not self._pool_dead(index, t):
                return index
        return None

    def _next_change(self, t: float) -> float:
        """The next instant after ``t`` at which the scenario changes the miner's state."""
        start, end = self._fault_start, min(self._fault_end, self._repaired_at)
        if t < start:
            return start
        if t >= end:
            return math.inf
        if self.scenario.name == "flapping":
            period = self.scenario.period_s
            return min(end, start + (math.floor((t - start) / period) + 1) * period)
        return end

    # -- lazy integration of work and shares --------------------------------------------

    def _advance(self, now: float) -> None:
        """Integrate work and shares from the last accounting up to ``now``."""
        t = self._accounted_at
        if now <= t:
            return
        if self._running:
            for _ in range(MAX_SEGMENTS):
                end = min(now, self._next_change(t))
                self._accrue(t, end)
                t = end
                if t >= now:
                    break
            else:
                self._accrue(t, now)
        self._accounted_at = now

    def _accrue(self, a: float, b: float) -> None:
        dt = b - a
        active = self._active_pool(a)
        if dt <= 0 or active is None:
            return
        pool = self._pools[active]
        pool.active_s += dt
        hw_ratio = self._hw_ratio(a)
        hw_factor = hw_ratio / (1.0 - hw_ratio)
        stale_pool = self._pool_stale(active, a)
        difficulty = self.flavour.pool_difficulty
        pool_diff1 = pool_accepted = pool_rejected = pool_stale = 0.0
        for dev in self._devices:
            rate = self._device_state(dev, a)[1]
            if rate <= 0.0:
                continue
            hashes = rate * dt
            diff1 = hashes / DIFF1_HASHES
            shares = diff1 / difficulty
            dev.hashes += hashes
            dev.diff1 += diff1
            dev.hw += diff1 * hw_factor
            dev.last_valid_work_at = b
            pool_diff1 += diff1
            if stale_pool:
                # The pool answers every share "stale": nothing is accepted.
                dev.stale += shares
                pool_stale += shares
                continue
            accepted = shares * (1.0 - REJECT_SHARE - STALE_SHARE)
            crossed = _crossing(dev.accepted, accepted, a, dt)
            if crossed is not None:
                dev.last_share_at = crossed
                dev.last_share_pool = active
            dev.accepted += accepted
            dev.rejected += shares * REJECT_SHARE
            dev.stale += shares * STALE_SHARE
            pool_accepted += accepted
            pool_rejected += shares * REJECT_SHARE
            pool_stale += shares * STALE_SHARE
        crossed = _crossing(pool.accepted, pool_accepted, a, dt)
        if crossed is not None:
            pool.last_share_at = crossed
        pool.diff1 += pool_diff1
        pool.accepted += pool_accepted
        pool.rejected += pool_rejected
        pool.stale += pool_stale

    # -- requests -----------------------------------------------------------------------

    def handle_bytes(
        self, data: bytes, now: float, member: FleetMember | None = None
    ) -> bytes | None:
        """Answer raw request bytes, including cgminer's replies to malformed requests
        (and first, where the flavour has one, its own API handling)."""
        if not self.available(now):
            return None
        hook = self.flavour.api_hook
        if hook is not None:
            reply = hook(self, member, data, now)
            if reply is not None:
                return reply
        try:
            request = decode_request(data)
        except ProtocolError:
            return self._bad_request(data, now)
        return self.handle(request, now)

    def handle(self, request: Request, now: float) -> bytes | None:
        """The bytes the miner sends for ``request`` at ``now``; None: close, say nothing."""
        if not self.available(now):
            return None
        self._advance(now)
        commands = _split_commands(request)
        try:
            if len(commands) > 1:
                if self.flavour.multi_command:
                    out = self._multi(commands, request.text, now)
                else:
                    out = self._encode("", self._invalid_command(now), request.text)
            else:
                command = commands[0]
                reply = self._single(command, request.parameter, now)
                out = self._encode(command, reply, request.text)
        finally:
            self._view = None
        if self.scenario.name == "garbage" and self._fault_active(now):
            return self._garble(out)
        return out

    def _single(self, command: str, parameter: str | None, now: float) -> Reply:
        spec = self._commands.get(command)
        if spec is None:
            return self._invalid_command(now)
        if spec.privileged and not self.write_access:
            return self._access_denied(command, now)
        return spec.handler(self, parameter, now)

    def _multi(self, commands: Sequence[str], text: bool, now: float) -> bytes:
        """cgminer's join: each command's own reply in a list under its name; a command
        that may not be joined (every privileged one) is refused with Code 45."""
        parts: list[tuple[str, Reply]] = []
        seen: set[str] = set()
        for command in commands:
            if not command or command in seen:
                continue
            seen.add(command)
            spec = self._commands.get(command)
            if spec is None:
                reply = self._invalid_command(now)
            elif not spec.joinable or (spec.privileged and not self.write_access):
                reply = self._access_denied(command, now)
            else:
                reply = spec.handler(self, None, now)
            parts.append((command, reply))
        if not parts:
            return self._encode("", self._invalid_command(now), text)
        if text:
            return (
                b"".join(
                    b"CMD=" + name.encode() + b"|" + self._encode(name, reply, True)[:-1]
                    for name, reply in parts
                )
                + b"\0"
            )
        body = b",".join(
            json.dumps(name).encode() + b":[" + self._json(name, reply) + b"]"
            for name, reply in parts
        )
        return b"{" + body + b',"id":1}\0'

    def _encode(self, command: str, reply: Reply, text: bool) -> bytes:
        if text:
            status = reply["STATUS"]
            if isinstance(status, str):  # cgminer's bare RESTART / BYE
                return status.encode() + b"\0"
            return encode_text_reply(_plain(reply))
        return self._json(command, reply) + b"\0"

    def _json(self, command: str, reply: Reply) -> bytes:
        if isinstance(reply["STATUS"], str):
            return encode_reply(reply)[:-1]
        glued = command == "stats" and self.flavour.stats_brace_quirk
        return _reply_json(reply, stats_glued=glued)

    def _garble(self, out: bytes) -> bytes:
        self._garbage_seq += 1
        mode = self.scenario.garbage
        if mode == "alternate":
            mode = "truncate" if self._garbage_seq % 2 else "junk"
        if mode == "truncate":
            return out[: max(1, len(out) // 2)]  # no NUL: the miner gave up mid-reply
        return _JUNK

    def _bad_request(self, data: bytes, now: float) -> bytes:
        raw = data.split(b"\0", 1)[0].strip()
        if not raw.startswith(b"{"):
            return encode_text_reply(_plain(self._invalid_command(now)))
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            reply = self._message("E", 23, "Invalid JSON", now)
        elif "command" not in obj:
            reply = self._message("E", 24, "Missing JSON 'command'", now)
        else:
            reply = self._invalid_command(now)
        return _reply_json(reply) + b"\0"

    # -- reply building -----------------------------------------------------------------

    def _status(self, letter: str, code: int, msg: str, now: float) -> _Row:
        if code == 14 and not self.flavour.invalid_command_description:
            return _Row(_STATUS_NO_DESCRIPTION, (letter, int(now), code, msg))
        return _Row(_STATUS, (letter, int(now), code, msg, self.flavour.description))

    def _message(self, letter: str, code: int, msg: str, now: float) -> Reply:
        return {"STATUS": [self._status(letter, code, msg, now)], "id": 1}

    def _reply(self, code: int, msg: str, now: float, section: str, entries: list[Any]) -> Reply:
        return {"STATUS": [self._status("S", code, msg, now)], section: entries, "id": 1}

    def _invalid_command(self, now: float) -> Reply:
        return self._message("E", 14, "Invalid command", now)

    def _access_denied(self, command: str, now: float) -> Reply:
        return self._message("E", 45, f"Access denied to '{command}' command", now)

    def _visible_devices(self) -> list[_Device]:
        return self._devices if self.flavour.lists_devices else []

    def _no_devices(self, now: float) -> Reply:
        kind = "PGAs" if self.flavour.device_kind == "PGA" else "ASCs"
        return self._message("E", 10, f"No {kind}", now)

    def _at(self, now: float) -> _View:
        """Device states and the active pool at ``now``, computed once per request."""
        view = self._view
        if view is not None and view.now == now:
            return view
        fl = self.flavour
        active = self._active_pool(now)
        slot = int(now // fl.log_interval_s)
        # The short window ("MHS 5s", bfgminer's "MHS 20s") reads 0 until it has elapsed.
        warming = now - self._started_at < fl.log_interval_s
        devices = []
        for dev in self._devices:
            status, rate = self._device_state(dev, now)
            if active is None:
                rate = 0.0
            short = (
                0.0 if warming else rate * (1.0 + 0.015 * _jitter(self.seed * 64 + dev.index, slot))
            )
            devices.append((status, short, rate))
        view = self._view = _View(active, devices, now)
        return view

    def _window(self, salt: int, rate: float, now: float, window_s: int, spread: float) -> float:
        """A rolling average over ``window_s``: ramps up from 0 after a start."""
        ramp = min(1.0, (now - self._started_at) / window_s)
        return rate * ramp * (1.0 + spread * _jitter(salt + window_s, int(now // window_s)))

    def _temperature(self, dev: _Device, status: str, now: float) -> float:
        base = 30.0 if status == "Dead" else self.flavour.device_temp_c
        slow = 0.8 * _jitter(self.seed * 64 + dev.index, int(now // 30))
        return base + 3.0 * _jitter(self.seed, 2000 + dev.index) + slow

    def _summary_row(self, now: float) -> _Row:
        fl = self.flavour
        view = self._at(now)
        secs = max(1.0, now - self._started_at)
        devs, pools = self._devices, self._pools
        hashes = sum(d.hashes for d in devs)
        diff1 = sum(d.diff1 for d in devs)
        hw = sum(d.hw for d in devs)
        accepted = sum(p.accepted for p in pools)
        rejected = sum(p.rejected for p in pools)
        stale = sum(p.stale for p in pools)
        getworks = int(sum(p.active_s for p in pools) / 30.0) + len(pools)
        d = fl.pool_difficulty
        diff_acc, diff_rej, diff_stale = accepted * d, rejected * d, stale * d
        submitted = diff_acc + diff_rej + diff_stale
        best = d * accepted if accepted >= 1 else 0
        work_utility = diff1 / secs * 60.0
        tail_a = (0, getworks, int(accepted), int(rejected), int(hw), accepted / secs * 60.0,
                  getworks * 4, int(stale), 0, int(diff1 / 64.0), 0, int(secs // 600),
                  hashes / 1e6)  # fmt: skip
        tail_b = (work_utility, diff_acc, diff_rej, diff_stale, best, _pct(hw, hw + diff1),
                  _pct(diff_rej, diff1), _pct(diff_rej, submitted), _pct(diff_stale, submitted),
                  int(now))  # fmt: skip
        elapsed = self.elapsed_s(now)
        if fl.family == "bmminer":
            head: tuple[Any, ...] = (elapsed, f"{view.short_hs / 1e9:.2f}", hashes / secs / 1e9)
            return _Row(_SUMMARY["bmminer"], head + tail_a + tail_b)
        if fl.family == "bfgminer":
            head = (elapsed, hashes / secs / 1e6, view.short_hs / 1e6)
            return _Row(_SUMMARY["bfgminer"], head + tail_a + (diff1,) + tail_b)
        rate, salt = view.rate_hs, self.seed
        head = (elapsed, hashes / secs / 1e6, view.short_hs / 1e6,
                self._window(salt, rate, now, 60, 0.008) / 1e6,
                self._window(salt, rate, now, 300, 0.004) / 1e6,
                self._window(salt, rate, now, 900, 0.002) / 1e6)  # fmt: skip
        return _Row(_SUMMARY["cgminer"], head + tail_a + tail_b)

    def _device_row(self, position: int, dev: _Device, now: float) -> _Row:
        fl = self.flavour
        status, short, rate = self._at(now).devices[dev.index]
        secs = max(1.0, now - self._started_at)
        d = fl.pool_difficulty
        diff_rej = dev.rejected * d
        shared = dev.last_share_at > 0
        enabled = "Y" if dev.enabled else "N"
        temperature = self._temperature(dev, status, now)
        hw_pct, rej_pct = _pct(dev.hw, dev.hw + dev.diff1), _pct(diff_rej, dev.diff1)
        if fl.family == "bfgminer":
            values: tuple[Any, ...] = (
                position, fl.device_driver, dev.index, enabled, status, temperature,
                self.elapsed_s(now), dev.hashes / secs / 1e6, short / 1e6, short / 1e6,
                int(dev.accepted), int(dev.rejected), int(dev.hw), dev.accepted / secs * 60.0,
                int(dev.stale), dev.last_share_pool, int(dev.last_share_at), dev.hashes / 1e6,
                dev.diff1, dev.diff1 / secs * 60.0, dev.accepted * d, diff_rej, dev.stale * d,
                d, int(dev.last_valid_work_at), hw_pct, rej_pct,
            )  # fmt: skip
            if shared:
                return _Row(_PGA_DEVICE, values)
            layout, keep = _PGA_NO_SHARE if dev.last_valid_work_at else _PGA_NO_WORK
            return _Row(layout, tuple(values[i] for i in keep))
        salt = self.seed * 64 + dev.index
        return _Row(_ASC_DEVICE, (
            position, fl.device_driver, dev.index, enabled, status, temperature,
            dev.hashes / secs / 1e6, short / 1e6,
            self._window(salt, rate, now, 60, 0.008) / 1e6,
            self._window(salt, rate, now, 300, 0.004) / 1e6,
            self._window(salt, rate, now, 900, 0.002) / 1e6,
            int(dev.accepted), int(dev.rejected), int(dev.hw), dev.accepted / secs * 60.0,
            dev.last_share_pool if shared else -1, int(dev.last_share_at), dev.hashes / 1e6,
            int(dev.diff1), dev.accepted * d, diff_rej, d if shared else 0.0, False,
            int(dev.last_valid_work_at), hw_pct, rej_pct, self.elapsed_s(now),
        ))  # fmt: skip

    def _pool_status(self, pool: _Pool, now: float) -> str:
        if not pool.enabled:
            return "Disabled"
        return "Dead" if self._pool_dead(pool.index, now) else "Alive"

    def _pool_row(self, pool: _Pool, active: int | None, now: float) -> _Row:
        fl = self.flavour
        d = fl.pool_difficulty
        is_active = pool.index == active
        used = pool.active_s > 0 or is_active
        diff_acc, diff_rej, diff_stale = pool.accepted * d, pool.rejected * d, pool.stale * d
        submitted = diff_acc + diff_rej + diff_stale
        getworks = int(pool.active_s / 30.0) + 1
        discarded = getworks * 4 if used else 0
        stratum_url = pool.url.split("://", 1)[-1].rsplit(":", 1)[0] if is_active else ""
        last_share_diff = d if pool.last_share_at else 0.0
        best = d * pool.accepted if pool.accepted >= 1 else 0
        index, url, status = pool.index, pool.url, self._pool_status(pool, now)
        priority = self._pool_order.index(pool.index)
        accepted, rejected, stale = int(pool.accepted), int(pool.rejected), int(pool.stale)
        rejected_pct, stale_pct = _pct(diff_rej, submitted), _pct(diff_stale, submitted)
        if fl.family == "bmminer":
            age = _hms(now - pool.last_share_at) if pool.last_share_at else "0"
            return _Row(_POOL["bmminer"], (
                index, url, status, priority, 1, "N", getworks, accepted, rejected, discarded,
                stale, 0, 0, pool.user, age, _suffix(d) if used else "", int(pool.diff1), "",
                "", diff_acc, diff_rej, diff_stale, last_share_diff, True, is_active,
                stratum_url, False, best, rejected_pct, stale_pct,
            ))  # fmt: skip
        works = int(pool.diff1 / 64.0)
        last_share_time = int(pool.last_share_at)
        if fl.family == "bfgminer":
            return _Row(_POOL["bfgminer"], (
                index, url, status, priority, 1, "default", "N", getworks, accepted, rejected,
                works, discarded, stale, 0, 0, pool.user, last_share_time, pool.diff1, "",
                diff_acc, diff_rej, diff_stale, last_share_diff, True, is_active, stratum_url,
                best, rejected_pct, stale_pct,
            ))  # fmt: skip
        height = 925_000 + int(now // 600) % 100_000 if used else 0
        return _Row(_POOL["cgminer"], (
            index, url, status, priority, 1, "N", getworks, accepted, rejected, works,
            discarded, stale, 0, 0, pool.user, last_share_time, int(pool.diff1), "", "",
            diff_acc, diff_rej, diff_stale, last_share_diff, d if used else 0.0, True,
            is_active, stratum_url, d if is_active else 0.0, True, False, best, rejected_pct,
            stale_pct, rejected, height, 536870912,
        ))  # fmt: skip

    # -- commands -----------------------------------------------------------------------

    def _cmd_version(self, _param: str | None, now: float) -> Reply:
        fl = self.flavour
        return self._reply(22, f"{fl.program} versions", now, "VERSION", [dict(fl.version)])

    def _cmd_summary(self, _param: str | None, now: float) -> Reply:
        return self._reply(11, "Summary", now, "SUMMARY", [self._summary_row(now)])

    def _cmd_devs(self, _param: str | None, now: float) -> Reply:
        devices = self._visible_devices()
        if not devices:
            return self._no_devices(now)
        kind = self.flavour.device_kind
        entries = [self._device_row(i, dev, now) for i, dev in enumerate(devices)]
        return self._reply(9, f"{len(devices)} {kind}(s)", now, "DEVS", entries)

    def _cmd_pools(self, _param: str | None, now: float) -> Reply:
        active = self._at(now).active
        entries = [self._pool_row(pool, active, now) for pool in self._pools]
        return self._reply(7, f"{len(self._pools)} Pool(s)", now, "POOLS", entries)

    def _cmd_config(self, _param: str | None, now: float) -> Reply:
        fl = self.flavour
        count = len(self._visible_devices())
        entry: dict[str, Any] = {
            "ASC Count": count if fl.device_kind == "ASC" else 0,
            "PGA Count": count if fl.device_kind == "PGA" else 0,
            "Pool Count": len(self._pools),
            "Strategy": "Failover",
            "Log Interval": fl.log_interval_s,
            "Device Code": f"{fl.device_driver} ",
            "OS": "Linux",
            "Hotplug": 5 if fl.family == "cgminer" else "None",
        }
        return self._reply(33, f"{fl.program} config", now, "CONFIG", [entry])

    def _cmd_coin(self, _param: str | None, now: float) -> Reply:
        block = int(now // 600)
        digest = (block * 0x9E3779B97F4A7C15 * 0xBF58476D1CE4E5B9) % (1 << 180)
        entry = {
            "Hash Method": "sha256",
            "Current Block Time": block * 600.0 + 7.123456,
            "Current Block Hash": "0" * 19 + f"{digest:045x}",
            "LP": True,
            "Network Difficulty": 1.4965e14,
        }
        return self._reply(78, f"{self.flavour.program} coin", now, "COIN", [entry])

    def _cmd_devdetails(self, _param: str | None, now: float) -> Reply:
        devices = self._visible_devices()
        if not devices:
            return self._no_devices(now)
        fl = self.flavour
        entries = [
            {
                "DEVDETAILS": i,
                "Name": fl.device_driver,
                "ID": dev.index,
                "Driver": fl.device_dname,
                "Kernel": "",
                "Model": fl.device_model,
                "Device Path": f"1:{i + 4}",
            }
            for i, dev in enumerate(devices)
        ]
        return self._reply(69, "Device Details", now, "DEVDETAILS", entries)

    def _cmd_stats(self, _param: str | None, now: float) -> Reply:
        fl = self.flavour
        if fl.family == "bmminer":
            head = {key: value for key, value in fl.version if key not in ("API", "VER")}
            return self._reply(
                70, f"{fl.program} stats", now, "STATS", [head, self._bmminer_stats(now)]
            )
        elapsed = self.elapsed_s(now)
        view = self._at(now)
        entries: list[Any] = []
        for dev in self._visible_devices():
            status = view.devices[dev.index][0]
            entries.append(_Row(_DEVICE_STATS, (
                len(entries), f"{fl.device_driver}{dev.index}", elapsed, 0, 0.0, 0.0, 99999999.0,
                0.0 if status == "Dead" else 600.0, self._temperature(dev, status, now),
                int(dev.diff1),
            )))  # fmt: skip
        d = fl.pool_difficulty
        for pool in self._pools:
            getworks = int(pool.active_s / 30.0) + 1
            accepted = int(pool.accepted)
            sent = int(pool.accepted + pool.rejected + pool.stale)
            entries.append(_Row(_POOL_STATS, (
                len(entries), f"POOL{pool.index}", elapsed, 0, 0.0, 0.0, 99999999.0,
                0, 0, 0.0, 0.0, 99999999.0, 0.0, False, False, False, 0, d, d, d, accepted,
                accepted, sent + getworks, accepted * 160 + getworks * 80, getworks * 2,
                getworks * 1400, accepted * 220 + getworks * 120, getworks * 1600,
            )))  # fmt: skip
        return self._reply(70, f"{fl.program} stats", now, "STATS", entries)

    def _bmminer_stats(self, now: float) -> _Row:
        """STATS[1] of an Antminer S9: boards in chain slots 6-8, fans in fan5/fan6."""
        fl = self.flavour
        view = self._at(now)
        secs = max(1.0, now - self._started_at)
        chains = {6 + dev.index: dev for dev in self._devices[:11]}
        slots = tuple(chains)
        frequency = 650
        hw = sum(dev.hw for dev in self._devices)
        diff1 = sum(dev.diff1 for dev in self._devices)
        status = {slot: view.devices[dev.index][0] for slot, dev in chains.items()}
        short = {slot: view.devices[dev.index][1] for slot, dev in chains.items()}
        pcb = {slot: int(self._temperature(dev, status[slot], now)) for slot, dev in chains.items()}
        fans = {5: 3600 + int(120 * _jitter(self.seed, int(now // 10))),
                6: 3480 + int(120 * _jitter(self.seed + 1, int(now // 10)))}  # fmt: skip
        values: list[Any] = [
            0, f"{fl.device_driver}0", self.elapsed_s(now), 0, 0.0, 0.0, 99999999.0,
            f"{view.short_hs / 1e9:.2f}", sum(d.hashes for d in self._devices) / secs / 1e9,
            len(chains), frequency, len(fans),
        ]  # fmt: skip
        values += [fans.get(i, 0) for i in range(1, 9)]
        values.append(len(chains))
        values += [pcb.get(i, 0) for i in _SLOTS]
        values += [pcb[i] + 12 if i in pcb else 0 for i in _SLOTS]
        values += [0] * 16
        values += [
            frequency + 2.5 * _jitter(self.seed, 3000 + i) if i in chains else 0.0 for i in _SLOTS
        ]
        values += [sum(d.nominal_hs for d in chains.values()) / 1e9, float(frequency),
                   63 * len(chains), view.short_hs / 1e9]  # fmt: skip
        values += [chains[i].nominal_hs / 1e9 if i in chains else 0.0 for i in _SLOTS]
        values += [max(pcb.values(), default=0), _pct(hw, hw + diff1), int(hw)]
        values += [63 if i in chains else 0 for i in _SLOTS]
        values += [_chip_map(status[i]) if i in chains else "" for i in _SLOTS]
        values += [int(chains[i].hw) if i in chains else 0 for i in _SLOTS]
        values += [f"{short[i] / 1e9:.2f}" if i in chains else "" for i in _SLOTS]
        for _ in slots:
            values += ["0", "0"]
        values.append(dict(fl.version).get("Miner", ""))
        return _Row(_bmminer_stats_layout(slots), values)

    def _cmd_privileged(self, _param: str | None, now: float) -> Reply:
        return self._message("S", 46, "Privileged access OK", now)

    def _cmd_check(self, param: str | None, now: float) -> Reply:
        if not param:
            return self._message("E", 71, "Missing check cmd", now)
        spec = self._commands.get(param)
        access = spec is not None and (self.write_access or not spec.privileged)
        entry = {"Exists": "Y" if spec else "N", "Access": "Y" if access else "N"}
        return self._reply(72, "Check command", now, "CHECK", [entry])

    # device commands (asc / pga)

    def _device_index(self, param: str | None, now: float) -> int | Reply:
        texts = _KIND_MESSAGES[self.flavour.device_kind]
        devices = self._visible_devices()
        if not devices:
            code, msg = texts["none"]
            return self._message("E", code, msg, now)
        if not param:
            return self._message("E", 15, "Missing device id parameter", now)
        index = _atoi(param)
        if not 0 <= index < len(devices):
            code, msg = texts["invalid"]
            return self._message("E", code, msg.format(id=index, max=len(devices) - 1), now)
        return index

    def _cmd_device(self, param: str | None, now: float) -> Reply:
        index = self._device_index(param, now)
        if isinstance(index, dict):
            return index
        kind = self.flavour.device_kind
        code, msg = _KIND_MESSAGES[kind]["dev"]
        row = self._device_row(index, self._devices[index], now)
        return self._reply(code, msg.format(id=index), now, kind, [row])

    def _cmd_device_enable(self, param: str | None, now: float) -> Reply:
        return self._set_device(param, now, enable=True)

    def _cmd_device_disable(self, param: str | None, now: float) -> Reply:
        return self._set_device(param, now, enable=False)

    def _set_device(self, param: str | None, now: float, *, enable: bool) -> Reply:
        index = self._device_index(param, now)
        if isinstance(index, dict):
            return index
        texts = _KIND_MESSAGES[self.flavour.device_kind]
        dev = self._devices[index]
        if dev.enabled == enable:
            code, msg = texts["already_enabled" if enable else "already_disabled"]
            return self._message("I", code, msg.format(id=index), now)
        self.set_device_enabled(index, enable, now)
        code, msg = texts["enable" if enable else "disable"]
        return self._message("I", code, msg.format(id=index), now)

    def _cmd_device_count(self, _param: str | None, now: float) -> Reply:
        kind = self.flavour.device_kind
        code, msg = _KIND_MESSAGES[kind]["count"]
        return self._reply(code, msg, now, f"{kind}S", [{"Count": len(self._visible_devices())}])

    def _cmd_no_gpus(self, _param: str | None, now: float) -> Reply:
        return self._message("E", 6, "No GPUs", now)

    # pool commands

    def _pool_index(self, param: str | None, now: float) -> int | Reply:
        if not param:
            return self._message("E", 25, "Missing pool id parameter", now)
        index = _atoi(param)
        if not 0 <= index < len(self._pools):
            msg = f"Invalid pool id {index} - range is 0 - {len(self._pools) - 1}"
            return self._message("E", 26, msg, now)
        return index

    def _cmd_switchpool(self, param: str | None, now: float) -> Reply:
        index = self._pool_index(param, now)
        if isinstance(index, dict):
            return index
        self.switch_pool(index)
        return self._message("S", 27, f"Switching to pool {index}:'{self._pools[index].url}'", now)

    def _cmd_enablepool(self, param: str | None, now: float) -> Reply:
        index = self._pool_index(param, now)
        if isinstance(index, dict):
            return index
        pool = self._pools[index]
        if pool.enabled:
            return self._message("I", 49, f"Pool {index}:'{pool.url}' already enabled", now)
        pool.enabled = True
        return self._message("S", 47, f"Enabling pool {index}:'{pool.url}'", now)

    def _cmd_disablepool(self, param: str | None, now: float) -> Reply:
        index = self._pool_index(param, now)
        if isinstance(index, dict):
            return index
        pool = self._pools[index]
        if not pool.enabled:
            return self._message("I", 50, f"Pool {index}:'{pool.url}' already disabled", now)
        if sum(p.enabled for p in self._pools) <= 1:
            return self._message(
                "E", 51, f"Cannot disable last active pool {index}:'{pool.url}'", now
            )
        pool.enabled = False
        return self._message("S", 48, f"Disabling pool {index}:'{pool.url}'", now)

    def _cmd_addpool(self, param: str | None, now: float) -> Reply:
        if not param:
            return self._message("E", 52, "Missing addpool details", now)
        details = _pool_details(param)
        if details is None:
            return self._message("E", 53, f"Invalid addpool details '{param}'", now)
        url, user = details
        index = len(self._pools)
        self._pools.append(_Pool(index, url, user))
        self._pool_order.append(index)
        return self._message("S", 55, f"Added pool {index}: '{url}'", now)

    # process commands

    def _cmd_restart(self, _param: str | None, now: float) -> Reply:
        # The process keeps its PID; its API comes back after the downtime, with Elapsed
        # counting from the restart and every counter from zero.
        self.restart(now)
        if self.flavour.family == "bfgminer":
            return self._message("S", 257, "RESTART", now)
        return {"STATUS": "RESTART", "id": 1}

    def _cmd_quit(self, _param: str | None, now: float) -> Reply:
        self._running = False
        if self.flavour.family == "bfgminer":
            return self._message("S", 257, "BYE", now)
        return {"STATUS": "BYE", "id": 1}


def _crossing(before: float, increment: float, start: float, dt: float) -> float | None:
    """When a counter growing linearly by ``increment`` over ``dt`` last passed a whole
    number (the time of the last share), or None if it passed none."""
    after = before + increment
    last_whole = math.floor(after)
    if increment <= 0.0 or last_whole <= math.floor(before):
        return None
    return start + (last_whole - before) / increment * dt


def _chip_map(status: str) -> str:
    """bmminer's chain_acsN: 63 chips in groups of 8, 'o' good, 'x' not answering."""
    if status == "Dead":
        chips = "x" * 63
    elif status == "Sick":
        chips = "".join("x" if i % 3 == 0 else "o" for i in range(63))
    else:
        chips = "o" * 63
    return "".join(" " + chips[i : i + 8] for i in range(0, 63, 8))


def _pool_details(param: str) -> tuple[str, str] | None:
    """cgminer's addpool parameter ``url,user,pass`` (a backslash escapes a comma)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(param)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == "," and len(parts) < 2:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    if len(parts) < 3 or not parts[0] or not parts[2]:
        return None
    return parts[0], parts[1]


def _split_commands(request: Request) -> tuple[str, ...]:
    # cgminer joins with '+' in the plain-text form too.
    if len(request.commands) == 1 and "+" in request.commands[0]:
        return tuple(request.commands[0].split("+"))
    return request.commands


@functools.cache
def _command_table(flavour: Flavour) -> Mapping[str, _Command]:
    """The commands this firmware knows: handler, privileged, joinable (api.c's table)."""
    m = SimulatedMiner
    kind = flavour.device_kind.lower()
    table: dict[str, _Command] = {
        "version": _Command(m._cmd_version, False, True),
        "config": _Command(m._cmd_config, False, True),
        "summary": _Command(m._cmd_summary, False, True),
        "devs": _Command(m._cmd_devs, False, True),
        "pools": _Command(m._cmd_pools, False, True),
        "stats": _Command(m._cmd_stats, False, True),
        "coin": _Command(m._cmd_coin, False, True),
        "devdetails": _Command(m._cmd_devdetails, False, True),
        "check": _Command(m._cmd_check, False, False),
        "privileged": _Command(m._cmd_privileged, True, False),
        kind: _Command(m._cmd_device, False, False),
        f"{kind}enable": _Command(m._cmd_device_enable, True, False),
        f"{kind}disable": _Command(m._cmd_device_disable, True, False),
        f"{kind}count": _Command(m._cmd_device_count, False, True),
        "switchpool": _Command(m._cmd_switchpool, True, False),
        "enablepool": _Command(m._cmd_enablepool, True, False),
        "disablepool": _Command(m._cmd_disablepool, True, False),
        "addpool": _Command(m._cmd_addpool, True, False),
        "restart": _Command(m._cmd_restart, True, False),
        "quit": _Command(m._cmd_quit, True, False),
    }
    for extra in flavour.commands:
        table[extra.name] = _Command(extra.handler, extra.privileged, extra.joinable)
    if flavour.family == "bfgminer":
        # bfgminer keeps its GPU commands; without GPUs they answer Code 6.
        table["gpu"] = _Command(m._cmd_no_gpus, False, False)
        table["gpuenable"] = _Command(m._cmd_no_gpus, True, False)
        table["gpudisable"] = _Command(m._cmd_no_gpus, True, False)
    return table


# -- the fleet and its servers ----------------------------------------------------------


class ControlServer(abc.ABC):
    """One miner's control channel as its flavour serves it (a web UI, a token API, a
    gRPC service), on a port of its own beside the API. The fleet opens and closes it
    with the API: a reboot takes both away."""

    def __init__(self, member: FleetMember, fleet: Fleet) -> None:
        self.member = member
        self.fleet = fleet

    @property
    def miner(self) -> SimulatedMiner:
        """The miner this channel controls."""
        return self.member.miner

    def now(self) -> float:
        """The fleet's clock."""
        return self.fleet.clock()

    def changed(self) -> None:
        """Call after a command that may take the miner away (restart, reboot)."""
        self.fleet._after_request(self.member, self.now())

    @abc.abstractmethod
    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); the port bound."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop listening and drop open connections."""


class HttpControlServer(ControlServer):
    """A control channel served over HTTP (aiohttp, imported only when one starts): every
    request, whatever its method and path, goes to :meth:`handle`."""

    shutdown_s: ClassVar[float] = 0.5  # answers already on their way still go out

    def __init__(self, member: FleetMember, fleet: Fleet) -> None:
        super().__init__(member, fleet)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> int:
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.shutdown_s)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError as exc:
            await runner.cleanup()
            message = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            raise _config_error("simulate", message) from None
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound: int = runner.addresses[0][1]
        return bound

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @abc.abstractmethod
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request."""


State = TypeVar("State")


class MinerStates(Generic[State]):
    """What a flavour keeps per simulated miner beside it (switches for tests, the log of
    requests received), made on first use with ``make(miner)`` and kept across restarts
    and reboots."""

    def __init__(self, make: Callable[[SimulatedMiner], State]) -> None:
        self._make = make
        # By id, with the miner kept beside its state: the id never passes to another one.
        self._states: dict[int, tuple[SimulatedMiner, State]] = {}

    def __call__(self, miner: SimulatedMiner) -> State:
        kept = self._states.get(id(miner))
        if kept is None or kept[0] is not miner:
            kept = self._states[id(miner)] = (miner, self._make(miner))
        return kept[1]


class FleetMember:
    """One miner of a fleet: its name, address, listening state and request counters."""

    __slots__ = (
        "_api",
        "_control",
        "_next_event",
        "_server",
        "commands",
        "connections",
        "control_port",
        "host",
        "index",
        "miner",
        "mode",
        "name",
        "port",
        "requests",
    )

    def __init__(self, index: int, name: str, host: str, port: int, miner: SimulatedMiner) -> None:
        self.index = index
        self.name = name
        self.host = host
        self.port = port
        self.miner = miner
        self.mode: Mode = "normal"
        self.connections = 0
        self.requests = 0
        self.commands: dict[str, int] = {}
        self._server: asyncio.AbstractServer | None = None
        self._next_event = math.inf
        self.control_port = 0
        """Where the flavour's control channel listens (0: none, or not started yet)."""
        self._control: ControlServer | None = None
        self._api: ControlServer | None = None

    def __repr__(self) -> str:
        return f"FleetMember({self.name!r}, {self.host}:{self.port}, {self.mode})"

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to connect to."""
        return self.host, self.port

    @property
    def listening(self) -> bool:
        """Whether the member's API socket is open right now."""
        return self._server is not None or self._api is not None

    def describe(self) -> str:
        """``name host:port flavour scenario [control port]``, the line ``simulate`` prints."""
        m = self.miner
        line = f"{self.name} {self.host}:{self.port} {m.flavour.name} {m.scenario.name}"
        if self.control_port:
            line += f" control {self.host}:{self.control_port}"
        return line


ScenarioChoice: TypeAlias = (
    "str | Scenario | Mapping[str | Scenario, int] | Callable[[int], str | Scenario]"
)
"""One scenario for all, counts per scenario, or a scenario per miner index."""


class Fleet:
    """Many simulated miners with names and addresses; serve them with :func:`serve`."""

    def __init__(
        self,
        members: Sequence[FleetMember],
        clock: Clock = time.time,
        *,
        watch_interval_s: float = 0.1,
    ) -> None:
        self.members: tuple[FleetMember, ...] = tuple(members)
        self.clock = clock
        self.watch_interval_s = watch_interval_s
        self._by_name = {m.name: m for m in self.members}
        self._events: list[tuple[float, int]] = []
        self._live: set[_MinerConnection] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._kick: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._started = False

    @classmethod
    def build(
        cls,
        n: int,
        scenario: ScenarioChoice = "healthy",
        *,
        flavours: Sequence[str | Flavour] = DEFAULT_FLAVOURS,
        listen: str = "127.0.0.1",
        base_port: int | None = None,
        port: int = DEFAULT_PORT,
        clock: Clock = time.time,
        scenario_options: Mapping[str, Any] | None = None,
        devices: int = 3,
        pools: int = 3,
        uptime_s: float | None = None,
        restart_downtime_s: float | None = None,
        name_prefix: str = "sim-",
        watch_interval_s: float = 0.1,
    ) -> Fleet:
        """Build ``n`` miners, flavours round-robin, scenarios as ``scenario`` says.

        ``scenario``: one name (or :class:`Scenario`) for all; a mapping name -> count
        (the first miners get them in order, the rest are healthy); or a callable
        index -> name. ``scenario_options`` apply to every scenario given by name.
        Addresses: without ``base_port``, one loopback address each from ``listen``
        (127.0.0.1, 127.0.0.2, ...; x.y.z.0 and .255 skipped) on ``port``; with ``base_port``,
        ``listen`` with ports base_port, base_port+1, ... (0: any free port each).
        """
        if n < 0:
            raise _config_error("fleet", "the number of miners must be >= 0")
        if not flavours:
            raise _config_error("fleet", "give at least one flavour")
        kinds = [_flavour(f) for f in flavours]
        addresses = _addresses(n, listen, base_port, port)
        choose = _scenario_chooser(n, scenario, dict(scenario_options or {}))
        now = clock()
        width = max(3, len(str(n)))
        members = []
        for i, (host, member_port) in enumerate(addresses):
            name = f"{name_prefix}{i + 1:0{width}d}"
            miner = SimulatedMiner(
                name,
                kinds[i % len(kinds)],
                choose(i),
                now=now,
                seed=i + 1,
                devices=devices,
                pools=pools,
                uptime_s=uptime_s,
                restart_downtime_s=restart_downtime_s,
            )
            members.append(FleetMember(i, name, host, member_port, miner))
        return cls(members, clock, watch_interval_s=watch_interval_s)

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[FleetMember]:
        return iter(self.members)

    def __getitem__(self, key: int | str) -> FleetMember:
        if isinstance(key, int):
            return self.members[key]
        return self._by_name[key]

    def describe(self) -> Iterator[str]:
        """One line per miner: ``name host:port flavour scenario``."""
        return (m.describe() for m in self.members)

    # -- counters -----------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every member's connection, request and command counters."""
        for m in self.members:
            m.connections = m.requests = 0
            m.commands = {}

    def polled(self) -> list[str]:
        """Names of the members that received at least one request."""
        return [m.name for m in self.members if m.requests]

    @property
    def total_requests(self) -> int:
        """Requests answered (or not) across the fleet since the last reset."""
        return sum(m.requests for m in self.members)

    # -- serving ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open a listening socket for every member that should be reachable now."""
        if self._started:
            return
        ensure_file_limit(len(self.members))
        self._started = True
        self._kick = asyncio.Event()
        self._lock = asyncio.Lock()
        now = self.clock()
        try:
            async with self._lock:
                for member in self.members:
                    await self._reconcile(member, now)
        except BaseException:
            await self.stop()
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        """Close every listening socket and every open connection."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        for member in self.members:
            self._close_server(member)
            if member._control is not None:
                control, member._control = member._control, None
                await control.stop()
            if member._api is not None:
                api, member._api = member._api, None
                await api.stop()
        for connection in list(self._live):
            connection.abort()
        self._events.clear()
        for member in self.members:
            member._next_event = math.inf
        self._started = False
        await asyncio.sleep(0)

    async def sync(self) -> None:
        """Apply every listening change that is due at the clock's time now (restarts
        ending, ``unreachable`` windows); tests call this after moving a FakeClock."""
        if not self._started or self._lock is None:
            return
        async with self._lock:
            now = self.clock()
            due: list[FleetMember] = []
            while self._events and self._events[0][0] <= now:
                when, index = heapq.heappop(self._events)
                member = self.members[index]
                if member._next_event == when:
                    member._next_event = math.inf
                    due.append(member)
            for member in due:
                try:
                    await self._reconcile(member, now)
                except ConfigError as exc:
                    # The address was taken while the miner was down: try again later.
                    _log.warning("%s: %s; retrying", member.name, exc)
                    member._next_event = now
                    heapq.heappush(self._events, (now, member.index))

    async def set_mode(self, key: int | str, mode: Mode) -> None:
        """``down``: refuse connections; ``hang``: accept and never answer; ``mute``:
        accept and close with zero bytes (host not in --api-allow); ``normal``."""
        member = self[key]
        member.mode = mode
        if self._started and self._lock is not None:
            async with self._lock:
                await self._reconcile(member, self.clock())

    async def down(self, key: int | str) -> None:
        """Refuse connections (closed listening socket) until :meth:`up`."""
        await self.set_mode(key, "down")

    async def up(self, key: int | str) -> None:
        """Back to normal; also powers on a miner that was told to ``quit``."""
        member = self[key]
        member.miner.power_on(self.clock())
        await self.set_mode(key, "normal")

    async def hang(self, key: int | str) -> None:
        """Accept connections and never answer."""
        await self.set_mode(key, "hang")

    async def mute(self, key: int | str) -> None:
        """Accept connections and close them without a byte (not in --api-allow)."""
        await self.set_mode(key, "mute")

    async def _watch(self) -> None:
        kick = self._kick
        assert kick is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.watch_interval_s):
                    await kick.wait()
            kick.clear()
            await self.sync()

    def _wake(self) -> None:
        if self._kick is not None:
            self._kick.set()

    async def _reconcile(self, member: FleetMember, now: float) -> None:
        """Open or close the member's listening sockets (the API, and the control channel
        where its flavour has one) to match its state at ``now``."""
        want = member.mode != "down" and member.miner.available(now)
        own_api = member.miner.flavour.api_server
        if own_api is not None:
            if want and member._api is None:
                api = own_api(member, self)
                member.port = await api.start(member.host, member.port)
                member._api = api
            elif not want and member._api is not None:
                api, member._api = member._api, None
                await api.stop()
        elif want and member._server is None:
            member._server = await self._listen(member)
        elif not want and member._server is not None:
            self._close_server(member)
        factory = member.miner.flavour.control
        if factory is not None:
            if want and member._control is None:
                control = factory(member, self)
                member.control_port = await control.start(member.host, member.control_port)
                member._control = control
            elif not want and member._control is not None:
                control, member._control = member._control, None
                await control.stop()
        self._schedule(member, now)

    def _schedule(self, member: FleetMember, now: float) -> None:
        when = member.miner.next_availability_change(now)
        if when is not None and when != member._next_event:
            member._next_event = when
            heapq.heappush(self._events, (when, member.index))

    def _after_request(self, member: FleetMember, now: float) -> None:
        """A command may have taken the API down (restart, reboot, quit): close the API
        socket now, and the control channel's at the watcher's next turn."""
        if member._server is not None and not member.miner.available(now):
            self._close_server(member)
            self._schedule(member, now)
        if (member._control or member._api) is not None and not member.miner.available(now):
            member._next_event = now
            heapq.heappush(self._events, (now, member.index))
            self._wake()

    def _close_server(self, member: FleetMember) -> None:
        if member._server is not None:
            member._server.close()
            member._server = None

    async def _listen(self, member: FleetMember) -> asyncio.AbstractServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((member.host, member.port))
            sock.listen(64)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            hint = ""
            if exc.errno == 99 or "assign" in str(exc).lower():
                hint = " (only Linux routes all of 127/8 to lo; elsewhere use --base-port)"
            raise _config_error(
                "simulate",
                f"cannot listen on {member.host}:{member.port}: {exc.strerror or exc}{hint}",
            ) from None
        member.port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            functools.partial(_MinerConnection, self, member), sock=sock
        )


class _MinerConnection(asyncio.Protocol):
    """One API connection: read one request, answer (or not, per mode), close."""

    __slots__ = ("_answered", "_buffer", "_fleet", "_member", "_timer", "_transport")

    def __init__(self, fleet: Fleet, member: FleetMember) -> None:
        self._fleet = fleet
        self._member = member
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._answered = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._fleet._live.add(self)
        member = self._member
        member.connections += 1
        if member.mode == "mute":
            self._answered = True
            transport.close()
        elif member.mode == "down" or not member.miner.available(self._fleet.clock()):
            # Accepted before the listening socket closed: reset, as a refusal would.
            self._answered = True
            self.abort()
            self._fleet._wake()

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        self._buffer += data
        self._respond(eof=False)

    def eof_received(self) -> bool:
        if not self._answered:
            self._respond(eof=True)
        # Stay open only while a (slow) reply is still to be sent; a hung miner closes.
        return self._timer is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fleet._live.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def abort(self) -> None:
        """Close with a TCP reset."""
        transport = self._transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def _respond(self, *, eof: bool) -> None:
        fleet, member, miner = self._fleet, self._member, self._member.miner
        data = self._buffer
        if miner.flavour.api_hook is not None:
            self._respond_hooked(eof=eof)
            return
        try:
            request = _decode_cached(data)
        except ProtocolError:
            # cgminer takes one read; a JSON request split over writes waits for the rest.
            if (
                not eof
                and data.lstrip().startswith(b"{")
                and len(data) < 4096
                and b"\0" not in data
            ):
                return
            request = None
        self._answered = True
        member.requests += 1
        if request is not None:
            counts = member.commands
            for command in _split_commands(request):
                counts[command] = counts.get(command, 0) + 1
        if member.mode == "hang":
            return
        now = fleet.clock()
        reply = miner.handle(request, now) if request is not None else miner.handle_bytes(data, now)
        fleet._after_request(member, now)
        delay = miner.reply_delay(now)
        if delay > 0:
            self._timer = asyncio.get_running_loop().call_later(delay, self._send, reply)
        else:
            self._send(reply)

    def _respond_hooked(self, *, eof: bool) -> None:
        """A flavour with its own API handling: whole JSON requests, raw to the miner."""
        fleet, member, data = self._fleet, self._member, self._buffer
        if not eof and data.lstrip().startswith(b"{") and len(data) < 65536:
            try:
                json.loads(data.split(b"\0", 1)[0])
            except ValueError:
                return  # wait for the rest of the request
        self._answered = True
        member.requests += 1
        if member.mode == "hang":
            return
        now = fleet.clock()
        reply = member.miner.handle_bytes(data, now, member)
        fleet._after_request(member, now)
        self._send(reply)

    def _send(self, reply: bytes | None) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if reply:
            transport.write(reply)
        transport.close()


_REQUEST_CACHE: dict[bytes, Request] = {}
_REQUEST_CACHE_SIZE: Final = 512


def _decode_cached(data: bytes) -> Request:
    """decode_request, remembered: a poll cycle sends the same few requests 10,000 times."""
    request = _REQUEST_CACHE.get(data)
    if request is None:
        request = decode_request(data)
        if len(_REQUEST_CACHE) >= _REQUEST_CACHE_SIZE:
            _REQUEST_CACHE.clear()
        _REQUEST_CACHE[data] = request
    return request


def _addresses(n: int, listen: str, base_port: int | None, port: int) -> list[tuple[str, int]]:
    if base_port is not None:
        if base_port == 0:
            return [(listen, 0)] * n
        if not 0 < base_port <= 65536 - max(n, 1):
            raise _config_error(
                "--base-port", f"ports {base_port}..{base_port + n - 1} do not fit in 1..65535"
            )
        return [(listen, base_port + i) for i in range(n)]
    try:
        first = socket.inet_aton(listen)
    except OSError:
        raise _config_error("--listen", f"{listen!r} is not an IPv4 address") from None
    if first[0] != 127:
        raise _config_error(
            "--listen",
            f"one address per miner needs loopback (127.x); for {listen} use --base-port",
        )
    start = struct.unpack("!I", first)[0]
    out: list[tuple[str, int]] = []
    value = start
    while len(out) < n:
        if value > 0x7FFFFFFE:
            raise _config_error("--miners", f"{n} miners do not fit in 127.0.0.0/8 from {listen}")
        if value & 0xFF not in (0, 255):  # skip x.y.z.0 and x.y.z.255
            out.append((socket.inet_ntoa(struct.pack("!I", value)), port))
        value += 1
    return out


def _scenario_chooser(
    n: int, scenario: ScenarioChoice, options: dict[str, Any]
) -> Callable[[int], Scenario]:
    cache: dict[str | Scenario, Scenario] = {}

    def build(choice: str | Scenario) -> Scenario:
        if choice not in cache:
            cache[choice] = (
                choice if isinstance(choice, Scenario) else make_scenario(choice, **options)
            )
        return cache[choice]

    if isinstance(scenario, str | Scenario):
        fixed = build(scenario)
        return lambda _i: fixed
    if isinstance(scenario, Mapping):
        plan: list[Scenario] = []
        for choice, count in scenario.items():
            plan.extend([build(choice)] * int(count))
        if len(plan) > n:
            raise _config_error("scenario", f"{len(plan)} scenario assignments for {n} miners")
        healthy = build("healthy")
        return lambda i: plan[i] if i < len(plan) else healthy
    chooser = scenario
    return lambda i: build(chooser(i))


def ensure_file_limit(listeners: int, *, spare: int = 1024) -> int:
    """Raise the open-file soft limit (up to the hard one) for ``listeners`` sockets plus
    ``spare`` for connections; returns the new soft limit. Raises ConfigError, saying
    which limit to raise, when even the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = listeners + 64
    want = listeners + spare
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(hard, want)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < need:
        shown_hard = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
        raise _config_error(
            "simulate",
            f"{listeners} miners need about {want} open files, but the limit is {soft} "
            f"(hard {shown_hard}); raise it (ulimit -n, or LimitNOFILE= in a unit) or "
            "simulate fewer miners",
        )
    return int(soft)


@asynccontextmanager
async def serve(fleet: Fleet) -> AsyncIterator[Fleet]:
    """Serve ``fleet`` on real TCP sockets for the duration of the ``async with``."""
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


async def run_simulator(
    n: int,
    scenario: ScenarioChoice = "healthy",
    listen: str = "127.0.0.1",
    base_port: int | None = None,
    *,
    flavours: Sequence[str | Flavour] = DEFAULT_FLAVOURS,
    clock: Clock = time.time,
    scenario_options: Mapping[str, Any] | None = None,
    out: TextIO | None = None,
) -> None:
    """``cgwatchdog simulate``: print ``name host:port flavour scenario`` per miner, then
    serve until cancelled."""
    fleet = Fleet.build(
        n,
        scenario,
        flavours=flavours,
        listen=listen,
        base_port=base_port,
        clock=clock,
        scenario_options=scenario_options,
    )
    stream = sys.stdout if out is None else out
    async with serve(fleet):
        for line in fleet.describe():
            print(line, file=stream)
        stream.flush()
        await asyncio.Event().wait()
