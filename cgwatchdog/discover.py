"""``cgwatchdog discover``: find the miners on a network and print their ``miners:`` config.

Each address of the targets (``10.0.1.0/24``, ``10.0.1.1-254``, one host) is asked on
the API port the way the watchdog asks a miner it has never seen: the poller's first
contact (``version+summary+devs+pools+stats``) over a temporary target, which also
recognises the firmware family and tries the families' own read paths where the port
answers something other than the cgminer API (ePIC's HTTP on 4028). Two more looks,
both reads:

- where the API port refused, the read paths of families whose reader listens on a port
  of its own (Whatsminer API v3 on 4433) are probed with ``Reader.probe``;
- a miner that answers like stock Antminer firmware (bmminer, an ``Antminer`` model) is
  shown to every family module that defines ``async web_fingerprint(host, port,
  timeout_s) -> bool``; third-party firmware whose API answer hides its name (a VNish
  build that does not say "Vnish" in its STATS Type) is told apart there, and the
  family whose fingerprint matches wins.

No credentials are ever sent: the probes carry none, and the poller only reads.

The scan is bounded four ways: ``--concurrency`` hosts at once, ``--rate`` new
connections a second (each host's first contact and each extra probe take one slot;
a miner that answers uses a few more for its replies), ``--timeout`` per host, and
``--deadline`` for the whole scan, after which it stops and reports what it found and
what it did not try. More than :data:`MAX_SCAN_HOSTS` addresses need ``--force``.

Output: a YAML ``miners:`` section that ``cgwatchdog check`` accepts as it is (one entry
per miner, its family's credentials block commented out, never a password), or with
``--json`` a list of what was found. Progress goes to stderr as one updating line when
stderr is a terminal; the summary line always does.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from cgwatchdog.config.hosts import default_miner_name, expand_hosts
from cgwatchdog.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CgwatchdogError, FailureKind
from cgwatchdog.firmware import FAMILIES, ChannelTarget, Family, Identity, Reader
from cgwatchdog.poller import FIRST_CONTACT, Poller, fit_file_limit
from cgwatchdog.protocol import DEFAULT_PORT
from cgwatchdog.snapshot import Learned, Snapshot, build_snapshot
from cgwatchdog.units import format_hashrate

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_DEADLINE_S",
    "DEFAULT_RATE_PER_S",
    "DEFAULT_TIMEOUT_S",
    "MAX_SCAN_HOSTS",
    "DiscoverUsageError",
    "Found",
    "ScanOptions",
    "ScanReport",
    "add_arguments",
    "expand_targets",
    "miners_json",
    "miners_yaml",
    "run",
    "scan",
    "summary_line",
]

MAX_SCAN_HOSTS = 4096
"""Addresses a scan takes without ``--force``: a /20, more than most farms' LANs; a
typo such as /16 for /24 would otherwise knock on 65,534 doors."""
DEFAULT_CONCURRENCY = 256
DEFAULT_RATE_PER_S = 500.0
"""New connections a second: a /24 is started in half a second, yet a scan stays far
from a flood for the miners' small controllers and the farm's switches."""
DEFAULT_TIMEOUT_S = 3.0
DEFAULT_CONNECT_TIMEOUT_S = 0.5
"""A LAN connects in milliseconds; an address with no machine should cost half a
second, not the poller's one."""
DEFAULT_DEADLINE_S = 300.0
PROGRESS_EVERY_S = 0.1
# Third-party Antminer firmware may answer the API as the stock firmware does.
_STOCK_ANTMINER_MARKS = ("bmminer", "antminer")
_COMMENT_MAX = 120

WebFingerprint = Callable[[str, int, float], Awaitable[bool]]
Progress = Callable[[int, int, int], None]
"""Called with (hosts done, hosts in all, miners found) as the scan goes."""


class DiscoverUsageError(ValueError):
    """A discover command line that cannot be acted on (exit 2)."""


