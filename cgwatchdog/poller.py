"""Poll many miners concurrently: one connection per miner per cycle where it can.

Each miner is asked ``summary+devs+pools`` in one request (plus ``stats`` for firmware
whose boards, fans or temperatures only appear there: bmminer, Avalon and the like).
Miners whose API rejects multi-commands are remembered and asked one command per
connection. A fixed number of worker coroutines share the fleet, so a cycle over
10,000 miners creates ``concurrency`` tasks, not 10,000.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cgwatchdog.client import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S, AsyncCgminerAPI
from cgwatchdog.errors import (
    CgwatchdogError,
    CommandError,
    MinerTimeout,
    MinerUnreachable,
    ProtocolError,
)
from cgwatchdog.protocol import MAX_REPLY_BYTES
from cgwatchdog.snapshot import Snapshot, build_snapshot

__all__ = ["BASE_COMMANDS", "PollResult", "Poller", "Target", "Unreachable"]

BASE_COMMANDS = ("summary", "devs", "pools")
STATS_COMMAND = "stats"


class Target(Protocol):
    """What the poller needs to know of a miner."""

    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Unreachable:
    """A miner that gave no usable answer this cycle."""

    name: str
    host: str
    port: int
    at: float
    error: str
    kind: str  # "unreachable" | "timeout" | "protocol" | "refused_command"

    @property
    def up(self) -> bool:
        """Always False; a Snapshot's ``up`` is True."""
        return False

    def to_json(self) -> dict[str, object]:
        """The per-miner object of ``poll --json`` for a miner that is down."""
        return {
            "name": self.name, "host": self.host, "port": self.port, "up": False,
            "error": self.error, "fork": None, "elapsed_s": None, "hashrate_hs": None,
            "hardware_error_ratio": None, "temperature_max_c": None, "fans_rpm": [],
            "devices": [], "pools": [],
        }  # fmt: skip


PollResult = Snapshot | Unreachable


class _MinerState:
    """What the poller remembers of one miner between cycles."""

    __slots__ = ("api", "commands", "target")

    def __init__(self, target: Target, api: AsyncCgminerAPI) -> None:
        self.target = target
        self.api = api
        self.commands: tuple[str, ...] | None = None  # None: not known until it answers


def _commands_for(snapshot: Snapshot) -> tuple[str, ...]:
    """The commands that describe this miner fully, judged from a first answer."""
    fork = (snapshot.fork or snapshot.description or "").lower()
    if "bosminer" in fork:
        # BOSminer reports fans and temperatures in commands of its own (Codes 202, 201).
        return (*BASE_COMMANDS, "fans", "temps")
    if (
        not snapshot.devices
        or snapshot.hashrate_hs is None
        or snapshot.temperature_max_c is None
        or not snapshot.fans_rpm
        or any(name in fork for name in ("bmminer", "avalon", "hammer"))
    ):
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
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.concurrency = max(1, concurrency)
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
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
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
                state.commands = _commands_for(snapshot)
                missing = [name for name in state.commands if name not in replies]
                if missing:
                    # Ask once more now, so the first cycle already sees the whole miner.
                    replies.update(await state.api.multi(missing))
                    snapshot = build_snapshot(
                        replies, name=target.name, host=target.host, port=target.port,
                        at=self.clock(),
                    )  # fmt: skip
        except MinerUnreachable as exc:
            kind = "timeout" if isinstance(exc, MinerTimeout) else "unreachable"
            return Unreachable(target.name, target.host, target.port, self.clock(), exc.reason, kind)
        except ProtocolError as exc:
            return Unreachable(
                target.name, target.host, target.port, self.clock(),
                f"unreadable reply: {exc}", "protocol",
            )  # fmt: skip
        except CommandError as exc:
            return Unreachable(
                target.name, target.host, target.port, self.clock(), str(exc), "refused_command"
            )
        except CgwatchdogError as exc:  # pragma: no cover - defensive: nothing else expected
            return Unreachable(target.name, target.host, target.port, self.clock(), str(exc), "protocol")
        return snapshot
