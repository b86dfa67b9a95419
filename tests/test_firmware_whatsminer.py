"""The Whatsminer family: md5-crypt, recognition, API v2 and v3 control, v3 reads.

Real parts throughout: the simulator's ``whatsminer`` (API v2 through its api_hook) and
``whatsminer-v3`` (API v3 on its own port, the API port refusing) flavours over TCP on
127.163.x.1, the family's channel and reader, a real Poller, and a Watchdog for the
reboot that drops the connection. The FakeClock moves only by hand.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cgwatchdog.config import MinerConfig
from cgwatchdog.config.loader import load_config
from cgwatchdog.config.models import Credentials
from cgwatchdog.errors import (
    AuthFailed,
    NotSent,
    NotSupported,
    SessionBusy,
    Unconfirmed,
    WriteDisabled,
)
from cgwatchdog.firmware import FAMILIES, ActionRequest, Identity, recognise
from cgwatchdog.firmware.families import whatsminer as wm
from cgwatchdog.firmware.families._md5crypt import md5_crypt, md5_crypt_hash
from cgwatchdog.notify import Outbox
from cgwatchdog.poller import Poller
from cgwatchdog.simulator import FakeClock, Fleet, FleetMember
from cgwatchdog.simulator.families import whatsminer as sim
from cgwatchdog.snapshot import Snapshot, build_snapshot
from cgwatchdog.store import Store
from cgwatchdog.watchdog import CycleReport, Watchdog
from tests.conftest import fixture_files, require_fixtures

FAMILY = FAMILIES["whatsminer"]
_subnets = itertools.count(1)
ADMIN = "s3cret-admin-pw"
POOL_SECRET = "p00l-secret"


@pytest.fixture(autouse=True)
def _fresh_sessions() -> None:
    wm.forget_sessions()


@pytest.fixture
async def fleet() -> AsyncIterator[Any]:
    fleets: list[Fleet] = []

    async def make(flavour: str, n: int = 1, scenario: str = "healthy", **options: Any) -> Fleet:
        clock = FakeClock(1_800_000_000.0)
        built = Fleet.build(
            n, scenario, flavours=[flavour], listen=f"127.163.{next(_subnets)}.1",
            base_port=0, clock=clock, restart_downtime_s=5.0, scenario_options=options,
        )  # fmt: skip
        await built.start()
        fleets.append(built)
        return built

    yield make
    for built in fleets:
        await built.stop()


def miner_config(member: FleetMember, *, password: str | None = ADMIN, **kw: Any) -> MinerConfig:
    """The config of one simulated miner, firmware whatsminer, with credentials."""
    credentials = Credentials(
        password=password, pool_password=kw.pop("pool_password", POOL_SECRET), **kw
    )
    control = {"control_port": member.control_port} if member.control_port else {}
    return MinerConfig(
        name=member.name, host=member.host, port=member.port, firmware="whatsminer",
        credentials=credentials, **control,
    )  # fmt: skip


def channel_of(member: FleetMember, **kw: Any) -> wm.WhatsminerChannel:
    channel = FAMILY.channel(FAMILY.target(miner_config(member, **kw), timeout_s=2.0))
    assert isinstance(channel, wm.WhatsminerChannel)
    return channel


def set_password(member: FleetMember, password: str) -> sim.WhatsminerState:
    state = sim.state_of(member.miner)
    state.admin_password = state.v3_password = password
    return state


async def after(fleet: Fleet, seconds: float) -> None:
    fleet.clock.advance(seconds)  # type: ignore[attr-defined]
    await fleet.sync()


async def poll_once(fleet: Fleet, configs: list[MinerConfig]) -> tuple[Poller, list[Any]]:
    poller = Poller(configs, timeout=2.0, connect_timeout=0.5, clock=fleet.clock)
    return poller, await poller.poll()


# -- md5-crypt ------------------------------------------------------------------------

# Published vectors, each with where it is published.
MD5_CRYPT_VECTORS = [
    # glibc crypt/md5c-test.c and libxcrypt test-crypt-md5.c (salt cut to 8 characters)
    (b"Hello world!", "$1$saltstring", "$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1"),
    # FreeBSD lib/libcrypt/tests/crypt_tests.c
    (b"0.s0.l33t", "$1$deadbeef$", "$1$deadbeef$0Huu6KHrKLVWfqa4WljDE0"),
    # passlib tests/test_handlers.py md5_crypt known_correct_hashes (from John the Ripper 1.7.9)
    (b"U*U*U*U*", "dXc3I7Rw", "$1$dXc3I7Rw$ctlgjDdWJLMT.qwHsWhXR1"),
    (b"*U*U*U*U", "eQT9Hwbt", "$1$eQT9Hwbt$XtuElNJD.eW5MN5UCWyTQ0"),
    (b"", "Eu.GHtia", "$1$Eu.GHtia$CFkL/nE1BYTlEPiVx1VWX0"),
    # passlib, same list (its own vectors)
    (b"", "dOHYPKoP", "$1$dOHYPKoP$tnxS1T8Q6VVn3kpV8cN6o."),
    (b"Compl3X AlphaNu3meric", "nX1e7EeI", "$1$nX1e7EeI$ljQn72ZUgt6Wxd9hfvHdV0"),
    (b"4lpHa N|_|M3r1K W/ Cur5Es: #$%(*)(*%#", "jQS7o98J", "$1$jQS7o98J$V6iTcr71CGgwW2laf17pi1"),
    # musl src/crypt/crypt_md5.c self-test (bytes past 0x7f, a 19-byte password)
    (
        b"Xy01@#\x01\x02\x80\x7f\xff\r\n\x81\t !",
        "$1$abcd0123$",
        "$1$abcd0123$9Qcg8DyviekV3tDGMZynJ1",
    ),
]


@pytest.mark.parametrize(("password", "salt", "expected"), MD5_CRYPT_VECTORS)
def test_md5_crypt_matches_published_vectors(password: bytes, salt: str, expected: str) -> None:
    assert md5_crypt(password, salt) == expected
    assert md5_crypt_hash(password, salt) == expected.rsplit("$", 1)[1]


def test_v2_keys_follow_the_documented_derivation() -> None:
    """host_passwd_md5 = md5-crypt(password, salt) hash part; host_sign = the same of
    host_passwd_md5 + time under newsalt; the AES key is the sha256 digest (32 bytes)."""
    import hashlib

    sign, key = wm._v2_session("admin", "4433", "BQ5hoXV9", "jbzkfQls")
    passwd_md5 = md5_crypt_hash("admin", "BQ5hoXV9")
    assert sign == md5_crypt_hash(passwd_md5 + "4433", "jbzkfQls")
    assert key == hashlib.sha256(passwd_md5.encode()).digest() and len(key) == 32
    sealed = wm.aes_ecb_encrypt(key, b'{"cmd":"reboot"}x')  # 17 bytes: two blocks
    assert "\n" not in sealed and len(sealed) == 44
    assert wm.aes_ecb_decrypt(key, sealed) == b'{"cmd":"reboot"}x'


@pytest.mark.parametrize(
    ("version", "v3"),
    [
        ("'20200917.22.REL'", False),  # the M20S capture, quoted as btminer sends it
        ("20241011.12.Rel.LC", False),  # hass-miner#405: before pyasic's 2024-11 threshold
        ("20241101.01.REL", True),
        ("20250321.14.Rel", True),
        ("20251209.16.Rel2", True),
        ("cgminer 4.9.2", False),
        (None, False),
    ],
)
def test_firmware_after_2024_11_speaks_api_v3(version: str | None, v3: bool) -> None:
    assert wm.speaks_v3(version) is v3


# -- recognition ----------------------------------------------------------------------


def _capture_identity(path: Path) -> tuple[Identity, Snapshot]:
    replies = json.loads(path.read_text())["replies"]
    snapshot = build_snapshot(replies, name=path.stem, host="192.0.2.1", port=4028, at=0.0)
    return Identity.of(replies, snapshot), snapshot


def test_the_m20s_capture_is_recognised_with_its_firmware_version() -> None:
    (path,) = [p for p in require_fixtures() if p.name.startswith("whatsminer-")]
    identity, _ = _capture_identity(path)
    family = recognise(identity)
    assert family.name == "whatsminer"
    assert family.firmware_version(identity) == "20200917.22.REL"


@pytest.mark.parametrize(
    "path",
    [p for p in fixture_files() if not p.name.startswith("whatsminer-")],
    ids=lambda p: p.stem,
)
def test_other_captures_are_not_whatsminers(path: Path) -> None:
    identity, _ = _capture_identity(path)
    assert FAMILY.recognise(identity) == 0
    assert recognise(identity).name != "whatsminer"


async def test_the_v2_flavour_is_recognised_by_a_poller_and_others_are_not(fleet: Any) -> None:
    whatsminer = await fleet("whatsminer")
    others = [await fleet(name) for name in ("cgminer", "bmminer", "bfgminer")]
    members = [whatsminer[0], *(f[0] for f in others)]
    configs = [
        MinerConfig(name=m.name + f"-{i}", host=m.host, port=m.port) for i, m in enumerate(members)
    ]
    poller, results = await poll_once(whatsminer, configs)
    families = [poller.family_of(c.name) for c in configs]
    assert families[0] is FAMILY
    assert all(f is not None and f is not FAMILY for f in families[1:]), families
    first = results[0]
    assert isinstance(first, Snapshot)
    assert first.firmware_version == sim.V2_FIRMWARE
    assert len(first.devices) == 3 and first.fans_rpm and first.temperature_max_c


async def test_a_v3_only_miner_is_read_through_api_v3(fleet: Any) -> None:
    """The API port refuses; configured firmware: whatsminer, the reader turns API v3's
    get.* answers into cgminer-shaped replies and the poller recognises it as well."""
    f = await fleet("whatsminer-v3")
    member = f[0]
    poller, (result,) = await poll_once(f, [miner_config(member)])
    assert isinstance(result, Snapshot), result
    assert poller.family_of(member.name) is FAMILY
    assert poller.recognised_of(member.name) is FAMILY
    assert result.firmware_version == sim.V3_FIRMWARE
    assert result.hashrate_hs == pytest.approx(member.miner.hashrate_hs(f.clock()), rel=0.05)
    assert [d.status for d in result.devices] == ["Alive"] * 3
    assert [p.url for p in result.pools] == [url for url, _ in member.miner.pool_list()]
    assert result.elapsed_s == member.miner.elapsed_s(f.clock())
    assert result.fans_rpm and result.temperature_max_c
    reads = sim.state_of(member.miner).commands("v3")
    assert reads == ["get.device.info"] + ["get.miner.status"] * 3
    # Not configured, the refusing API port looks like a miner that is down.
    auto, (down,) = await poll_once(
        f, [MinerConfig(name="auto", host=member.host, port=member.port)]
    )
    assert not isinstance(down, Snapshot) and auto.family_of("auto") is None


def test_v3_replies_map_to_cgminer_shapes() -> None:
    """Field names as asic-rs's v3 test replies have them; hashrates in TH/s."""
    summary = {"elapsed": 50000, "hash-realtime": 171.2, "hash-average": 170.8,
               "fan-speed-in": 5400, "fan-speed-out": 5280, "chip-temp-max": 82.0,
               "power-realtime": 3156.0, "factory-hash": 181.0}  # fmt: skip
    device = {
        "system": {"fwversion": "20251209.16.Rel2", "api": "3.0.2"},
        "miner": {"type": "M60S_VK40"},
    }
    edevs = [{"id": 0, "status": "alive", "hash-average": 57.1, "chip-temp-max": 80.0},
             {"id": 1, "status": "dead", "hash-average": 0.0}]  # fmt: skip
    pools = [{"url": "stratum+tcp://a.example:3333", "account": "w.1", "status": "alive",
              "pool-priority": 0, "stratum-active": True},
             {"url": "stratum+tcp://b.example:3333", "account": "w.1", "status": "dead",
              "pool-priority": 1, "stratum-active": False}]  # fmt: skip
    replies = {
        "version": wm.v3_version_reply(device, 1),
        "summary": wm.v3_summary_reply(summary, device, 1),
        "devs": wm.v3_devs_reply(edevs, 1),
        "pools": wm.v3_pools_reply(pools, 1),
    }
    snapshot = build_snapshot(replies, name="m", host="h", port=4433, at=1.0)
    assert snapshot.hashrate_hs == pytest.approx(171.2e12)
    assert snapshot.elapsed_s == 50000 and snapshot.fans_rpm == (5400, 5280)
    assert snapshot.temperature_max_c == 82.0
    assert [(d.id, d.status) for d in snapshot.devices] == [(0, "Alive"), (1, "Dead")]
    assert [(p.status, p.active) for p in snapshot.pools] == [("Alive", True), ("Dead", False)]
    identity = Identity.of(replies, snapshot)
    assert recognise(identity) is FAMILY
    assert FAMILY.firmware_version(identity) == "20251209.16.Rel2"


