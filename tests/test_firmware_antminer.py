"""The stock Antminer family: recognition, the web UI's CGIs with Digest login in both
dialects, a wrong password, what stock firmware cannot do, and a reboot verified end to
end. Real parts: the simulator's aiohttp web UI on 127.0.0.1 and a FakeClock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cgwatchdog.client import AsyncCgminerAPI
from cgwatchdog.config.loader import load_config
from cgwatchdog.errors import AccessDenied, AuthFailed, NotSupported, Unconfirmed
from cgwatchdog.firmware import FAMILIES, ActionRequest, ChannelTarget, Identity, recognise
from cgwatchdog.firmware.families.antminer import config_dialect, form_body, json_body
from cgwatchdog.notify import Outbox
from cgwatchdog.poller import Poller
from cgwatchdog.protocol import decode_request
from cgwatchdog.simulator import FLAVOURS, FakeClock, Fleet, FleetMember, SimulatedMiner
from cgwatchdog.simulator.families.antminer import FORM_POSITIONS, antminer_web
from cgwatchdog.snapshot import Snapshot, build_snapshot
from cgwatchdog.store import Store
from cgwatchdog.watchdog import Watchdog
from tests.conftest import FIXTURES, require_fixtures, until
from tests.firmwarekit import capture_identity

FAMILY = FAMILIES["antminer"]
T0 = 1_800_000_000.0
GET_CONF = "/cgi-bin/get_miner_conf.cgi"
SET_CONF = "/cgi-bin/set_miner_conf.cgi"


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int


_identity = capture_identity


# -- recognition -------------------------------------------------------------------------


def test_the_s9_capture_is_stock_antminer_and_the_others_are_not() -> None:
    require_fixtures()
    s9 = _identity(FIXTURES / "antminer-s9-bmminer-2.0.0.json")
    assert recognise(s9).name == "antminer"
    assert FAMILY.firmware_version(s9) == "Wed Jul 31 16:18:27 CST 2019"
    # MSKminer: bmminer-like, but no "Antminer" type, the rwglr tag, its own web API.
    msk = _identity(FIXTURES / "mskminer-s19-2.6.0.39.json")
    assert FAMILY.recognise(msk) == 0 and recognise(msk).name != "antminer"
    for path in sorted(FIXTURES.glob("*.json")):
        if path.stem != "antminer-s9-bmminer-2.0.0":
            assert recognise(_identity(path)).name != "antminer", path.stem


def test_other_firmware_on_antminer_hardware_is_not_claimed() -> None:
    bitmain = {"BMMiner": "1.0.0", "API": "3.1", "Miner": "uart_trans.1.3",
               "CompileTime": "Fri Jan 1 2021", "Type": "Antminer S19"}  # fmt: skip
    luxos = Identity(fork="bmminer 1.0.0", version={**bitmain, "LUXminer": "2024.6.3"})
    vnish = Identity(
        fork="bmminer 1.0.0", version={**bitmain, "Type": "Antminer S19 (vnish 1.2.6)"}
    )
    stock = Identity(fork="bmminer 1.0.0", version=bitmain)
    assert FAMILY.recognise(luxos) == 0 and FAMILY.recognise(vnish) == 0
    assert 10 <= FAMILY.recognise(stock) < 50  # third-party firmware families score 50+
    cgminer_s21 = Identity(fork="cgminer 4.11.1", version={"CGMiner": "4.11.1", "Miner": "1.0",
                           "CompileTime": "2024", "Type": "Antminer S21"})  # fmt: skip
    assert FAMILY.recognise(cgminer_s21) == 20


@pytest.fixture
async def fleet_of() -> AsyncIterator[Any]:
    fleets: list[Fleet] = []

    async def make(flavours: list[str], scenario: str = "healthy", **options: Any) -> Fleet:
        clock = FakeClock(T0)
        fleet = Fleet.build(
            len(flavours), scenario, flavours=flavours, listen="127.0.0.1", base_port=0,
            clock=clock, restart_downtime_s=5.0, scenario_options=options or None,
        )  # fmt: skip
        await fleet.start()
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        await fleet.stop()


# The core simulator's bmminer flavours answer byte for byte as a stock S9 does.
S9_CLONES = ("bmminer", "bmminer-nomulti")


async def test_the_flavours_are_recognised_through_a_poller(fleet_of: Any) -> None:
    fleet = await fleet_of(list(FLAVOURS))
    poller = Poller([Target(m.name, m.host, m.port) for m in fleet], timeout=2.0)
    await poller.poll()
    for member in fleet:
        flavour = member.miner.flavour
        family = poller.family_of(member.name)
        if flavour.firmware == "antminer" or flavour.name in S9_CLONES:
            assert family is FAMILY, flavour.name
        else:
            assert family is not FAMILY, flavour.name
    assert FAMILY.recognise(_flavour_identity("bmminer")) == 20


def _flavour_identity(flavour: str) -> Identity:
    miner = SimulatedMiner("x", flavour, now=T0)
    replies = {}
    for command in ("version", "summary", "stats"):
        raw = miner.handle(decode_request(json.dumps({"command": command}).encode()), T0)
        assert raw is not None
        replies[command] = json.loads(raw.rstrip(b"\0").replace(b"}{", b"},{"))
    return Identity.of(replies, build_snapshot(replies, name="x", host="h", port=1, at=T0))


# -- the channel ---------------------------------------------------------------------------


def _target(member: FleetMember, password: str = "root", *, default: bool = False) -> ChannelTarget:
    return ChannelTarget(
        name=member.name, host=member.host, api_port=member.port,
        control_port=member.control_port, user="root", password=password,
        default_password=default, timeout_s=5.0, connect_timeout_s=1.0,
    )  # fmt: skip


async def _snapshot(fleet: Fleet, member: FleetMember) -> Snapshot:
    poller = Poller([Target(member.name, member.host, member.port)], timeout=2.0)
    (result,) = await poller.poll()
    assert isinstance(result, Snapshot), result
    return result


def _every_login_valid(member: FleetMember) -> None:
    """Digest: each request is either the unauthenticated first try (answered with the
    challenge) or carries a valid answer to it; nothing else."""
    for request in antminer_web(member).requests:
        assert request.authorized or not request.auth_header, request


async def test_switchpool_json_dialect_reorders_the_pools_and_keeps_the_rest(
    fleet_of: Any,
) -> None:
    fleet = await fleet_of(["antminer"])
    member = fleet[0]
    miner = member.miner
    before = await _snapshot(fleet, member)
    urls = [url for url, _user in miner.pool_list()]
    receipt = await FAMILY.channel(_target(member)).perform(
        ActionRequest("switchpool", pool=2, pools=before.pools)
    )
    assert "moved first" in receipt and "json" in receipt
    web = antminer_web(member)
    # The conf has bitmain-work-mode: the model decides the dialect (an S17 keeps the form).
    assert [(r.method, r.path) for r in web.authorized()] == [
        ("GET", GET_CONF), ("GET", "/cgi-bin/get_system_info.cgi"), ("POST", SET_CONF)
    ]  # fmt: skip
    _every_login_valid(member)
    (posted,) = [r for r in web.authorized() if r.method == "POST"]
    assert posted.content_type == "application/json"
    body = posted.json()
    # What the web UI posts: the set side's keys (miner-mode, freq-level), values as read.
    assert body == {
        "bitmain-fan-ctrl": False, "bitmain-fan-pwm": "100", "freq-level": "100",
        "miner-mode": 0,
        "pools": [{"url": urls[i], "user": f"farm.{member.name}", "pass": "x"} for i in (2, 0, 1)],
    }  # fmt: skip
    assert miner.pool_list()[0][0] == urls[2] and miner.restarts == 1
    fleet.clock.advance(10.0)
    await fleet.sync()
    after = await _snapshot(fleet, member)
    assert after.active_pool is not None and after.active_pool.url == urls[2]


async def test_switchpool_form_dialect_sends_the_fields_in_the_firmwares_order(
    fleet_of: Any,
) -> None:
    fleet = await fleet_of(["antminer-old"])
    member = fleet[0]
    before = await _snapshot(fleet, member)
    urls = [url for url, _user in member.miner.pool_list()]
    receipt = await FAMILY.channel(_target(member)).perform(
        ActionRequest("switchpool", pool=1, pools=before.pools)
    )
    assert "form" in receipt
    (posted,) = [r for r in antminer_web(member).authorized() if r.method == "POST"]
    assert posted.content_type == "application/x-www-form-urlencoded"
    fields = posted.form()
    assert [key for key, _ in fields] == list(FORM_POSITIONS)  # the script reads by position
    values = dict(fields)
    user = f"farm.{member.name}"
    assert [values[f"_ant_pool{n}url"] for n in (1, 2, 3)] == [urls[1], urls[0], urls[2]]
    assert values["_ant_pool1user"] == user and values["_ant_pool1pw"] == "x"
    assert values["_ant_freq"] == "550" and values["_ant_voltage"] == "0706"
    assert values["_ant_fan_customize_switch"] == "false"
    assert [url for url, _ in member.miner.pool_list()] == [urls[1], urls[0], urls[2]]
    _every_login_valid(member)


async def test_restart_posts_the_configuration_back_unchanged(fleet_of: Any) -> None:
    fleet = await fleet_of(["antminer"])
    member = fleet[0]
    pools = member.miner.pool_list()
    receipt = await FAMILY.channel(_target(member)).perform(ActionRequest("restart"))
    assert "unchanged" in receipt
    (posted,) = [r for r in antminer_web(member).authorized() if r.method == "POST"]
    assert [(p["url"], p["user"]) for p in posted.json()["pools"]] == pools
    assert member.miner.restarts == 1 and member.miner.pool_list() == pools


async def test_sleep_and_wake_use_miner_mode_on_the_json_dialect(fleet_of: Any) -> None:
    fleet = await fleet_of(["antminer"])
    member, miner = fleet[0], fleet[0].miner
    web = antminer_web(member)
    channel = FAMILY.channel(_target(member))

    async def settle() -> None:  # the restart that set_miner_conf.cgi causes
        fleet.clock.advance(10.0)
        await fleet.sync()
        await until("the web UI back after the restart", lambda: member.listening)

    await channel.perform(ActionRequest("sleep"))
    assert miner.sleeping and web.authorized()[-1].json()["miner-mode"] == 1
    await settle()
    assert (await _snapshot(fleet, member)).hashrate_hs == 0.0
    # The read side now says "bitmain-work-mode": "1"; a restart keeps that mode and
    # sends it under the set side's key.
    await channel.perform(ActionRequest("restart"))
    body = web.authorized()[-1].json()
    assert body["miner-mode"] == 1 and "bitmain-work-mode" not in body
    assert miner.sleeping
    await settle()
    await channel.perform(ActionRequest("wake"))
    assert web.authorized()[-1].json()["miner-mode"] == 0 and not miner.sleeping


async def test_sleep_on_the_form_dialect_is_not_supported(fleet_of: Any) -> None:
    fleet = await fleet_of(["antminer-old"])
    member = fleet[0]
    with pytest.raises(NotSupported, match="no documented sleep mode"):
        await FAMILY.channel(_target(member)).perform(ActionRequest("sleep"))
    assert [r.method for r in antminer_web(member).authorized()] == ["GET"]  # nothing posted
    assert not member.miner.sleeping


async def test_a_wrong_password_is_auth_failed_once_without_the_secret(fleet_of: Any) -> None:
    fleet = await fleet_of(["antminer"])
    member = fleet[0]
    antminer_web(member).password = "s3cret-on-the-miner"
    channel = FAMILY.channel(_target(member, "hunter2-configured"))
    with pytest.raises(AuthFailed) as caught:
        await channel.perform(ActionRequest("switchpool", pool=1))
    message = str(caught.value)
    assert member.name in message and "credentials.password_file" in message
    assert "hunter2" not in message and "s3cret" not in message
    # Digest: the challenge, one answer to it; no retry, no POST.
    received = list(antminer_web(member).requests)
    assert [(r.method, r.auth_header, r.authorized) for r in received] == [
        ("GET", False, False), ("GET", True, False)
    ]  # fmt: skip
    assert member.miner.restarts == 0
    # With the factory default it says so.
    with pytest.raises(AuthFailed, match="factory default"):
        await FAMILY.channel(_target(member, "root", default=True)).check_access()


async def test_check_access_is_an_authenticated_read(fleet_of: Any) -> None:
    fleet = await fleet_of(["antminer-old"])
    member = fleet[0]
    assert "accepted" in await FAMILY.channel(_target(member)).check_access()
    assert [(r.method, r.path) for r in antminer_web(member).authorized()] == [("GET", GET_CONF)]
    assert member.miner.restarts == 0


async def test_per_board_control_is_not_supported(fleet_of: Any) -> None:
    assert FAMILY.why_not("disable", None, "BOARD6") == "stock firmware has no per-board control"
    assert FAMILY.why_not("enable") == "stock firmware has no per-board control"
    assert FAMILY.why_not("reboot") is None and FAMILY.why_not("sleep") is None
    fleet = await fleet_of(["antminer"])
    member = fleet[0]
    with pytest.raises(NotSupported, match="no per-board control"):
        await FAMILY.channel(_target(member)).perform(ActionRequest("disable", device="BOARD6"))
    assert not antminer_web(member).requests


async def test_the_api_refuses_writes_so_the_family_never_uses_them(fleet_of: Any) -> None:
    fleet = await fleet_of(["antminer"])
    member = fleet[0]
    with pytest.raises(AccessDenied):
        await AsyncCgminerAPI(member.host, member.port, timeout=2.0).command("restart")


async def test_a_reboot_drops_the_connection_and_the_miner_comes_back(fleet_of: Any) -> None:
    fleet = await fleet_of(["antminer"])
    member, miner = fleet[0], fleet[0].miner
    elapsed_before = miner.elapsed_s(fleet.clock())
    with pytest.raises(Unconfirmed, match="connection dropped"):
        await FAMILY.channel(_target(member)).perform(ActionRequest("reboot"))
    assert [(r.method, r.path) for r in antminer_web(member).authorized()] == [
        ("GET", "/cgi-bin/reboot.cgi")
    ]
    assert miner.reboots == 1
    await until("the miner going away", lambda: not member.listening)
    fleet.clock.advance(miner.flavour.reboot_downtime_s + 1)
    await fleet.sync()
    assert member.listening
    after = await _snapshot(fleet, member)
    assert after.elapsed_s is not None and after.elapsed_s < elapsed_before


# -- the dialects, as data -----------------------------------------------------------------


def test_the_dialect_follows_the_configuration_and_the_model() -> None:
    assert config_dialect({"pools": [], "miner-mode": 0}, None) == "json"
    assert config_dialect({"pools": [], "bitmain-freq": "550"}, None) == "form"  # S9
    with_mode = {"pools": [], "bitmain-work-mode": "0"}
    assert config_dialect(with_mode, "Antminer S19j Pro") == "json"
    assert config_dialect(with_mode, None) == "json"
    assert config_dialect(with_mode, "Antminer S17 Pro") == "form"  # pyasic: AntminerOld
    assert config_dialect(with_mode, "Antminer T17+") == "form"


def test_the_bodies_map_the_read_keys_to_the_set_keys() -> None:
    conf = {"bitmain-fan-ctrl": "true", "bitmain-fan-pwm": "80", "bitmain-work-mode": "3",
            "bitmain-freq-level": "90", "bitmain-freq": "500", "bitmain-voltage": "14"}  # fmt: skip
    pools = [("stratum+tcp://a:3333", "u.1", "p")]
    body = json_body(conf, pools, None)
    assert body["miner-mode"] == 3 and body["freq-level"] == "90" and body["bitmain-fan-ctrl"]
    assert "bitmain-work-mode" not in body and len(body["pools"]) == 3
    assert json_body(conf, pools, 1)["miner-mode"] == 1
    fields = form_body(conf, pools)
    assert fields[-1] == ("_ant_work_mode", "3")  # S17: the 16th position
    assert dict(fields)["_ant_fan_customize_switch"] == "true"
    assert dict(fields)["_ant_pool2url"] == "" and len(fields) == 9 + 6 + 1


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
    fleet = await fleet_of(["antminer"], "device_dead", fail_after_s=60.0)
    member, clock = fleet[0], fleet.clock
    secret = tmp_path / "web-password"
    secret.write_text("root\n")
    config = tmp_path / "farm.yaml"
    config.write_text(
        "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
        f"state_dir: {tmp_path}\n"
        f"miners:\n  - {{name: {member.name}, host: {member.host}, port: {member.port},"
        f" firmware: antminer, control_port: {member.control_port},"
        f" credentials: {{user: root, password_file: {secret}}}}}\n"
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
    assert member.miner.reboots == 1
    reboots = [r for r in antminer_web(member).authorized() if r.path == "/cgi-bin/reboot.cgi"]
    assert len(reboots) == 1
