"""The Avalon family: recognition from the field captures and the simulator, its API
control (restart, ascset reboot/softoff/softon, switchpool), what older firmware lacks,
a read-only API, and a reboot verified end to end. Real parts: the simulator over TCP on
127.0.0.1 and a FakeClock."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cgwatchdog.config.loader import load_config
from cgwatchdog.errors import ControlDenied, NotSupported
from cgwatchdog.firmware import FAMILIES, ActionRequest, ChannelTarget, recognise
from cgwatchdog.notify import Outbox
from cgwatchdog.poller import Poller
from cgwatchdog.protocol import Request, decode_request
from cgwatchdog.simulator import FLAVOURS, FakeClock, Fleet, FleetMember
from cgwatchdog.simulator.families.avalon import ascset_log
from cgwatchdog.snapshot import Snapshot, parse_avalon_mm
from cgwatchdog.store import Store
from cgwatchdog.watchdog import Watchdog
from tests.conftest import FIXTURES, require_fixtures, until
from tests.firmwarekit import capture_identity

FAMILY = FAMILIES["avalon"]
T0 = 1_800_000_000.0
CAPTURES = ("avalon-1047-20051101", "avalon-1566-24102401")


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int


_identity = capture_identity


# -- recognition -------------------------------------------------------------------------


def test_both_avalon_captures_are_avalon_and_no_other_capture_is() -> None:
    require_fixtures()
    a1566 = _identity(FIXTURES / "avalon-1566-24102401.json")
    assert recognise(a1566).name == "avalon" and FAMILY.recognise(a1566) == 25
    assert FAMILY.firmware_version(a1566) == "24102401_25462b2_9ddf522"
    # No VERSION in this capture: only its summary's 30 s window says Avalon (weakly).
    a1047 = _identity(FIXTURES / "avalon-1047-20051101.json")
    assert recognise(a1047).name == "avalon" and FAMILY.recognise(a1047) == 5
    for path in sorted(FIXTURES.glob("*.json")):
        if path.stem not in CAPTURES:
            assert FAMILY.recognise(_identity(path)) == 0, path.stem


@pytest.fixture
async def fleet_of() -> AsyncIterator[Any]:
    fleets: list[Fleet] = []

    async def make(flavours: list[str], scenario: str = "healthy", **options: Any) -> Fleet:
        fleet = Fleet.build(
            len(flavours), scenario, flavours=flavours, listen="127.0.0.1", base_port=0,
            clock=FakeClock(T0), restart_downtime_s=5.0, scenario_options=options or None,
        )  # fmt: skip
        await fleet.start()
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        await fleet.stop()


async def _poll(member: FleetMember) -> tuple[Snapshot, Poller]:
    poller = Poller([Target(member.name, member.host, member.port)], timeout=2.0)
    (result,) = await poller.poll()
    assert isinstance(result, Snapshot), result
    return result, poller


async def test_the_flavours_are_recognised_and_no_other_is(fleet_of: Any) -> None:
    fleet = await fleet_of(list(FLAVOURS))
    poller = Poller([Target(m.name, m.host, m.port) for m in fleet], timeout=2.0)
    await poller.poll()
    for member in fleet:
        is_avalon = member.miner.flavour.firmware == "avalon"
        assert (poller.family_of(member.name) is FAMILY) == is_avalon, member.miner.flavour.name


async def test_the_flavour_reads_like_the_captures(fleet_of: Any) -> None:
    fleet = await fleet_of(["avalon"])
    snapshot, _ = await _poll(fleet[0])
    assert snapshot.model == "AvalonMiner 15-194"
    assert snapshot.fans_rpm and snapshot.temperature_max_c is not None
    raw = fleet[0].miner.handle(_request("stats"), T0)
    assert raw is not None
    stats = json.loads(raw.rstrip(b"\0"))
    mm = parse_avalon_mm(stats["STATS"][0]["MM ID0"])
    assert len(mm["MGHS"].split()) == 3 and mm["SoftOFF"] == "0"
    assert stats["STATS"][0]["ID"] == "AVA100" and stats["STATS"][1]["ID"] == "POOL0"


def _request(command: str) -> Request:
    return decode_request(json.dumps({"command": command}).encode())


# -- the channel ---------------------------------------------------------------------------


def _target(member: FleetMember) -> ChannelTarget:
    return ChannelTarget(
        name=member.name, host=member.host, api_port=member.port, control_port=member.port,
        user=None, password=None, timeout_s=3.0, connect_timeout_s=1.0,
    )  # fmt: skip


async def test_restart_is_cgminers_restart(fleet_of: Any) -> None:
    fleet = await fleet_of(["avalon"])
    member = fleet[0]
    receipt = await FAMILY.channel(_target(member)).perform(ActionRequest("restart"))
    assert receipt == "STATUS RESTART"
    assert member.commands == {"restart": 1} and member.miner.restarts == 1
    assert member.miner.reboots == 0


async def test_reboot_is_ascset_reboot_and_the_miner_comes_back(fleet_of: Any) -> None:
    fleet = await fleet_of(["avalon"])
    member, miner = fleet[0], fleet[0].miner
    before = miner.elapsed_s(fleet.clock())
    receipt = await FAMILY.channel(_target(member)).perform(ActionRequest("reboot"))
    assert "ASC 0 set OK" in receipt
    assert ascset_log(miner) == ["0,reboot,0"] and member.commands == {"ascset": 1}
    assert miner.reboots == 1 and miner.restarts == 0
    await until("the API going away", lambda: not member.listening)
    fleet.clock.advance(miner.flavour.reboot_downtime_s + 1)
    await fleet.sync()
    after, _ = await _poll(member)
    assert after.elapsed_s is not None and after.elapsed_s < before


async def test_switchpool_sends_switchpool(fleet_of: Any) -> None:
    fleet = await fleet_of(["avalon"])
    member = fleet[0]
    before, _ = await _poll(member)
    assert before.active_pool is not None and before.active_pool.id == 0
    member.commands.clear()
    receipt = await FAMILY.channel(_target(member)).perform(
        ActionRequest("switchpool", pool=2, pools=before.pools)
    )
    assert "Code 27" in receipt and "Switching to pool 2" in receipt
    assert member.commands == {"switchpool": 1}
    after, _ = await _poll(member)
    assert after.active_pool is not None and after.active_pool.id == 2


async def test_sleep_and_wake_are_softoff_and_softon(fleet_of: Any) -> None:
    fleet = await fleet_of(["avalon"])
    member, miner = fleet[0], fleet[0].miner
    channel = FAMILY.channel(_target(member))
    now = int(time.time())
    assert "success softoff" in await channel.perform(ActionRequest("sleep"))
    assert miner.sleeping
    asleep, _ = await _poll(member)
    assert asleep.hashrate_hs == 0.0
    assert "success softon" in await channel.perform(ActionRequest("wake"))
    assert not miner.sleeping
    (off, on) = ascset_log(miner)
    for sent, option in ((off, "softoff"), (on, "softon")):
        prefix, _, when = sent.rpartition(":")
        assert prefix == f"0,{option},1" and now + 4 <= int(when) <= now + 7  # 5 s ahead


async def test_older_firmware_lacks_the_reboot_and_soft_off(fleet_of: Any) -> None:
    fleet = await fleet_of(["avalon-1047"])
    member, miner = fleet[0], fleet[0].miner
    channel = FAMILY.channel(_target(member))
    with pytest.raises(NotSupported, match="invalid module_id"):
        await channel.perform(ActionRequest("reboot"))
    with pytest.raises(NotSupported, match="Unknown option: softoff"):
        await channel.perform(ActionRequest("sleep"))
    assert miner.reboots == 0 and not miner.sleeping
    reboot, sleep = ascset_log(miner)
    assert reboot == "0,reboot,0" and sleep.startswith("0,softoff,1:")


async def test_a_read_only_api_is_control_denied_once(fleet_of: Any) -> None:
    fleet = await fleet_of(["avalon"])
    member = fleet[0]
    member.miner.write_access = False  # --api-allow without W: for this host
    channel = FAMILY.channel(_target(member))
    with pytest.raises(ControlDenied) as caught:
        await channel.perform(ActionRequest("reboot"))
    assert "--api-allow" in str(caught.value) and "W:" in str(caught.value)
    assert member.commands == {"ascset": 1} and member.miner.reboots == 0
    with pytest.raises(ControlDenied):
        await channel.check_access()
    member.miner.write_access = True
    assert "Privileged access OK" in await channel.check_access()


async def test_per_board_control_is_not_supported(fleet_of: Any) -> None:
    why = FAMILY.why_not("disable", None, "ASC0")
    assert why is not None and "one ASC" in why
    assert FAMILY.why_not("enable") == why
    assert FAMILY.why_not("reboot") is None and FAMILY.why_not("sleep") is None
    fleet = await fleet_of(["avalon"])
    member = fleet[0]
    with pytest.raises(NotSupported, match="no per-board control"):
        await FAMILY.channel(_target(member)).perform(ActionRequest("disable", device="ASC1"))
    assert member.commands == {}


# -- verified end to end through the watchdog ----------------------------------------------

REBOOT_RULE = """
rules:
  - name: DeviceDead
    type: device_status
    for: 1m
    severity: critical
    actions: [{do: reboot, verify_within: 10m}]
"""


async def test_a_reboot_is_verified_by_the_miners_return(fleet_of: Any, tmp_path: Path) -> None:
    fleet = await fleet_of(["avalon"], "device_dead", fail_after_s=60.0)
    member, clock = fleet[0], fleet.clock
    config = tmp_path / "farm.yaml"
    config.write_text(
        "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
        f"state_dir: {tmp_path}\n"
        f"miners:\n  - {{name: {member.name}, host: {member.host}, port: {member.port},"
        " firmware: avalon}\n"
        "actions: {dry_run: false, cooldown: 15m, max_per_miner_per_hour: 3,"
        " max_in_flight: 5, restart_grace: 2m}\n" + REBOOT_RULE
    )
    store = Store(tmp_path / "state.sqlite")
    watchdog = Watchdog(
        load_config(config), store=store, outbox=Outbox(store, {}, clock=clock), clock=clock
    )
    kinds: list[str] = []
    for _ in range(40):
        clock.advance(30.0)
        await fleet.sync()
        report = await watchdog.cycle()
        kinds += [event.kind.value for event in report.action_events]
        if "verified" in kinds:
            break
    assert "verified" in kinds, kinds
    assert member.miner.reboots == 1 and ascset_log(member.miner) == ["0,reboot,0"]