# -- API v2 actions -------------------------------------------------------------------


async def test_v2_actions_reach_the_miner_encrypted_with_one_token(fleet: Any) -> None:
    f = await fleet("whatsminer")
    member = f[0]
    miner, state = member.miner, set_password(member, ADMIN)
    channel = channel_of(member)

    assert "restart_btminer: Code 131" in await channel.perform(ActionRequest("restart"))
    assert miner.restarts == 1 and miner.elapsed_s(f.clock()) == 0
    await after(f, 10)
    await channel.perform(ActionRequest("sleep"))
    assert miner.sleeping and miner.hashrate_hs(f.clock()) == 0
    await channel.perform(ActionRequest("wake"))
    assert not miner.sleeping
    pools = (await poll_once(f, [miner_config(member)]))[1][0].pools
    before = miner.pool_list()
    receipt = await channel.perform(ActionRequest("switchpool", pool=2, pools=pools))
    assert POOL_SECRET not in receipt
    assert miner.pool_list() == [before[2], before[0], before[1]]

    sealed = [r for r in state.received if r.encrypted]
    # get_version (plaintext) tells v2 from v3: its fw_ver is before 2024-11.
    assert state.commands() == [
        "get_version", "get_token", "restart_btminer", "power_off", "power_on", "update_pools"
    ]  # fmt: skip
    assert all(r.authenticated and r.refused is None for r in sealed)
    assert sealed[1].params == {"respbefore": "true"}
    update = sealed[3].params
    assert (update["pool1"], update["worker1"], update["passwd1"]) == (*before[2], POOL_SECRET)
    assert (update["pool2"], update["pool3"]) == (before[0][0], before[1][0])


