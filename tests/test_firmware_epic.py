"""ePIC: its HTTP read path on port 4028 (found by the poller's probe), its POST control
channel against the simulator's ``epic`` flavour over real TCP, and the planner driving
a reboot.

The simulated API records every request with its body (``epic_state(miner).received``),
so each test asserts the exact requests: the password in the POST body, the param.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cgwatchdog.config import MinerConfig
from cgwatchdog.config.loader import load_config
from cgwatchdog.config.models import Credentials
from cgwatchdog.errors import AuthFailed, NotSupported, Unconfirmed
from cgwatchdog.firmware import FAMILIES, ActionRequest, Identity, recognise
from cgwatchdog.firmware.families.epic import EPIC_COMMANDS, EpicReader, epic_replies
from cgwatchdog.notify import Outbox
from cgwatchdog.poller import Poller
from cgwatchdog.simulator import FLAVOURS, FakeClock, Fleet
from cgwatchdog.simulator.families.epic import SOFTWARE, epic_state
from cgwatchdog.snapshot import Snapshot, build_snapshot
from cgwatchdog.store import Store
from cgwatchdog.watchdog import CycleReport, Watchdog
from tests.conftest import require_fixtures
from tests.firmwarekit import OneMiner, one_miner_maker

T0 = 1_800_000_000.0
INTERVAL_S = 30.0
PASSWORD = "s3cret-epic"
EPIC = FAMILIES["epic"]

# The shape of a PowerPlay-BMS v1.5.13 /summary (asic-rs keeps one in
# asic-rs-firmwares/epic/src/test/json/v1/summary.json); the values are ours.
SUMMARY: dict[str, Any] = {
    "Software": "PowerPlay-BMS v1.5.13",
    "OS Type": "umcOS",
    "Hostname": "epicminer1",
    "Status": {"Operating State": "Mining", "Last Error": None},
    "Mining": {"Coin": "BTC", "Algorithm": "SHA-256"},
    "Session": {"Uptime": 23170, "Average MHs": 90071990.0, "Accepted": 1862, "Rejected": 2,
                "Last Accepted Share Timer": 25, "Last Accepted Share Timestamp": 1755134734},
    "Stratum": {"Config Id": 0, "Current Pool": "pool.example.org:3334",
                "Current User": "farm.w1-0x81x19", "IsPoolConnected": True,
                "Worker Unique Id": True},
    "StratumConfigs": [
        {"pool": "stratum+tcp://pool.example.org:3334", "login": "farm.w1", "password": "x"},
        {"pool": "stratum+tcp://backup.example.org:3334", "login": "farm.w1", "password": "x"},
    ],
    "HBs": [
        {"Index": 1, "Hashrate": [49440724.0, 103.1, 0.8], "Temperature": 67.0},
        {"Index": 2, "Hashrate": [49925124.0, 104.1, 0.8], "Temperature": 64.3},
    ],
    "HBStatus": [{"Index": 0, "Detected": True, "Enabled": False},
                 {"Index": 1, "Detected": True, "Enabled": True},
                 {"Index": 2, "Detected": True, "Enabled": True}],
    "Fans Rpm": {"Fans Speed 1": 5971, "Fans Speed 2": 0, "Fans Speed 3": 5942,
                 "Fans Speed 4": 5745, "Fans Speed 5": None},
    "Misc": {"Locate Miner State": False},
}  # fmt: skip


def snapshot_of(replies: dict[str, Any]) -> Snapshot:
    return build_snapshot(replies, name="m", host="127.0.0.1", port=4028, at=T0)


# -- the simulator harness --------------------------------------------------------------


class Ep(OneMiner):
    """One simulated ePIC miner on its own 127.x address, and its channel."""

    family = EPIC

    def __init__(self, fleet: Fleet, clock: FakeClock) -> None:
        super().__init__(fleet, clock)
        self.state = epic_state(self.miner)
        self.state.password = PASSWORD
        self.config = self.miner_config(PASSWORD)

    def miner_config(self, password: str | None = None, **credentials: Any) -> MinerConfig:
        if password is not None:
            credentials["password"] = password
        return super().miner_config(credentials=Credentials(**credentials) if credentials else None)

    def posts(self) -> list[tuple[str, Any]]:
        """(path, body) of the POSTs received so far (then every request is forgotten)."""
        posts = self.state.posts()
        self.state.received.clear()
        return posts


epic = pytest.fixture(one_miner_maker(Ep, "epic", "152"))


# -- 1. reading and recognition ----------------------------------------------------------


def test_the_summary_reads_as_cgminer_replies_and_is_recognised_as_epic() -> None:
    replies = epic_replies(SUMMARY, {"Model": "AntMiner S19 XP"}, ("version", *EPIC_COMMANDS))
    snapshot = snapshot_of(replies)
    identity = Identity.of(replies, snapshot)
    assert recognise(identity).name == "epic" and EPIC.recognise(identity) >= 50
    assert EPIC.firmware_version(identity) == "PowerPlay-BMS v1.5.13"
    assert snapshot.description == "ePIC PowerPlay-BMS v1.5.13"
    assert snapshot.model == "AntMiner S19 XP"
    assert snapshot.elapsed_s == 23170
    assert snapshot.hashrate_hs == pytest.approx((49440724.0 + 49925124.0) * 1e6)
    boards = {d.id: (d.status, d.enabled, d.temperature_c) for d in snapshot.devices}
    assert boards == {0: ("Disabled", False, None), 1: ("Alive", True, 67.0),
                      2: ("Alive", True, 64.3)}  # fmt: skip
    assert snapshot.fans_rpm == (5971, 5942, 5745) and snapshot.fans_expected == 4
    active = snapshot.active_pool
    assert active is not None and (active.id, active.status, active.accepted) == (0, "Alive", 1862)
    assert active.last_share_age_s == 25
    assert [p.status for p in snapshot.pools] == ["Alive", "Unknown"]
    # Mining stopped: no boards, no hashrate, and the reply says so.
    idle = {**SUMMARY, "Status": {"Operating State": "Idling"}, "HBs": None, "HBStatus": []}
    stopped = snapshot_of(epic_replies(idle, {}, EPIC_COMMANDS))
    assert stopped.hashrate_hs == 0 and stopped.devices == ()


def test_field_captures_are_not_epic() -> None:
    for path in require_fixtures():
        replies = json.loads(path.read_text())["replies"]
        snapshot = snapshot_of(replies)
        assert EPIC.recognise(Identity.of(replies, snapshot)) == 0, path.name


async def test_auto_finds_epic_through_the_probe_and_nothing_else_is_epic() -> None:
    clock = FakeClock(T0)
    others = [name for name in FLAVOURS if name != "epic"]
    fleet = Fleet.build(
        1 + len(others), flavours=["epic", *others], listen="127.152.200.1", base_port=0,
        clock=clock,
    )  # fmt: skip
    await fleet.start()
    try:
        poller = Poller(list(fleet), timeout=2.0, connect_timeout=0.5, clock=clock)
        results = {r.name: r for r in await poller.poll()}
        member, *rest = fleet.members
        family = poller.family_of(member.name)
        assert family is not None and family.name == "epic"
        snapshot = results[member.name]
        assert isinstance(snapshot, Snapshot), snapshot
        assert snapshot.firmware_version == SOFTWARE and snapshot.family == "epic"
        assert snapshot.hashrate_hs == pytest.approx(member.miner.hashrate_hs(clock()), rel=0.1)
        assert len(snapshot.devices) == 3 and len(snapshot.pools) == 3
        assert len(snapshot.fans_rpm) == 4 and snapshot.elapsed_s is not None
        for other in rest:
            found = poller.family_of(other.name)
            assert found is None or found.name != "epic", other
        assert all(
            isinstance(results[m.name], Snapshot)
            for m in rest
            if m.miner.flavour.name in ("cgminer", "bmminer")
        )
        # The next cycle reads ePIC with one GET /summary, and no cgminer request.
        state = epic_state(member.miner)
        state.received.clear()
        await poller.poll()
        assert [(r.method, r.path) for r in state.received] == [("GET", "/summary")]
    finally:
        await fleet.stop()


async def test_the_probe_answers_only_for_epic(epic: Any) -> None:
    ep = await epic()
    target = EPIC.target(ep.config, timeout_s=2.0, connect_timeout_s=0.5)
    assert await EpicReader(target).probe()
    clock = FakeClock(T0)
    others = Fleet.build(
        2, flavours=["cgminer", "vnish"], listen="127.152.201.1", base_port=0, clock=clock
    )
    await others.start()
    try:
        cgminer, vnish = others.members
        for host, port in ((cgminer.host, cgminer.port), (vnish.host, vnish.control_port)):
            config = MinerConfig(name="other", host=host, port=port)
            assert not await EpicReader(EPIC.target(config, timeout_s=2.0)).probe(), port
        closed = MinerConfig(name="closed", host="127.152.250.1", port=9)
        assert not await EpicReader(EPIC.target(closed, timeout_s=0.5)).probe()
    finally:
        await others.stop()


async def test_a_configured_epic_is_read_only_through_http(epic: Any) -> None:
    ep = await epic()
    snapshot = await ep.poll()
    assert snapshot.family == "epic" and snapshot.hashrate_hs
    asked = {(r.method, r.path) for r in ep.state.received}
    # /capabilities only at first contact (the model): no cgminer request at all.
    assert asked == {("GET", "/summary"), ("GET", "/capabilities")}


# -- 2. the actions end to end -----------------------------------------------------------


async def test_restart_is_a_softreboot_with_the_password(epic: Any) -> None:
    ep = await epic()
    before = (await ep.poll()).elapsed_s
    ep.posts()
    assert await ep.perform("restart") == "POST /softreboot: result true"
    assert ep.posts() == [("/softreboot", {"param": 0, "password": PASSWORD})]
    assert ep.miner.restarts == 1 and ep.miner.reboots == 0
    await ep.later(30)
    after = (await ep.poll()).elapsed_s
    assert before is not None and after is not None and after < before


async def test_reboot_is_answered_then_the_machine_is_away_and_back(epic: Any) -> None:
    ep = await epic()
    assert await ep.perform("reboot") == "POST /reboot: result true"
    assert ep.posts() == [("/reboot", {"param": 0, "password": PASSWORD})]
    assert ep.miner.reboots == 1
    await ep.later(60)
    assert not ep.member.listening
    await ep.later(60)
    snapshot = await ep.poll()
    assert snapshot.elapsed_s is not None and snapshot.elapsed_s <= 30


async def test_switchpool_rewrites_the_pools_with_the_target_first(epic: Any) -> None:
    ep = await epic()
    ep.state.pool_passwords = {"stratum+tcp://pool.example.net:443": "pool-secret"}
    poller = Poller([ep.config], timeout=2.0, connect_timeout=0.5, clock=ep.clock)
    snapshot = await ep.poll(poller)
    urls = [p.url for p in snapshot.pools]
    assert snapshot.active_pool is not None and snapshot.active_pool.id == 0
    ep.state.received.clear()
    receipt = await ep.perform("switchpool", pool=2, pools=snapshot.pools)
    assert receipt == f"POST /coin: result true ({urls[2]} first of 3)"
    user = f"farm.{ep.member.name}"
    configs = [
        {"pool": urls[2], "login": user, "password": "pool-secret"},
        {"pool": urls[0], "login": user, "password": "x"},
        {"pool": urls[1], "login": user, "password": "x"},
    ]
    assert [(r.method, r.path) for r in ep.state.received] == [
        ("GET", "/summary"),
        ("POST", "/coin"),
    ]
    assert ep.posts() == [
        ("/coin", {"param": {"coin": "BTC", "stratum_configs": configs, "unique_id": False},
                   "password": PASSWORD}),
    ]  # fmt: skip
    assert [url for url, _ in ep.miner.pool_list()] == [urls[2], urls[0], urls[1]]
    await ep.later(30)
    after = await ep.poll(poller)  # the same reader: each pool keeps its id
    assert after.active_pool is not None and after.active_pool.id == 2
    assert {p.id: p.url for p in after.pools} == {p.id: p.url for p in snapshot.pools}


async def test_switchpool_needs_pool_passwords_from_somewhere(epic: Any) -> None:
    ep = await epic()
    ep.state.summary_has_pool_passwords = False
    snapshot = await ep.poll()
    ep.state.received.clear()
    with pytest.raises(NotSupported, match=r"credentials\.pool_password") as refused:
        await ep.perform("switchpool", pool=1, pools=snapshot.pools)
    assert ep.member.name in str(refused.value) and ep.posts() == []
    # With credentials.pool_password every pool gets it.
    config = ep.miner_config(PASSWORD, pool_password="given-to-all")
    await ep.channel(config).perform(ActionRequest("switchpool", 1, snapshot.pools))
    ((path, body),) = ep.posts()
    assert path == "/coin"
    assert {c["password"] for c in body["param"]["stratum_configs"]} == {"given-to-all"}
    assert (
        ep.miner.active_pool(ep.clock()) == 0
        and ep.miner.pool_list()[0][0] == snapshot.pools[1].url
    )


async def test_sleep_stops_mining_and_wake_autostarts_it(epic: Any) -> None:
    ep = await epic()
    assert await ep.perform("sleep") == "POST /miner: result true"
    assert ep.posts() == [("/miner", {"param": "Stop", "password": PASSWORD})]
    assert ep.miner.sleeping
    asleep = await ep.poll()  # the API still answers: Idling, no boards, no hashrate
    assert asleep.hashrate_hs == 0 and asleep.devices == ()
    ep.posts()
    assert await ep.perform("wake") == "POST /miner: result true"
    assert ep.posts() == [("/miner", {"param": "Autostart", "password": PASSWORD})]
    assert not ep.miner.sleeping


async def test_check_access_sets_the_led_to_what_it_is(epic: Any) -> None:
    ep = await epic()
    ep.state.led = True
    receipt = await ep.channel().check_access()
    assert receipt == "POST /identify: result true (the LED left on)"
    assert ep.posts() == [("/identify", {"param": True, "password": PASSWORD})]
    assert ep.state.led is True and ep.miner.restarts == 0


# -- 3. a wrong password -----------------------------------------------------------------


@pytest.mark.parametrize("reply", ["http401", "result"])
async def test_a_wrong_password_is_auth_failed_once_naming_the_fix(epic: Any, reply: str) -> None:
    ep = await epic()
    ep.state.password, ep.state.wrong_password_reply = "the-real-one", reply  # type: ignore[assignment]
    with pytest.raises(AuthFailed) as failed:
        await ep.perform("restart")
    message = str(failed.value)
    assert ep.member.name in message and "credentials.password_file" in message
    assert PASSWORD not in message and "the-real-one" not in message
    assert [path for path, _ in ep.posts()] == ["/softreboot"]  # one request, no retry
    assert ep.miner.restarts == 0
    with pytest.raises(AuthFailed, match="factory default") as failed:
        await ep.channel(ep.miner_config(None)).perform(ActionRequest("reboot"))
    assert "letmein" not in str(failed.value) and ep.miner.reboots == 0
    assert [path for path, _ in ep.posts()] == ["/reboot"]


# -- 4. what ePIC cannot do --------------------------------------------------------------


async def test_boards_cannot_be_disabled(epic: Any) -> None:
    ep = await epic()
    why = EPIC.why_not("disable", None, "ASC1")
    assert why is not None and "per-board" in why
    assert EPIC.why_not("switchpool") is None and EPIC.why_not("reboot") is None
    with pytest.raises(NotSupported, match="not supported by epic"):
        await ep.perform("disable", device="ASC1")
    assert ep.state.received == []


# -- 5. a reboot that drops the connection, verified by the planner ----------------------


async def test_a_dropped_reboot_is_unconfirmed(epic: Any) -> None:
    ep = await epic()
    ep.state.drop_reboot = True
    with pytest.raises(Unconfirmed, match="sent"):
        await ep.perform("reboot")
    assert ep.miner.reboots == 1 and [path for path, _ in ep.posts()] == ["/reboot"]


async def test_the_watchdog_reboots_a_sick_miner_and_verifies_its_return(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    fleet = Fleet.build(
        1, "device_dead", flavours=["epic"], listen="127.152.202.1", base_port=0, clock=clock,
        scenario_options={"fail_after_s": 60.0}, uptime_s=7200.0,
    )  # fmt: skip
    await fleet.start()
    try:
        member = fleet[0]
        state = epic_state(member.miner)
        state.password, state.drop_reboot = PASSWORD, True
        config = tmp_path / "epic.yaml"
        config.write_text(
            "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
            f"state_dir: {tmp_path}\n"
            "miners:\n"
            f"  - {{name: {member.name}, host: {member.host}, port: {member.port},"
            f" firmware: epic, credentials: {{password: {PASSWORD}}}}}\n"
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
        store = Store(tmp_path / "epic.sqlite")
        watchdog = Watchdog(cfg, store=store, outbox=Outbox(store, {}, clock=clock), clock=clock)
        reports: list[CycleReport] = []
        for _ in range(30):
            clock.advance(INTERVAL_S)
            await fleet.sync()
            reports.append(await watchdog.cycle())
        events = [(e.kind.value, e.detail) for r in reports for e in r.action_events]
        assert "verified" in [kind for kind, _ in events], events
        assert any("sent" in detail for kind, detail in events if kind == "failed"), events
        assert member.miner.reboots == 1
        reboots = [r.body for r in state.received if r.path == "/reboot"]
        assert reboots == [{"param": 0, "password": PASSWORD}]
    finally:
        await fleet.stop()
