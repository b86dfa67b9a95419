"""The pollers compared by ``fleet.py``; each runs alone in a child process.

Every contender polls the same fleet and runs one cycle per :meth:`Contender.cycle` call:

``cgwatchdog`` (the collector as ``cgwatchdog run`` has it: paused through each cycle,
what the cycle leaves exempted after it, :class:`cgwatchdog.gcpause.CycleCollector`;
``cgwatchdog-pause``: paused during the poll only, as before it; ``cgwatchdog-gc``: left
running; ``cgwatchdog-freeze``: left running, the heap frozen after the warm-up)
    :class:`cgwatchdog.poller.Poller` (one multi-command connection per miner, decode,
    Snapshot) plus :meth:`cgwatchdog.rules.RuleEngine.observe` with the shipped
    ``rules/default.yaml``, over a history pre-filled to ``history_s`` (an hour by default,
    the memory target's condition).
``sequential``
    the seed's pattern: pycgminer (ported, :mod:`benchmarks.pycgminer_port`), one blocking
    connection per command, one miner after another; the same commands as cgwatchdog's
    steady cycle (``stats`` too on bmminer), then the same decoding, Snapshot and rules,
    so only the polling differs. Over a large fleet it polls an even sample and scales
    the figures up (said in the table).
``pyasic``
    pyasic 0.79's ``CGMinerRPCAPI(ip, port).multicommand("summary", "devs", "pools")``
    (its own connection, read-to-close and JSON repair), no Snapshot or rules.
``floor-streams`` / ``floor-protocol``
    connect, send the request, keep the bytes until the miner closes, close: asyncio
    streams, or a bare :class:`asyncio.Protocol`. Nothing is decoded. They ask each miner
    what cgwatchdog's steady cycle asks it (:func:`steady_request`: ``stats`` too on
    bmminer), so that the simulator does the same work for them.
``floor-protocol-lite``
    the Protocol floor asking ``summary+devs+pools`` of every miner, as the floors did
    until run F of ``RESULTS.md``: the simulator does less for it (no ``stats``).

A ``-uvloop`` suffix runs the contender on uvloop's event loop. All asyncio contenders
share the fleet among ``concurrency`` worker coroutines, as cgwatchdog's poller does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.pycgminer_port import PyCgminerAPI
from cgwatchdog.config import MinerConfig
from cgwatchdog.config.loader import load_rule_file
from cgwatchdog.errors import ProtocolError
from cgwatchdog.gcpause import CycleCollector
from cgwatchdog.poller import Poller
from cgwatchdog.protocol import decode_reply
from cgwatchdog.rules import RuleEngine
from cgwatchdog.snapshot import PollResult, Snapshot, build_snapshot

REQUEST = b'{"command":"summary+devs+pools"}'
STEADY_REQUESTS: dict[str, bytes] = {"bmminer": b'{"command":"summary+devs+pools+stats"}'}
"""What cgwatchdog's steady poll asks a miner of each simulator flavour besides REQUEST:
``stats`` where the first contact found boards and fans there."""


def steady_request(target: Target) -> bytes:
    """The request cgwatchdog's steady poll sends ``target``: the floors send the same,
    so that the simulator does the same work for them as for cgwatchdog."""
    return STEADY_REQUESTS.get(target.flavour, REQUEST)
BASE_COMMANDS = ("summary", "devs", "pools")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_RULES = REPO / "rules" / "default.yaml"
PREFILL_INTERVAL_S = 30.0
"""The daemon's default poll interval: an hour of history is 120 samples a miner."""


class Target(NamedTuple):
    """One simulated miner."""

    name: str
    host: str
    port: int
    flavour: str = ""
    """The simulator's flavour (cgminer, bmminer, bfgminer), where known."""


@dataclasses.dataclass(slots=True)
class Outcome:
    """What one cycle got."""

    answered: int = 0
    failed: int = 0
    reply_bytes: int = 0
    polled: int = 0
    """Miners actually polled (a sample for ``sequential`` over a large fleet)."""


async def _share(
    items: Sequence[Any], concurrency: int, job: Callable[[Any], Awaitable[None]]
) -> None:
    """Run ``job`` over ``items`` with ``concurrency`` worker coroutines, not a task each."""
    work = iter(items)

    async def worker() -> None:
        for item in work:
            await job(item)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(items))):
            group.create_task(worker())


class Contender:
    """One way of polling the fleet."""

    name = ""

    def __init__(self, targets: Sequence[Target], concurrency: int) -> None:
        self.targets = list(targets)
        self.concurrency = concurrency
        self.notes: list[str] = []

    async def warm_up(self) -> Outcome:
        """The first cycle (first contact), timed apart from the measured ones."""
        return await self.cycle()

    async def cycle(self) -> Outcome:
        raise NotImplementedError


