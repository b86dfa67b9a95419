"""What the firmware family tests share: identities as the poller builds them, and one
simulated miner of a family with its channel."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from cgwatchdog.config import MinerConfig
from cgwatchdog.firmware import ActionRequest, Channel, Family, Identity
from cgwatchdog.poller import Poller
from cgwatchdog.simulator import FakeClock, Fleet, FleetMember
from cgwatchdog.snapshot import Snapshot, build_snapshot

T0 = 1_800_000_000.0


def identity_of(replies: dict[str, Any]) -> Identity:
    """The identity of ``replies`` as the poller builds it at first contact."""
    snapshot = build_snapshot(replies, name="m", host="127.0.0.1", port=4028, at=T0)
    return Identity.of(replies, snapshot)


def capture_identity(path: Path) -> Identity:
    """The identity of a field capture (``shared/fixtures/peer-replies``)."""
    return identity_of(json.loads(path.read_text())["replies"])


class OneMiner:
    """One simulated miner of :attr:`family` on its own 127.x address, and its channel."""

    family: ClassVar[Family]

    def __init__(self, fleet: Fleet, clock: FakeClock) -> None:
        self.fleet, self.clock = fleet, clock
        self.member: FleetMember = fleet[0]
        self.miner = self.member.miner
        self.config = self.miner_config()

    def miner_config(self, **settings: Any) -> MinerConfig:
        """The miner's config entry (``settings`` such as ``credentials=`` added)."""
        return MinerConfig(
            name=self.member.name, host=self.member.host, port=self.member.port,
            firmware=self.family.name, control_port=self.member.control_port or None,
            **settings,
        )  # fmt: skip

    def channel(self, config: MinerConfig | None = None) -> Channel:
        target = self.family.target(config or self.config, timeout_s=2.0, connect_timeout_s=0.5)
        return self.family.channel(target)

    async def perform(self, do: str, **fields: Any) -> str:
        return await self.channel().perform(ActionRequest(do, **fields))

    async def poll(self, poller: Poller | None = None) -> Snapshot:
        poller = poller or Poller([self.config], timeout=2.0, connect_timeout=0.5, clock=self.clock)
        (result,) = await poller.poll()
        assert isinstance(result, Snapshot), result
        return result

    async def later(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.fleet.sync()


Miner = TypeVar("Miner", bound=OneMiner)


def one_miner_maker(
    kind: type[Miner], flavour: str, prefix: str
) -> Callable[[], AsyncIterator[Callable[..., Any]]]:
    """A fixture body: ``make(scenario="healthy", **fleet_options)`` starts one miner of
    ``flavour`` on ``127.<prefix>.<n>.1`` (a new ``n`` each time) and returns a ``kind``;
    every fleet is stopped afterwards."""
    subnets = itertools.count(1)

    async def fixture() -> AsyncIterator[Callable[..., Any]]:
        fleets: list[Fleet] = []

        async def make(scenario: str = "healthy", **options: Any) -> Miner:
            clock = FakeClock(T0)
            fleet = Fleet.build(
                1, scenario, flavours=[flavour], listen=f"127.{prefix}.{next(subnets)}.1",
                base_port=0, clock=clock, uptime_s=7200.0, **options,
            )  # fmt: skip
            await fleet.start()
            fleets.append(fleet)
            return kind(fleet, clock)

        yield make
        for fleet in fleets:
            await fleet.stop()

    return fixture
