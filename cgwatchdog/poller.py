"""Poll many miners concurrently: one connection per miner per cycle where it can.

Each miner is asked ``summary+devs+pools`` in one request (plus ``stats`` for firmware
whose boards, fans or temperatures only appear there: bmminer, Avalon and the like).
Miners whose API rejects multi-commands are remembered and asked one command per
connection. A fixed number of worker coroutines share the fleet, so a cycle over
10,000 miners creates ``concurrency`` tasks, not 10,000. ``stats`` is kept only where the
first answer showed it adds something to the snapshot: on cgminer and bfgminer it is
most of the reply's bytes and tells nothing the other three did not.

The cyclic garbage collector is paused while a cycle runs (``pause_gc``): a cycle over
10,000 miners allocates millions of acyclic containers (decoded replies, snapshots) that
reference counting frees, yet they made the collector run ~600 times a cycle, 5 of them
over the whole heap, about a quarter of the cycle's CPU (``benchmarks/RESULTS.md``). The
client's paths leave no reference cycles of their own; asyncio's selector transports are
cycles by design (a few small objects per connection, its socket already closed), and
they wait for the one collection after the cycle.

Each connection is an open file: the poller raises the soft ``RLIMIT_NOFILE`` toward the
hard limit for ``concurrency`` sockets, and where even the hard limit is too low it polls
fewer miners at once and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from cgwatchdog.client import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S, AsyncCgminerAPI
from cgwatchdog.errors import CommandError, MinerUnreachable, ProtocolError
from cgwatchdog.protocol import MAX_REPLY_BYTES
from cgwatchdog.snapshot import PollResult, Snapshot, Unreachable, build_snapshot

__all__ = ["BASE_COMMANDS", "Poller", "Target", "fit_file_limit"]

log = logging.getLogger("cgwatchdog")

BASE_COMMANDS = ("summary", "devs", "pools")
STATS_COMMAND = "stats"
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

    __slots__ = ("api", "commands", "target")

    def __init__(self, target: Target, api: AsyncCgminerAPI) -> None:
        self.target = target
        self.api = api
        self.commands: tuple[str, ...] | None = None  # None: not known until it answers


def _commands_for(snapshot: Snapshot, without_stats: Snapshot | None) -> tuple[str, ...]:
    """The commands that describe this miner fully, judged from a first answer.

    ``without_stats`` is the same answer built without ``stats`` (None if it was not
    asked): where every normalized field equals ``snapshot``'s, stats added nothing the
    rules use and is not asked again (its raw entries stay out of ``extra``).
    """
    fork = (snapshot.fork or snapshot.description or "").lower()
    if "bosminer" in fork:
        # BOSminer reports fans and temperatures in commands of its own (Codes 202, 201).
        return (*BASE_COMMANDS, "fans", "temps")
    if any(name in fork for name in ("bmminer", "avalon", "hammer")):
        return (*BASE_COMMANDS, STATS_COMMAND)
    if (
        not snapshot.devices
        or snapshot.hashrate_hs is None
        or snapshot.temperature_max_c is None
        or not snapshot.fans_rpm
    ):
        if without_stats is not None and snapshot.devices and without_stats == snapshot:
            return BASE_COMMANDS
        return (*BASE_COMMANDS, STATS_COMMAND)
    return BASE_COMMANDS


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
        self._states: dict[str, _MinerState] = {}
        self.set_targets(targets)

    def set_targets(self, targets: Sequence[Target]) -> None:
        """Replace the fleet (on reload), keeping what is known of unchanged miners."""
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
                results[index] = await self.poll_one(states[index])

        workers = min(self.concurrency, len(states))
        paused = self.pause_gc and gc.isenabled()
        if paused:
            gc.disable()
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
        finally:
            if paused:
                gc.enable()
        return [result for result in results if result is not None]

    async def poll_one(self, state: _MinerState) -> PollResult:
        """Poll one miner; never raises for anything the miner does."""
        target = state.target
        first_contact = state.commands is None
        commands = state.commands or (*BASE_COMMANDS, STATS_COMMAND)
        try:
            replies: dict[str, Any] = await state.api.multi(commands)
            snapshot = build_snapshot(
                replies, name=target.name, host=target.host, port=target.port, at=self.clock()
            )
            if first_contact:
                without_stats = None
                if STATS_COMMAND in replies:
                    lean = {name: replies[name] for name in BASE_COMMANDS if name in replies}
                    without_stats = dataclasses.replace(
                        build_snapshot(
                            lean, name=target.name, host=target.host, port=target.port, at=0.0
                        ),
                        at=snapshot.at,
                        extra=snapshot.extra,
                    )
                state.commands = _commands_for(snapshot, without_stats)
                missing = [name for name in state.commands if name not in replies]
                if missing:
                    # Ask once more now, so the first cycle already sees the whole miner.
                    replies.update(await state.api.multi(missing))
                    snapshot = build_snapshot(
                        replies, name=target.name, host=target.host, port=target.port,
                        at=self.clock(),
                    )  # fmt: skip
        except MinerUnreachable as exc:
            error, kind = exc.reason, exc.kind
        except ProtocolError as exc:
            error, kind = f"unreadable reply: {exc}", exc.kind
        except CommandError as exc:
            error, kind = str(exc), exc.kind
        else:
            return snapshot
        return Unreachable(target.name, target.host, target.port, self.clock(), error, kind)