@dataclass(frozen=True, slots=True)
class Found:
    """One miner the scan found, and what it said of itself."""

    host: str
    port: int
    family: str
    model: str | None
    firmware_version: str | None
    fork: str | None
    hashrate_hs: float | None
    control_port: int
    """Where the family's control channel listens (the API port for the cgminer API)."""

    @property
    def name(self) -> str:
        """The miner's name in the config: its host (with the port if not 4028)."""
        return default_miner_name(self.host, self.port)

    def to_json(self) -> dict[str, Any]:
        """One item of ``--json``: keys may be added, never renamed."""
        rate = self.hashrate_hs
        return {
            "host": self.host,
            "port": self.port,
            "family": self.family,
            "model": self.model,
            "firmware_version": self.firmware_version,
            "fork": self.fork,
            "hashrate_hs": rate if rate is not None and math.isfinite(rate) else None,
            "control_port": self.control_port,
        }


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """How a scan may use the network."""

    port: int = DEFAULT_PORT
    concurrency: int = DEFAULT_CONCURRENCY
    rate_per_s: float = DEFAULT_RATE_PER_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    deadline_s: float = DEFAULT_DEADLINE_S
    family_ports: Mapping[str, int] | None = None
    """Where a family's own service listens when not at its default (``--family-port``)."""

    def family_port(self, family: Family) -> int | None:
        """The port of ``family``'s own service: as given, else the family's default."""
        given = (self.family_ports or {}).get(family.name)
        return given if given is not None else family.control_port


@dataclass(frozen=True, slots=True)
class ScanReport:
    """What a scan found, and what it could not look at."""

    found: tuple[Found, ...]
    """The miners, in the order of the targets."""
    hosts: int
    silent: int
    """Hosts tried that showed no miner (refused, timed out, not a miner's API)."""
    interrupted: int
    """Hosts still being asked when the deadline ran out."""
    untried: int
    """Hosts the deadline left unasked."""
    duration_s: float
    deadline_s: float
    deadline_reached: bool


@dataclass(frozen=True, slots=True)
class _Address:
    """A temporary poller target: one address of the scan."""

    name: str
    host: str
    port: int
    firmware: str = "auto"


class _Pacer:
    """Hands out connection slots at least 1/rate seconds apart, without bursts.

    A host already being asked (its probe after a refused API port, its web
    fingerprint) goes before a new host: otherwise its next step queues behind a
    worker's worth of new hosts and its own timeout runs out while it waits."""

    def __init__(self, rate_per_s: float) -> None:
        self.interval_s = 1.0 / rate_per_s
        self._last = -math.inf
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    async def wait(self, *, follow_up: bool = False) -> None:
        """Return when the next connection may start (``follow_up``: first in line)."""
        loop = asyncio.get_running_loop()
        if not self._waiting and loop.time() >= self._last + self.interval_s:
            self._last = loop.time()
            return
        slot: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiting, (0 if follow_up else 1, next(self._order), slot))
        self._arm(loop)
        await slot  # a cancelled waiter's future is done: _release skips it

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._waiting:
            self._timer = loop.call_at(self._last + self.interval_s, self._release, loop)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        while self._waiting:
            _, _, slot = heapq.heappop(self._waiting)
            if not slot.done():
                self._last = loop.time()
                slot.set_result(None)
                break
        self._arm(loop)


def _web_fingerprint(family: Family) -> WebFingerprint | None:
    """The family module's ``web_fingerprint``, if it defines one."""
    module = sys.modules.get(type(family).__module__)
    probe = getattr(module, "web_fingerprint", None)
    return probe if callable(probe) else None


def _looks_like_stock_antminer(snapshot: Snapshot) -> bool:
    text = " ".join(filter(None, (snapshot.fork, snapshot.description, snapshot.model)))
    return any(mark in text.lower() for mark in _STOCK_ANTMINER_MARKS)


