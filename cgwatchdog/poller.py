"""Poll many miners concurrently: one connection per miner per cycle where it can.

The first contact asks ``version+summary+devs+pools+stats`` and recognises the miner's
firmware family from the answer (``cgwatchdog/firmware/``); from then on the family
says which commands describe the miner (``summary+devs+pools``, plus ``stats`` where
boards, fans or temperatures only appear there, ``fans``/``temps`` on BOSminer), and a
family the cgminer API cannot read brings its own read path. A miner configured with
``firmware:`` is read as that family from the start. Miners whose API rejects
multi-commands are remembered and asked one command per connection. A fixed number of
worker coroutines share the fleet, so a cycle over 10,000 miners creates
``concurrency`` tasks, not 10,000. A miner that comes back after being unreachable is
recognised again (a reboot may have brought new firmware).

The cyclic garbage collector is paused while a cycle runs (``pause_gc``): a cycle over
10,000 miners allocates millions of acyclic containers (decoded replies, snapshots) that
reference counting frees, yet they made the collector run hundreds of times a cycle (the
collector left running costs 22% more CPU a cycle, ``benchmarks/RESULTS.md``). The
client's paths leave no reference cycles of their own; asyncio's selector transports
(miners named by host name) are cycles by design (a few small objects per connection,
its socket already closed), and they wait for the next collection: in the daemon, the
full one :class:`cgwatchdog.gcpause.CycleCollector` runs.

Each connection is an open file: the poller raises the soft ``RLIMIT_NOFILE`` toward the
hard limit for ``concurrency`` sockets, and where even the hard limit is too low it polls
fewer miners at once and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Protocol

from cgwatchdog.client import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S, AsyncCgminerAPI
from cgwatchdog.config import MinerConfig
from cgwatchdog.errors import CommandError, FailureKind, MinerUnreachable, ProtocolError
from cgwatchdog.firmware import FAMILIES, ChannelTarget, Family, Identity, Reader, recognise
from cgwatchdog.gcpause import gc_paused
from cgwatchdog.protocol import MAX_REPLY_BYTES
from cgwatchdog.snapshot import Learned, PollResult, Snapshot, Unreachable, build_snapshot

__all__ = ["BASE_COMMANDS", "Poller", "Target", "fit_file_limit"]

log = logging.getLogger("cgwatchdog")

BASE_COMMANDS = ("summary", "devs", "pools")
STATS_COMMAND = "stats"
FIRST_CONTACT = ("version", *BASE_COMMANDS, STATS_COMMAND)
PROBE_EVERY = 10
"""A miner whose answer is not the cgminer API is asked by the families' own read paths
(ePIC's HTTP) at its first poll and then every this many polls, not every cycle."""
_NOTHING_LEARNED = Learned()
# What first contacts taught, one object per distinct identity rather than one per miner
# (a fleet has a few dozen); bounded in case miners make up a new version every time.
_LEARNED: dict[tuple[str, str | None, str | None, str | None], Learned] = {}
_MAX_LEARNED: Final = 4096
FILE_LIMIT_SPARE = 64
"""Open files kept for everything but miner connections: the store, the HTTP port,
notification sessions, logs."""


def fit_file_limit(concurrency: int, *, spare: int = FILE_LIMIT_SPARE) -> int:
    """How many connections at once the open-file limit allows, up to ``concurrency``.

    Raises the soft limit toward the hard one first (any process may); where the hard
    limit is too low (``LimitNOFILE=`` of the unit, ``ulimit -Hn``) it logs a warning and
    returns the smaller number.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = concurrency + spare
    if soft == resource.RLIM_INFINITY or soft >= want:
        return concurrency
    target = want if hard == resource.RLIM_INFINITY else min(hard, want)
    with contextlib.suppress(ValueError, OSError):  # a sandbox may refuse even this
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft >= want:
        return concurrency
    allowed = max(1, soft - spare)
    log.warning(
        "open-file limit %d (hard %s) allows %d miner connections at once, not %d: "
        "raise LimitNOFILE= in the unit (or ulimit -n) to poll at full concurrency",
        soft, "unlimited" if hard == resource.RLIM_INFINITY else hard, allowed, concurrency,
    )  # fmt: skip
    return min(concurrency, allowed)


class Target(Protocol):
    """What the poller needs to know of a miner."""

    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


class _MinerState:
    """What the poller remembers of one miner between cycles."""

    __slots__ = (
        "api", "commands", "configured", "family", "learned", "misses", "reader", "recognised",
        "target",
    )  # fmt: skip

    def __init__(self, target: Target, api: AsyncCgminerAPI) -> None:
        self.target = target
        self.api = api
        self.commands: tuple[str, ...] | None = None  # None: not known until it answers
        firmware = getattr(target, "firmware", "auto")
        self.configured: Family | None = FAMILIES.get(firmware) if firmware != "auto" else None
        self.recognised: Family | None = None
        """The family the miner's own answers name (None until it answers)."""
        self.family: Family | None = self.configured
        """The family the miner is read as: the configured one, else the recognised one."""
        self.learned = _NOTHING_LEARNED if self.configured is None else Learned(family=firmware)
        self.reader: Reader | None = None
        self.misses = 0
        if self.configured is not None:
            self.reader = self.configured.reader(channel_target(self.configured, target))

    def learn(self, family: Family, identity: Identity, snapshot: Snapshot) -> None:
        self.recognised = family
        if self.configured is None:
            self.family = family
        read_as = self.family or family
        key = (read_as.name, read_as.firmware_version(identity), snapshot.fork, snapshot.api_version)
        learned = _LEARNED.get(key)
        if learned is None:
            learned = Learned(*key)
            if len(_LEARNED) < _MAX_LEARNED:
                _LEARNED[key] = learned
        self.learned = learned


def _stats_may_matter(snapshot: Snapshot) -> bool:
    """Whether ``Family.poll_commands`` compares the answer with and without ``stats``:
    only when the miner has devices yet lacks a hashrate, a temperature or fans (else it
    decides without the comparison). Building the answer a second time, without
    ``stats``, is a tenth of a first contact's CPU; skipped where it decides nothing."""
    return bool(snapshot.devices) and (
        snapshot.hashrate_hs is None or snapshot.temperature_max_c is None or not snapshot.fans_rpm
    )


def channel_target(
    family: Family, target: Target, *, timeout_s: float = DEFAULT_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> ChannelTarget:  # fmt: skip
    """The family's view of a polled miner (its credentials where the target has them)."""
    if isinstance(target, MinerConfig):
        return family.target(target, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
    return ChannelTarget(
        name=target.name, host=target.host, api_port=target.port,
        control_port=family.control_port or target.port, user=family.default_user,
        password=family.default_password, timeout_s=timeout_s,
        connect_timeout_s=connect_timeout_s,
    )  # fmt: skip


class Poller:
    """Polls a fleet; :meth:`poll` runs one cycle and returns one result per miner."""

    def __init__(
        self,
        targets: Sequence[Target],
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        concurrency: int = 512,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        clock: Callable[[], float] = time.time,
        pause_gc: bool = True,
    ) -> None:
        self.timeout = timeout
        self.pause_gc = pause_gc
        self.connect_timeout = connect_timeout
        self.concurrency = fit_file_limit(max(1, concurrency))
        self.max_reply_bytes = max_reply_bytes
        self.clock = clock
        self.plan_ahead = True
        """Whether a first contact works out the leanest commands for later cycles (it
        builds the answer a second time without ``stats`` to see if ``stats`` adds
        anything); a one-shot poll, which has no later cycle, turns it off."""
        self.keep_replies: Callable[[str], bool] | None = None
        """Which miners' last raw replies to keep (the status page shows them for miners
        that are down or alerting); None keeps none, so memory stays flat."""
        self.on_result: Callable[[PollResult], None] | None = None
        """Called with each miner's result as soon as it is made, before the cycle ends
        (the daemon's view lets that miner's last result go then)."""
        self._replies: dict[str, tuple[float, dict[str, Any]]] = {}
        self._states: dict[str, _MinerState] = {}
        self.set_targets(targets)

    def set_targets(self, targets: Sequence[Target]) -> None:
        """Replace the fleet (on reload), keeping what is known of unchanged miners."""
        with gc_paused():  # 10,000 states and clients: no cycles, no collections
            self._set_targets(targets)

    def _set_targets(self, targets: Sequence[Target]) -> None:
        states: dict[str, _MinerState] = {}
        for target in targets:
            old = self._states.get(target.name)
            if old is not None and (old.target.host, old.target.port) == (target.host, target.port):
                old.target = target
                states[target.name] = old
                continue
            api = AsyncCgminerAPI(
                target.host,
                target.port,
                timeout=self.timeout,
                connect_timeout=self.connect_timeout,
                max_reply_bytes=self.max_reply_bytes,
            )
            states[target.name] = _MinerState(target, api)
        self._states = states
        self._replies = {n: kept for n, kept in self._replies.items() if n in states}

    @property
    def targets(self) -> list[Target]:
        """The miners polled, in configuration order."""
        return [state.target for state in self._states.values()]

    async def poll(self) -> list[PollResult]:
        """Poll every miner once; the results keep the fleet's order."""
        states = list(self._states.values())
        results: list[PollResult | None] = [None] * len(states)
        work: Iterator[int] = iter(range(len(states)))

        async def worker() -> None:
            for index in work:
                results[index] = result = await self.poll_one(states[index])
                if taken is not None:
                    taken(result)

        taken = self.on_result
        workers = min(self.concurrency, len(states))
        with gc_paused(self.pause_gc):
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
        return [result for result in results if result is not None]

    async def poll_one(self, state: _MinerState) -> PollResult:
        """Poll one miner; never raises for anything the miner does."""
        target = state.target
        first_contact = state.commands is None
        commands = state.commands or FIRST_CONTACT
        reader = state.reader
        try:
            replies: dict[str, Any] = await (
                state.api.multi(commands) if reader is None else reader.read(commands)
            )
            snapshot = self._build(state, replies)
            if first_contact:
                snapshot = await self._learn(state, replies, snapshot)
        except MinerUnreachable as exc:
            error, kind = exc.reason, exc.kind
        except ProtocolError as exc:
            error, kind = f"unreadable reply: {exc}", exc.kind
        except CommandError as exc:
            error, kind = str(exc), exc.kind
        else:
            state.misses = 0
            keep = self.keep_replies
            if keep is not None and keep(target.name):
                self._replies[target.name] = (snapshot.at, replies)
            else:
                self._replies.pop(target.name, None)
            return snapshot
        state.misses += 1
        if not first_contact:
            state.commands = None  # recognised again when it answers (new firmware?)
        if (
            kind is FailureKind.NOT_API
            and state.configured is None
            and state.misses % PROBE_EVERY == 1
            and await self._probe_read_paths(state)
        ):
            return await self.poll_one(state)
        learned = state.learned
        return Unreachable(
            target.name, target.host, target.port, self.clock(), error, kind, learned.family,
            learned.firmware_version,
        )  # fmt: skip

    async def _read(self, state: _MinerState, commands: tuple[str, ...]) -> dict[str, Any]:
        if state.reader is not None:
            return await state.reader.read(commands)
        return await state.api.multi(commands)

    def _build(
        self, state: _MinerState, replies: dict[str, Any], at: float | None = None
    ) -> Snapshot:
        target = state.target
        return build_snapshot(
            replies, name=target.name, host=target.host, port=target.port,
            at=self.clock() if at is None else at,
            learned=state.learned,
        )  # fmt: skip

    async def _learn(
        self, state: _MinerState, replies: dict[str, Any], snapshot: Snapshot
    ) -> Snapshot:
        """First contact: recognise the family, and ask what it says describes the miner."""
        identity = Identity.of(replies, snapshot)
        state.learn(recognise(identity), identity, snapshot)
        family = state.family
        assert family is not None
        # What was learnt changes only these two fields: VERSION was in this very answer
        # (a build with the new Learned gives the same fork and API version).
        learned = state.learned
        snapshot = dataclasses.replace(
            snapshot, family=learned.family, firmware_version=learned.firmware_version
        )
        without_stats = None
        if self.plan_ahead and STATS_COMMAND in replies and _stats_may_matter(snapshot):
            lean = {name: reply for name, reply in replies.items() if name != STATS_COMMAND}
            without_stats = dataclasses.replace(
                self._build(state, lean, 0.0),
                at=snapshot.at, extra=snapshot.extra, refused=snapshot.refused,
            )  # fmt: skip
        state.commands = family.poll_commands(snapshot, without_stats)
        missing = tuple(name for name in state.commands if name not in replies)
        if missing:
            # Ask once more now, so the first cycle already sees the whole miner.
            replies.update(await self._read(state, missing))
            snapshot = self._build(state, replies)
        return snapshot

    async def _probe_read_paths(self, state: _MinerState) -> bool:
        """Whether a family's own read path answers where the cgminer API did not (ePIC
        serves HTTP on 4028); if one does, the miner is read through it from now on."""
        for family in FAMILIES.values():
            target = channel_target(
                family, state.target, timeout_s=self.timeout,
                connect_timeout_s=self.connect_timeout,
            )  # fmt: skip
            reader = family.reader(target)
            if reader is not None and await reader.probe():
                state.reader = reader
                state.recognised = state.family = family
                state.learned = Learned(family=family.name)
                state.commands = None
                return True
        return False

    def last_replies(self, name: str) -> tuple[float, dict[str, Any]] | None:
        """When, and what, a miner last answered, if :attr:`keep_replies` kept it (a miner
        that went down keeps the replies it gave before)."""
        return self._replies.get(name)

    def family_of(self, name: str) -> Family | None:
        """The family a miner is read as (None until it has answered)."""
        state = self._states.get(name)
        return None if state is None else state.family

    def recognised_of(self, name: str) -> Family | None:
        """The family a miner's own answers name (None until it has answered)."""
        state = self._states.get(name)
        return None if state is None else state.recognised
