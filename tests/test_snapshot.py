"""Tests for cgwatchdog.snapshot: field replies, each normalization quirk, robustness."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgwatchdog.snapshot import (
    FIELD_PATHS,
    Device,
    Pool,
    Snapshot,
    build_snapshot,
    parse_avalon_mm,
)

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "peer-replies"
FIXTURES = sorted(FIXTURE_DIR.glob("*.json")) if FIXTURE_DIR.is_dir() else []
NO_FIXTURES = pytest.param(
    None,
    marks=pytest.mark.skip(
        reason=f"field replies not found at {FIXTURE_DIR} (clone outside the setup)"
    ),
)

AT = 1_700_000_000.0


def reply(
    section: str,
    entries: list[dict[str, Any]],
    *,
    when: float = AT,
    code: int = 11,
    msg: str = "",
    status: str = "S",
    description: str = "cgminer 4.11.1",
) -> dict[str, Any]:
    """A decoded reply as cgminer sends it."""
    out: dict[str, Any] = {
        "STATUS": [
            {"STATUS": status, "When": when, "Code": code, "Msg": msg, "Description": description}
        ],
        "id": 1,
    }
    if status not in ("E", "F"):
        out[section] = entries
    return out


def snap(**replies: dict[str, Any]) -> Snapshot:
    return build_snapshot(replies, name="m1", host="10.0.0.1", port=4028, at=AT)


def asc(
    number: int,
    mhs_5s: float = 4000000.0,
    *,
    status: str = "Alive",
    enabled: str = "Y",
    **more: Any,
) -> dict[str, Any]:
    """A cgminer 4.11 ASC entry of ``devs``."""
    entry: dict[str, Any] = {
        "ASC": number,
        "Name": "BTM",
        "ID": number,
        "Enabled": enabled,
        "Status": status,
        "Temperature": 60.0 + number,
        "MHS av": mhs_5s * 0.98,
        "MHS 5s": mhs_5s,
        "MHS 1m": mhs_5s,
        "MHS 5m": mhs_5s,
        "MHS 15m": mhs_5s,
        "Accepted": 10,
        "Rejected": 0,
        "Hardware Errors": 2,
        "Diff1 Work": 998.0,
        "Device Elapsed": 3600,
    }
    entry.update(more)
    return entry


def pool(number: int, **more: Any) -> dict[str, Any]:
    """A cgminer 4.11 POOLS entry."""
    entry: dict[str, Any] = {
        "POOL": number,
        "URL": f"stratum+tcp://pool.example.org:{3333 + number}",
        "Status": "Alive",
        "Priority": number,
        "Accepted": 100,
        "Rejected": 1,
        "Stale": 0,
        "User": "worker",
        "Last Share Time": 0,
        "Stratum Active": False,
        "Pool Stale%": 0.0,
    }
    entry.update(more)
    return entry


def bmminer_stats(**more: Any) -> dict[str, Any]:
    """An Antminer S9 bmminer STATS reply: identity entry, then the miner entry."""
    miner: dict[str, Any] = {
        "STATS": 0,
        "ID": "BC50",
        "Elapsed": 7200,
        "GHS 5s": "13883.81",
        "GHS av": 13890.36,
        "fan_num": 2,
        **{f"fan{n}": 0 for n in range(1, 9)},
        "fan5": 3720,
        "fan6": 2400,
        **{f"chain_acn{n}": 0 for n in range(1, 17)},
        **{f"chain_rate{n}": "" for n in range(1, 17)},
        **{f"chain_hw{n}": 0 for n in range(1, 17)},
        "chain_acn6": 63,
        "chain_acn7": 63,
        "chain_acn8": 63,
        "chain_rate6": "4618.85",
        "chain_rate7": "4624.55",
        "chain_rate8": "4640.41",
        "chain_hw6": 3085,
        "chain_hw7": 289,
        "chain_hw8": 175165,
        "temp6": 75,
        "temp7": 0,
        "temp8": 73,
        "temp2_6": 62,
        "temp2_7": -83,
        "temp2_8": 62,
        "temp_max": 62,
        "Device Hardware%": 0.0184,
    }
    miner.update(more)
    identity = {"BMMiner": "2.0.0", "Miner": "30.0.1.3", "Type": "Antminer S9\nV1.3.58"}
    return reply("STATS", [identity, miner], code=70, description="bmminer 1.0.0")


MM_1566 = (
    "Ver[15-194-24102401_25462b2_9ddf522] SYSTEMSTATU[Work: In Work, Hash Board: 3 ] "
    "Elapsed[975] HW[7] DH[1.299%] Temp[31] TMax[78] TAvg[70] Fan1[4275] Fan2[4282] FanR[49%] "
    "GHSspd[199241.07] GHSmm[201920.42] GHSavg[184007.00] MGHS[59459.52 61407.83 63139.66] "
    "MTmax[77 78 77] PVT_T0[ 66  65  63] FACOPTS0[] ATAOPTS0[--avalon10-freq 240:258:279:300]"
)


def avalon_stats(mm: str = MM_1566) -> dict[str, Any]:
    entries = [
        {"STATS": 0, "ID": "AVA100", "Elapsed": 975, "MM ID0": mm, "MM Count": 1},
        {"STATS": 1, "ID": "POOL0", "Elapsed": 975, "Pool Calls": 0},
    ]
    return reply("STATS", entries, code=70)


# --------------------------------------------------------------------------- field replies


def _close(value: float | None, expected: float) -> bool:
    return value is not None and abs(value - expected) <= 0.02 * abs(expected)


@pytest.mark.parametrize("path", FIXTURES or [NO_FIXTURES], ids=lambda p: p.stem if p else "none")
def test_field_reply_normalizes_to_expected_figures(path: Path) -> None:
    data = json.loads(path.read_text())
    expect = data["expect"]
    also = expect.get("also", {})
    s = build_snapshot(data["replies"], name=data["name"], host="127.0.0.1", port=4028, at=AT)

    hashrates = [expect["hashrate_hs"], *also.get("hashrate_hs", [])]
    assert any(_close(s.hashrate_hs, h) for h in hashrates), (s.hashrate_hs, s.hashrate_source)
    if expect["devices"] is not None:
        assert len(s.devices) in [expect["devices"], *also.get("devices", [])]
    assert len(s.pools) in [expect["pools"], *also.get("pools", [])]
    if expect["fans_rpm"] is not None:
        assert list(s.fans_rpm) == expect["fans_rpm"]
    if expect["temperature_max_c"] is not None:
        assert s.temperature_max_c == pytest.approx(expect["temperature_max_c"])
    assert s.up is True
    json.dumps(s.to_json())  # the poll --json object serializes


@pytest.mark.parametrize("path", FIXTURES or [NO_FIXTURES], ids=lambda p: p.stem if p else "none")
def test_field_reply_identity_and_pool_ages(path: Path) -> None:
    data = json.loads(path.read_text())
    s = build_snapshot(data["replies"], name=data["name"], host="127.0.0.1", port=4028, at=AT)
    assert s.fork
    active = s.active_pool
    assert active is not None and active.status == "Alive"
    # Every captured active pool had shared within a minute of its reply.
    assert active.last_share_age_s is not None and 0 <= active.last_share_age_s < 120


# --------------------------------------------------------------------------- units, strings


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("KHS 5s", 500.0, 5e5),
        ("MHS 5s", 4885.0813, 4.8850813e9),
        ("MHS 5s", "4885.0813", 4.8850813e9),  # Hammer D10
        ("GHS 5s", "13883.81", 1.388381e13),  # bmminer
        ("THS 5s", 0.21, 2.1e11),
        ("GHS av", 13890.36, 1.389036e13),
    ],
)
def test_hashrate_units_and_numbers_as_strings(key: str, value: object, expected: float) -> None:
    s = snap(summary=reply("SUMMARY", [{"Elapsed": 3600, key: value}]))
    assert s.hashrate_hs == pytest.approx(expected)
    assert s.hashrate_source == f"summary '{key}'"


def test_counters_sent_as_decimal_strings() -> None:
    summary = {"Elapsed": 10, "MHS 5s": "1.0", "Accepted": "156.0000", "Rejected": "3.0000"}
    s = snap(summary=reply("SUMMARY", [{**summary, "Stale": "0", "Hardware Errors": "7977"}]))
    assert (s.accepted, s.rejected, s.stale, s.hardware_errors) == (156, 3, 0, 7977)


def test_garbage_strings_become_none() -> None:
    s = snap(summary=reply("SUMMARY", [{"Elapsed": "", "MHS 5s": "n/a", "Accepted": "lots"}]))
    assert (s.elapsed_s, s.hashrate_hs, s.accepted) == (None, None, None)


# --------------------------------------------------------------------------- windows


def test_shortest_window_wins_over_average() -> None:
    s = snap(
        summary=reply(
            "SUMMARY", [{"Elapsed": 3600, "MHS av": 100.0, "MHS 1m": 90.0, "MHS 5s": 80.0}]
        )
    )
    assert s.hashrate_hs == pytest.approx(80e6)


def test_bfgminer_20s_then_rolling() -> None:
    s = snap(summary=reply("SUMMARY", [{"Elapsed": 600, "MHS av": 3.2, "MHS 20s": 2.9}]))
    assert s.hashrate_source == "summary 'MHS 20s'"
    s = snap(summary=reply("SUMMARY", [{"Elapsed": 600, "MHS av": 3.2, "MHS rolling": 2.8}]))
    assert s.hashrate_source == "summary 'MHS rolling'"


def test_window_still_filling_is_diluted_and_skipped() -> None:
    # Avalon 1047 at Elapsed 155: no 5s; 30s has settled, 1m/5m/15m are still filling.
    entry = {"Elapsed": 155, "MHS av": 25536751.74, "MHS 5m": 10769774.69, "MHS 15m": 4090974.03}
    assert snap(summary=reply("SUMMARY", [entry])).hashrate_source == "summary 'MHS av'"
    entry["MHS 1m"] = 28134393.97
    assert snap(summary=reply("SUMMARY", [entry])).hashrate_source == "summary 'MHS av'"
    entry["Elapsed"] = 180  # three minutes: the 1m window has settled
    assert snap(summary=reply("SUMMARY", [entry])).hashrate_source == "summary 'MHS 1m'"
    entry["MHS 30s"] = 32247416.81
    assert snap(summary=reply("SUMMARY", [entry])).hashrate_source == "summary 'MHS 30s'"


def test_bosminer_24h_window_never_used_one_hour_after_start() -> None:
    entry = {"Elapsed": 3680, "MHS 24h": 562115.48, "MHS av": 11988299.65}
    s = snap(summary=reply("SUMMARY", [entry]))
    assert s.hashrate_source == "summary 'MHS av'"


def test_five_second_window_not_trusted_in_the_first_seconds() -> None:
    s = snap(summary=reply("SUMMARY", [{"Elapsed": 3, "MHS 5s": 0.0, "MHS av": 12.0}]))
    assert s.hashrate_hs == pytest.approx(12e6)
    s = snap(summary=reply("SUMMARY", [{"Elapsed": 15, "MHS 5s": 11.0, "MHS av": 12.0}]))
    assert s.hashrate_hs == pytest.approx(11e6)


def test_unknown_elapsed_trusts_short_windows_and_keeps_long_ones_last() -> None:
    s = snap(summary=reply("SUMMARY", [{"MHS 1m": 5.0, "MHS av": 6.0}]))
    assert s.hashrate_source == "summary 'MHS 1m'"
    s = snap(summary=reply("SUMMARY", [{"MHS 15m": 5.0, "MHS av": 6.0}]))
    assert s.hashrate_source == "summary 'MHS av'"
    s = snap(summary=reply("SUMMARY", [{"MHS 15m": 5.0}]))
    assert s.hashrate_source == "summary 'MHS 15m'"


def test_stats_window_beats_summary_average() -> None:
    s = snap(
        summary=reply("SUMMARY", [{"Elapsed": 7200, "GHS av": 13000.0}]),
        stats=bmminer_stats(),
    )
    assert s.hashrate_source == "stats 'GHS 5s'"


# --------------------------------------------------------------------------- devices


def test_cgminer_asc_devs_are_devices_and_their_sum_is_the_hashrate() -> None:
    devs = reply("DEVS", [asc(0, 4000000.0), asc(1, 4500000.0)], code=9, msg="2 ASC(s)")
    s = snap(devs=devs)
    assert [(d.kind, d.id, d.status, d.enabled) for d in s.devices] == [
        ("ASC", 0, "Alive", True),
        ("ASC", 1, "Alive", True),
    ]
    assert s.hashrate_hs == pytest.approx(8.5e12)
    assert s.hashrate_source == "devs sum 'MHS 5s'"
    assert s.devices[1].temperature_c == 61.0
    assert (s.hardware_errors, s.diff1_work) == (4, 1996.0)
    assert s.hardware_error_ratio == pytest.approx(4 / 2000)


def test_bfgminer_pga_with_20s_window() -> None:
    pga = {
        "PGA": 0,
        "Name": "MLD",
        "ID": 0,
        "Enabled": "Y",
        "Status": "Alive",
        "Device Elapsed": 82,
        "MHS av": 3.245,
        "MHS 20s": 2.962,
        "MHS rolling": 2.962,
        "Hardware Errors": 1,
    }
    s = snap(devs=reply("DEVS", [pga], code=9, description="bfgminer 5.4.2"))
    assert s.devices[0].kind == "PGA"
    assert s.hashrate_hs == pytest.approx(2.962e6)
    assert s.hashrate_source == "devs sum 'MHS 20s'"
    assert s.fork == "bfgminer 5.4.2"


def test_device_window_judged_by_device_elapsed() -> None:
    # Avalon 1566: Device Elapsed 924 s, so MHS 15m is still filling; 30s is the shortest.
    dev = {
        "ASC": 0,
        "Name": "AVA10",
        "ID": 0,
        "Enabled": "Y",
        "Status": "Alive",
        "Device Elapsed": 924,
        "MHS av": 192796247.36,
        "MHS 15m": 124648835.18,
    }
    s = snap(devs=reply("DEVS", [dev], code=9))
    assert s.devices[0].hashrate_hs == pytest.approx(1.9279624736e14)


def test_device_status_and_enabled_flags() -> None:
    devs = [
        asc(0),
        asc(1, status="Dead", mhs_5s=0.0),
        asc(2, status="Disabled", enabled="N"),
        asc(3, status="Sick"),
    ]
    s = snap(devs=reply("DEVS", devs, code=9))
    assert [(d.status, d.enabled) for d in s.devices] == [
        ("Alive", True),
        ("Dead", True),
        ("Disabled", False),
        ("Sick", True),
    ]
    assert s.field("devices.alive") == 1
    assert s.field("devices.not_alive") == 2  # Dead and Sick; the disabled one is not counted
    assert s.field("devices.disabled") == 1


def test_strongu_asc_index_is_the_device_id() -> None:
    devs = [asc(0, ID=0), asc(2, ID=1)]  # STU-U6: ASC 0 and 2 with ID 0 and 1
    assert [d.id for d in snap(devs=reply("DEVS", devs, code=9)).devices] == [0, 2]


@pytest.mark.parametrize(
    ("msg", "description"),
    [("No ASCs", "cgminer 4.11.1"), ("No PGAs", "bfgminer 5.5.0")],
)
def test_devs_error_means_zero_devices_not_a_failure(msg: str, description: str) -> None:
    devs = reply("DEVS", [], status="E", code=10, msg=msg, description=description)
    summary = reply("SUMMARY", [{"Elapsed": 30, "MHS 5s": 0.0}], description=description)
    s = snap(devs=devs, summary=summary)
    assert s.devices == ()
    assert s.hashrate_hs == 0.0
    assert s.fork == description
    assert s.refused["devs"].code == 10


def test_error_replies_are_absent_data() -> None:
    refused = reply("SUMMARY", [], status="E", code=14, msg="Invalid command")
    fatal = {"STATUS": {"STATUS": "F", "Code": 1}, "SUMMARY": [{"MHS 5s": 1.0}]}
    s = snap(summary=refused, pools=fatal, stats={"STATUS": "RESTART", "id": 1})
    assert (s.hashrate_hs, s.pools, s.devices) == (None, (), ())


# --------------------------------------------------------------------------- bmminer STATS


def test_bmminer_chains_in_slots_six_to_eight_become_boards() -> None:
    s = snap(stats=bmminer_stats())
    assert [(d.kind, d.id, d.name) for d in s.devices] == [
        ("BOARD", 6, "chain6"),
        ("BOARD", 7, "chain7"),
        ("BOARD", 8, "chain8"),
    ]
    assert s.devices[0].hashrate_hs == pytest.approx(4.61885e12)
    assert [d.hardware_errors for d in s.devices] == [3085, 289, 175165]
    assert [d.temperature_c for d in s.devices] == [75.0, None, 73.0]  # temp2_7 -83 is broken
    assert s.temperature_max_c == 75.0
    assert s.fans_rpm == (3720, 2400) and s.fans_expected == 2
    assert s.field("fans.missing") == 0
    assert s.hashrate_source == "stats 'GHS 5s'"
    assert s.hardware_errors == 175165 + 3085 + 289
    assert s.hardware_error_ratio == pytest.approx(0.000184)  # Device Hardware% / 100
    assert s.model == "Antminer S9 V1.3.58"
    assert s.elapsed_s == 7200


def test_bmminer_board_sum_when_no_whole_miner_figure() -> None:
    stats = bmminer_stats()
    del stats["STATS"][1]["GHS 5s"], stats["STATS"][1]["GHS av"]
    s = snap(stats=stats)
    assert s.hashrate_hs == pytest.approx((4618.85 + 4624.55 + 4640.41) * 1e9)
    assert s.hashrate_source == "stats sum chain_rate"


def test_hammer_chain_rates_follow_the_mhs_unit() -> None:
    miner = {
        "STATS": 0,
        "ID": "A30",
        "Elapsed": 119161,
        "MHS 5s": "4686.4886",
        "chain_acn1": 108,
        "chain_acn2": 108,
        "chain_acn3": 108,
        "chain_acn4": 0,
        "chain_rate1": "1578.2742",
        "chain_rate2": "1594.3646",
        "chain_rate3": "1513.8498",
        "chain_rate4": "",
        "temp1": 45,
        "temp2": 42,
        "temp3": 40,
        "temp4": 0,
        "temp_max": 52,
    }
    s = snap(stats=reply("STATS", [{"CGMiner": "2.3.3", "Type": "Hammer D10"}, miner]))
    assert len(s.devices) == 3
    assert s.devices[0].hashrate_hs == pytest.approx(1.5782742e9)
    assert s.temperature_max_c == 52.0  # the firmware's own temp_max


def test_rate_unit_key_sets_the_chain_unit() -> None:
    miner = {"STATS": 0, "ID": "BC50", "rate_unit": "TH/s", "chain_acn1": 76, "chain_rate1": 30.5}
    s = snap(stats=reply("STATS", [miner]))
    assert s.devices[0].hashrate_hs == pytest.approx(30.5e12)


def test_s19_dash_list_temperatures_and_phantom_slots() -> None:
    miner = {
        "STATS": 0,
        "ID": "BC50",
        "Elapsed": 1926,
        "GHS 5s": 99989.59,
        "chain_acn1": 88,
        "chain_rate1": 34084.86,
        "chain_acn2": 0,
        "chain_rate2": 0.0,
        "chain_rateideal2": 31436.24,
        "temp_pcb1": "45-42-45-42",
        "temp_chip1": "59-59-59-59",
        "temp_chip2": "0-0-0-0",
        "frequency": "",
    }
    s = snap(stats=reply("STATS", [miner]))
    assert len(s.devices) == 1
    assert s.devices[0].temperature_c == 59.0
    assert s.temperature_max_c == 59.0


def test_board_with_chips_but_no_hashrate_is_sick() -> None:
    s = snap(stats=bmminer_stats(chain_rate7="0.00"))
    assert [d.status for d in s.devices] == ["Alive", "Sick", "Alive"]


def test_devs_devices_take_precedence_over_stats_boards() -> None:
    s = snap(devs=reply("DEVS", [asc(0)], code=9), stats=bmminer_stats())
    assert [d.kind for d in s.devices] == ["ASC"]
    assert s.temperature_max_c == 75.0  # board sensors still count for the maximum


# --------------------------------------------------------------------------- Avalon


def test_parse_avalon_mm_tokens() -> None:
    mm = parse_avalon_mm(MM_1566)
    assert mm["SYSTEMSTATU"] == "Work: In Work, Hash Board: 3 "
    assert mm["MGHS"].split() == ["59459.52", "61407.83", "63139.66"]
    assert mm["PVT_T0"].split() == ["66", "65", "63"]
    assert mm["FanR"] == "49%"
    assert mm["FACOPTS0"] == ""
    assert mm["ATAOPTS0"] == "--avalon10-freq 240:258:279:300"
    assert parse_avalon_mm("") == {}
    assert parse_avalon_mm("A[1] B[unclosed") == {"A": "1"}


def test_avalon_mm_string_gives_hashrate_fans_temperature_and_boards() -> None:
    pools = reply("POOLS", [pool(0, **{"Stratum Active": True})], code=7)
    s = snap(stats=avalon_stats(), pools=pools)
    assert s.hashrate_hs == pytest.approx(184007e9)
    assert s.hashrate_source == "stats MM ID0 GHSavg"
    assert s.fans_rpm == (4275, 4282)
    assert s.temperature_max_c == 78.0
    assert [(d.kind, d.id) for d in s.devices] == [("BOARD", 0), ("BOARD", 1), ("BOARD", 2)]
    assert s.devices[1].hashrate_hs == pytest.approx(61407.83e9)
    assert s.devices[1].temperature_c == 78.0
    assert s.hardware_errors == 7
    assert s.extra["mm"]["MM ID0"]["GHSmm"] == "201920.42"
    assert s.elapsed_s == 975


def test_avalon_devs_device_wins_over_mm_boards() -> None:
    dev = asc(0, Temperature=-273.0) | {"Device Elapsed": 924}
    s = snap(stats=avalon_stats(), devs=reply("DEVS", [dev], code=9))
    assert len(s.devices) == 1
    assert s.devices[0].temperature_c is None  # -273 placeholder
    assert s.temperature_max_c == 78.0  # TMax in the MM string
    assert s.hashrate_source == "stats MM ID0 GHSavg"  # whole-miner figure before the devs sum


def test_summary_window_beats_avalon_average() -> None:
    summary = reply("SUMMARY", [{"Elapsed": 155, "MHS av": 25536751.74, "MHS 30s": 32247416.81}])
    s = snap(summary=summary, stats=avalon_stats())
    assert s.hashrate_source == "summary 'MHS 30s'"


# --------------------------------------------------------------------------- BOSminer, Whatsminer, StrongU


def test_bosminer_fans_and_temps_replies() -> None:
    fans = reply(
        "FANS",
        [{"FAN": i, "ID": i, "RPM": rpm, "Speed": 40} for i, rpm in enumerate([2820, 3780, 0, 0])],
        code=202,
    )
    temps = reply(
        "TEMPS",
        [
            {"Board": b, "Chip": 0.0, "ID": i, "TEMP": i - 6}
            for i, b in [(6, 75.0), (7, 63.0), (8, 70.0)]
        ],
        code=201,
    )
    devs = reply("DEVS", [asc(n, Temperature=0.0, ID=6 + n, Name="") for n in range(3)], code=9)
    version = reply("VERSION", [{"API": "3.7", "BOSminer+": "0.2.0-36c56a9363"}], code=22)
    s = snap(fans=fans, temps=temps, devs=devs, version=version)
    assert s.fans_rpm == (2820, 3780)
    assert s.temperature_max_c == 75.0
    assert [d.temperature_c for d in s.devices] == [75.0, 63.0, 70.0]  # matched by driver ID
    assert [d.name for d in s.devices] == ["ASC0", "ASC1", "ASC2"]
    assert s.fork == "BOSminer+ 0.2.0"
    assert s.api_version == "3.7"


def test_whatsminer_summary_fans_and_chip_temperature() -> None:
    summary = {
        "Elapsed": 66295,
        "MHS 5s": 64143777.95,
        "Temperature": 72.0,
        "Fan Speed In": 4950,
        "Fan Speed Out": 4920,
        "Power Fanspeed": 8880,
        "Chip Temp Max": 87.7,
        "Device Rejected%": 135.7304,
    }
    s = snap(summary=reply("SUMMARY", [summary], description="cgminer 4.9.2"))
    assert s.fans_rpm == (4950, 4920)  # the PSU fan is not a miner fan
    assert s.temperature_max_c == 87.7


def test_strongu_summary_fans() -> None:
    summary = {"Elapsed": 2416, "MHS 5s": 397759.08, "Fan Num": 2, "Fan1": 7800, "Fan2": 7800}
    s = snap(summary=reply("SUMMARY", [summary]))
    assert s.fans_rpm == (7800, 7800)
    assert s.fans_expected == 2


def test_stopped_fan_shows_as_missing() -> None:
    s = snap(stats=bmminer_stats(fan6=0))
    assert s.fans_rpm == (3720,)
    assert s.field("fans.missing") == 1
    assert s.field("fans.min") == 3720.0


# --------------------------------------------------------------------------- temperatures


@pytest.mark.parametrize("bad", [-273.0, -83, -50, 0, 0.0, 250.0, "-273", "", None, "hot"])
def test_impossible_temperatures_are_ignored(bad: object) -> None:
    s = snap(devs=reply("DEVS", [asc(0, Temperature=bad)], code=9))
    assert s.devices[0].temperature_c is None
    assert s.temperature_max_c is None


# --------------------------------------------------------------------------- pools


def test_pool_stale_percent_with_doubled_percent_sign() -> None:
    entry = pool(0, **{"Stratum Active": True})
    del entry["Pool Stale%"]
    entry["Pool Stale%%"] = 2.5  # bmminer 4.11 (MSKminer, Hammer)
    s = snap(pools=reply("POOLS", [entry], code=7))
    assert s.pools[0].stale_ratio == pytest.approx(0.025)
    assert s.field("pools.active.stale_ratio") == pytest.approx(0.025)


def test_pool_stale_ratio_from_counts_and_impossible_percent() -> None:
    counted = pool(0, Accepted=90, Rejected=5, Stale=5)
    del counted["Pool Stale%"]
    impossible = pool(1, **{"Pool Stale%": 135.7})
    s = snap(pools=reply("POOLS", [counted, impossible], code=7))
    assert s.pools[0].stale_ratio == pytest.approx(0.05)
    assert s.pools[1].stale_ratio is None


def test_unconfigured_pool_slot_is_not_a_pool() -> None:
    empty = pool(2, URL="", User="", Status="Dead")
    s = snap(pools=reply("POOLS", [pool(0, **{"Stratum Active": True}), pool(1), empty], code=7))
    assert [p.id for p in s.pools] == [0, 1]
    assert s.extra["unconfigured_pools"] == 1
    assert s.field("pools.alive") == 2


def test_active_pool_is_stratum_active() -> None:
    s = snap(pools=reply("POOLS", [pool(0), pool(1, **{"Stratum Active": True})], code=7))
    assert s.active_pool is not None and s.active_pool.id == 1
    assert [p.active for p in s.pools] == [False, True]


def test_active_pool_falls_back_to_best_alive_pool() -> None:
    pools = [pool(0, Status="Dead"), pool(1, Priority=2), pool(2, Priority=1)]
    s = snap(pools=reply("POOLS", pools, code=7))
    assert s.active_pool is not None and s.active_pool.id == 2


def test_only_one_active_pool_when_several_claim_it() -> None:
    pools = [pool(n, Priority=0, **{"Stratum Active": True}) for n in range(3)]  # Hammer template
    s = snap(pools=reply("POOLS", pools, code=7))
    assert [p.active for p in s.pools] == [True, False, False]


def test_all_pools_dead_still_names_an_active_pool_that_is_not_alive() -> None:
    pools = [pool(0, Status="Dead"), pool(1, Status="Dead"), pool(2, Status="Disabled")]
    s = snap(pools=reply("POOLS", pools, code=7))
    assert s.active_pool is not None and s.active_pool.id == 0
    assert s.field("pools.active.alive") == 0.0


def test_last_share_time_as_epoch_uses_the_reply_clock() -> None:
    when = 1597187909
    entry = pool(0, **{"Last Share Time": 1597187897, "Stratum Active": True})
    s = snap(pools=reply("POOLS", [entry], code=7, when=when))
    assert s.pools[0].last_share_age_s == 12.0
    assert s.field("pools.active.last_share_age") == 12.0


def test_last_share_time_in_seconds_since_boot() -> None:
    # Avalon with its clock unset: When 168, Last Share Time 98.
    s = snap(pools=reply("POOLS", [pool(0, **{"Last Share Time": 98})], code=7, when=168))
    assert s.pools[0].last_share_age_s == 70.0


@pytest.mark.parametrize(("text", "age"), [("0:00:05", 5.0), ("1:02:03", 3723.0), ("0:00:00", 0.0)])
def test_last_share_time_as_hms_age(text: str, age: float) -> None:
    s = snap(pools=reply("POOLS", [pool(0, **{"Last Share Time": text})], code=7))
    assert s.pools[0].last_share_age_s == age


@pytest.mark.parametrize("never", [0, "0", 0.0, "Thu Jan  1 08:00:00 1970\n"])
def test_no_share_yet(never: object) -> None:
    s = snap(pools=reply("POOLS", [pool(0, **{"Last Share Time": never})], code=7))
    assert s.pools[0].last_share_age_s is None


def test_ctime_date_zone_learned_from_a_never_date() -> None:
    # StrongU STU-U6 (UTC+8): 10:16:42 local is 02:16:42 UTC; When is 02:16:47 UTC.
    pools = [
        pool(0, **{"Last Share Time": "Tue Jun 16 10:16:42 2020\n"}),
        pool(1, **{"Last Share Time": "Thu Jan  1 08:00:00 1970\n"}),
    ]
    s = snap(pools=reply("POOLS", pools, code=7, when=1592273807))
    assert s.pools[0].last_share_age_s == 5.0
    assert s.pools[1].last_share_age_s is None


def test_ctime_date_zone_learned_from_devs_epochs() -> None:
    pools = [pool(0, **{"Last Share Time": "Mon Jun 15 21:16:42 2020\n"})]  # UTC-5
    devs = [asc(0) | {"Last Share Time": 1592273790}, asc(1) | {"Last Share Time": 1592273802}]
    s = snap(
        pools=reply("POOLS", pools, code=7, when=1592273807),
        devs=reply("DEVS", devs, code=9, when=1592273807),
    )
    assert s.pools[0].last_share_age_s == 5.0


def test_ctime_date_with_unknown_zone_is_unknown_age() -> None:
    pools = [pool(0, **{"Last Share Time": "Tue Jun 16 10:16:42 2020\n"})]
    s = snap(pools=reply("POOLS", pools, code=7, when=1592273807))
    assert s.pools[0].last_share_age_s is None


def test_share_in_the_future_is_clamped_or_unknown() -> None:
    pools = [pool(0, **{"Last Share Time": AT + 2}), pool(1, **{"Last Share Time": AT + 86400})]
    s = snap(pools=reply("POOLS", pools, code=7))
    assert [p.last_share_age_s for p in s.pools] == [0.0, None]


# --------------------------------------------------------------------------- identity


def test_fork_from_version_keys_and_description_as_sent() -> None:
    version = reply(
        "VERSION",
        [{"BMMiner": "2.0.0", "API": "3.1", "Type": "Antminer S9\nV1.3.58", "CGMiner": "4.9.0"}],
        code=22,
        description="bmminer 1.0.0",
    )
    s = snap(version=version)
    assert s.fork == "bmminer 2.0.0"
    assert s.description == "bmminer 1.0.0"
    assert s.api_version == "3.1"
    assert s.model == "Antminer S9 V1.3.58"


def test_fork_falls_back_to_description_and_model_is_stripped() -> None:
    stats = reply(
        "STATS",
        [{"BMMiner": "4.11.1 rwglr", "Type": "S19-88 v.2.6.0.39 "}],
        description="bmminer 1.0.0",
    )
    s = snap(stats=stats)
    assert s.fork == "bmminer 1.0.0"
    assert s.model == "S19-88 v.2.6.0.39"


def test_elapsed_from_summary_else_stats() -> None:
    assert snap(stats=bmminer_stats()).elapsed_s == 7200
    s = snap(stats=bmminer_stats(), summary=reply("SUMMARY", [{"Elapsed": 7190}]))
    assert s.elapsed_s == 7190


# --------------------------------------------------------------------------- the view


def test_snapshot_is_immutable_and_keeps_raw_entries_by_reference() -> None:
    summary_entry = {"Elapsed": 60, "MHS 5s": 1.0, "Odd Field": "kept"}
    s = build_snapshot(
        {"summary": reply("SUMMARY", [summary_entry])}, name="m", host="h", port=4028, at=AT,
        keep_raw=True,
    )
    assert s.extra["summary"] is summary_entry
    assert "summary" not in snap(summary=reply("SUMMARY", [summary_entry])).extra
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.hashrate_hs = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.extra["x"] = 1  # type: ignore[index]


def test_to_json_matches_the_poll_contract() -> None:
    s = snap(
        devs=reply("DEVS", [asc(0)], code=9),
        pools=reply(
            "POOLS", [pool(0, **{"Stratum Active": True, "Last Share Time": AT - 4})], code=7
        ),
        summary=reply("SUMMARY", [{"Elapsed": 3600, "GHS 5s": 13500.0}]),
        stats=bmminer_stats(),
    )
    out = s.to_json()
    for key in (
        "name",
        "host",
        "port",
        "up",
        "error",
        "fork",
        "elapsed_s",
        "hashrate_hs",
        "hardware_error_ratio",
        "temperature_max_c",
        "fans_rpm",
        "devices",
        "pools",
    ):
        assert key in out
    assert out["up"] is True and out["error"] is None
    assert out["hashrate_hs"] == pytest.approx(1.35e13)
    device = out["devices"][0]  # type: ignore[index]
    assert set(device) >= {
        "id",
        "kind",
        "status",
        "enabled",
        "hashrate_hs",
        "temperature_c",
        "hardware_errors",
    }
    pool_out = out["pools"][0]  # type: ignore[index]
    assert set(pool_out) >= {
        "id",
        "url",
        "status",
        "priority",
        "active",
        "last_share_age_s",
        "stale_ratio",
    }
    assert pool_out["last_share_age_s"] == 4.0
    json.dumps(out)


def test_field_paths() -> None:
    s = snap(
        devs=reply("DEVS", [asc(0), asc(1, status="Dead")], code=9),
        pools=reply(
            "POOLS", [pool(0, **{"Stratum Active": True, "Last Share Time": AT - 30})], code=7
        ),
        stats=bmminer_stats(),
    )
    assert s.field("hashrate") == s.field("hashrate_hs") == s.hashrate_hs
    assert s.field("temperature.max") == 75.0
    assert (s.field("fans.min"), s.field("fans.max"), s.field("fans.count")) == (2400, 3720, 2)
    assert s.field("elapsed") == 7200
    assert s.field("devices.count") == 2
    assert s.field("devices.alive") == 1
    assert s.field("pools.active.last_share_age") == 30.0
    assert s.field("hardware_error_ratio") == s.hardware_error_ratio
    assert s.field("no.such.field") is None
    for path in FIELD_PATHS:
        value = s.field(path)
        assert value is None or isinstance(value, float), path


def test_empty_replies_make_a_bare_snapshot() -> None:
    s = build_snapshot({}, name="m", host="h", port=1, at=AT)
    assert (s.hashrate_hs, s.devices, s.pools, s.fans_rpm, s.fork) == (None, (), (), (), None)
    assert s.active_pool is None and s.hardware_error_ratio is None
    for path in FIELD_PATHS:
        s.field(path)


def test_snapshot_can_be_built_directly() -> None:
    device = Device(id=0, kind="ASC", name="BTM0", status="Alive", hashrate_hs=1e12)
    s = Snapshot(
        name="m",
        host="h",
        port=4028,
        at=AT,
        devices=(device,),
        pools=(Pool(id=0, url="stratum+tcp://p:3333", active=True),),
    )
    assert s.field("devices.alive") == 1.0
    assert s.active_pool is not None and s.extra == {}


# --------------------------------------------------------------------------- robustness

_KEYS = [
    "STATUS",
    "When",
    "Code",
    "Description",
    "VERSION",
    "SUMMARY",
    "DEVS",
    "POOLS",
    "STATS",
    "FANS",
    "TEMPS",
    "MHS 5s",
    "GHS 5s",
    "MHS av",
    "GHS av",
    "MHS 20s",
    "MHS 24h",
    "MHS 15m",
    "Elapsed",
    "Device Elapsed",
    "ASC",
    "PGA",
    "GPU",
    "ID",
    "Name",
    "Status",
    "Enabled",
    "Temperature",
    "Chip Temp Max",
    "Hardware Errors",
    "Diff1 Work",
    "URL",
    "User",
    "POOL",
    "Priority",
    "Stratum Active",
    "Accepted",
    "Rejected",
    "Stale",
    "Last Share Time",
    "Pool Stale%",
    "Pool Stale%%",
    "chain_acn1",
    "chain_rate1",
    "chain_hw1",
    "temp1",
    "temp2_1",
    "temp_chip1",
    "temp_pcb1",
    "fan1",
    "fan_num",
    "temp_max",
    "MM ID0",
    "MM Count",
    "Type",
    "BMMiner",
    "CGMiner",
    "BOSminer+",
    "API",
    "RPM",
    "Board",
    "Chip",
    "Fan1",
    "Fan Speed In",
    "Fan Num",
    "Device Hardware%",
    "rate_unit",
    "PROD",
]
_STRINGS = [
    "",
    "0",
    "S",
    "E",
    "F",
    "Y",
    "N",
    "Alive",
    "Dead",
    "13883.81",
    "59-59-59-59",
    "-83",
    "0:00:05",
    "99:99:99",
    "Tue Jun 16 10:16:42 2020\n",
    "Thu Jan  1 08:00:00 1970\n",
    "Feb 31 2020",
    "Mon Feb 31 25:61:61 2020",
    "GHSavg[1.5] MGHS[1 -2 x] Fan1[10] TMax[70] HW[]",
    "POOL0",
    "GH/s",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "4.11.1-36c56a9363",
]
_COMMANDS = [
    "version",
    "summary",
    "devs",
    "pools",
    "stats",
    "estats",
    "fans",
    "temps",
    "devdetails",
]

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(_STRINGS)
)
_keys = st.sampled_from(_KEYS) | st.text(max_size=6)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=6,
)
_entry = st.dictionaries(st.sampled_from(_KEYS), _scalars, max_size=14) | st.dictionaries(
    _keys, _values, max_size=4
)
_status_entry = st.dictionaries(
    st.sampled_from(["STATUS", "When", "Code", "Msg", "Description"]),
    st.sampled_from(["S", "E", "F", "I"]) | _scalars,
    max_size=5,
)
_reply = st.dictionaries(
    st.sampled_from(
        [
            "STATUS",
            "VERSION",
            "SUMMARY",
            "DEVS",
            "POOLS",
            "STATS",
            "FANS",
            "TEMPS",
            "DEVDETAILS",
            "id",
        ]
    ),
    st.lists(_status_entry, min_size=1, max_size=1) | st.lists(_entry, max_size=3) | _values,
    max_size=4,
)
_replies = st.dictionaries(
    st.sampled_from(_COMMANDS) | st.text(max_size=5),
    _reply | _values | st.lists(_reply, max_size=1),
    max_size=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies=_replies, at=st.floats(allow_nan=False, allow_infinity=False))
def test_arbitrary_json_never_raises(replies: Mapping[str, Any], at: float) -> None:
    s = build_snapshot(replies, name="fuzz", host="127.0.0.1", port=4028, at=at)
    out = s.to_json()
    json.dumps(out)
    for path in FIELD_PATHS:
        value = s.field(path)
        assert value is None or (isinstance(value, float) and not math.isnan(value))
    assert s.hashrate_hs is None or (s.hashrate_hs >= 0 and math.isfinite(s.hashrate_hs))


@pytest.mark.parametrize(
    "replies",
    [
        None,
        [],
        {"summary": None},
        {"summary": []},
        {"summary": [None]},
        {"summary": {"STATUS": None, "SUMMARY": None}},
        {"summary": {"SUMMARY": {"MHS 5s": [1, 2]}}},
        {"devs": {"DEVS": [None, 3, "x", {"ASC": [0], "MHS 5s": {"a": 1}}]}},
        {"pools": {"POOLS": [{"URL": None, "POOL": "x", "Priority": -1, "Last Share Time": []}]}},
        {"stats": {"STATS": [{"ID": None, "STATS": 0, "MM ID0": 5, "MM Count": "x"}]}},
        {
            "stats": {
                "STATS": [{"ID": "AV", "MM Count": 1, "MM ID0": "GHSavg[1e308] MGHS[1e308 1e308]"}]
            }
        },
        {
            "summary": {
                "SUMMARY": [{"Elapsed": 10**400, "Hardware Errors": 10**400, "MHS 5s": 10**400}]
            }
        },
        {"version": {"VERSION": [{"CGMiner": 10**5000}]}},
    ],
)
def test_odd_shapes_never_raise(replies: Any) -> None:
    s = build_snapshot(replies, name="odd", host="127.0.0.1", port=4028, at=AT)
    json.dumps(s.to_json())


def _realistic_replies() -> dict[str, Any]:
    pools = [
        pool(0, **{"Stratum Active": True, "Last Share Time": "Tue Jun 16 10:16:42 2020\n"}),
        pool(1, **{"Last Share Time": "Thu Jan  1 08:00:00 1970\n", "Pool Stale%%": 1.0}),
        pool(2, URL=""),
    ]
    return {
        "version": reply("VERSION", [{"BMMiner": "2.0.0", "API": "3.1", "Type": "S9"}], code=22),
        "summary": reply("SUMMARY", [{"Elapsed": 600, "GHS 5s": "13.5", "Accepted": "1.0"}]),
        "devs": reply("DEVS", [asc(0), asc(1, Temperature=-273.0)], code=9),
        "pools": reply("POOLS", pools, code=7),
        "stats": bmminer_stats(),
        "estats": avalon_stats(),
        "fans": reply("FANS", [{"FAN": 0, "ID": 0, "RPM": 2820}], code=202),
        "temps": reply("TEMPS", [{"Board": 75.0, "Chip": 0.0, "ID": 0}], code=201),
    }


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_realistic_replies_with_garbage_fields_never_raise(data: st.DataObject) -> None:
    replies = _realistic_replies()
    for _ in range(data.draw(st.integers(min_value=1, max_value=12))):
        command = data.draw(st.sampled_from(sorted(replies)))
        body = replies[command]
        if not isinstance(body, dict) or not body:
            replies[command] = data.draw(_values)
            continue
        section = data.draw(st.sampled_from(sorted(body)))
        target = body[section]
        entries = [e for e in target if isinstance(e, dict)] if isinstance(target, list) else []
        if entries:
            entry = data.draw(st.sampled_from(entries))
            key = data.draw(st.sampled_from(sorted(entry)) | _keys) if entry else data.draw(_keys)
            entry[key] = data.draw(_values)
        else:
            body[section] = data.draw(_values)
    s = build_snapshot(replies, name="fuzz", host="127.0.0.1", port=4028, at=AT)
    json.dumps(s.to_json())
    for path in FIELD_PATHS:
        s.field(path)