async def test_v2_reboot_drops_the_connection_and_is_unconfirmed(fleet: Any) -> None:
    f = await fleet("whatsminer")
    member = f[0]
    set_password(member, ADMIN)
    with pytest.raises(Unconfirmed, match="reboot sent"):
        await channel_of(member).perform(ActionRequest("reboot"))
    assert member.miner.reboots == 1
    assert sim.state_of(member.miner).commands() == ["get_version", "get_token", "reboot"]


async def test_v2_wrong_password_is_auth_failed_after_one_try(fleet: Any) -> None:
    f = await fleet("whatsminer")
    member = f[0]
    state = set_password(member, "the-real-one")
    with pytest.raises(AuthFailed) as caught:
        await channel_of(member).perform(ActionRequest("restart"))
    message = str(caught.value)
    assert member.name in message and "credentials.password_file" in message
    assert ADMIN not in message and "the-real-one" not in message
    # A fresh token refused: no retry (the "?" is a command the miner could not decrypt).
    assert state.commands() == ["get_version", "get_token", "?"]
    assert member.miner.restarts == 0


async def test_v2_kept_token_refused_is_renewed_once(fleet: Any) -> None:
    """A token the miner let lapse (its 30 minutes) is renewed once, then it works."""
    f = await fleet("whatsminer")
    member = f[0]
    state = set_password(member, ADMIN)
    channel = channel_of(member)
    await channel.perform(ActionRequest("sleep"))
    await after(f, 31 * 60)  # the miner's keepalive, not this process's clock
    await channel.perform(ActionRequest("wake"))
    assert state.commands() == [
        "get_version", "get_token", "power_off", "power_on", "get_token", "power_on"
    ]  # fmt: skip
    assert [r.refused for r in state.received][3] == "check token error"
    assert not member.miner.sleeping