class _Scanner:
    """One scan: the options, the pacer, and the per-host look."""

    def __init__(self, options: ScanOptions) -> None:
        self.options = options
        self.pacer = _Pacer(options.rate_per_s)
        self.connect_timeout_s = min(options.connect_timeout_s, options.timeout_s)

    def _poller(self, host: str, firmware: str = "auto") -> Poller:
        address = _Address(host, host, self.options.port, firmware)
        return Poller(
            [address], timeout=self.options.timeout_s, connect_timeout=self.connect_timeout_s,
            concurrency=1, pause_gc=False,
        )  # fmt: skip

    def _found(self, snapshot: Snapshot, family: Family | None) -> Found:
        name = family.name if family is not None else "auto"
        channel_port = None if family is None else self.options.family_port(family)
        return Found(
            host=snapshot.host, port=snapshot.port, family=name, model=snapshot.model,
            firmware_version=snapshot.firmware_version, fork=snapshot.fork,
            hashrate_hs=snapshot.hashrate_hs, control_port=channel_port or snapshot.port,
        )  # fmt: skip

    async def identify(self, host: str) -> Found | None:
        """The miner at ``host``, or None; the pacer's slot is already taken. Never
        raises for anything the host does, and returns within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.options.timeout_s
        poller = self._poller(host)
        try:
            async with asyncio.timeout_at(until):
                [result] = await poller.poll()
        except TimeoutError:
            return None
        if isinstance(result, Snapshot):
            found = self._found(result, poller.family_of(host))
            if _looks_like_stock_antminer(result):
                return await self._fingerprint(found, until) or found
            return found
        if result.kind is FailureKind.REFUSED:
            return await self._own_ports(host, until)
        return None

    async def _fingerprint(self, found: Found, until: float) -> Found | None:
        """The miner as the family whose web fingerprint matches, if one does."""
        loop = asyncio.get_running_loop()
        for family in FAMILIES.values():
            fingerprint = _web_fingerprint(family)
            port = self.options.family_port(family)
            if fingerprint is None or port is None or family.name == found.family:
                continue
            if loop.time() >= until:
                return None
            try:
                async with asyncio.timeout_at(until):
                    await self.pacer.wait(follow_up=True)
                    matched = await fingerprint(found.host, port, until - loop.time())
            except Exception:  # a fingerprint that fails means: not that family here
                matched = False
            if matched:
                return await self._read_as(found, family, until)
        return None

    async def _read_as(self, found: Found, family: Family, until: float) -> Found:
        """``found`` read again as ``family``, so the family reads its own version."""
        poller = self._poller(found.host, family.name)
        try:
            async with asyncio.timeout_at(until):
                await self.pacer.wait(follow_up=True)
                [result] = await poller.poll()
        except TimeoutError:
            result = None
        if isinstance(result, Snapshot):
            return self._found(result, family)
        channel_port = self.options.family_port(family) or found.port
        return Found(
            host=found.host, port=found.port, family=family.name, model=found.model,
            firmware_version=None, fork=found.fork, hashrate_hs=found.hashrate_hs,
            control_port=channel_port,
        )  # fmt: skip

    async def _own_ports(self, host: str, until: float) -> Found | None:
        """The miner behind a refused API port, through a family's own read path."""
        loop = asyncio.get_running_loop()
        for family in FAMILIES.values():
            port = self.options.family_port(family)
            if port is None or port == self.options.port:
                continue
            remaining = until - loop.time()
            target = ChannelTarget(
                name=host, host=host, api_port=self.options.port, control_port=port,
                user=None, password=None, timeout_s=max(remaining, 0.0),
                connect_timeout_s=self.connect_timeout_s,
            )  # fmt: skip
            reader = family.reader(target)
            if reader is None:
                continue
            if remaining <= 0:
                return None
            try:
                async with asyncio.timeout_at(until):
                    await self.pacer.wait(follow_up=True)
                    answered = await reader.probe()
            except TimeoutError:
                return None
            if answered:
                return await self._read_identity(host, family, reader, port, until)
        return None

    async def _read_identity(
        self, host: str, family: Family, reader: Reader, port: int, until: float
    ) -> Found:
        """What a family's own read path says of the miner (its first contact)."""
        api_port = self.options.port
        try:
            async with asyncio.timeout_at(until):
                replies = await reader.read(FIRST_CONTACT)
        except (TimeoutError, CgwatchdogError):
            return Found(host, api_port, family.name, None, None, None, None, port)
        snapshot = build_snapshot(
            replies, name=host, host=host, port=api_port, at=time.time(),
            learned=Learned(family=family.name),
        )  # fmt: skip
        return Found(
            host=host, port=api_port, family=family.name, model=snapshot.model,
            firmware_version=family.firmware_version(Identity.of(replies, snapshot)),
            fork=snapshot.fork, hashrate_hs=snapshot.hashrate_hs, control_port=port,
        )  # fmt: skip


