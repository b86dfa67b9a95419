"""LuxOS: recognition, its session-based control channel against the simulator's
``luxos`` flavour over real TCP, and the planner driving it (a FakeClock moved by hand).

Every request the simulated miner receives is recorded with its parameter
(``luxos_state(miner).control_requests()``), so each test asserts the exact requests:
the session id first, logon/logoff around every action, never a borrowed session.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cgwatchdog.client import AsyncCgminerAPI
from cgwatchdog.config import MinerConfig
from cgwatchdog.config.loader import load_config
from cgwatchdog.errors import ActionError, CommandError, NotSupported, SessionBusy, Unconfirmed
from cgwatchdog.firmware import FAMILIES, ActionRequest, Identity, recognise
from cgwatchdog.firmware.families.luxos import board_id
from cgwatchdog.notify import Outbox
from cgwatchdog.poller import Poller
from cgwatchdog.simulator import FLAVOURS, FakeClock, Fleet
from cgwatchdog.simulator.families.luxos import SESSION_IDLE_S, luxos_state
from cgwatchdog.snapshot import Snapshot
from cgwatchdog.store import Store
from cgwatchdog.watchdog import CycleReport, Watchdog
from tests.conftest import require_fixtures
from tests.firmwarekit import OneMiner, identity_of, one_miner_maker

T0 = 1_800_000_000.0
INTERVAL_S = 30.0
LUXOS = FAMILIES["luxos"]

# What LuxOS answers to `version` (docs.luxor.tech /firmware/api/cgminer/version: the
# fields, with Bitmain's spoofed), and the newer shape without BMMiner (as asic-rs's
# LuxOS 2025 test data has it). Values are ours.
LUXOS_VERSION_SPOOFED = {
    "STATUS": [{"Code": 22, "Description": "LUXminer 2024.2.19.131822-ef17c0c4",
                "Msg": "LUXminer versions", "STATUS": "S", "When": 1700000000}],
    "VERSION": [{"API": "3.7", "BMMiner": "1.0.0", "CompileTime": "Mon Feb 19 13:19:55 UTC 2024",
                 "LUXminer": "2024.2.19.131822-ef17c0c4", "Miner": "uart_trans.1.3",
                 "Type": "Antminer S9"}],
    "id": 1,
}  # fmt: skip
LUXOS_VERSION_NEW = {
    "STATUS": [{"Code": 22, "Description": "LUXminer 2025.4.8.220305-57b389c7",
                "Msg": "LUXminer versions", "STATUS": "S", "When": 1700000000}],
    "VERSION": [{"API": "3.7", "CompileTime": "Tue Apr  8 22:05:35 UTC 2025",
                 "LUXminer": "2025.4.8.220305-57b389c7", "Miner": "2025.4.8.220305",
                 "Type": "Antminer S19k Pro"}],
    "id": 1,
}  # fmt: skip


# -- the simulator harness --------------------------------------------------------------


class Lux(OneMiner):
    """One simulated LuxOS miner served on its own 127.x address, and its channel."""

    family = LUXOS

    def __init__(self, fleet: Fleet, clock: FakeClock) -> None:
        super().__init__(fleet, clock)
        self.state = luxos_state(self.miner)

    def miner_config(self, **settings: Any) -> MinerConfig:
        # firmware: auto, as a farm would configure it: the channel goes by recognition.
        member = self.member
        return MinerConfig(name=member.name, host=member.host, port=member.port, **settings)

    def sent(self) -> list[tuple[str, str | None]]:
        """The control requests received so far (then forgotten)."""
        sent = self.state.control_requests()
        self.state.received.clear()
        return sent


luxos = pytest.fixture(one_miner_maker(Lux, "luxos", "143"))


def only_session(sent: list[tuple[str, str | None]]) -> str:
    """The one session id used in ``sent``: logon first, the same id everywhere after."""
    assert sent[0] == ("logon", None), sent
    ids = {(parameter or "").split(",")[0] for command, parameter in sent[1:]}
    assert len(ids) == 1 and "" not in ids, sent
    return ids.pop()


# -- 1. recognition ---------------------------------------------------------------------


def test_luxos_version_replies_are_recognised_with_the_luxminer_version() -> None:
    for reply, version in (
        (LUXOS_VERSION_SPOOFED, "2024.2.19.131822-ef17c0c4"),
        (LUXOS_VERSION_NEW, "2025.4.8.220305-57b389c7"),
    ):
        identity = identity_of({"version": reply})
        family = recognise(identity)
        assert family.name == "luxos" and family.recognise(identity) >= 50
        assert family.firmware_version(identity) == version
    # The spoofed reply names bmminer: LuxOS must outscore whatever goes by that.
    spoofed = identity_of({"version": LUXOS_VERSION_SPOOFED})
    assert "bmminer" in spoofed.text()
    others = [f.recognise(spoofed) for f in FAMILIES.values() if f.name != "luxos"]
    assert LUXOS.recognise(spoofed) > max(others)
    # Without VERSION, the STATUS Description still says LUXminer.
    assert LUXOS.recognise(Identity(description="LUXminer 2025.4.8.220305-57b389c7")) >= 50
    # Auradine's FluxOS contains "luxos" but is not LuxOS.
    assert LUXOS.recognise(Identity(description="FluxOS 1.2.3", fork="FluxOS 1.2.3")) == 0


def test_no_field_capture_is_taken_for_luxos() -> None:
    paths = require_fixtures()
    names = []
    for path in paths:
        data = json.loads(path.read_text())
        identity = identity_of(data["replies"])
        assert LUXOS.recognise(identity) == 0, path.name
        assert recognise(identity).name != "luxos", path.name
        names.append(path.stem)
    assert "antminer-s9-bmminer-2.0.0" in names  # plain bmminer: not LuxOS


async def test_the_luxos_flavour_is_recognised_by_the_poller_and_no_other_flavour_is() -> None:
    clock = FakeClock(T0)
    flavours = ["luxos", *(name for name in FLAVOURS if name != "luxos")]
    fleet = Fleet.build(len(flavours), flavours=flavours, listen="127.144.0.1", clock=clock)
    async with fleet_served(fleet):
        targets = [MinerConfig(name=m.name, host=m.host, port=m.port) for m in fleet]
        poller = Poller(targets, timeout=2.0, connect_timeout=0.5, clock=clock)
        results = {r.name: r for r in await poller.poll()}
        families = {m.miner.flavour.name: poller.family_of(m.name) for m in fleet}
    assert families["luxos"] is LUXOS
    assert [name for name, family in families.items() if family is LUXOS] == ["luxos"]
    lux = results[fleet[0].name]
    assert isinstance(lux, Snapshot)
    assert lux.family == "luxos" and lux.firmware_version == luxos_version()
    # Boards (devs ASC<n>, n the board id), fans and temperatures all come through.
    assert [(d.kind, d.id) for d in lux.devices] == [("ASC", 0), ("ASC", 1), ("ASC", 2)]
    assert all(d.temperature_c for d in lux.devices) and lux.temperature_max_c
    assert lux.fans_rpm and lux.hashrate_hs and len(lux.pools) == 3
    assert LUXOS.poll_commands(lux, None) == ("summary", "devs", "pools", "stats")


def luxos_version() -> str:
    return dict(FLAVOURS["luxos"].version)["LUXminer"]


class fleet_served:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def __aenter__(self) -> Fleet:
        await self.fleet.start()
        return self.fleet

    async def __aexit__(self, *exc: object) -> None:
        await self.fleet.stop()


# -- 2. every action, end to end --------------------------------------------------------


async def test_restart_is_resetminer_in_a_session_that_is_logged_off(luxos: Any) -> None:
    # No downtime: the API stays up, so the logoff after resetminer is seen arriving.
    lux = await luxos(restart_downtime_s=0.0)
    receipt = await lux.perform("restart")
    sent = lux.sent()
    sid = only_session(sent)
    assert sent == [("logon", None), ("resetminer", sid), ("logoff", sid)]
    assert receipt.startswith("resetminer|<session>: STATUS S") and sid not in receipt
    assert lux.miner.restarts == 1 and lux.miner.elapsed_s(lux.clock()) == 0
    assert lux.state.active_session(lux.clock()) is None


async def test_reboot_is_rebootdevice_never_the_board_reboot(luxos: Any) -> None:
    lux = await luxos()
    with pytest.raises(Unconfirmed, match=r"rebootdevice.*verification decides"):
        await lux.perform("reboot")
    sent = lux.sent()
    sid = only_session(sent)
    # The logoff after it finds the miner gone (not received); the reboot ended the session.
    assert sent == [("logon", None), ("rebootdevice", sid)]
    assert lux.miner.reboots == 1 and lux.miner.restarts == 0
    assert lux.state.active_session(lux.clock()) is None


async def test_switchpool_is_plain_switchpool_without_a_session(luxos: Any) -> None:
    lux = await luxos()
    receipt = await lux.perform("switchpool", pool=2)
    assert lux.sent() == [("switchpool", "2")]
    assert "Code 27" in receipt and lux.miner.active_pool(lux.clock()) == 2
    assert lux.state.logons == 0


async def test_disable_and_enable_a_board_by_its_luxos_board_id(luxos: Any) -> None:
    lux = await luxos()
    # BOARD<n> (a STATS chain, from 1) is board n-1; ASC<n> (devs) is board n.
    assert (board_id("disable", "BOARD2"), board_id("disable", "ASC1")) == (1, 1)
    await lux.perform("disable", device="BOARD2")
    sent = lux.sent()
    sid = only_session(sent)
    assert sent == [("logon", None), ("disableboard", f"{sid},1"), ("logoff", sid)]
    snapshot = await lux.poll()
    assert [d.enabled for d in snapshot.devices] == [True, False, True]
    assert snapshot.devices[1].hashrate_hs == 0
    await lux.perform("enable", device="ASC1")
    sent = lux.sent()
    sid = only_session(sent)
    assert sent == [("logon", None), ("enableboard", f"{sid},1"), ("logoff", sid)]
    assert [d.enabled for d in (await lux.poll()).devices] == [True, True, True]
    assert lux.state.active_session(lux.clock()) is None


async def test_sleep_and_wake_are_curtail_and_sleep_survives_a_restart(luxos: Any) -> None:
    lux = await luxos(restart_downtime_s=0.0)
    receipt = await lux.perform("sleep")
    sent = lux.sent()
    sid = only_session(sent)
    assert sent == [("logon", None), ("curtail", f"{sid},sleep"), ("logoff", sid)]
    assert "Code 335" in receipt
    assert lux.miner.sleeping and lux.miner.hashrate_hs(lux.clock()) == 0
    await lux.perform("restart")
    assert lux.miner.sleeping  # curtailment persists until wakeup
    lux.sent()
    await lux.perform("wake")
    sent = lux.sent()
    sid = only_session(sent)
    assert sent == [("logon", None), ("curtail", f"{sid},wakeup"), ("logoff", sid)]
    assert not lux.miner.sleeping and lux.miner.hashrate_hs(lux.clock()) > 0


async def test_check_access_is_logon_then_logoff(luxos: Any) -> None:
    lux = await luxos()
    assert "logon and logoff accepted" in await lux.channel().check_access()
    sent = lux.sent()
    assert sent == [("logon", None), ("logoff", only_session(sent))]
    assert lux.state.active_session(lux.clock()) is None


async def test_a_refused_action_still_logs_off(luxos: Any) -> None:
    lux = await luxos()
    with pytest.raises(ActionError, match=r"disableboard.*Invalid board id") as caught:
        await lux.perform("disable", device="ASC7")  # the miner has boards 0-2
    assert not isinstance(caught.value, (SessionBusy, Unconfirmed))
    sent = lux.sent()
    sid = only_session(sent)
    assert sent == [("logon", None), ("disableboard", f"{sid},7"), ("logoff", sid)]
    assert lux.state.active_session(lux.clock()) is None


# -- 3. credentials: LuxOS has none, and none are sent -----------------------------------


async def test_configured_credentials_are_never_sent(luxos: Any) -> None:
    """LuxOS has no password to get wrong ("sessions are not a security feature"): the
    brief's wrong-password case becomes "a configured secret never leaves"."""
    lux = await luxos()
    secret = "hunter2-do-not-send"
    config = MinerConfig.model_validate(
        {"name": lux.member.name, "host": lux.member.host, "port": lux.member.port,
         "credentials": {"user": "root", "password": secret}}
    )  # fmt: skip
    channel = lux.channel(config)
    await channel.perform(ActionRequest("sleep"))
    await channel.check_access()
    received = [json.dumps([r.command, r.parameter]) for r in lux.state.received]
    assert received and not any(secret in text for text in received)
    assert LUXOS.default_password is None and LUXOS.default_user is None