async def test_v2_write_api_off_is_write_disabled_with_the_fix(fleet: Any) -> None:
    f = await fleet("whatsminer")
    member = f[0]
    state = set_password(member, ADMIN)
    state.write_api = False
    with pytest.raises(WriteDisabled) as caught:
        await channel_of(member).perform(ActionRequest("restart"))
    assert "WhatsMinerTool" in str(caught.value) and member.name in str(caught.value)
    assert "change the admin password" in str(caught.value)
    assert member.miner.restarts == 0


async def test_v2_token_quota_is_session_busy(fleet: Any) -> None:
    f = await fleet("whatsminer")
    member = f[0]
    state = set_password(member, ADMIN)
    state.token_quota = 1
    await channel_of(member).perform(ActionRequest("sleep"))
    wm.forget_sessions()  # another process: it asks for a token of its own
    with pytest.raises(SessionBusy, match="retry later"):
        await channel_of(member).perform(ActionRequest("wake"))
    assert state.commands() == ["get_version", "get_token", "power_off", "get_version", "get_token"]
    assert state.received[-1].refused == "token over max times"


async def test_v2_check_access_proves_the_key(fleet: Any) -> None:
    f = await fleet("whatsminer")
    member = f[0]
    state = set_password(member, ADMIN)
    assert "token and key accepted" in await channel_of(member).check_access()
    assert [(r.command, r.encrypted, r.authenticated) for r in state.received] == [
        ("get_version", False, False),
        ("get_token", False, False),
        ("get_version", True, True),
    ]
    set_password(member, "changed")
    wm.forget_sessions()
    with pytest.raises(AuthFailed):
        await channel_of(member).check_access()


