"""Tests for cgwatchdog.simulator: reply shapes per firmware, scenarios on a FakeClock,
and real TCP servers on 127.0.0.0/8 read with a raw asyncio client."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from cgwatchdog.errors import ConfigError, ProtocolError
from cgwatchdog.protocol import Request, decode_reply, decode_request, encode_request
from cgwatchdog.simulator import (
    FLAVOURS,
    SCENARIOS,
    FakeClock,
    Fleet,
    Scenario,
    SimulatedMiner,
    ensure_file_limit,
    make_scenario,
    run_simulator,
    serve,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "peer-replies"
FLAVOUR_NAMES = ("cgminer", "bmminer", "bfgminer")
READ_COMMANDS = ("version", "summary", "devs", "pools", "stats", "config", "coin", "devdetails")


def fixture(name: str) -> dict[str, Any]:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"field captures not found at {FIXTURES} (a clone outside this setup)")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def miner(flavour: str = "cgminer", scenario: Any = "healthy", clock: FakeClock | None = None,
          **kwargs: Any) -> SimulatedMiner:  # fmt: skip
    now = clock() if clock is not None else FakeClock()()
    return SimulatedMiner("m1", flavour, scenario, now=now, seed=7, **kwargs)


def raw(m: SimulatedMiner, command: str, parameter: str | None = None, *, now: float,
        text: bool = False) -> bytes:  # fmt: skip
    out = m.handle(decode_request(encode_request(command, parameter, text=text)), now)
    assert out is not None
    return out


def ask(
    m: SimulatedMiner, command: str, parameter: str | None = None, *, now: float
) -> dict[str, Any]:
    """One JSON request; the reply must be valid JSON with exactly one NUL at the end."""
    out = raw(m, command, parameter, now=now)
    assert out.endswith(b"\0") and out.count(b"\0") == 1
    reply: dict[str, Any] = json.loads(out[:-1])
    return reply


def status(reply: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = reply["STATUS"][0]
    return entry


# -- replies per flavour ----------------------------------------------------------------


@pytest.mark.parametrize("flavour", [*FLAVOURS])
@pytest.mark.parametrize("text", [False, True])
def test_every_reply_ends_with_exactly_one_nul(flavour: str, text: bool) -> None:
    clock = FakeClock()
    m = miner(flavour, clock=clock)
    commands = [*READ_COMMANDS, "asc|0", "pga|0", "gpu|0", "nosuch", "privileged", "switchpool|1"]
    for spec in commands:
        command, _, parameter = spec.partition("|")
        out = raw(m, command, parameter or None, now=clock(), text=text)
        assert out.endswith(b"\0") and out.count(b"\0") == 1, (spec, out[:80])
        decode_reply(out, command=command)  # every shape is readable by our codec
    multi = raw(m, "summary+devs+pools", now=clock())
    assert multi.endswith(b"\0") and multi.count(b"\0") == 1


@pytest.mark.parametrize(
    ("flavour", "program", "version", "api", "description"),
    [
        ("cgminer", "CGMiner", "4.11.1", "3.7", "cgminer 4.11.1"),
        ("bmminer", "BMMiner", "2.0.0", "3.1", "bmminer 1.0.0"),
        ("bfgminer", "CGMiner", "5.5.0", "3.1", "bfgminer 5.5.0"),
    ],
)
def test_version_identity(
    flavour: str, program: str, version: str, api: str, description: str
) -> None:
    clock = FakeClock()
    reply = ask(miner(flavour, clock=clock), "version", now=clock())
    assert status(reply) == {
        "STATUS": "S",
        "When": int(clock()),
        "Code": 22,
        "Msg": f"{FLAVOURS[flavour].program} versions",
        "Description": description,
    }
    assert reply["VERSION"][0][program] == version
    assert reply["VERSION"][0]["API"] == api
    assert reply["id"] == 1


def test_when_is_the_simulated_clock_as_an_int() -> None:
    clock = FakeClock(1_700_000_000.75)
    m = miner(clock=clock)
    assert status(ask(m, "summary", now=clock()))["When"] == 1_700_000_000
    clock.advance(3600)
    assert status(ask(m, "summary", now=clock()))["When"] == 1_700_003_600


def test_cgminer_summary_devs_pools_match_the_field_capture() -> None:
    capture = fixture("strongu-stu-u6-cgminer-4.11.1.json")["replies"]
    clock = FakeClock()
    m = miner("cgminer", clock=clock)
    summary = ask(m, "summary", now=clock())["SUMMARY"][0]
    fork_extras = {"Miner type", "Fan Num", "Fan1", "Fan2"}  # StrongU additions
    assert list(summary) == [k for k in capture["summary"]["SUMMARY"][0] if k not in fork_extras]
    pools = ask(m, "pools", now=clock())["POOLS"]
    assert list(pools[0]) == list(capture["pools"]["POOLS"][0])
    device = ask(m, "devs", now=clock())["DEVS"][0]
    stock = set(capture["devs"]["DEVS"][0]) - {"volt", "ChipNum", "Frequency", "Reboot Count"}
    assert set(device) - stock == {"No Device"}  # cgminer with USB devices adds it
    assert stock <= set(device)
    assert isinstance(device["Last Share Time"], int)
    assert isinstance(pools[0]["Last Share Time"], int)  # stock cgminer: an epoch


def test_bmminer_pools_and_version_match_the_field_capture() -> None:
    capture = fixture("antminer-s9-bmminer-2.0.0.json")["replies"]
    clock = FakeClock()
    m = miner("bmminer", clock=clock)
    pools = ask(m, "pools", now=clock())["POOLS"]
    assert list(pools[0]) == list(capture["pools"]["POOLS"][0])
    assert re.fullmatch(r"\d+:\d\d:\d\d", pools[0]["Last Share Time"])
    assert pools[0]["Diff"] == "32.8K"
    assert pools[1]["Last Share Time"] == "0"  # never used: "0", a string
    assert list(ask(m, "version", now=clock())["VERSION"][0]) == list(
        capture["version"]["VERSION"][0]
    )
    summary = ask(m, "summary", now=clock())["SUMMARY"][0]
    assert isinstance(summary["GHS 5s"], str) and float(summary["GHS 5s"]) > 10_000
    assert isinstance(summary["GHS av"], float)


def test_bmminer_stats_glue_quirk_slots_and_fans() -> None:
    capture = fixture("antminer-s9-bmminer-2.0.0.json")["replies"]["stats"]["STATS"][1]
    clock = FakeClock()
    out = raw(miner("bmminer", clock=clock), "stats", now=clock())
    # bmminer 1.0: STATS[0] and STATS[1] back to back, no comma.
    assert b'"Type":"Antminer S9"}{"STATS":0,"ID":"BC50"' in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out[:-1])
    stats = decode_reply(out)["STATS"]
    assert stats[0]["BMMiner"] == "2.0.0"
    entry = stats[1]
    assert set(capture) - set(entry) == {"chain_xtime6", "chain_xtime7", "chain_xtime8"}
    assert set(entry) <= set(capture)
    assert [i for i in range(1, 17) if entry[f"chain_rate{i}"]] == [6, 7, 8]
    assert all(isinstance(entry[f"chain_rate{i}"], str) for i in range(1, 17))
    assert [i for i in range(1, 17) if entry[f"chain_acn{i}"]] == [6, 7, 8]
    assert [i for i in range(1, 9) if entry[f"fan{i}"]] == [5, 6]
    assert isinstance(entry["GHS 5s"], str)
    assert entry["chain_acs6"].count("o") == 63


def test_bmminer_devs_has_no_asc_devices_its_boards_are_in_stats() -> None:
    clock = FakeClock()
    reply = ask(miner("bmminer", clock=clock), "devs", now=clock())
    assert status(reply)["Code"] == 10 and status(reply)["Msg"] == "No ASCs"
    assert "DEVS" not in reply


def test_bfgminer_devs_and_pools_match_the_field_capture() -> None:
    capture = fixture("futurebit-moonlander2-bfgminer-5.4.2.json")["replies"]
    clock = FakeClock()
    m = miner("bfgminer", clock=clock)
    devs = ask(m, "devs", now=clock())
    assert status(devs)["Msg"] == "3 PGA(s)"
    device = devs["DEVS"][0]
    assert set(device) - set(capture["devs"]["DEVS"][0]) == {"Temperature"}
    assert set(capture["devs"]["DEVS"][0]) <= set(device)
    assert "MHS 5s" not in device and device["MHS 20s"] > 0
    assert list(ask(m, "pools", now=clock())["POOLS"][0]) == list(capture["pools"]["POOLS"][0])


@pytest.mark.parametrize(("flavour", "msg"), [("cgminer", "No ASCs"), ("bfgminer", "No PGAs")])
def test_a_miner_without_devices_answers_code_10(flavour: str, msg: str) -> None:
    clock = FakeClock()
    reply = ask(miner(flavour, clock=clock, devices=0), "devs", now=clock())
    assert status(reply)["STATUS"] == "E"
    assert (status(reply)["Code"], status(reply)["Msg"]) == (10, msg)
    assert "DEVS" not in reply


def test_bfgminer_mhs_20s_is_zero_for_20_seconds_after_a_start() -> None:
    clock = FakeClock()
    m = miner("bfgminer", clock=clock, uptime_s=0)
    clock.advance(19)
    assert ask(m, "summary", now=clock())["SUMMARY"][0]["MHS 20s"] == 0
    assert all(d["MHS 20s"] == 0 for d in ask(m, "devs", now=clock())["DEVS"])
    clock.advance(2)
    assert ask(m, "summary", now=clock())["SUMMARY"][0]["MHS 20s"] > 1_000_000


def test_invalid_command_lacks_description_on_cgminer_only() -> None:
    clock = FakeClock()
    cg = status(ask(miner("cgminer", clock=clock), "nosuch", now=clock()))
    assert cg == {"STATUS": "E", "When": int(clock()), "Code": 14, "Msg": "Invalid command"}
    bfg = status(ask(miner("bfgminer", clock=clock), "nosuch", now=clock()))
    assert bfg["Code"] == 14 and bfg["Description"] == "bfgminer 5.5.0"


def test_multi_command_reply_is_keyed_by_command() -> None:
    clock = FakeClock()
    reply = ask(miner(clock=clock), "summary+devs+pools", now=clock())
    assert list(reply) == ["summary", "devs", "pools", "id"]
    assert reply["id"] == 1
    for name, section in (("summary", "SUMMARY"), ("devs", "DEVS"), ("pools", "POOLS")):
        assert len(reply[name]) == 1
        part = reply[name][0]
        assert part["id"] == 1 and status(part)["STATUS"] == "S" and section in part


def test_privileged_command_inside_a_multi_command_is_refused_with_45() -> None:
    clock = FakeClock()
    m = miner(clock=clock)
    assert m.write_access
    reply = ask(m, "summary+restart", now=clock())
    denied = status(reply["restart"][0])
    assert (denied["Code"], denied["Msg"]) == (45, "Access denied to 'restart' command")
    assert m.restarts == 0 and m.available(clock())


def test_firmware_without_multi_command_answers_code_14() -> None:
    clock = FakeClock()
    reply = ask(miner("bmminer-nomulti", clock=clock), "summary+devs+pools", now=clock())
    assert list(reply) == ["STATUS", "id"]
    assert (status(reply)["STATUS"], status(reply)["Code"]) == ("E", 14)
    assert status(reply)["Msg"] == "Invalid command"


def test_cgminer_restart_reply_downtime_and_elapsed() -> None:
    clock = FakeClock()
    m = miner("cgminer", clock=clock)
    before = ask(m, "summary", now=clock())["SUMMARY"][0]["Elapsed"]
    assert before > 3600
    assert raw(m, "restart", now=clock()) == b'{"STATUS":"RESTART","id":1}\0'
    assert not m.available(clock())
    assert m.handle(Request(("summary",)), clock()) is None
    clock.advance(4.9)
    assert not m.available(clock())
    clock.advance(0.2)
    assert m.available(clock())
    summary = ask(m, "summary", now=clock())["SUMMARY"][0]
    assert summary["Elapsed"] == 5 and summary["Accepted"] < 3
    assert m.restarts == 1


def test_restart_and_quit_in_text_form() -> None:
    clock = FakeClock()
    assert raw(miner(clock=clock), "restart", now=clock(), text=True) == b"RESTART\0"
    assert raw(miner(clock=clock), "quit", now=clock(), text=True) == b"BYE\0"


def test_bfgminer_restart_is_success_257_with_a_short_downtime() -> None:
    clock = FakeClock()
    m = miner("bfgminer", clock=clock)
    assert status(ask(m, "restart", now=clock()))["Code"] == 257
    assert not m.available(clock())
    clock.advance(1.0)
    assert m.available(clock())


def test_quit_says_bye_and_stays_down_until_powered_on() -> None:
    clock = FakeClock()
    m = miner(clock=clock)
    assert raw(m, "quit", now=clock()) == b'{"STATUS":"BYE","id":1}\0'
    clock.advance(3600)
    assert not m.available(clock()) and m.next_availability_change(clock()) is None
    m.power_on(clock())
    clock.advance(m.restart_downtime_s)
    assert ask(m, "summary", now=clock())["SUMMARY"][0]["Elapsed"] == 5


def test_switchpool_and_pool_commands() -> None:
    clock = FakeClock()
    m = miner(clock=clock)
    switched = status(ask(m, "switchpool", "1", now=clock()))
    assert (switched["STATUS"], switched["Code"]) == ("S", 27)
    assert switched["Msg"] == "Switching to pool 1:'stratum+tcp://pool-backup.example.org:3333'"
    pools = ask(m, "pools", now=clock())["POOLS"]
    assert [p["Stratum Active"] for p in pools] == [False, True, False]
    assert [p["Priority"] for p in pools] == [1, 0, 2]
    missing = status(ask(m, "switchpool", "7", now=clock()))
    assert (missing["STATUS"], missing["Code"], missing["Msg"]) == (
        "E",
        26,
        "Invalid pool id 7 - range is 0 - 2",
    )
    assert status(ask(m, "switchpool", now=clock()))["Code"] == 25
    assert status(ask(m, "disablepool", "2", now=clock()))["Code"] == 48
    assert status(ask(m, "disablepool", "2", now=clock()))["Code"] == 50
    assert status(ask(m, "disablepool", "0", now=clock()))["Code"] == 48
    assert status(ask(m, "disablepool", "1", now=clock()))["Code"] == 51  # the last one
    assert status(ask(m, "enablepool", "0", now=clock()))["Code"] == 47
    assert status(ask(m, "enablepool", "0", now=clock()))["Code"] == 49


def test_addpool() -> None:
    clock = FakeClock()
    m = miner(clock=clock)
    added = status(ask(m, "addpool", "stratum+tcp://127.0.0.1:3333,worker,x", now=clock()))
    assert (added["STATUS"], added["Code"]) == ("S", 55)
    assert added["Msg"] == "Added pool 3: 'stratum+tcp://127.0.0.1:3333'"
    pools = ask(m, "pools", now=clock())["POOLS"]
    assert len(pools) == 4 and pools[3]["User"] == "worker"
    assert status(ask(m, "addpool", now=clock()))["Code"] == 52
    assert status(ask(m, "addpool", "onlyurl", now=clock()))["Code"] == 53


@pytest.mark.parametrize(("flavour", "kind", "codes"), [
    ("cgminer", "asc", (111, 109, 110, 108, 107)),
    ("bfgminer", "pga", (64, 62, 63, 61, 58)),
])  # fmt: skip
def test_device_disable_and_enable(flavour: str, kind: str, codes: tuple[int, ...]) -> None:
    clock = FakeClock()
    m = miner(flavour, clock=clock)
    disable, already_disabled, enable, already_enabled, invalid = codes
    assert status(ask(m, f"{kind}disable", "1", now=clock()))["Code"] == disable
    assert status(ask(m, f"{kind}disable", "1", now=clock()))["Code"] == already_disabled
    clock.advance(60)
    device = ask(m, kind, "1", now=clock())[kind.upper()][0]
    assert device["Enabled"] == "N" and device[f"MHS {FLAVOURS[flavour].log_interval_s}s"] == 0
    assert status(ask(m, f"{kind}enable", "1", now=clock()))["Code"] == enable
    assert status(ask(m, f"{kind}enable", "1", now=clock()))["Code"] == already_enabled
    assert status(ask(m, kind, "9", now=clock()))["Code"] == invalid
    assert status(ask(m, kind, now=clock()))["Code"] == 15


def test_device_commands_of_other_kinds_are_unknown_or_absent() -> None:
    clock = FakeClock()
    assert status(ask(miner("cgminer", clock=clock), "pga", "0", now=clock()))["Code"] == 14
    assert status(ask(miner("cgminer", clock=clock), "gpu", "0", now=clock()))["Code"] == 14
    assert status(ask(miner("bfgminer", clock=clock), "gpu", "0", now=clock()))["Code"] == 6
    assert status(ask(miner("bmminer", clock=clock), "asc", "0", now=clock()))["Code"] == 105


def test_read_only_refuses_privileged_commands_with_45() -> None:
    clock = FakeClock()
    m = miner(scenario="read_only", clock=clock)
    for command, parameter in (("restart", None), ("switchpool", "1"), ("ascdisable", "0")):
        denied = status(ask(m, command, parameter, now=clock()))
        assert (denied["STATUS"], denied["Code"]) == ("E", 45)
        assert denied["Msg"] == f"Access denied to '{command}' command"
    assert m.restarts == 0
    assert ask(m, "check", "restart", now=clock())["CHECK"] == [{"Exists": "Y", "Access": "N"}]
    assert status(ask(m, "summary", now=clock()))["STATUS"] == "S"


def test_last_share_time_is_zero_before_any_share() -> None:
    clock = FakeClock()
    m = miner("cgminer", clock=clock, uptime_s=0)
    assert all(d["Last Share Time"] == 0 and d["Last Share Pool"] == -1
               for d in ask(m, "devs", now=clock())["DEVS"])  # fmt: skip
    assert all(p["Last Share Time"] == 0 for p in ask(m, "pools", now=clock())["POOLS"])
    bm = miner("bmminer", clock=clock, uptime_s=0)
    assert ask(bm, "pools", now=clock())["POOLS"][0]["Last Share Time"] == "0"
    clock.advance(120)
    device = ask(m, "devs", now=clock())["DEVS"][0]
    assert clock() - 60 < device["Last Share Time"] <= clock()
    pool = ask(bm, "pools", now=clock())["POOLS"][0]
    hours, minutes, seconds = map(int, pool["Last Share Time"].split(":"))
    assert hours == 0 and minutes * 60 + seconds < 60


def test_counters_advance_with_time_and_hashrate() -> None:
    clock = FakeClock()
    m = miner("cgminer", clock=clock)
    first = ask(m, "summary", now=clock())["SUMMARY"][0]
    clock.advance(600)
    second = ask(m, "summary", now=clock())["SUMMARY"][0]
    assert second["Elapsed"] - first["Elapsed"] == 600
    rate = m.hashrate_hs(clock())
    assert rate == pytest.approx(second["MHS 5s"] * 1e6, rel=0.03)
    expected_shares = rate * 600 / 2**32 / FLAVOURS["cgminer"].pool_difficulty
    accepted = second["Accepted"] - first["Accepted"]
    assert accepted == pytest.approx(expected_shares * 0.9975, abs=2)
    assert second["Total MH"] - first["Total MH"] == pytest.approx(rate * 600 / 1e6, rel=1e-6)
    assert 0 < second["Device Hardware%"] < 0.1


def test_text_request_form() -> None:
    clock = FakeClock()
    m = miner(clock=clock)
    out = raw(m, "summary", now=clock(), text=True)
    prefix = f"STATUS=S,When={int(clock())},Code=11,Msg=Summary,Description=cgminer 4.11.1|SUMMARY,Elapsed="
    assert out.startswith(prefix.encode()) and out.endswith(b"|\0")
    reply = decode_reply(out, command="summary")
    assert reply["SUMMARY"][0]["MHS 5s"] > 0
    asc = decode_reply(raw(m, "asc", "0", now=clock(), text=True), command="asc")
    assert asc["STATUS"][0]["Msg"] == "ASC0" and asc["ASC"][0]["ASC"] == 0
    joined = m.handle_bytes(b"summary+devs", clock())
    assert joined is not None
    assert joined.startswith(b"CMD=summary|STATUS=S,") and b"|CMD=devs|STATUS=S," in joined


def test_malformed_requests_get_cgminers_error_replies() -> None:
    clock = FakeClock()
    m = miner(clock=clock)

    def code(data: bytes) -> int:
        out = m.handle_bytes(data, clock())
        assert out is not None and out.endswith(b"\0")
        return int(decode_reply(out)["STATUS"][0]["Code"])

    assert code(b'{"command": ') == 23
    assert code(b"[1, 2]") == 14  # not JSON-shaped: read as a plain-text command
    assert code(b'{"parameter":"0"}') == 24
    assert code(b'{"command": 5}') == 14
    assert code(b"") == 14


# -- scenarios --------------------------------------------------------------------------


def test_scenario_registry() -> None:
    assert {"healthy", "hashrate_drop", "device_dead", "device_sick", "hw_errors_rising",
            "pool_stale", "pool_dead_failover", "unreachable", "flapping", "slow", "garbage",
            "read_only"} <= set(SCENARIOS)  # fmt: skip
    for name, doc in SCENARIOS.items():
        assert doc and "\n" not in doc
        assert make_scenario(name).name == name
    assert make_scenario("device_dead").recovers_on_restart
    assert not make_scenario("device_dead", recovers_on_restart=False).recovers_on_restart
    assert make_scenario("device_sick").hashrate_factor == 0.3
    with pytest.raises(ConfigError, match="unknown scenario 'nope'"):
        make_scenario("nope")
    with pytest.raises(ConfigError, match="unknown scenario option"):
        make_scenario("slow", delay=1)
    with pytest.raises(ConfigError, match="period_s"):
        make_scenario("flapping", period_s=0)


@pytest.mark.parametrize("name", [n for n in SCENARIOS if n not in ("healthy", "read_only")])
def test_every_fault_starts_when_the_clock_passes_fail_after_s(name: str) -> None:
    clock = FakeClock()
    m = miner("cgminer", make_scenario(name, fail_after_s=30), clock=clock)
    assert not m.fault_active(clock())
    before = (m.available(clock()), m.reply_delay(clock()), m.device_statuses(clock()),
              m.hashrate_hs(clock()), m.active_pool(clock()))  # fmt: skip
    clock.advance(31)
    assert m.fault_active(clock())
    after = (m.available(clock()), m.reply_delay(clock()), m.device_statuses(clock()),
             m.hashrate_hs(clock()), m.active_pool(clock()))  # fmt: skip
    if name in ("hw_errors_rising", "pool_stale", "garbage"):
        assert before == after  # visible in the counters and bytes, tested below
    else:
        assert before != after


def test_hashrate_drop_and_recovery_on_restart() -> None:
    clock = FakeClock()
    m = miner("cgminer", make_scenario("hashrate_drop", fail_after_s=60), clock=clock)
    healthy = ask(m, "summary", now=clock())["SUMMARY"][0]["MHS 5s"]
    clock.advance(120)
    dropped = ask(m, "summary", now=clock())["SUMMARY"][0]["MHS 5s"]
    assert dropped == pytest.approx(healthy * 0.5, rel=0.05)
    raw(m, "restart", now=clock())
    clock.advance(10)
    assert ask(m, "summary", now=clock())["SUMMARY"][0]["MHS 5s"] == pytest.approx(
        healthy, rel=0.05
    )


@pytest.mark.parametrize("recovers", [True, False])
def test_device_dead_and_restart(recovers: bool) -> None:
    clock = FakeClock()
    scenario = make_scenario("device_dead", fail_after_s=60, recovers_on_restart=recovers)
    m = miner("cgminer", scenario, clock=clock)
    clock.advance(61)
    devs = ask(m, "devs", now=clock())["DEVS"]
    assert [d["Status"] for d in devs] == ["Alive", "Dead", "Alive"]
    assert devs[1]["MHS 5s"] == 0 and devs[0]["MHS 5s"] > 0
    raw(m, "restart", now=clock())
    clock.advance(10)
    expected = "Alive" if recovers else "Dead"
    assert ask(m, "devs", now=clock())["DEVS"][1]["Status"] == expected
    clock.advance(3600)
    assert ask(m, "devs", now=clock())["DEVS"][1]["Status"] == expected


def test_device_dead_repaired_by_disable_then_enable() -> None:
    clock = FakeClock()
    m = miner("cgminer", make_scenario("device_dead", fail_after_s=0), clock=clock)
    clock.advance(1)
    assert m.device_statuses(clock())[1] == "Dead"
    ask(m, "ascdisable", "1", now=clock())
    ask(m, "ascenable", "1", now=clock())
    assert m.device_statuses(clock())[1] == "Alive"


def test_device_dead_on_bmminer_shows_in_the_chain_stats() -> None:
    clock = FakeClock()
    m = miner("bmminer", make_scenario("device_dead", fail_after_s=0), clock=clock)
    clock.advance(30)
    entry = decode_reply(raw(m, "stats", now=clock()))["STATS"][1]
    assert set(entry["chain_acs7"].replace(" ", "")) == {"x"}
    assert float(entry["chain_rate7"]) == 0 and float(entry["chain_rate6"]) > 4000


def test_device_sick() -> None:
    clock = FakeClock()
    m = miner("bfgminer", make_scenario("device_sick", fail_after_s=10, device=0), clock=clock)
    clock.advance(40)
    devs = ask(m, "devs", now=clock())["DEVS"]
    assert devs[0]["Status"] == "Sick"
    assert devs[0]["MHS 20s"] == pytest.approx(devs[1]["MHS 20s"] * 0.3, rel=0.1)


def test_hw_errors_rising() -> None:
    clock = FakeClock()
    m = miner("cgminer", make_scenario("hw_errors_rising", fail_after_s=60), clock=clock)
    clock.advance(60)
    first = ask(m, "summary", now=clock())["SUMMARY"][0]
    assert first["Device Hardware%"] < 0.1
    clock.advance(900)
    second = ask(m, "summary", now=clock())["SUMMARY"][0]
    hw = second["Hardware Errors"] - first["Hardware Errors"]
    work = second["Total MH"] * 1e6 / 2**32 - first["Total MH"] * 1e6 / 2**32
    assert hw / (hw + work) == pytest.approx(0.05, rel=0.02)


def test_pool_stale_then_switchpool_repairs() -> None:
    clock = FakeClock()
    m = miner("cgminer", make_scenario("pool_stale", fail_after_s=60), clock=clock)
    clock.advance(60)
    first = ask(m, "pools", now=clock())["POOLS"][0]
    clock.advance(900)
    second = ask(m, "pools", now=clock())["POOLS"][0]
    assert second["Accepted"] == first["Accepted"]
    assert second["Last Share Time"] == first["Last Share Time"] < clock() - 890
    assert second["Stale"] > first["Stale"] + 100
    assert second["Status"] == "Alive" and second["Stratum Active"]
    ask(m, "switchpool", "1", now=clock())
    clock.advance(300)
    pools = ask(m, "pools", now=clock())["POOLS"]
    assert pools[1]["Stratum Active"] and pools[1]["Accepted"] > 20
    assert pools[1]["Last Share Time"] > clock() - 60


def test_pool_dead_failover() -> None:
    clock = FakeClock()
    m = miner("bmminer", make_scenario("pool_dead_failover", fail_after_s=60), clock=clock)
    clock.advance(61)
    pools = ask(m, "pools", now=clock())["POOLS"]
    assert pools[0]["Status"] == "Dead" and not pools[0]["Stratum Active"]
    assert pools[1]["Status"] == "Alive" and pools[1]["Stratum Active"]
    accepted = pools[1]["Accepted"]
    clock.advance(300)
    assert ask(m, "pools", now=clock())["POOLS"][1]["Accepted"] > accepted + 10


def test_unreachable_window() -> None:
    clock = FakeClock()
    m = miner(scenario=make_scenario("unreachable", fail_after_s=30, duration_s=60), clock=clock)
    assert m.available(clock()) and m.next_availability_change(clock()) == clock() + 30
    clock.advance(30)
    assert not m.available(clock()) and m.handle_bytes(b"summary", clock()) is None
    clock.advance(60)
    assert m.available(clock())


def test_flapping_toggles_every_period() -> None:
    clock = FakeClock()
    m = miner("cgminer", make_scenario("flapping", fail_after_s=0, period_s=30), clock=clock)
    seen = []
    for _ in range(4):
        clock.advance(15)
        seen.append(ask(m, "devs", now=clock())["DEVS"][1]["Status"])
        clock.advance(15)
    assert seen == ["Dead", "Alive", "Dead", "Alive"]


def test_slow_replies_wait() -> None:
    clock = FakeClock()
    m = miner(scenario=make_scenario("slow", fail_after_s=10, delay_s=2.5), clock=clock)
    assert m.reply_delay(clock()) == 0
    clock.advance(10)
    assert m.reply_delay(clock()) == 2.5


@pytest.mark.parametrize("mode", ["truncate", "junk", "alternate"])
def test_garbage_replies(mode: str) -> None:
    clock = FakeClock()
    m = miner(scenario=make_scenario("garbage", fail_after_s=10, garbage=mode), clock=clock)
    assert ask(m, "summary", now=clock())["SUMMARY"]
    clock.advance(10)
    for _ in range(2):
        out = raw(m, "summary", now=clock())
        with pytest.raises((ProtocolError, ValueError)):
            json.loads(out.split(b"\0", 1)[0])
        with pytest.raises(ProtocolError):
            decode_reply(out)


# -- real sockets -----------------------------------------------------------------------


async def tcp(host: str, port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """A raw client: connect, send, read until the miner closes."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