# -- sessions: held by another tool, expiry --------------------------------------------


async def test_a_session_held_by_another_tool_is_session_busy_and_never_borrowed(
    luxos: Any,
) -> None:
    lux = await luxos()
    theirs = lux.state.other_tool_logon(lux.clock())
    for do in ("restart", "reboot", "sleep"):
        with pytest.raises(SessionBusy) as caught:
            await lux.perform(do)
        message = str(caught.value)
        assert message.startswith(
            f"another tool holds the LuxOS session of {lux.member.name}; cgwatchdog tries again"
        )
        assert theirs not in message
        # One logon and nothing else: no `session` to learn their id, no kill, no action.
        assert lux.sent() == [("logon", None)]
    with pytest.raises(SessionBusy):
        await lux.channel().check_access()
    assert lux.sent() == [("logon", None)]
    assert (lux.miner.restarts, lux.miner.reboots, lux.miner.sleeping) == (0, 0, False)
    assert lux.state.active_session(lux.clock()) == theirs  # left alone


async def test_sessions_expire_after_a_minute_unused_and_use_refreshes_them(luxos: Any) -> None:
    lux = await luxos()
    api = AsyncCgminerAPI(lux.member.host, lux.member.port, timeout=2.0, connect_timeout=0.5)
    reply = await api.command("logon")
    assert reply["STATUS"][0]["Code"] == 316 and reply["STATUS"][0]["Msg"] == "Session created"
    sid = reply["SESSION"][0]["SessionID"]
    assert len(sid) == 8
    assert (await api.command("session"))["SESSION"][0]["SessionID"] == sid
    await lux.later(50)
    await api.command("curtail", f"{sid},wakeup")  # using it refreshes it
    await lux.later(SESSION_IDLE_S - 1)
    assert lux.state.active_session(lux.clock()) == sid
    with pytest.raises(SessionBusy):
        await lux.perform("restart")
    await lux.later(1)
    assert lux.state.active_session(lux.clock()) is None
    # An expired session is refused with STATUS E (Code 402); ours works.
    with pytest.raises(CommandError, match="STATUS E, Code 402"):
        await api.command("resetminer", sid)
    await lux.perform("sleep")
    assert lux.miner.sleeping


