"""Braiins OS / OS+ (BOSminer): recognition from the field capture and the simulator, the
hand-written gRPC messages byte for byte, every action end to end against the
simulator's gRPC server (real sockets, real grpcio), and a reboot that drops the
connection verified by the watchdog.
"""

from __future__ import annotations

import itertools
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from cgwatchdog.client import AsyncCgminerAPI
from cgwatchdog.config import MinerConfig
from cgwatchdog.config.loader import load_config
from cgwatchdog.config.models import Credentials
from cgwatchdog.errors import ActionError, AuthFailed, NotSent, NotSupported, Unconfirmed
from cgwatchdog.firmware import ACTIONS, FAMILIES, ActionRequest, Channel, recognise
from cgwatchdog.firmware.families import _grpcwire as wire
from cgwatchdog.firmware.families.braiins import (
    GRPC_MISSING,
    Braiins,
    hashboard_id,
    hashboards_request,
    login_request,
    set_pool_groups_request,
)
from cgwatchdog.notify import Outbox
from cgwatchdog.poller import Poller
from cgwatchdog.simulator import FakeClock, Fleet, FleetMember
from cgwatchdog.simulator.families.braiins import BraiinsSettings, braiins_api
from cgwatchdog.snapshot import Snapshot
from cgwatchdog.store import Store
from cgwatchdog.watchdog import Watchdog
from tests.conftest import FIXTURES, fixture_files, require_fixtures
from tests.firmwarekit import capture_identity

pytest.importorskip("grpc", reason="the braiins channel needs grpcio (the [braiins] extra)")

BRAIINS = FAMILIES["braiins"]
CAPTURE = "braiins-bosminer-plus-s9-0.2.0"
_subnets = itertools.count(1)


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int