_UNTRIED, _ASKING, _SILENT, _FOUND = range(4)


async def scan(
    hosts: Sequence[str], options: ScanOptions, progress: Progress | None = None
) -> ScanReport:
    """Look for a miner at every host; stop at ``options.deadline_s`` with what was found."""
    scanner = _Scanner(options)
    started = time.monotonic()
    states = [_UNTRIED] * len(hosts)
    found: list[Found | None] = [None] * len(hosts)
    done = miners = 0
    work = iter(range(len(hosts)))

    async def worker() -> None:
        nonlocal done, miners
        for index in work:
            await scanner.pacer.wait()
            states[index] = _ASKING
            miner = await scanner.identify(hosts[index])
            found[index] = miner
            states[index] = _SILENT if miner is None else _FOUND
            done += 1
            miners += miner is not None
            if progress is not None:
                progress(done, len(hosts), miners)

    workers = min(fit_file_limit(max(1, options.concurrency)), len(hosts))
    deadline_reached = False
    try:
        async with asyncio.timeout(options.deadline_s), asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
    except TimeoutError:
        deadline_reached = True
    return ScanReport(
        found=tuple(miner for miner in found if miner is not None),
        hosts=len(hosts),
        silent=states.count(_SILENT),
        interrupted=states.count(_ASKING),
        untried=states.count(_UNTRIED),
        duration_s=time.monotonic() - started,
        deadline_s=options.deadline_s,
        deadline_reached=deadline_reached,
    )


# -- targets ----------------------------------------------------------------------------


def expand_targets(
    targets: Sequence[str], *, force: bool = False, limit: int = MAX_SCAN_HOSTS,
    rate_per_s: float = DEFAULT_RATE_PER_S,
) -> list[str]:  # fmt: skip
    """Every address of ``targets``, once each, in order; DiscoverUsageError for a
    malformed target or (without ``force``) more than ``limit`` addresses."""
    hosts: dict[str, None] = {}
    for target in targets:
        try:
            hosts.update(dict.fromkeys(expand_hosts(target)))
        except ValueError as exc:
            raise DiscoverUsageError(f"target {target!r}: {exc}") from None
    if len(hosts) > limit and not force:
        shown = " ".join(targets)
        minutes = len(hosts) / rate_per_s / 60
        raise DiscoverUsageError(
            f"{shown} is {len(hosts):,} addresses, more than the {limit:,} a scan takes "
            f"without --force: scan a smaller range, or add --force to scan them all "
            f"(at --rate {rate_per_s:g}/s that takes at least {max(minutes, 0.1):.1f} min)"
        )
    return list(hosts)