# -- 4. what LuxOS cannot do -------------------------------------------------------------


async def test_a_device_that_is_not_a_board_is_not_supported(luxos: Any) -> None:
    lux = await luxos()
    assert LUXOS.unsupported == {}
    for device in ("PGA1", "BOARD0", "chain6"):
        why = LUXOS.why_not("disable", None, device)
        assert why and device in why
        with pytest.raises(NotSupported):
            await lux.perform("disable", device=device)
    with pytest.raises(NotSupported, match="one board"):
        await lux.perform("enable")
    assert LUXOS.why_not("disable", None, "BOARD3") is None
    assert LUXOS.why_not("enable", None, "ASC0") is None
    assert lux.sent() == []  # refused before any logon


# -- 5. through the planner: a dropped reboot verified; a busy session waited out ------------


class Farm:
    def __init__(self, lux: Lux, watchdog: Watchdog) -> None:
        self.lux, self.watchdog = lux, watchdog
        self.reports: list[CycleReport] = []

    async def cycles(self, count: int, before: Callable[[], Any] = lambda: None) -> None:
        for _ in range(count):
            before()
            await self.lux.later(INTERVAL_S)
            self.reports.append(await self.watchdog.cycle())

    def events(self) -> list[tuple[str, str, str]]:
        return [(e.kind.value, e.do, e.detail) for r in self.reports for e in r.action_events]

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events()]