async def test_json_and_text_requests_over_tcp() -> None:
    clock = FakeClock()
    fleet = Fleet.build(3, listen="127.77.0.1", clock=clock)
    async with serve(fleet):
        assert [m.address for m in fleet] == [(f"127.77.0.{i}", 4028) for i in (1, 2, 3)]
        for member, description in zip(
            fleet, ("cgminer 4.11.1", "bmminer 1.0.0", "bfgminer 5.5.0"), strict=True
        ):
            out = await tcp(*member.address, b'{"command":"summary"}')
            assert out.count(b"\0") == 1 and out.endswith(b"\0")
            assert json.loads(out[:-1])["STATUS"][0]["Description"] == description
            text = await tcp(*member.address, b"summary")
            assert text.startswith(b"STATUS=S,") and text.endswith(b"|\0")
        out = await tcp(*fleet[0].address, b'{"command":"summary+devs+pools"}')
        assert list(json.loads(out[:-1])) == ["summary", "devs", "pools", "id"]
        assert fleet[0].commands == {"summary": 3, "devs": 1, "pools": 1}
        assert fleet[0].connections == 3 and fleet[0].requests == 3


async def test_restart_refuses_connections_then_comes_back_with_elapsed_reset() -> None:
    clock = FakeClock()
    fleet = Fleet.build(1, listen="127.77.1.1", clock=clock)
    async with serve(fleet):
        host, port = fleet[0].address
        before = json.loads((await tcp(host, port, b'{"command":"summary"}'))[:-1])
        assert await tcp(host, port, b'{"command":"restart"}') == b'{"STATUS":"RESTART","id":1}\0'
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(host, port)
        clock.advance(2)
        await fleet.sync()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(host, port)
        clock.advance(3)
        await fleet.sync()
        after = json.loads((await tcp(host, port, b'{"command":"summary"}'))[:-1])
        assert after["SUMMARY"][0]["Elapsed"] == 5 < before["SUMMARY"][0]["Elapsed"]