# -- output -----------------------------------------------------------------------------


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar: plain where YAML reads it back as this very string."""
    try:
        if yaml.safe_load(f"k: {text}") == {"k": text}:
            return text
    except yaml.YAMLError:
        pass
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def _comment(text: str) -> str:
    """Text from a miner made safe for one comment line (no line breaks, bounded)."""
    clean = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return clean if len(clean) <= _COMMENT_MAX else clean[: _COMMENT_MAX - 3] + "..."


def _describe(miner: Found) -> str:
    parts = [miner.model or "model unknown"]
    if miner.firmware_version:
        parts.append(f"firmware {miner.firmware_version}")
    if miner.fork and miner.fork != miner.firmware_version:
        parts.append(miner.fork)
    if miner.hashrate_hs is not None and math.isfinite(miner.hashrate_hs):
        parts.append(format_hashrate(miner.hashrate_hs))
    return _comment(", ".join(parts))


def miners_yaml(found: Sequence[Found], *, header: str | None = None) -> str:
    """A ``miners:`` section that ``cgwatchdog check`` accepts as it is: one entry per
    miner, its family's credentials block commented out, never a password."""
    lines = [] if header is None else [f"# {_comment(header)}"]
    if not found:
        return "\n".join([*lines, "miners: []", ""])
    lines.append("miners:")
    for miner in found:
        family = FAMILIES.get(miner.family)
        lines += [
            f"  - name: {_scalar(miner.name)}",
            f"    host: {_scalar(miner.host)}",
        ]
        if miner.port != DEFAULT_PORT:
            lines.append(f"    port: {miner.port}")
        lines.append(f"    firmware: {_scalar(miner.family)}")
        default_port = None if family is None else family.control_port
        if miner.control_port != (default_port or miner.port):
            lines.append(f"    control_port: {miner.control_port}")
        lines.append(f"    # {_describe(miner)}")
        if family is not None and (family.default_user or family.default_password):
            lines += _credentials_block(family)
    return "\n".join([*lines, ""])


def _credentials_block(family: Family) -> list[str]:
    user = family.default_user
    head = "    # credentials:"
    if user:
        head += f"  # factory default user: {_comment(user)}"
    lines = [head]
    if user:
        lines.append(f"    #   user: {_scalar(user)}")
    lines.append(f"    #   password_file: {_scalar(family.name + '-password')}")
    return lines


def miners_json(found: Sequence[Found]) -> str:
    """The ``--json`` document: a list of :meth:`Found.to_json` objects."""
    return json.dumps([miner.to_json() for miner in found], indent=2, allow_nan=False)


def summary_line(report: ScanReport) -> str:
    """``found 3 miners (2 cgminer, 1 braiins) in 1.2 s; 251 hosts did not answer``."""
    count = len(report.found)
    line = f"found {count} miner{'' if count == 1 else 's'}"
    if count:
        families = Counter(miner.family for miner in report.found)
        ranked = sorted(families.items(), key=lambda item: (-item[1], item[0]))
        line += " (" + ", ".join(f"{n} {name}" for name, n in ranked) + ")"
    line += f" in {report.duration_s:.1f} s"
    silent = report.silent
    line += f"; {silent:,} host{'' if silent == 1 else 's'} did not answer"
    if report.deadline_reached:
        line += (
            f"; the --deadline of {report.deadline_s:g} s ran out: {report.untried:,} "
            f"host{'' if report.untried == 1 else 's'} not tried, {report.interrupted:,} cut "
            "short (raise --deadline or --rate, or scan a smaller range)"
        )
    return line


class _ProgressLine:
    """One updating line on a terminal: ``discover: 120/254 hosts, 3 miners``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown_at = -math.inf

    def __call__(self, done: int, total: int, found: int) -> None:
        now = time.monotonic()
        if now - self.shown_at < PROGRESS_EVERY_S and done < total:
            return
        self.shown_at = now
        self.stream.write(f"\r\x1b[Kdiscover: {done:,}/{total:,} hosts, {found} found")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the line (the summary takes its place)."""
        self.stream.write("\r\x1b[K")
        self.stream.flush()