@pytest.fixture
async def farm(luxos: Any, tmp_path: Path) -> Callable[..., Any]:
    async def make(steps: str, **options: Any) -> Farm:
        lux = await luxos("device_dead", scenario_options={"fail_after_s": 60.0}, **options)
        m = lux.member
        config = tmp_path / "luxos.yaml"
        config.write_text(
            "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
            f"state_dir: {tmp_path}\n"
            f"miners:\n  - {{name: {m.name}, host: {m.host}, port: {m.port}, firmware: luxos}}\n"
            "receivers: [{name: ops, webhook: {url: 'http://127.0.0.1:9/hook'}}]\n"
            "route: {receiver: ops, group_by: [alertname], group_wait: 30s,"
            " group_interval: 5m, repeat_interval: 4h}\n"
            "actions: {dry_run: false, cooldown: 15m, max_per_miner_per_hour: 3, max_in_flight: 5,"
            " restart_grace: 2m}\n"
            "rules:\n  - name: DeviceDead\n    type: device_status\n    for: 1m\n"
            f"    severity: critical\n    actions: {steps}\n"
        )
        cfg = load_config(config)
        store = Store(tmp_path / "luxos.sqlite")
        outbox = Outbox(store, {}, clock=lux.clock)
        return Farm(lux, Watchdog(cfg, store=store, outbox=outbox, clock=lux.clock))

    return make