async def test_down_mute_hang_and_unreachable_over_tcp() -> None:
    clock = FakeClock()
    scenarios: list[str | Scenario] = [
        "healthy",
        "healthy",
        make_scenario("unreachable", fail_after_s=30),
    ]
    fleet = Fleet.build(3, lambda i: scenarios[i], listen="127.77.2.1", clock=clock)
    async with serve(fleet):
        first, second, third = fleet
        await fleet.down(first.name)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*first.address)
        await fleet.up(first.name)
        assert (await tcp(*first.address, b"version")).startswith(b"STATUS=S,")
        await fleet.mute(second.name)
        assert await tcp(*second.address, b'{"command":"summary"}') == b""  # not in --api-allow
        await fleet.hang(second.name)
        with pytest.raises(TimeoutError):
            await tcp(*second.address, b'{"command":"summary"}', timeout=0.2)
        assert second.connections == 2 and second.requests == 1
        assert (await tcp(*third.address, b"version")).startswith(b"STATUS=S,")
        clock.advance(30)
        await fleet.sync()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*third.address)


async def test_slow_miner_over_tcp() -> None:
    clock = FakeClock()
    fleet = Fleet.build(
        1, make_scenario("slow", fail_after_s=0, delay_s=0.05), listen="127.77.3.1", clock=clock
    )
    async with serve(fleet):
        loop = asyncio.get_running_loop()
        started = loop.time()
        out = await tcp(*fleet[0].address, b'{"command":"summary"}')
        assert loop.time() - started >= 0.04 and out.endswith(b"\0")