async def test_a_refusing_miner_is_not_sent(fleet: Any) -> None:
    f = await fleet("whatsminer")
    member = f[0]
    await f.down(member.name)
    with pytest.raises(NotSent, match="nothing was done"):
        await channel_of(member).perform(ActionRequest("restart"))
    assert sim.state_of(member.miner).received == []


# -- unsupported ----------------------------------------------------------------------


async def test_boards_and_passwordless_pool_changes_are_not_supported(fleet: Any) -> None:
    f = await fleet("whatsminer")
    member = f[0]
    config = miner_config(member)
    assert FAMILY.why_not("disable", config, "ASC1") == wm.WHY_NO_BOARD
    assert FAMILY.why_not("switchpool", config) is None
    without = miner_config(member, pool_password=None)
    assert FAMILY.why_not("switchpool", without) == (
        "the miner's replies never carry pool passwords; set credentials.pool_password"
    )
    with pytest.raises(NotSupported, match="per-board"):
        await channel_of(member).perform(ActionRequest("disable", device="ASC1"))
    with pytest.raises(NotSupported, match=r"credentials\.pool_password"):
        await channel_of(member, pool_password=None).perform(ActionRequest("switchpool", pool=1))
    assert sim.state_of(member.miner).received == []  # nothing was sent


# -- API v3 ---------------------------------------------------------------------------


async def test_v3_actions_are_signed_set_commands(fleet: Any) -> None:
    f = await fleet("whatsminer-v3")
    member = f[0]
    miner, state = member.miner, set_password(member, ADMIN)
    channel = channel_of(member)
    assert await channel.api_version() == 3

    assert "code 0" in await channel.perform(ActionRequest("restart"))
    assert miner.restarts == 1
    await after(f, 10)
    await channel.perform(ActionRequest("sleep"))
    assert miner.sleeping
    await channel.perform(ActionRequest("wake"))
    assert not miner.sleeping
    pools = (await poll_once(f, [miner_config(member)]))[1][0].pools
    before = miner.pool_list()
    await channel.perform(ActionRequest("switchpool", pool=1, pools=pools))
    assert miner.pool_list() == [before[1], before[0], before[2]]
    await after(f, 10)
    with pytest.raises(Unconfirmed):
        await channel.perform(ActionRequest("reboot"))
    assert miner.reboots == 1

    writes = [r for r in state.received if r.command.startswith("set.")]
    assert [(r.command, r.params.get("param")) for r in writes[:3]] == [
        ("set.miner.service", "restart"), ("set.miner.service", "stop"),
        ("set.miner.service", "start"),
    ]  # fmt: skip
    assert all(r.authenticated and r.refused is None for r in writes)
    pools_sent = writes[3]
    assert pools_sent.command == "set.miner.pools" and pools_sent.encrypted
    assert pools_sent.params["param"][0] == {
        "pool": before[1][0], "worker": before[1][1], "passwd": POOL_SECRET
    }  # fmt: skip
    assert writes[4].command == "set.system.reboot"
    # One salt for all of them: fetched once, kept.
    salts = [r for r in state.received if r.params.get("param") == "salt"]
    assert len(salts) == 1