async def test_a_reboot_that_drops_the_connection_is_verified_by_the_miner_coming_back(
    farm: Any,
) -> None:
    f = await farm("[{do: reboot, verify_within: 10m}]")
    await f.cycles(30)
    lux = f.lux
    assert lux.miner.reboots == 1
    sent = lux.sent()
    assert sent == [("logon", None), ("rebootdevice", only_session(sent))]
    kinds = f.kinds()
    assert "verified" in kinds, f.events()
    (sent_event,) = [e for e in f.events() if e[1] == "reboot" and e[0] in ("succeeded", "failed")]
    assert "verification decides" in sent_event[2]
    assert lux.state.active_session(lux.clock()) is None
    snapshot = f.reports[-1].results[0]
    assert isinstance(snapshot, Snapshot) and snapshot.elapsed_s is not None
    assert snapshot.elapsed_s < 30 * INTERVAL_S  # came back with Elapsed reset


async def test_a_busy_session_makes_the_step_wait_and_act_once_it_is_free(farm: Any) -> None:
    f = await farm("[{do: restart, verify_within: 10m}]")
    lux = f.lux
    # Another tool holds the session and keeps it alive for 20 minutes.
    await f.cycles(40, before=lambda: lux.state.other_tool_logon(lux.clock()))
    busy = [e for e in f.events() if e[0] == "failed" and "another tool holds" in e[2]]
    # Tried, found busy, waited, tried again, the waits doubling from BUSY_RETRY_S (tries
    # at 0, 1, 3, 7 and 15 minutes): no retry storm, and no cooldown or hourly cap used.
    assert len(busy) == 5, f.events()
    assert lux.sent() == [("logon", None)] * 5  # only logons, never their session
    assert lux.miner.restarts == 0
    assert not [e for e in f.events() if e[0] in ("exhausted", "denied")]
    # It logs off; the waiting step goes ahead and is verified.
    lux.state.end_session()
    await f.cycles(40)
    assert lux.miner.restarts == 1
    sent = lux.sent()
    sid = only_session(sent)
    assert sent == [("logon", None), ("resetminer", sid)]
    assert "verified" in f.kinds(), f.events()
    assert not [e for e in f.events() if e[0] == "exhausted"]
    assert lux.state.active_session(lux.clock()) is None