async def test_two_hundred_miners_on_loopback_addresses_all_answer() -> None:
    clock = FakeClock()
    fleet = Fleet.build(200, {"device_dead": 10}, listen="127.78.0.1", clock=clock)
    assert len({m.host for m in fleet}) == 200
    async with serve(fleet):
        replies = await asyncio.gather(
            *(tcp(*m.address, b'{"command":"summary+pools"}') for m in fleet)
        )
    assert all(r.endswith(b"\0") and json.loads(r[:-1])["id"] == 1 for r in replies)
    assert len(fleet.polled()) == 200 and fleet.total_requests == 200
    assert sum(m.miner.scenario.name == "device_dead" for m in fleet) == 10


async def test_consecutive_ports_on_one_address() -> None:
    fleet = Fleet.build(3, base_port=0, listen="127.0.0.1", clock=FakeClock())
    async with serve(fleet):
        ports = {m.port for m in fleet}
        assert len(ports) == 3 and 0 not in ports
        for member in fleet:
            assert (await tcp(*member.address, b'{"command":"version"}')).endswith(b"\0")


async def test_run_simulator_prints_one_line_per_miner_and_serves() -> None:
    out = io.StringIO()
    task = asyncio.create_task(run_simulator(3, "pool_stale", listen="127.77.4.1", out=out))
    try:
        for _ in range(500):
            if out.getvalue().count("\n") == 3:
                break
            await asyncio.sleep(0.01)
        lines = out.getvalue().splitlines()
        assert lines[0] == "sim-001 127.77.4.1:4028 cgminer pool_stale"
        # A stock Antminer's web UI, where its repairs go, on a port of its own.
        assert re.fullmatch(
            r"sim-002 127\.77\.4\.2:4028 bmminer pool_stale control 127\.77\.4\.2:\d+", lines[1]
        )
        assert lines[2] == "sim-003 127.77.4.3:4028 bfgminer pool_stale"
        assert (await tcp("127.77.4.2", 4028, b'{"command":"pools"}')).endswith(b"\0")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_file_limit_too_low_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="open files"):
        ensure_file_limit(10**12)


def test_fleet_build_errors() -> None:
    with pytest.raises(ConfigError, match="unknown flavour"):
        Fleet.build(2, flavours=("goldshell",))
    with pytest.raises(ConfigError, match="unknown scenario"):
        Fleet.build(2, "melting")
    with pytest.raises(ConfigError, match="3 scenario assignments for 2 miners"):
        Fleet.build(2, {"device_dead": 3})
    with pytest.raises(ConfigError, match="--base-port"):
        Fleet.build(2, listen="10.0.0.5")
