"""VNish: recognition from its API answers, its REST control channel against the
simulator's ``vnish`` flavour over real TCP, and the planner driving a reboot.

The simulated web API records every request (``vnish_state(miner).received``: method,
path, how it was authorised, body), so each test asserts the exact requests: an unlock
with the password, then one call with the fresh token as ``Bearer``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cgwatchdog.config import MinerConfig
from cgwatchdog.config.loader import load_config
from cgwatchdog.config.models import Credentials
from cgwatchdog.errors import ActionError, AuthFailed, NotSupported, SessionBusy, Unconfirmed
from cgwatchdog.firmware import FAMILIES, ActionRequest, recognise
from cgwatchdog.firmware.families.vnish import web_fingerprint
from cgwatchdog.notify import Outbox
from cgwatchdog.poller import Poller
from cgwatchdog.simulator import FLAVOURS, FakeClock, Fleet
from cgwatchdog.simulator.families.vnish import vnish_state
from cgwatchdog.snapshot import Pool, Snapshot
from cgwatchdog.store import Store
from cgwatchdog.watchdog import CycleReport, Watchdog
from tests.conftest import require_fixtures
from tests.firmwarekit import OneMiner, identity_of, one_miner_maker

T0 = 1_800_000_000.0
INTERVAL_S = 30.0
PASSWORD = "s3cret-web"
VNISH = FAMILIES["vnish"]

# The identifying parts of a VNish 1.2.0-rc1 S19 XP's answers, as kbnchk/minerinfo's
# miner_test.go captured them ("S19 XP stats"/"summary"); the numbers are ours.
VNISH_REPLIES: dict[str, Any] = {
    "summary": {
        "STATUS": [{"STATUS": "S", "When": 1696258988, "Code": 11, "Msg": "Summary",
                    "Description": "cgminer 4.11.1"}],
        "SUMMARY": [{"Elapsed": 331780, "GHS 5s": "140258.58", "GHS av": 142562.73,
                     "Accepted": 226146, "Rejected": 94, "Hardware Errors": 8004}],
        "id": 1,
    },
    "stats": {
        "STATUS": [{"STATUS": "S", "When": 1696258519, "Code": 70, "Msg": "CGMiner stats",
                    "Description": "cgminer 4.11.1"}],
        "STATS": [
            {"Cgminer": "4.11.1", "Miner": "uart_trans.1.3",
             "CompileTime": "Sat Jun 24 11:17:59 UTC 2023",
             "Type": "Antminer S19 XP (Vnish 1.2.0-rc1)"},
            {"STATS": 0, "ID": "BTM_S19XP", "Elapsed": 331311, "GHS 5s": "140258.58",
             "chain_acn1": 110, "chain_rate1": 47016.68, "temp_chip1": "52-75"},
        ],
        "id": 1,
    },
}  # fmt: skip
# Stock S19 XP firmware: the same shape, no VNish in it.
STOCK_REPLIES: dict[str, Any] = {
    "version": {
        "STATUS": [{"STATUS": "S", "When": 1696258519, "Code": 22, "Msg": "BMMiner versions",
                    "Description": "bmminer 1.0.0"}],
        "VERSION": [{"BMMiner": "1.0.0", "API": "3.1", "Miner": "uart_trans.1.3",
                     "CompileTime": "Sat Jun 24 11:17:59 UTC 2023", "Type": "Antminer S19 XP"}],
        "id": 1,
    },
}  # fmt: skip


# -- the simulator harness --------------------------------------------------------------


class Vn(OneMiner):
    """One simulated VNish miner on its own 127.x address, and its channel."""

    family = VNISH

    def __init__(self, fleet: Fleet, clock: FakeClock) -> None:
        super().__init__(fleet, clock)
        self.state = vnish_state(self.miner)
        self.state.password = PASSWORD
        self.config = self.miner_config(PASSWORD)

    def miner_config(self, password: str | None = None, **settings: Any) -> MinerConfig:
        if password is not None:
            settings["credentials"] = Credentials(password=password)  # type: ignore[arg-type]
        return super().miner_config(**settings)

    def sent(self) -> list[tuple[str, str]]:
        """(method, path) of the requests received so far (then forgotten)."""
        sent = self.state.requests()
        self.state.received.clear()
        return sent


vnish = pytest.fixture(one_miner_maker(Vn, "vnish", "151"))


def assert_one_authorised_call(vn: Vn, path: str, body: Any = None) -> None:
    """An unlock with the password, then ``path`` with the fresh token as Bearer."""
    unlock, call = vn.state.received
    assert (unlock.method, unlock.path, unlock.body) == ("POST", "/api/v1/unlock", {"pw": PASSWORD})
    assert unlock.auth is None
    assert (call.method, call.path, call.auth, call.token_ok) == ("POST", path, "Bearer", True)
    assert call.body == body


# -- 1. recognition ----------------------------------------------------------------------


def test_a_vnish_answer_is_vnish_and_stock_or_field_captures_are_not() -> None:
    identity = identity_of(VNISH_REPLIES)
    assert recognise(identity).name == "vnish"
    assert VNISH.recognise(identity) >= 50  # above any stock firmware's 10-30
    assert VNISH.firmware_version(identity) == "VNish 1.2.0-rc1"
    assert VNISH.recognise(identity_of(STOCK_REPLIES)) == 0
    for path in require_fixtures():
        replies = json.loads(path.read_text())["replies"]  # as decoded by the poller
        assert VNISH.recognise(identity_of(replies)) == 0, path.name


async def test_the_simulator_is_read_as_vnish_through_the_poller_and_others_are_not() -> None:
    clock = FakeClock(T0)
    others = [name for name in FLAVOURS if name != "vnish"]  # stock Antminer among them
    fleet = Fleet.build(
        1 + len(others), flavours=["vnish", *others], listen="127.151.200.1", base_port=0,
        clock=clock,
    )  # fmt: skip
    await fleet.start()
    try:
        poller = Poller(list(fleet), timeout=2.0, connect_timeout=0.5, clock=clock)
        results = {r.name: r for r in await poller.poll()}
    finally:
        await fleet.stop()
    vnish_member, *rest = fleet.members
    family = poller.family_of(vnish_member.name)
    assert family is not None and family.name == "vnish"
    snapshot = results[vnish_member.name]
    assert isinstance(snapshot, Snapshot)
    assert snapshot.firmware_version == "VNish 1.2.0-rc1"
    assert snapshot.description == "cgminer 4.11.1"
    assert len(snapshot.devices) == 3 and snapshot.fans_rpm  # boards and fans from STATS
    for member in rest:
        other = poller.family_of(member.name)
        assert other is None or other.name != "vnish", member
    assert any(poller.family_of(m.name) is not None for m in rest)


async def test_the_web_fingerprint_finds_vnish_and_nothing_else(vnish: Any) -> None:
    vn = await vnish()
    assert await web_fingerprint(vn.member.host, vn.member.control_port, 2.0)
    assert not await web_fingerprint(vn.member.host, vn.member.port, 2.0)  # the cgminer API
    assert not await web_fingerprint("127.151.250.1", 9, 0.5)  # nothing listens
    assert vn.sent() == [("GET", "/")]  # one request, no credentials


# -- 2. the actions end to end -----------------------------------------------------------


async def test_restart_unlocks_then_restarts_the_mining_process(vnish: Any) -> None:
    vn = await vnish()
    before = (await vn.poll()).elapsed_s
    assert await vn.perform("restart") == "POST /api/v1/mining/restart: HTTP 200"
    assert_one_authorised_call(vn, "/api/v1/mining/restart")
    assert vn.miner.restarts == 1 and vn.miner.reboots == 0
    await vn.later(30)
    after = (await vn.poll()).elapsed_s
    assert before is not None and after is not None and after < before


async def test_reboot_is_answered_then_the_machine_is_away_and_back(vnish: Any) -> None:
    vn = await vnish()
    receipt = await vn.perform("reboot")
    assert receipt == "POST /api/v1/system/reboot: HTTP 200, the miner reboots in 3 s"
    assert_one_authorised_call(vn, "/api/v1/system/reboot")
    assert vn.miner.reboots == 1
    await vn.later(60)
    assert not vn.member.listening
    await vn.later(60)
    snapshot = await vn.poll()
    assert snapshot.elapsed_s is not None and snapshot.elapsed_s <= 30
    assert not vn.state.tokens  # a reboot forgets every session


async def test_switchpool_asks_vnish_to_switch_to_the_polled_pool(vnish: Any) -> None:
    vn = await vnish()
    snapshot = await vn.poll()
    assert snapshot.active_pool is not None and snapshot.active_pool.id == 0
    receipt = await vn.perform("switchpool", pool=2, pools=snapshot.pools)
    assert receipt == "POST /api/v1/mining/switch-pool: HTTP 200"
    assert_one_authorised_call(vn, "/api/v1/mining/switch-pool", {"pool_id": 2})
    assert vn.miner.active_pool(vn.clock()) == 2
    after = await vn.poll()
    assert after.active_pool is not None and after.active_pool.id == 2  # ids kept
    assert vn.miner.restarts == 0


async def test_sleep_pauses_and_wake_resumes(vnish: Any) -> None:
    vn = await vnish()
    assert await vn.perform("sleep") == "POST /api/v1/mining/pause: HTTP 200"
    assert_one_authorised_call(vn, "/api/v1/mining/pause")
    assert vn.miner.sleeping
    await vn.later(30)
    asleep = await vn.poll()  # still answering, hashing nothing
    assert asleep.hashrate_hs is not None and asleep.hashrate_hs < 0.1 * 3 * 47e12
    vn.sent()
    assert await vn.perform("wake") == "POST /api/v1/mining/resume: HTTP 200"
    assert_one_authorised_call(vn, "/api/v1/mining/resume")
    assert not vn.miner.sleeping


async def test_check_access_is_an_unlock_and_nothing_else(vnish: Any) -> None:
    vn = await vnish()
    assert await vn.channel().check_access() == "POST /api/v1/unlock: the password was accepted"
    assert vn.sent() == [("POST", "/api/v1/unlock")]
    assert vn.miner.restarts == 0 and not vn.miner.sleeping


# -- 3. a wrong password -----------------------------------------------------------------


async def test_a_wrong_password_is_auth_failed_once_naming_the_fix(vnish: Any) -> None:
    vn = await vnish()
    vn.state.password = "the-real-one"
    with pytest.raises(AuthFailed) as failed:
        await vn.perform("restart")
    message = str(failed.value)
    assert vn.member.name in message and "credentials.password_file" in message
    assert "HTTP 403" in message
    assert PASSWORD not in message and "the-real-one" not in message
    assert vn.sent() == [("POST", "/api/v1/unlock")]  # one request, no retry
    assert vn.miner.restarts == 0
    # Without credentials the factory default is tried, and the message says so.
    with pytest.raises(AuthFailed, match="factory default") as failed:
        await vn.channel(vn.miner_config(None)).perform(ActionRequest("reboot"))
    assert "admin" not in str(failed.value)
    assert vn.sent() == [("POST", "/api/v1/unlock")] and vn.miner.reboots == 0


async def test_a_rate_limited_unlock_is_session_busy(vnish: Any) -> None:
    vn = await vnish()
    vn.state.rate_limited = True
    with pytest.raises(SessionBusy, match="HTTP 429"):
        await vn.perform("restart")
    assert vn.sent() == [("POST", "/api/v1/unlock")] and vn.miner.restarts == 0


# -- 4. what VNish cannot do -------------------------------------------------------------


async def test_boards_cannot_be_disabled_and_the_dev_fee_pool_is_never_chosen(vnish: Any) -> None:
    vn = await vnish()
    why = VNISH.why_not("disable", None, "BOARD6")
    assert why is not None and "tuning settings" in why
    assert VNISH.why_not("restart") is None and VNISH.why_not("switchpool") is None
    with pytest.raises(NotSupported, match="not supported by vnish"):
        await vn.perform("disable", device="BOARD6")
    pools = (
        Pool(0, "stratum+tcp://pool.example.org:3333", "farm.a", "Dead", 0, True),
        Pool(3, "DevFee", "DevFee", "Alive", 3),
    )
    with pytest.raises(ActionError, match="dev-fee pool"):
        await vn.perform("switchpool", pool=3, pools=pools)
    assert vn.sent() == []  # nothing reached the miner


# -- 5. a reboot that drops the connection, verified by the planner ----------------------


async def test_a_dropped_reboot_is_unconfirmed(vnish: Any) -> None:
    vn = await vnish()
    vn.state.drop_reboot = True
    with pytest.raises(Unconfirmed, match="sent"):
        await vn.perform("reboot")
    assert vn.miner.reboots == 1
    assert vn.sent() == [("POST", "/api/v1/unlock"), ("POST", "/api/v1/system/reboot")]


async def test_the_watchdog_reboots_a_sick_miner_and_verifies_its_return(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    fleet = Fleet.build(
        1, "device_dead", flavours=["vnish"], listen="127.151.201.1", base_port=0, clock=clock,
        scenario_options={"fail_after_s": 60.0}, uptime_s=7200.0,
    )  # fmt: skip
    await fleet.start()
    try:
        member = fleet[0]
        state = vnish_state(member.miner)
        state.password, state.drop_reboot = PASSWORD, True
        config = tmp_path / "vnish.yaml"
        config.write_text(
            "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
            f"state_dir: {tmp_path}\n"
            "miners:\n"
            f"  - {{name: {member.name}, host: {member.host}, port: {member.port},"
            f" firmware: vnish, control_port: {member.control_port},"
            f" credentials: {{password: {PASSWORD}}}}}\n"
            "receivers: [{name: ops, webhook: {url: 'http://127.0.0.1:9/hook'}}]\n"
            "route: {receiver: ops, group_by: [alertname], group_wait: 30s,"
            " group_interval: 5m, repeat_interval: 4h}\n"
            "actions: {dry_run: false, cooldown: 15m, max_per_miner_per_hour: 3,"
            " max_in_flight: 5, restart_grace: 2m}\n"
            "rules:\n"
            "  - name: BoardDead\n"
            "    type: device_status\n"
            "    for: 1m\n"
            "    severity: critical\n"
            "    actions: [{do: reboot, verify_within: 10m}]\n"
        )
        cfg = load_config(config)
        store = Store(tmp_path / "vnish.sqlite")
        watchdog = Watchdog(cfg, store=store, outbox=Outbox(store, {}, clock=clock), clock=clock)
        reports: list[CycleReport] = []
        for _ in range(30):
            clock.advance(INTERVAL_S)
            await fleet.sync()
            reports.append(await watchdog.cycle())
        events = [(e.kind.value, e.detail) for r in reports for e in r.action_events]
        kinds = [kind for kind, _ in events]
        assert "verified" in kinds, events
        assert member.miner.reboots == 1
        reboots = [r for r in state.received if r.path == "/api/v1/system/reboot"]
        assert len(reboots) == 1 and reboots[0].auth == "Bearer" and reboots[0].token_ok
        assert any("sent" in detail for kind, detail in events if kind == "failed"), events
    finally:
        await fleet.stop()