# -- command line -----------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port {value} is not between 1 and 65535")
    return value


def _family_port(text: str) -> tuple[str, int]:
    name, equals, port = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not FAMILY=PORT (e.g. whatsminer=4433)")
    return name.strip(), _port(port.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Define the ``discover`` subcommand's arguments on ``parser`` (made by
    :func:`cgwatchdog.cli.build_parser` when the subcommand is used); its ``func`` is
    :func:`run`."""
    parser.add_argument(
        "targets", nargs="+", metavar="TARGET",
        help="a network (10.0.1.0/24), a range (10.0.1.1-254, 10.0.1.1-10.0.2.20) or one host",
    )  # fmt: skip
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"the miners' API port (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list (host, port, family, model, firmware_version, "
        "fork, hashrate_hs, control_port) instead of YAML",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"hosts asked at once (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=DEFAULT_RATE_PER_S,
        metavar="PER_S",
        help="new connections per second at most: each host's first contact "
        f"and each extra probe (default {DEFAULT_RATE_PER_S:g})",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds one host may take in all (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=DEFAULT_CONNECT_TIMEOUT_S,
        metavar="S",
        help="connect deadline per connection; a LAN connects in "
        f"milliseconds (default {DEFAULT_CONNECT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--deadline",
        type=_positive_float,
        default=DEFAULT_DEADLINE_S,
        metavar="S",
        help="stop the whole scan after this many seconds and report what "
        f"was found and what was not tried (default {DEFAULT_DEADLINE_S:g})",
    )
    parser.add_argument(
        "--force", action="store_true", help=f"scan more than {MAX_SCAN_HOSTS:,} addresses"
    )
    parser.add_argument(
        "--family-port",
        type=_family_port,
        action="append",
        default=[],
        metavar="FAMILY=PORT",
        help="where FAMILY's own service (its read path on another port, "
        "its web UI) listens when not at its default, e.g. whatsminer=14433; "
        "written as control_port: for that family's miners; repeatable",
    )
    parser.set_defaults(func=run)


def _options(args: argparse.Namespace) -> ScanOptions:
    family_ports: dict[str, int] = {}
    for name, port in args.family_port:
        if name not in FAMILIES:
            raise DiscoverUsageError(
                f"--family-port {name}={port}: unknown firmware family {name!r}; "
                f"one of: {', '.join(FAMILIES.names())}"
            )
        family_ports[name] = port
    return ScanOptions(
        port=args.port, concurrency=args.concurrency, rate_per_s=args.rate,
        timeout_s=args.timeout, connect_timeout_s=args.connect_timeout,
        deadline_s=args.deadline, family_ports=family_ports,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """``cgwatchdog discover``: scan, print the config (or JSON) on stdout and the
    summary on stderr. Exit 0 when the scan ran, 1 on a runtime failure, 2 on usage."""
    err = sys.stderr
    try:
        options = _options(args)
        hosts = expand_targets(args.targets, force=args.force, rate_per_s=options.rate_per_s)
    except DiscoverUsageError as exc:
        print(f"cgwatchdog: usage error: {exc}", file=err)
        return EXIT_USAGE
    progress = _ProgressLine(err) if err.isatty() else None
    try:
        report = asyncio.run(scan(hosts, options, progress))
    except (CgwatchdogError, OSError) as exc:
        if progress is not None:
            progress.clear()
        print(f"cgwatchdog: discover failed: {exc}", file=err)
        return EXIT_FAILURE
    if progress is not None:
        progress.clear()
    if args.json:
        print(miners_json(report.found))
    else:
        header = (
            f"cgwatchdog discover {' '.join(args.targets)} (port {options.port}): "
            f"{len(report.found)} found"
        )
        sys.stdout.write(miners_yaml(report.found, header=header))
    sys.stdout.flush()
    print(summary_line(report), file=err)
    return EXIT_OK