async def test_v3_wrong_password_and_api_switch(fleet: Any) -> None:
    f = await fleet("whatsminer-v3")
    member = f[0]
    state = set_password(member, "the-real-one")
    with pytest.raises(AuthFailed) as caught:
        await channel_of(member).perform(ActionRequest("restart"))
    assert member.name in str(caught.value) and "the-real-one" not in str(caught.value)
    assert ADMIN not in str(caught.value)
    assert [r.command for r in state.received if r.command.startswith("set.")] == [
        "set.miner.service"
    ]
    set_password(member, ADMIN)
    state.write_api = False
    with pytest.raises(WriteDisabled, match="API switch"):
        await channel_of(member).perform(ActionRequest("restart"))
    assert member.miner.restarts == 0
    assert "salt fetched" in await channel_of(member).check_access()


async def test_v3_defaults_to_super(fleet: Any) -> None:
    f = await fleet("whatsminer-v3")
    member = f[0]
    channel = channel_of(member, password=None)
    await channel.perform(ActionRequest("sleep"))
    assert member.miner.sleeping


# -- the whole loop: a reboot that drops the connection, verified ----------------------

RULES = """
rules:
  - name: DeviceDead
    type: device_status
    for: 1m
    severity: critical
    actions: [{{do: {action}, verify_within: 5m}}]
"""


async def run_watchdog(
    tmp_path: Path, flavour: str, action: str
) -> tuple[Fleet, list[CycleReport]]:
    clock = FakeClock(1_800_000_000.0)
    f = Fleet.build(
        1, "device_dead", flavours=[flavour], listen=f"127.163.{next(_subnets)}.1",
        base_port=0, clock=clock, restart_downtime_s=5.0, scenario_options={"fail_after_s": 60.0},
    )  # fmt: skip
    await f.start()
    member = f[0]
    set_password(member, ADMIN)
    (tmp_path / "admin.pw").write_text(ADMIN + "\n")
    control = f", control_port: {member.control_port}" if member.control_port else ""
    config = tmp_path / "farm.yaml"
    config.write_text(
        "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
        f"state_dir: {tmp_path}\nminers:\n"
        f"  - {{name: {member.name}, host: {member.host}, port: {member.port}, "
        f"firmware: whatsminer{control}, credentials: {{password_file: admin.pw}}}}\n"
        "receivers: [{name: ops, webhook: {url: 'http://127.0.0.1:9/hook'}}]\n"
        "route: {receiver: ops, group_by: [alertname], group_wait: 30s,"
        " group_interval: 5m, repeat_interval: 4h}\n"
        "actions: {dry_run: false, cooldown: 15m, max_per_miner_per_hour: 3, max_in_flight: 5,"
        " restart_grace: 2m}\n" + RULES.format(action=action)
    )
    store = Store(tmp_path / "farm.sqlite")
    watchdog = Watchdog(
        load_config(config), store=store, outbox=Outbox(store, {}, clock=clock), clock=clock
    )
    reports: list[CycleReport] = []
    try:
        for _ in range(40):
            clock.advance(30.0)
            await f.sync()
            reports.append(await watchdog.cycle())
    finally:
        await f.stop()
    return f, reports


async def test_a_reboot_that_drops_the_connection_is_verified(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    f, reports = await run_watchdog(tmp_path, "whatsminer", "reboot")
    miner = f[0].miner
    events = [(e.kind.value, e.detail) for r in reports for e in r.action_events]
    kinds = [kind for kind, _ in events]
    assert miner.reboots == 1, events
    # Sent, no answer (Unconfirmed): the step "failed", and verification then saw the
    # miner go away and come back with Elapsed reset.
    failed = [detail for kind, detail in events if kind == "failed"]
    assert len(failed) == 1 and "reboot sent" in failed[0], events
    assert kinds.index("verified") > kinds.index("failed"), events
    assert sim.state_of(miner).commands() == ["get_token", "reboot"]
    assert miner.elapsed_s(f.clock()) < 40 * 30  # counting from the reboot
    assert ADMIN not in caplog.text


async def test_a_v3_only_miner_is_polled_and_repaired(tmp_path: Path) -> None:
    f, reports = await run_watchdog(tmp_path, "whatsminer-v3", "restart")
    miner = f[0].miner
    kinds = [e.kind.value for r in reports for e in r.action_events]
    assert miner.restarts == 1 and "verified" in kinds, kinds
    writes = [r.command for r in sim.state_of(miner).received if r.command.startswith("set.")]
    assert writes == ["set.miner.service"]