class Rig:
    """A served fleet of simulated miners and channels to them."""

    def __init__(self, fleet: Fleet, clock: FakeClock) -> None:
        self.fleet, self.clock = fleet, clock

    def member(self, index: int = 0) -> FleetMember:
        return self.fleet.members[index]

    def api(self, index: int = 0) -> BraiinsSettings:
        return braiins_api(self.member(index))

    def miner_config(self, index: int = 0, **credentials: str) -> MinerConfig:
        m = self.member(index)
        secrets = {key: SecretStr(value) for key, value in credentials.items() if key != "user"}
        given = Credentials(user=credentials.get("user"), **secrets) if credentials else None
        return MinerConfig(
            name=m.name, host=m.host, port=m.port, firmware="braiins",
            control_port=m.control_port, credentials=given,
        )  # fmt: skip

    def channel(self, index: int = 0, **credentials: str) -> Channel:
        target = BRAIINS.target(self.miner_config(index, **credentials), timeout_s=3.0)
        return BRAIINS.channel(target)

    async def poll(self, index: int = 0) -> Snapshot:
        m = self.member(index)
        (result,) = await Poller([Target(m.name, m.host, m.port)], timeout=2.0).poll()
        assert isinstance(result, Snapshot), result
        return result

    async def later(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.fleet.sync()


@pytest.fixture
async def rig() -> AsyncIterator[Callable[..., Any]]:
    fleets: list[Fleet] = []

    async def make(n: int = 1, *, flavours: tuple[str, ...] = ("braiins",), **kw: Any) -> Rig:
        clock = FakeClock(1_800_000_000.0)
        fleet = Fleet.build(
            n, kw.pop("scenario", "healthy"), flavours=flavours, clock=clock,
            listen=f"127.91.{next(_subnets)}.1", base_port=0, **kw,
        )  # fmt: skip
        await fleet.start()
        fleets.append(fleet)
        return Rig(fleet, clock)

    yield make
    for fleet in fleets:
        await fleet.stop()


def _devs_enabled(reply: dict[str, Any]) -> list[str]:
    return [entry["Enabled"] for entry in reply["DEVS"]]


# -- 1. recognition --------------------------------------------------------------------


_identity = capture_identity


def test_the_bosminer_plus_capture_is_braiins() -> None:
    require_fixtures()
    path = FIXTURES / f"{CAPTURE}.json"
    assert recognise(_identity(path)).name == "braiins"


@pytest.mark.parametrize(
    "path",
    [p for p in fixture_files() if p.stem != CAPTURE] or [None],
    ids=lambda p: p.stem if p else "none",
)
def test_no_other_capture_is_braiins(path: Path | None) -> None:
    if path is None:
        require_fixtures()
    assert path is not None
    assert recognise(_identity(path)).name != "braiins"


async def test_the_flavour_is_recognised_through_the_poller_and_the_others_are_not(
    rig: Callable[..., Any],
) -> None:
    r = await rig(4, flavours=("braiins", "cgminer", "bmminer", "bfgminer"))
    targets = [Target(m.name, m.host, m.port) for m in r.fleet.members]
    poller = Poller(targets, timeout=2.0)
    await poller.poll()
    results = await poller.poll()
    families = {}
    for m in r.fleet.members:
        family = poller.family_of(m.name)
        families[m.miner.flavour.name] = family.name if family else None
    assert families.pop("braiins") == "braiins"
    assert None not in families.values() and "braiins" not in families.values(), families
    # BOSminer's own fans and temps are polled, and read as the capture's are.
    commands = r.member(0).commands
    assert commands.get("fans", 0) >= 1 and commands.get("temps") == commands["fans"], commands
    snapshot = results[0]
    assert isinstance(snapshot, Snapshot)
    assert snapshot.fans_rpm and len(snapshot.fans_rpm) == 2
    assert snapshot.temperature_max_c is not None and snapshot.temperature_max_c >= 66.0
    assert snapshot.description == "BOSminer+ 0.2.0-36c56a9363"


# -- the messages, byte for byte ---------------------------------------------------------


def test_the_hand_written_messages_match_the_wire_format() -> None:
    assert wire.varint(1) == b"\x01" and wire.varint(300) == b"\xac\x02"
    # LoginRequest{username=1, password=2}: key 0x0a = field 1, length-delimited.
    assert login_request("root", "pw") == b"\x0a\x04root\x12\x02pw"
    assert login_request("root", "") == b"\x0a\x04root"  # proto3 leaves "" out
    # DisableHashboardsRequest{save_action=1: 2, hashboard_ids=2: ["7", "8"]}
    assert hashboards_request(["7", "8"]) == b"\x08\x02\x12\x017\x12\x018"
    body = set_pool_groups_request(
        "Default", (3, b"\x08\x01"), [("stratum+tcp://b:3333", "u", "x", True)]
    )
    pool = b"\x12\x14stratum+tcp://b:3333" + b"\x1a\x01u" + b"\x22\x01x" + b"\x28\x01"
    group = b"\x12\x07Default" + b"\x1a\x02\x08\x01" + b"\x2a" + bytes([len(pool)]) + pool
    assert body == b"\x08\x02" + b"\x12" + bytes([len(group)]) + group
    # The reader: nested messages, repeated strings, and fields it does not know skipped.
    unknown = b"\x19" + b"\0" * 8 + b"\x25" + b"\0" * 4  # field 3 fixed64, field 4 fixed32
    fields = wire.decode(unknown + body)
    (read_group,) = fields.messages(2)
    assert fields.integer(1) == 2 and read_group.text(2) == "Default"
    (read_pool,) = read_group.messages(5)
    assert (read_pool.text(2), read_pool.text(4), read_pool.flag(5)) == (
        "stratum+tcp://b:3333", "x", True,
    )  # fmt: skip
    assert wire.decode(hashboards_request(["7", "8"])).texts(2) == ["7", "8"]
    with pytest.raises(wire.WireError):
        wire.decode(body[:-1])


def test_device_labels_map_to_hashboard_ids() -> None:
    boards = ["8", "6", "7"]  # as a miner may list them
    assert [hashboard_id(f"ASC{n}", boards) for n in range(4)] == ["6", "7", "8", None]
    assert hashboard_id("BOARD7", boards) == "7" and hashboard_id("BOARD1", boards) is None
    assert hashboard_id("asc0", ["1", "2", "3"]) == "1"
    with pytest.raises(NotSupported, match="not a hashboard"):
        hashboard_id("PGA0", boards)


# -- 2. the actions, end to end ----------------------------------------------------------


async def test_restart_logs_in_then_restarts_with_the_token(rig: Callable[..., Any]) -> None:
    r = await rig()
    api, miner = r.api(), r.member().miner
    before = miner.elapsed_s(r.clock())
    receipt = await r.channel(password="root").perform(ActionRequest("restart"))
    assert receipt == "ActionsService/Restart: bosminer restarted"
    login, restart = api.calls
    assert login.method == "AuthenticationService/Login" and login.authorized
    assert login.body == {"username": "root", "password": "root"}
    assert restart.method == "ActionsService/Restart" and restart.authorized
    assert restart.authorization in api.tokens and restart.authorization not in receipt
    assert miner.restarts == 1
    await r.later(15.0)  # past the restart downtime: the API and the gRPC port are back
    assert miner.elapsed_s(r.clock()) < before
    assert (await r.poll()).elapsed_s is not None
    # The session is kept: the next action sends no second login.
    await r.channel(password="root").perform(ActionRequest("sleep"))
    assert api.methods()[2:] == ["ActionsService/PauseMining"]


async def test_disable_and_enable_a_board_by_its_label(rig: Callable[..., Any]) -> None:
    r = await rig()
    api, m = r.api(), r.member()
    cgminer = AsyncCgminerAPI(m.host, m.port, timeout=2.0)
    receipt = await r.channel().perform(ActionRequest("disable", device="ASC1"))
    assert receipt == (
        "MinerService/DisableHashboards 7 (ASC1), save and apply: board 7 now disabled"
    )
    assert api.methods() == [
        "AuthenticationService/Login", "MinerService/GetHashboards",
        "MinerService/DisableHashboards",
    ]  # fmt: skip
    disable = api.calls[-1]
    assert disable.body == {"save_action": 2, "hashboard_ids": ["7"]} and disable.authorized
    assert _devs_enabled(await cgminer.command("devs")) == ["Y", "N", "Y"]
    await r.channel().perform(ActionRequest("enable", device="BOARD7"))
    assert api.calls[-1].body == {"save_action": 2, "hashboard_ids": ["7"]}
    assert _devs_enabled(await cgminer.command("devs")) == ["Y", "Y", "Y"]
    # A board the miner does not have: refused before anything is changed.
    with pytest.raises(ActionError, match=r"no hashboard for ASC5 .*6, 7, 8.*nothing changed"):
        await r.channel().perform(ActionRequest("disable", device="ASC5"))
    assert api.methods()[-1] == "MinerService/GetHashboards"


async def test_sleep_and_wake_pause_and_resume_mining(rig: Callable[..., Any]) -> None:
    r = await rig()
    miner = r.member().miner
    channel = r.channel()
    assert (
        await channel.perform(ActionRequest("sleep")) == "ActionsService/PauseMining: mining paused"
    )
    assert miner.sleeping and miner.hashrate_hs(r.clock()) == 0.0
    await r.later(60.0)
    assert (await r.poll()).hashrate_hs == pytest.approx(0.0, abs=1e6)
    assert await channel.perform(ActionRequest("wake")) == (
        "ActionsService/ResumeMining: mining resumed"
    )
    assert not miner.sleeping and miner.hashrate_hs(r.clock()) > 1e12
    assert r.api().methods()[1:] == ["ActionsService/PauseMining", "ActionsService/ResumeMining"]


async def test_switchpool_rewrites_the_group_with_the_target_first(
    rig: Callable[..., Any],
) -> None:
    r = await rig()
    api, miner = r.api(), r.member().miner
    before = miner.pool_list()
    snapshot = await r.poll()
    channel = r.channel(password="root", pool_password="pool-Pa55")
    receipt = await channel.perform(ActionRequest("switchpool", pool=2, pools=snapshot.pools))
    assert receipt.startswith(f"PoolService/SetPoolGroups: {before[2][0]} first")
    assert api.methods()[1:] == ["PoolService/GetPoolGroups", "PoolService/SetPoolGroups"]
    (group,) = api.calls[-1].body["pool_groups"]
    assert api.calls[-1].body["save_action"] == 2 and api.calls[-1].authorized
    assert (group["uid"], group["name"], group["quota"]) == (None, "Default", 1)
    assert [(p["url"], p["user"]) for p in group["pools"]] == [before[2], before[0], before[1]]
    assert all(p["uid"] is None and p["enabled"] is True for p in group["pools"])
    assert api.pool_passwords == ["pool-Pa55"] * 3
    # Saved and applied: bosminer restarts on the new list, the target first.
    assert miner.pool_list() == [before[2], before[0], before[1]] and miner.restarts == 1
    await r.later(15.0)
    assert miner.active_pool(r.clock()) == 0


async def test_switchpool_needs_the_pool_password_and_a_single_group(
    rig: Callable[..., Any],
) -> None:
    r = await rig()
    api, miner = r.api(), r.member().miner
    why = BRAIINS.why_not("switchpool", r.miner_config(password="root"))
    assert why is not None and "credentials.pool_password_file for sim-001" in why
    with pytest.raises(NotSupported, match="pool_password_file"):
        await r.channel(password="root").perform(ActionRequest("switchpool", pool=1))
    assert api.calls == []
    assert BRAIINS.why_not("switchpool", r.miner_config(pool_password="p")) is None
    api.pool_groups = 2
    with pytest.raises(NotSupported, match=r"2 pool groups .*nothing changed"):
        await r.channel(pool_password="p").perform(ActionRequest("switchpool", pool=1))
    assert api.methods() == ["AuthenticationService/Login", "PoolService/GetPoolGroups"]
    assert miner.restarts == 0


# -- 3. credentials ----------------------------------------------------------------------


async def test_a_wrong_password_is_auth_failed_after_one_login(rig: Callable[..., Any]) -> None:
    r = await rig()
    api = r.api()
    api.password = "miner-Secret-1"
    with pytest.raises(AuthFailed) as caught:
        await r.channel(password="wrong-Secret-2").perform(ActionRequest("restart"))
    text = str(caught.value)
    assert "sim-001" in text and "credentials.password_file for sim-001" in text
    assert "Secret" not in text
    assert api.methods() == ["AuthenticationService/Login"] and not api.calls[0].authorized
    assert r.member().miner.restarts == 0
    with pytest.raises(AuthFailed):
        await r.channel(password="wrong-Secret-2").check_access()
    assert len(api.calls) == 2


async def test_the_factory_defaults_are_root_root_then_root_without_password(
    rig: Callable[..., Any],
) -> None:
    r = await rig(2)
    older = r.api(0)
    older.password = ""  # Braiins OS before 25.07
    assert await r.channel(0).check_access() == "AuthenticationService/Login as root: accepted"
    assert [(c.body["password"], c.authorized) for c in older.calls] == [
        ("root", False),
        ("", True),
    ]
    changed = r.api(1)
    changed.password = "changed-Secret"
    with pytest.raises(AuthFailed) as caught:
        await r.channel(1).perform(ActionRequest("reboot"))
    assert "factory-default" in str(caught.value) and "credentials.password_file" in str(
        caught.value
    )
    assert changed.methods() == ["AuthenticationService/Login"] * 2  # no more than the two
    assert r.member(1).miner.reboots == 0


async def test_a_forgotten_session_logs_in_again_once(rig: Callable[..., Any]) -> None:
    r = await rig()
    api = r.api()
    await r.channel().check_access()
    api.forget_sessions()
    await r.channel().perform(ActionRequest("sleep"))
    assert [(c.method, c.authorized) for c in api.calls] == [
        ("AuthenticationService/Login", True),
        ("ActionsService/PauseMining", False),
        ("AuthenticationService/Login", True),
        ("ActionsService/PauseMining", True),
    ]
    assert r.member().miner.sleeping


# -- 4. what cannot be done --------------------------------------------------------------


async def test_unsupported_requests_say_why(rig: Callable[..., Any]) -> None:
    r = await rig()
    api = r.api()
    why = BRAIINS.why_not("disable", None, "PGA0")
    assert why is not None and "not a hashboard" in why
    with pytest.raises(NotSupported, match="not a hashboard"):
        await r.channel().perform(ActionRequest("disable", device="PGA0"))
    with pytest.raises(NotSupported, match="not supported by braiins"):
        await r.channel().perform(ActionRequest("exec"))
    assert api.calls == []
    # An older Braiins OS without the method answers UNIMPLEMENTED.
    api.unimplemented = {"MinerService/DisableHashboards"}
    with pytest.raises(NotSupported, match=r"no MinerService/DisableHashboards .*23.08"):
        await r.channel().perform(ActionRequest("disable", device="ASC0"))
    assert r.member().miner.device_statuses(r.clock()) == ["Alive"] * 3


async def test_without_grpcio_every_action_says_to_install_the_extra(
    rig: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await rig()
    channel = r.channel()
    monkeypatch.setitem(sys.modules, "grpc", None)  # as if grpcio were not installed
    assert isinstance(BRAIINS, Braiins) and BRAIINS.extra_missing() == GRPC_MISSING
    install = "pip install 'cgwatchdog[braiins]'"
    for do in ACTIONS:
        why = BRAIINS.why_not(do, r.miner_config(pool_password="p"), "ASC0")
        assert why is not None and install in why
        with pytest.raises(NotSupported, match=r"\[braiins\] extra"):
            await channel.perform(ActionRequest(do, pool=0, device="ASC0"))
    with pytest.raises(NotSupported, match="sim-001"):
        await channel.check_access()
    assert r.api().calls == []


async def test_no_grpc_port_is_not_sent(rig: Callable[..., Any]) -> None:
    r = await rig()
    m = r.member()
    with socket.socket() as probe:
        probe.bind((m.host, 0))
        free = probe.getsockname()[1]
    config = r.miner_config().model_copy(update={"control_port": free})
    channel = BRAIINS.channel(BRAIINS.target(config))
    with pytest.raises(NotSent, match=f"no gRPC API at {m.host}:{free}.*nothing sent"):
        await channel.perform(ActionRequest("restart"))


# -- 5. a reboot drops the connection; the watchdog verifies the return -------------------


async def test_reboot_drops_the_connection_and_the_miner_returns(rig: Callable[..., Any]) -> None:
    r = await rig()
    api, miner = r.api(), r.member().miner
    before = miner.elapsed_s(r.clock())
    with pytest.raises(Unconfirmed, match="ActionsService/Reboot sent, no answer"):
        await r.channel().perform(ActionRequest("reboot"))
    assert api.methods() == ["AuthenticationService/Login", "ActionsService/Reboot"]
    assert api.calls[-1].authorized and miner.reboots == 1
    with pytest.raises(NotSent):  # away: neither the API nor gRPC answers
        await r.channel().perform(ActionRequest("restart"))
    await r.later(120.0)
    assert miner.elapsed_s(r.clock()) < before
    # A rebooted miner has forgotten the session: the kept token is refused, one login.
    await r.channel().perform(ActionRequest("sleep"))
    assert api.methods()[-3:] == [
        "ActionsService/PauseMining", "AuthenticationService/Login", "ActionsService/PauseMining",
    ]  # fmt: skip


REBOOT_RULE = """
rules:
  - name: DeviceDead
    type: device_status
    for: 1m
    severity: critical
    actions: [{do: reboot, verify_within: 10m}]
"""


async def test_the_watchdog_reboots_a_dead_board_and_verifies_it(
    rig: Callable[..., Any], tmp_path: Path
) -> None:
    r = await rig(scenario="device_dead", scenario_options={"fail_after_s": 60.0})
    m = r.member()
    password = tmp_path / "braiins-password"
    password.write_text("root\n")
    password.chmod(0o600)
    config = tmp_path / "farm.yaml"
    config.write_text(
        "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
        f"state_dir: {tmp_path}\nminers:\n"
        f"  - {{name: {m.name}, host: {m.host}, port: {m.port}, firmware: braiins,"
        f" control_port: {m.control_port}, credentials: {{user: root,"
        f" password_file: {password}}}}}\n"
        "receivers: [{name: ops, webhook: {url: 'http://127.0.0.1:9/hook'}}]\n"
        "route: {receiver: ops, group_by: [alertname], group_wait: 30s,"
        " group_interval: 5m, repeat_interval: 4h}\n"
        "actions: {dry_run: false, cooldown: 15m, max_per_miner_per_hour: 3,"
        " max_in_flight: 5, restart_grace: 2m}\n" + REBOOT_RULE
    )
    store = Store(tmp_path / "farm.sqlite")
    watchdog = Watchdog(
        load_config(config), store=store, outbox=Outbox(store, {}, clock=r.clock), clock=r.clock
    )
    kinds: list[str] = []
    for _ in range(40):
        await r.later(30.0)
        report = await watchdog.cycle()
        kinds += [event.kind.value for event in report.action_events]
    api = r.api()
    assert m.miner.reboots == 1
    assert api.methods().count("ActionsService/Reboot") == 1
    assert all(call.authorized for call in api.calls)
    assert "verified" in kinds, kinds
    logged = [(a.action, a.outcome) for a in store.actions()]
    assert ("reboot", "verified") in logged, logged