# -- cgwatchdog ---------------------------------------------------------------------------


def _miners(targets: Sequence[Target]) -> list[MinerConfig]:
    return [MinerConfig(name=t.name, host=t.host, port=t.port) for t in targets]


class CgwatchdogContender(Contender):
    """Poller + Snapshot + RuleEngine over the shipped default rules."""

    name = "cgwatchdog"

    def __init__(
        self,
        targets: Sequence[Target],
        concurrency: int,
        *,
        history_s: float = 3600.0,
        pause_gc: bool = True,
        freeze: bool = False,
        collector: bool = False,
    ) -> None:
        super().__init__(targets, concurrency)
        self.history_s = history_s
        self.freeze = freeze
        self.collector = CycleCollector() if collector else None
        miners = _miners(targets)
        self.poller = Poller(miners, concurrency=concurrency, pause_gc=pause_gc)
        self.engine = RuleEngine(load_rule_file(DEFAULT_RULES), miners)
        if self.poller.concurrency != concurrency:
            self.notes.append(f"concurrency clamped to {self.poller.concurrency} by the file limit")

    async def warm_up(self) -> Outcome:
        """First contact (the poller settles each miner's commands), then history."""
        results = await self.poller.poll()
        self._prefill(results)
        if self.freeze:
            gc.collect()
            gc.freeze()  # the long-lived heap (history, states) out of every collection
        if self.collector is not None:
            with self.collector.cycle(time.monotonic()):
                pass  # its first full collection, as the daemon's after its first cycle
        return _count(results)

    def _prefill(self, results: list[PollResult]) -> None:
        """Give every miner ``history_s`` of samples, as after an hour of running."""
        steps = int(self.history_s // PREFILL_INTERVAL_S)
        if steps <= 0:
            return
        started = time.perf_counter()
        now = time.time()
        for step in range(steps, 0, -1):
            back = step * PREFILL_INTERVAL_S
            shifted: list[PollResult] = []
            for result in results:
                if isinstance(result, Snapshot):
                    elapsed = (
                        None if result.elapsed_s is None else max(0.0, result.elapsed_s - back)
                    )
                    shifted.append(
                        dataclasses.replace(result, at=result.at - back, elapsed_s=elapsed)
                    )
                else:
                    shifted.append(dataclasses.replace(result, at=result.at - back))
            self.engine.observe(shifted, now - back)
        self.notes.append(
            f"history pre-filled: {steps} samples a miner in {time.perf_counter() - started:.1f} s"
        )

    async def cycle(self) -> Outcome:
        if self.collector is None:
            return await self._cycle()
        with self.collector.cycle(time.monotonic()):
            return await self._cycle()

    async def _cycle(self) -> Outcome:
        results = await self.poller.poll()
        self.engine.observe(results, time.time())
        return _count(results)


def _count(results: Sequence[PollResult]) -> Outcome:
    answered = sum(1 for r in results if r.up)
    return Outcome(answered, len(results) - answered, 0, len(results))


# -- sequential pycgminer -----------------------------------------------------------------


class SequentialContender(Contender):
    """pycgminer's pattern: one connection per command, one miner after another; the
    same commands, decoding, Snapshot and rules as cgwatchdog, so only the polling
    differs."""

    name = "sequential"

    def __init__(self, targets: Sequence[Target], concurrency: int, *, sample: int = 500) -> None:
        super().__init__(targets, concurrency)
        step = max(1, -(-len(self.targets) // sample)) if sample > 0 else 1
        self.sample = self.targets[::step]
        self.scale = len(self.targets) / max(1, len(self.sample))
        if len(self.sample) < len(self.targets):
            self.notes.append(
                f"polls every {step}th miner ({len(self.sample)}); figures scaled x{self.scale:.1f}"
            )
        miners = _miners(self.sample)
        self.engine = RuleEngine(load_rule_file(DEFAULT_RULES), miners)

    async def cycle(self) -> Outcome:
        results: list[PollResult] = []
        failed = 0
        for target in self.sample:
            api = PyCgminerAPI(target.host, target.port)
            # What cgwatchdog asks each miner in its steady cycle: stats too where the
            # boards and fans are only there (bmminer).
            commands = (*BASE_COMMANDS, "stats") if target.flavour == "bmminer" else BASE_COMMANDS
            try:
                replies = {command: decode_reply(api.raw_command(command)) for command in commands}
            except (OSError, ProtocolError):
                failed += 1
                continue
            results.append(
                build_snapshot(
                    replies, name=target.name, host=target.host, port=target.port, at=time.time()
                )
            )
        self.engine.observe(results, time.time())
        return Outcome(len(results), failed, 0, len(self.sample))


# -- pyasic -------------------------------------------------------------------------------


class PyasicContender(Contender):
    """pyasic's cgminer RPC client, ``multicommand("summary", "devs", "pools")``."""

    name = "pyasic"

    def __init__(self, targets: Sequence[Target], concurrency: int) -> None:
        super().__init__(targets, concurrency)
        from pyasic.rpc.cgminer import CGMinerRPCAPI  # type: ignore[import-untyped, import-not-found, unused-ignore]

        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        self.apis = [CGMinerRPCAPI(t.host, port=t.port) for t in self.targets]
        self.fallbacks = 0

    async def cycle(self) -> Outcome:
        outcome = Outcome(polled=len(self.apis))

        async def one(api: Any) -> None:
            try:
                reply = await api.multicommand(*BASE_COMMANDS)
            except Exception:  # pyasic raises its APIError and whatever the socket raised
                outcome.failed += 1
                return
            if "id" not in reply:
                # pyasic found a STATUS E inside the multi-command (bmminer's devs: "No
                # ASCs") and asked each command again on its own connection.
                self.fallbacks += 1
            if reply.get("summary"):
                outcome.answered += 1
            else:
                outcome.failed += 1

        await _share(self.apis, self.concurrency, one)
        return outcome


# -- the floor ----------------------------------------------------------------------------


class FloorStreams(Contender):
    """asyncio streams: connect, write, read to the close, close. No decoding."""

    name = "floor-streams"

    async def cycle(self) -> Outcome:
        outcome = Outcome(polled=len(self.targets))

        async def one(target: Target) -> None:
            try:
                reader, writer = await asyncio.open_connection(target.host, target.port)
            except OSError:
                outcome.failed += 1
                return
            writer.write(steady_request(target))
            chunks = []
            while chunk := await reader.read(65536):
                chunks.append(chunk)
            writer.close()
            outcome.reply_bytes += len(b"".join(chunks))
            outcome.answered += 1

        await _share(self.targets, self.concurrency, one)
        return outcome


class _Collect(asyncio.Protocol):
    __slots__ = ("chunks", "done", "request")

    def __init__(self, done: asyncio.Future[bytes], request: bytes) -> None:
        self.done = done
        self.request = request
        self.chunks: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(b"".join(self.chunks))


class FloorProtocol(Contender):
    """A bare asyncio.Protocol: the transport calls back with each chunk. It asks each
    miner what cgwatchdog asks it (:func:`steady_request`)."""

    name = "floor-protocol"
    lite = False
    consume: Callable[[bytes], object] | None = None
    """Called with each reply, where ``layers.py`` measures what its least handling adds."""

    async def cycle(self) -> Outcome:
        outcome = Outcome(polled=len(self.targets))
        loop = asyncio.get_running_loop()
        lite = self.lite
        consume = self.consume

        async def one(target: Target) -> None:
            done: asyncio.Future[bytes] = loop.create_future()
            request = REQUEST if lite else steady_request(target)
            try:
                await loop.create_connection(
                    lambda: _Collect(done, request), target.host, target.port
                )
            except OSError:
                outcome.failed += 1
                return
            reply = await done  # awaited first: `+= len(await ...)` would lose updates
            if consume is not None:
                consume(reply)
            outcome.reply_bytes += len(reply)
            outcome.answered += 1

        await _share(self.targets, self.concurrency, one)
        return outcome


class FloorProtocolLite(FloorProtocol):
    """The Protocol floor as it was until run F: ``summary+devs+pools`` of every miner,
    no ``stats`` of the bmminer third, so the simulator did less for it."""

    name = "floor-protocol-lite"
    lite = True


GC_VARIANTS = ("cgwatchdog", "cgwatchdog-pause", "cgwatchdog-gc", "cgwatchdog-freeze")
"""cgwatchdog with each way of running the cyclic collector (see the module's docstring)."""

CONTENDERS: dict[str, type[Contender]] = {
    c.name: c
    for c in (
        CgwatchdogContender,
        SequentialContender,
        PyasicContender,
        FloorStreams,
        FloorProtocol,
        FloorProtocolLite,
    )
}


def make(
    name: str, targets: Sequence[Target], concurrency: int, *, sample: int, history_s: float
) -> Contender:
    """The contender called ``name`` (without its ``-uvloop`` suffix)."""
    base = name.removesuffix("-uvloop")
    if base in GC_VARIANTS:
        return CgwatchdogContender(
            targets, concurrency, history_s=history_s,
            pause_gc=base in ("cgwatchdog", "cgwatchdog-pause"),
            freeze=base == "cgwatchdog-freeze", collector=base == "cgwatchdog",
        )  # fmt: skip
    if base == "sequential":
        return SequentialContender(targets, concurrency, sample=sample)
    kind = CONTENDERS.get(base)
    if kind is None:
        raise SystemExit(f"unknown contender {name!r}; known: {', '.join(CONTENDERS)}")
    return kind(targets, concurrency)
