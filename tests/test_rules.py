"""The rule engine (cgwatchdog/rules.py): each rule type's boundaries, what is evaluated
when, labels, annotations, restart grace, reload and persistence.

Snapshots are built by ``build_snapshot`` from cgminer 4.11-style replies; time is a
number the tests move (30 s per cycle), nothing sleeps and nothing opens a socket.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cgwatchdog.alerts import AlertEngine, AlertState, Evaluation, Judged, Signal, fingerprint
from cgwatchdog.config import MinerConfig, RuleBase
from cgwatchdog.config.loader import default_rules_path, load_rule_file
from cgwatchdog.errors import FailureKind
from cgwatchdog.rules import RULE_TYPES, RuleEngine, compile_rule, rule_config
from cgwatchdog.rules.base import RuleType
from cgwatchdog.rules.types.hashrate_drop import MIN_BASELINE_COVERAGE, eval_hashrate_drop
from cgwatchdog.snapshot import PollResult, Snapshot, Unreachable, build_snapshot
from cgwatchdog.units import format_duration, format_hashrate, format_percent

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "peer-replies"
FIXTURES = sorted(FIXTURE_DIR.glob("*.json")) if FIXTURE_DIR.is_dir() else []

T0 = 1_700_000_000.0
STEP = 30.0
TH = 1e12
NAME = "rack1-s9-01"
HOST = "10.0.0.21"


# --------------------------------------------------------------------------- builders


def rule(**fields: Any) -> RuleBase:
    """A rule as the YAML loader would validate it (``below: 80%``, ``for: 10m``...)."""
    return rule_config(fields)


def miner(
    name: str = NAME,
    host: str = HOST,
    *,
    labels: dict[str, str] | None = None,
    expected: str | None = None,
) -> MinerConfig:
    return MinerConfig.model_validate(
        {"name": name, "host": host, "labels": labels or {}, "expected_hashrate": expected}
    )


def _status(msg: str, code: int, when: float, letter: str = "S") -> list[dict[str, Any]]:
    return [
        {"STATUS": letter, "When": when, "Code": code, "Msg": msg, "Description": "cgminer 4.11.1"}
    ]


def asc(
    number: int, status: str = "Alive", *, temperature: float = 70.0, diff1: float | None = 1000
) -> dict[str, Any]:
    """A cgminer 4.11 ASC entry of ``devs``."""
    entry = {
        "ASC": number, "Name": "BTM", "ID": number, "Enabled": "Y", "Status": status,
        "Temperature": temperature, "MHS av": 4.5e6, "MHS 5s": 4.5e6, "Accepted": 10,
        "Rejected": 0, "Hardware Errors": 0, "Diff1 Work": diff1, "Device Elapsed": 3600,
    }  # fmt: skip
    if diff1 is None:
        del entry["Diff1 Work"]
    return entry


def pool(
    number: int,
    *,
    status: str = "Alive",
    active: bool = False,
    share_age: float | None = 5.0,
    stale_percent: float = 0.0,
    accepted: int = 100,
    priority: int | None = None,
) -> dict[str, Any]:
    """A cgminer 4.11 POOLS entry; ``share_age`` None: no share yet (Last Share Time 0)."""
    return {
        "POOL": number, "URL": f"stratum+tcp://pool{number}.example.org:3333", "Status": status,
        "Priority": number if priority is None else priority, "Accepted": accepted,
        "Rejected": 0, "Stale": 0, "User": "worker",
        "Last Share Time": 0 if share_age is None else "<age>", "_age": share_age,
        "Stratum Active": active, "Pool Stale%": stale_percent,
    }  # fmt: skip


def replies(
    at: float,
    *,
    elapsed: float = 7200.0,
    ghs: float = 13500.0,
    hw: int | None = 0,
    diff1: float | None = 0.0,
    difficulty_accepted: float | None = None,
    devices: Sequence[dict[str, Any]] | None = None,
    devs_error: tuple[int, str] | None = None,
    pools: Sequence[dict[str, Any]] | None = None,
    pools_error: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """summary+devs+pools as cgminer 4.11 answers them (decoded)."""
    summary: dict[str, Any] = {
        "Elapsed": elapsed, "MHS av": ghs * 1000, "MHS 5s": ghs * 1000, "Accepted": 100,
        "Rejected": 1, "Stale": 0,
    }  # fmt: skip
    if hw is not None:
        summary["Hardware Errors"] = hw
    if diff1 is not None:
        summary["Diff1 Work"] = diff1
    if difficulty_accepted is not None:
        summary["Difficulty Accepted"] = difficulty_accepted
    out: dict[str, Any] = {
        "summary": {"STATUS": _status("Summary", 11, at), "SUMMARY": [summary], "id": 1}
    }
    if devs_error is not None:
        out["devs"] = {"STATUS": _status(devs_error[1], devs_error[0], at, "E"), "id": 1}
    else:
        entries = list(devices if devices is not None else [asc(0), asc(1), asc(2)])
        out["devs"] = {"STATUS": _status(f"{len(entries)} ASC(s)", 9, at), "DEVS": entries, "id": 1}
    if pools_error is not None:
        out["pools"] = {"STATUS": _status(pools_error[1], pools_error[0], at, "E"), "id": 1}
    elif pools is not None or pools_error is None:
        entries = list(pools if pools is not None else [pool(0, active=True), pool(1)])
        for entry in entries:  # Last Share Time as an epoch on the miner's clock
            age = entry.pop("_age")
            if age is not None:
                entry["Last Share Time"] = int(at - age)
        out["pools"] = {
            "STATUS": _status(f"{len(entries)} Pool(s)", 7, at),
            "POOLS": entries,
            "id": 1,
        }
    return out


def snap(at: float, name: str = NAME, host: str = HOST, **fields: Any) -> Snapshot:
    return build_snapshot(replies(at, **fields), name=name, host=host, port=4028, at=at)


def down(at: float, name: str = NAME, error: str = "connection refused") -> Unreachable:
    return Unreachable(
        name=name, host=HOST, port=4028, at=at, error=error, kind=FailureKind.REFUSED
    )


def signals_of(evaluation: Evaluation, alertname: str) -> list[Signal]:
    return [s for s in evaluation.signals if s.labels["alertname"] == alertname]


def engine_for(*rules: RuleBase, miners: Sequence[MinerConfig] | None = None) -> RuleEngine:
    return RuleEngine(list(rules), list(miners or [miner()]))


def run(engine: RuleEngine, cycles: Iterable[tuple[float, Sequence[PollResult]]]) -> Evaluation:
    """Observe each (now, results) in turn; the last evaluation."""
    evaluation = Evaluation((), ())
    for now, results in cycles:
        evaluation = engine.observe(results, now)
    return evaluation


DROP = {"name": "HashrateDrop", "type": "hashrate_drop", "below": "80%", "baseline": "1h"}
DEAD = {"name": "DeviceDead", "type": "device_status", "status": ["Dead", "Sick", "NoStart"]}
HW = {"name": "HardwareErrorsRising", "type": "hardware_errors", "above": "1%", "window": "15m"}
POOL = {
    "name": "PoolStale",
    "type": "pool_stale",
    "no_accepted_share_for": "10m",
    "stale_above": "5%",
}
DOWN = {"name": "MinerUnreachable", "type": "unreachable", "for": "3m", "severity": "critical"}
HOT = {"name": "TooHot", "type": "threshold", "field": "temperature.max", "above": 85}


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("hs", "text"),
    [
        (0.0, "0 H/s"),
        (12.5, "12.5 H/s"),
        (2.962e6, "3.0 MH/s"),
        (397.76e9, "398 GH/s"),
        (999.96e9, "1.0 TH/s"),
        (1.35e13, "13.5 TH/s"),
        (9.1e12, "9.1 TH/s"),
        (1.84e14, "184 TH/s"),
        (2.5e15, "2.5 PH/s"),
        (3e18, "3.0 EH/s"),
        (float("nan"), "unknown"),
    ],
)
def test_format_hashrate(hs: float, text: str) -> None:
    assert format_hashrate(hs) == text


def test_format_duration_and_percent() -> None:
    assert [format_duration(s) for s in (0, 45, 270, 600, 840, 3600, 7500, 90000)] == [
        "0s", "45s", "4m30s", "10m", "14m", "1h", "2h05m", "1d1h",
    ]  # fmt: skip
    assert [format_percent(r) for r in (0.0, 0.032, 0.01, 0.67, 0.000184)] == [
        "0%", "3.2%", "1.0%", "67%", "0.018%",
    ]  # fmt: skip


def test_every_rule_type_has_an_evaluator() -> None:
    assert set(RULE_TYPES) == {
        "hashrate_drop", "device_status", "hardware_errors", "pool_stale", "unreachable", "threshold",
    }  # fmt: skip


# --------------------------------------------------------------------------- hashrate_drop


def test_hashrate_drop_against_expected_hashrate_boundaries() -> None:
    engine = engine_for(rule(**DROP), miners=[miner(expected="13.5 TH/s")])
    fine = engine.observe([snap(T0, ghs=10_810.0)], T0)  # 80.07%
    assert fine.signals == [] and ("HashrateDrop", NAME) in fine.evaluated
    low = engine.observe([snap(T0 + STEP, ghs=10_790.0)], T0 + STEP)  # 79.9%
    assert len(low.signals) == 1
    deep = engine.observe([snap(T0 + 2 * STEP, ghs=9_100.0)], T0 + 2 * STEP)
    assert deep.signals[0].value == "9.1 TH/s (67% of expected 13.5 TH/s)"


def test_hashrate_drop_is_not_judged_during_startup_grace_or_without_a_hashrate() -> None:
    engine = engine_for(rule(**DROP, startup_grace="10m"), miners=[miner(expected="13.5 TH/s")])
    warming = engine.observe([snap(T0, elapsed=300.0, ghs=1000.0)], T0)
    assert warming.signals == [] and ("HashrateDrop", NAME) not in warming.evaluated
    settled = engine.observe([snap(T0 + 330, elapsed=630.0, ghs=1000.0)], T0 + 330)
    assert len(settled.signals) == 1
    no_rate = build_snapshot(
        {"pools": replies(T0 + 360)["pools"]}, name=NAME, host=HOST, port=4028, at=T0 + 360
    )
    assert ("HashrateDrop", NAME) not in engine.observe([no_rate], T0 + 360).evaluated


def _steady(engine: RuleEngine, minutes: float, ghs: float = 13500.0, start: float = T0) -> float:
    """Poll a healthy miner every 30 s for ``minutes``; return the last time."""
    now = start
    for i in range(int(minutes * 60 / STEP) + 1):
        now = start + i * STEP
        engine.observe([snap(now, elapsed=7200.0 + now - T0, ghs=ghs)], now)
    return now


def test_hashrate_drop_needs_a_quarter_of_the_baseline_of_history() -> None:
    assert 3600 * MIN_BASELINE_COVERAGE == 900
    engine = engine_for(rule(**DROP))
    now = _steady(engine, 14)  # samples over 14 minutes
    now += STEP
    early = engine.observe([snap(now, elapsed=7200.0 + now - T0, ghs=5000.0)], now)
    assert ("HashrateDrop", NAME) not in early.evaluated and early.signals == []
    now += STEP
    covered = engine.observe([snap(now, elapsed=7200.0 + now - T0, ghs=13500.0)], now)
    assert ("HashrateDrop", NAME) in covered.evaluated  # the samples span 15 minutes now


def test_baseline_median_ignores_one_bad_sample() -> None:
    engine = engine_for(rule(**DROP))
    now = _steady(engine, 20)
    now += STEP
    blip = engine.observe([snap(now, elapsed=7200.0 + now - T0, ghs=500.0)], now)
    assert len(blip.signals) == 1  # this reading is low (for: keeps it from paging)
    now += STEP
    back = engine.observe([snap(now, elapsed=7200.0 + now - T0, ghs=13_400.0)], now)
    assert back.signals == [] and ("HashrateDrop", NAME) in back.evaluated
    now += STEP
    drop = engine.observe([snap(now, elapsed=7200.0 + now - T0, ghs=9_000.0)], now)
    assert drop.signals[0].value == "9.0 TH/s (67% of its 1h median 13.5 TH/s)"


def test_a_long_drop_does_not_become_the_new_normal() -> None:
    engine = engine_for(rule(**DROP))
    now = _steady(engine, 30)
    # Down to 6 TH/s for an hour: the plain 1h median would follow it after 30 minutes.
    for _ in range(120):
        now += STEP
        evaluation = engine.observe([snap(now, elapsed=7200.0 + now - T0, ghs=6000.0)], now)
        assert len(evaluation.signals) == 1
    assert "of its usual 13.5 TH/s" in evaluation.signals[0].value
    history = engine.history[NAME]
    assert history.median_hashrate(now, 3600.0) is not None
    assert history.frozen_baseline("HashrateDrop") == pytest.approx(13.5 * TH)
    now += STEP
    healed = engine.observe([snap(now, elapsed=7200.0 + now - T0, ghs=13500.0)], now)
    assert healed.signals == [] and ("HashrateDrop", NAME) in healed.evaluated
    assert history.frozen_baseline("HashrateDrop") is None


def test_eval_function_is_callable_on_its_own() -> None:
    compiled = compile_rule(rule(**DROP))
    from cgwatchdog.history import MinerHistory

    signals = eval_hashrate_drop(
        compiled, miner(expected="10 TH/s"), snap(T0, ghs=5000.0), MinerHistory(), T0
    )
    assert signals is not None and signals[0].value == "5.0 TH/s (50% of expected 10.0 TH/s)"


# --------------------------------------------------------------------------- device_status


def test_device_status_one_signal_per_listed_status() -> None:
    engine = engine_for(rule(**DEAD))
    devices = [asc(0), asc(1, "Dead"), asc(2, "Sick"), asc(3, "Initialising")]
    evaluation = engine.observe([snap(T0, devices=devices)], T0)
    assert {(s.labels["device"], s.value) for s in evaluation.signals} == {
        ("ASC1", "Dead"),
        ("ASC2", "Sick"),
    }
    healthy = engine.observe([snap(T0 + STEP)], T0 + STEP)
    assert healthy.signals == [] and ("DeviceDead", NAME) in healthy.evaluated


def test_device_status_on_bmminer_boards_from_stats() -> None:
    at = T0
    stats = {
        "STATUS": [{"STATUS": "S", "When": at, "Code": 70, "Msg": "CGMiner stats", "Description": "bmminer 2.0.0"}],
        "STATS": [
            {"BMMiner": "2.0.0", "Miner": "30.0.1.3", "Type": "Antminer S9"},
            {"STATS": 0, "ID": "BC50", "Elapsed": 7200, "GHS 5s": "9000", "GHS av": 9000,
             "chain_acn6": 63, "chain_rate6": "4500", "chain_acn7": 63, "chain_rate7": "0",
             "chain_acn8": 63, "chain_rate8": "4500"},
        ],
        "id": 1,
    }  # fmt: skip
    s9 = build_snapshot({"stats": stats}, name=NAME, host=HOST, port=4028, at=at)
    evaluation = engine_for(rule(**DEAD)).observe([s9], at)
    assert [(s.labels["device"], s.value) for s in evaluation.signals] == [("BOARD7", "Sick")]


def test_device_status_when_devs_is_refused() -> None:
    engine = engine_for(rule(**DEAD))
    none = engine.observe([snap(T0, devs_error=(10, "No ASCs"))], T0)
    assert none.signals == [] and ("DeviceDead", NAME) in none.evaluated  # up, no devices
    broken = engine.observe([snap(T0 + STEP, devs_error=(14, "Invalid command"))], T0 + STEP)
    assert ("DeviceDead", NAME) not in broken.evaluated  # cannot tell: keep the state


# --------------------------------------------------------------------------- hardware_errors


def _hw_cycles(
    engine: RuleEngine, count: int, *, hw_step: int, diff1_step: float = 1000.0, **fields: Any
) -> Evaluation:
    evaluation = Evaluation((), ())
    for i in range(count):
        now = T0 + i * STEP
        evaluation = engine.observe(
            [snap(now, elapsed=7200.0 + i * STEP, hw=1000 + hw_step * i, diff1=5e6 + diff1_step * i, **fields)],
            now,
        )  # fmt: skip
    return evaluation


def test_hardware_errors_ratio_boundaries() -> None:
    below = _hw_cycles(engine_for(rule(**HW)), 40, hw_step=10)  # 10/1010 = 0.99%
    assert below.signals == [] and ("HardwareErrorsRising", NAME) in below.evaluated
    above = _hw_cycles(engine_for(rule(**HW)), 40, hw_step=11)  # 11/1011 = 1.09%
    assert [s.value for s in above.signals] == [
        "1.1% of work over 15m (330 hardware errors; above 1.0%)"
    ]
    assert "device" not in above.signals[0].labels


def test_hardware_errors_need_half_the_window() -> None:
    engine = engine_for(rule(**HW))
    assert ("HardwareErrorsRising", NAME) not in _hw_cycles(engine, 15, hw_step=50).evaluated
    engine = engine_for(rule(**HW))
    assert len(_hw_cycles(engine, 16, hw_step=50).signals) == 1  # 7m30s = half of 15m


def test_hardware_errors_survive_a_restart_without_a_spike() -> None:
    engine = engine_for(rule(**HW))
    now = T0
    for i in range(20):  # 0.5% of work
        now = T0 + i * STEP
        engine.observe(
            [snap(now, elapsed=7200.0 + i * STEP, hw=9000 + 5 * i, diff1=1e6 + 1000 * i)], now
        )
    # Restart: counters start again from a low the old values say nothing about.
    for k in range(1, 20):
        now += STEP
        evaluation = engine.observe(
            [snap(now, elapsed=10.0 + k * STEP, hw=400 + 5 * k, diff1=20.0 + 1000 * k)], now
        )
        assert evaluation.signals == [], k
        assert ("HardwareErrorsRising", NAME) in evaluation.evaluated


def test_hardware_errors_fall_back_to_difficulty_accepted() -> None:
    def cycles(**work: float | None) -> Evaluation:
        engine = engine_for(rule(**HW))
        evaluation = Evaluation((), ())
        for i in range(40):
            now = T0 + i * STEP
            fields: dict[str, Any] = {
                key: None if value is None else value * i for key, value in work.items()
            }
            answer = snap(
                now, elapsed=7200.0 + i * STEP, hw=50 * i, devices=[asc(0, diff1=None)], **fields
            )
            evaluation = engine.observe([answer], now)
        return evaluation

    neither = cycles(diff1=None, difficulty_accepted=None)
    assert ("HardwareErrorsRising", NAME) not in neither.evaluated  # no work counter at all
    bmminer = cycles(diff1=None, difficulty_accepted=2000.0)  # no Diff1 Work
    assert [s.value for s in bmminer.signals] == [
        "2.4% of work over 15m (1500 hardware errors; above 1.0%)"
    ]


# --------------------------------------------------------------------------- pool_stale


def _pool_eval(*pools: dict[str, Any], elapsed: float = 7200.0, engine: RuleEngine | None = None, at: float = T0) -> Evaluation:  # fmt: skip
    engine = engine or engine_for(rule(**POOL))
    return engine.observe([snap(at, elapsed=elapsed, pools=list(pools))], at)


def test_pool_stale_share_age_boundaries() -> None:
    fresh = _pool_eval(pool(0, active=True, share_age=600), pool(1))
    assert fresh.signals == [] and ("PoolStale", NAME) in fresh.evaluated
    stale = _pool_eval(pool(0, active=True, share_age=840), pool(1))
    assert [(s.labels["pool"], s.value) for s in stale.signals] == [
        ("0", "pool 0 stratum+tcp://pool0.example.org:3333: no accepted share for 14m")
    ]


def test_pool_stale_ratio_and_reasons_joined() -> None:
    assert _pool_eval(pool(0, active=True, stale_percent=5.0)).signals == []
    both = _pool_eval(pool(0, active=True, stale_percent=6.2, share_age=900))
    assert both.signals[0].value == (
        "pool 0 stratum+tcp://pool0.example.org:3333: no accepted share for 15m; "
        "stale shares 6.2% (above 5.0%)"
    )


def test_active_pool_not_alive() -> None:
    evaluation = _pool_eval(pool(0, active=True, status="Sick"), pool(1))
    assert [(s.labels["pool"], s.value) for s in evaluation.signals] == [
        ("0", "pool 0 stratum+tcp://pool0.example.org:3333: status Sick")
    ]


def test_no_pool_alive_is_one_signal_on_pool_none() -> None:
    evaluation = _pool_eval(pool(0, status="Dead"), pool(1, status="Dead"))
    assert len(evaluation.signals) == 1
    signal = evaluation.signals[0]
    assert signal.labels["pool"] == "none"
    assert signal.value.startswith("no pool is Alive: pool 0 Dead (stratum+tcp://pool0")
    unconfigured = engine_for(rule(**POOL)).observe([snap(T0, pools_error=(8, "No pools"))], T0)
    assert [(s.labels["pool"], s.value) for s in unconfigured.signals] == [
        ("none", "no pool configured")
    ]


def test_failover_to_a_backup_signals_on_the_dead_primary() -> None:
    evaluation = _pool_eval(pool(0, status="Dead", share_age=3600), pool(1, active=True))
    assert [(s.labels["pool"], s.value) for s in evaluation.signals] == [
        (
            "0",
            "pool 0 stratum+tcp://pool0.example.org:3333 is Dead: mining on backup "
            "pool 1 stratum+tcp://pool1.example.org:3333",
        )
    ]
    # A disabled primary is the operator's choice, not a failover.
    chosen = _pool_eval(pool(0, status="Disabled"), pool(1, active=True))
    assert chosen.signals == []


def test_pool_stale_without_a_pools_reply_is_not_judged() -> None:
    answer = build_snapshot(
        {"summary": replies(T0)["summary"]}, name=NAME, host=HOST, port=4028, at=T0
    )
    evaluation = engine_for(rule(**POOL)).observe([answer], T0)
    assert ("PoolStale", NAME) not in evaluation.evaluated


def test_no_share_yet_counts_from_start_or_switch() -> None:
    never = pool(0, active=True, share_age=None, accepted=0)
    assert _pool_eval(dict(never), elapsed=590).signals == []
    late = _pool_eval(dict(never), elapsed=700)
    assert late.signals[0].value.endswith("no accepted share in 11m on this pool")
    # Failed over a minute ago to a pool without a share yet: not stale (yet).
    engine = engine_for(rule(**POOL))
    _pool_eval(pool(0, active=True), pool(1), engine=engine, elapsed=7200)
    after = _pool_eval(
        pool(0, status="Dead", share_age=700),
        pool(1, active=True, share_age=None, accepted=0),
        engine=engine, elapsed=7260, at=T0 + 60,
    )  # fmt: skip
    assert [s.labels["pool"] for s in after.signals] == ["0"]  # only the failover signal


# --------------------------------------------------------------------------- unreachable


def test_unreachable_signal_and_what_is_evaluated() -> None:
    engine = engine_for(rule(**DOWN), rule(**DEAD))
    up = engine.observe([snap(T0)], T0)
    assert up.signals == []
    assert {("MinerUnreachable", NAME), ("DeviceDead", NAME)} <= set(up.evaluated)
    gone = engine.observe([down(T0 + STEP)], T0 + STEP)
    assert [s.value for s in gone.signals] == ["unreachable: connection refused"]
    assert gone.signals[0].for_s == 180.0
    assert ("MinerUnreachable", NAME) in gone.evaluated
    assert ("DeviceDead", NAME) not in gone.evaluated
    later = engine.observe([down(T0 + 5 * STEP, error="timed out after 5s")], T0 + 5 * STEP)
    assert later.signals[0].value == "unreachable: timed out after 5s (for 2m)"


def test_unreachable_miner_keeps_its_other_alerts() -> None:
    engine = engine_for(rule(**DOWN), rule(**DEAD))
    alerts = AlertEngine()
    now = T0
    alerts.update(engine.observe([snap(now, devices=[asc(0, "Dead")])], now), now)
    (dead,) = alerts.firing()
    assert dead.labels["device"] == "ASC0"
    for _ in range(10):  # 5 minutes without an answer
        now += STEP
        alerts.update(engine.observe([down(now)], now), now)
    firing = {a.alertname: a for a in alerts.firing()}
    assert set(firing) == {"DeviceDead", "MinerUnreachable"}
    assert firing["DeviceDead"].fingerprint == dead.fingerprint
    now += STEP
    alerts.update(engine.observe([snap(now, elapsed=7200.0 + now - T0)], now), now)
    assert alerts.firing() == []


# --------------------------------------------------------------------------- threshold


def test_threshold_above_and_below() -> None:
    engine = engine_for(rule(**HOT))
    at85 = engine.observe([snap(T0, devices=[asc(0, temperature=85.0)])], T0)
    assert at85.signals == [] and ("TooHot", NAME) in at85.evaluated
    at86 = engine.observe([snap(T0 + STEP, devices=[asc(0, temperature=86.0)])], T0 + STEP)
    assert [s.value for s in at86.signals] == ["86.0 (above 85)"]
    slow = engine_for(rule(name="Slow", type="threshold", field="hashrate", below="10 TH/s"))
    evaluation = slow.observe([snap(T0, ghs=9000.0)], T0)
    assert [s.value for s in evaluation.signals] == ["9.0 TH/s (below 10.0 TH/s)"]
    band = engine_for(
        rule(name="Band", type="threshold", field="devices.alive", below=3, above=3.5)
    )
    assert band.observe([snap(T0)], T0).signals == []
    assert [s.value for s in band.observe([snap(T0 + 1, devices=[asc(0)])], T0 + 1).signals] == [
        "1 (below 3)"
    ]


def test_threshold_unknown_field_is_refused_and_a_missing_value_not_judged() -> None:
    with pytest.raises(
        ValidationError,
        match=r"unknown field 'temperature.maxx' \(did you mean 'temperature.max'\?\)",
    ):
        rule(**{**HOT, "field": "temperature.maxx"})
    cool = engine_for(rule(**HOT))
    no_sensor = cool.observe([snap(T0, devices=[asc(0, temperature=0.0)])], T0)
    assert ("TooHot", NAME) not in no_sensor.evaluated  # 0 means "no sensor" on cgminer


# --------------------------------------------------------------------------- labels


def test_labels_and_their_precedence() -> None:
    rig = miner(labels={"site": "north", "model": "s9", "severity": "low"})
    engine = engine_for(rule(**DEAD, severity="critical", labels={"team": "boards"}), miners=[rig])
    (signal,) = engine.observe([snap(T0, devices=[asc(0), asc(1, "Dead")])], T0).signals
    assert dict(signal.labels) == {
        "alertname": "DeviceDead",
        "miner": NAME,
        "severity": "critical",
        "site": "north",
        "model": "s9",
        "team": "boards",
        "device": "ASC1",
    }


def test_labels_stay_put_while_the_value_changes() -> None:
    engine = engine_for(rule(**DROP), rule(**POOL), miners=[miner(expected="13.5 TH/s")])
    first = engine.observe([snap(T0, ghs=9100.0, pools=[pool(0, active=True, share_age=700)])], T0)
    second = engine.observe(
        [snap(T0 + STEP, ghs=8700.0, pools=[pool(0, active=True, share_age=730)])], T0 + STEP
    )
    assert [fingerprint(s.labels) for s in first.signals] == [
        fingerprint(s.labels) for s in second.signals
    ]
    assert [s.value for s in first.signals] != [s.value for s in second.signals]


def test_rules_apply_to_the_miners_they_match() -> None:
    north = miner("n1", "10.0.0.1", labels={"site": "north"})
    south = miner("s1", "10.0.0.2", labels={"site": "south"})
    engine = engine_for(rule(**DEAD, match={"site": "north"}), rule(**DOWN), miners=[north, south])
    evaluation = engine.observe(
        [snap(T0, name="n1", host="10.0.0.1"), snap(T0, name="s1", host="10.0.0.2"), snap(T0, name="stranger")],
        T0,
    )  # fmt: skip
    assert set(evaluation.evaluated) == {
        ("DeviceDead", "n1"),
        ("MinerUnreachable", "n1"),
        ("MinerUnreachable", "s1"),
    }
    assert "stranger" not in engine.history
    by_name = engine_for(rule(**DEAD, match_re={"miner": "n.*"}), miners=[north, south])
    evaluation = by_name.observe([snap(T0, "n1"), snap(T0, "s1")], T0)
    assert set(evaluation.evaluated) == {("DeviceDead", "n1")}


def test_what_a_cycle_judged_shares_one_tuple_among_miners_alike() -> None:
    """The miners that answered, whose rules all could tell, share their plan's tuple
    of alertnames; a miner that could not be judged by one rule gets its own, and an
    unreachable one its plan's tuple of rules that judge unreachability."""
    miners = [miner(f"m{i}", f"10.0.0.{i}") for i in range(4)]
    engine = engine_for(rule(**DEAD), rule(**DOWN), miners=miners)
    broken = snap(T0, name="m2", host="10.0.0.2", devs_error=(14, "Invalid command"))
    results = [snap(T0, name="m0", host="10.0.0.0"), snap(T0, name="m1", host="10.0.0.1"), broken]
    down = Unreachable("m3", "10.0.0.3", 4028, T0, "timed out", FailureKind.CONNECT_TIMEOUT)
    evaluation = engine.observe([*results, down], T0)
    judged = evaluation.evaluated
    assert isinstance(judged, Judged)
    by_miner = judged._by_miner
    assert by_miner["m0"] is by_miner["m1"] and by_miner["m0"] == ("DeviceDead", "MinerUnreachable")
    assert by_miner["m2"] == ("MinerUnreachable",)  # devs refused: DeviceDead cannot tell
    assert by_miner["m3"] == ("MinerUnreachable",)
    assert set(judged) == {
        ("DeviceDead", "m0"), ("MinerUnreachable", "m0"),
        ("DeviceDead", "m1"), ("MinerUnreachable", "m1"),
        ("MinerUnreachable", "m2"), ("MinerUnreachable", "m3"),
    }  # fmt: skip


# --------------------------------------------------------------------------- annotations


def test_annotations_rendered_from_templates() -> None:
    templated = rule(
        **DEAD,
        annotations={
            "summary": "{{ labels.miner }} ({{ host }}): {{ labels.device }} is {{ value }}",
            "runbook": "https://wiki.example.org/boards",
        },
    )
    (signal,) = engine_for(templated).observe([snap(T0, devices=[asc(2, "NoStart")])], T0).signals
    assert signal.annotations == {
        "summary": f"{NAME} ({HOST}): ASC2 is NoStart",
        "runbook": "https://wiki.example.org/boards",
    }


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ miner.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ],
)
def test_sandbox_blocks_attribute_escapes(template: str) -> None:
    sneaky = rule(**DEAD, annotations={"summary": template, "other": "{{ labels.__class__ }}"})
    (signal,) = engine_for(sneaky).observe([snap(T0, devices=[asc(0, "Dead")])], T0).signals
    summary = signal.annotations["summary"]
    assert summary.startswith(template)
    assert "template error: SecurityError" in summary
    assert "<class" not in summary.removeprefix(template)
    assert signal.annotations["other"] == ""  # an unsafe attribute reads as undefined


def test_a_failing_template_gives_the_raw_text_and_a_note() -> None:
    broken = rule(**DEAD, annotations={"summary": "{{ 1 / 0 }}", "plain": "ok"})
    (signal,) = engine_for(broken).observe([snap(T0, devices=[asc(0, "Dead")])], T0).signals
    assert signal.annotations["summary"].startswith(
        "{{ 1 / 0 }} [template error: ZeroDivisionError"
    )
    assert signal.annotations["plain"] == "ok"


@pytest.mark.parametrize("template", ["{{ labels.pop('miner') }}", "{{ labels.update(x=1) }}"])
def test_templates_cannot_change_the_labels(template: str) -> None:
    meddling = rule(**DEAD, annotations={"summary": template})
    (signal,) = engine_for(meddling).observe([snap(T0, devices=[asc(0, "Dead")])], T0).signals
    assert "template error: SecurityError" in signal.annotations["summary"]
    assert signal.labels["miner"] == NAME and "x" not in signal.labels


def test_shipped_default_rules_render() -> None:
    rules = load_rule_file(default_rules_path())
    engine = RuleEngine(rules, [miner(expected="13.5 TH/s")])
    evaluation = engine.observe(
        [snap(T0, ghs=9100.0, devices=[asc(0, "Dead", temperature=90.0)], pools=[pool(0, active=True, share_age=900)])],
        T0,
    )  # fmt: skip
    names = {s.labels["alertname"] for s in evaluation.signals}
    assert names == {"HashrateDrop", "DeviceDead", "PoolStale", "TooHot"}
    for signal in evaluation.signals:
        for text in signal.annotations.values():
            assert "template error" not in text and "{{" not in text
            assert NAME in text or signal.labels["alertname"] == "TooHot"


# --------------------------------------------------------------------------- restarts and grace


def test_restart_holds_the_miner_for_the_grace_period() -> None:
    engine = RuleEngine([rule(**DEAD)], [miner()], restart_grace_s=300.0)
    now = T0
    assert engine.observe([snap(now, elapsed=7200.0)], now).held_miners == set()
    now += STEP
    restarted = engine.observe([snap(now, elapsed=5.0)], now)
    assert restarted.held_miners == {NAME}
    assert engine.history[NAME].last_restart_at == now - 5.0
    now += 290
    assert engine.observe([snap(now, elapsed=295.0)], now).held_miners == {NAME}
    now += 10
    assert engine.observe([snap(now, elapsed=305.0)], now).held_miners == set()
    outside = engine.observe([snap(now + STEP, elapsed=335.0)], now + STEP, held={NAME, "other"})
    assert outside.held_miners == {NAME, "other"}


def test_restart_grace_keeps_alerts_from_resolving_and_refiring() -> None:
    engine = RuleEngine([rule(**DEAD)], [miner()], restart_grace_s=300.0)
    alerts = AlertEngine()
    now = T0
    alerts.update(engine.observe([snap(now, devices=[asc(0, "Dead")])], now), now)
    assert [a.state for a in alerts.alerts()] == [AlertState.FIRING]
    # Restarted: the board reports Initialising during warm-up, then Dead again.
    for k in range(1, 6):
        now += STEP
        warm = [asc(0, "Initialising")]
        alerts.update(engine.observe([snap(now, elapsed=k * STEP, devices=warm)], now), now)
    now += STEP
    alerts.update(engine.observe([snap(now, elapsed=6 * STEP, devices=[asc(0, "Dead")])], now), now)
    (alert,) = alerts.alerts()
    assert alert.state is AlertState.FIRING and alert.fired_at == T0  # the same alert throughout


def test_a_miner_seen_booting_is_held() -> None:
    engine = RuleEngine([rule(**DOWN)], [miner()], restart_grace_s=300.0)
    assert engine.observe([snap(T0, elapsed=40.0)], T0).held_miners == {NAME}


# --------------------------------------------------------------------------- reload and state


def test_reload_keeps_history_and_adapts_retention() -> None:
    keep = miner("keep", "10.0.0.1")
    gone = miner("gone", "10.0.0.2", expected="13.5 TH/s")
    engine = RuleEngine([rule(**DROP), rule(**HW)], [keep, gone])
    for i in range(40):
        now = T0 + i * STEP
        engine.observe(
            [snap(now, "keep", "10.0.0.1", elapsed=7200 + i * STEP), snap(now, "gone", "10.0.0.2")],
            now,
        )
    assert engine.history["keep"].retention_s == 3600.0
    assert engine.history["gone"].retention_s == 900.0  # expected hashrate: no baseline needed
    # The counters only as far back as the hardware-error rule looks.
    assert engine.history["keep"].counter_retention_s == 900.0
    assert engine.history["gone"].counter_retention_s == 900.0
    # Elapsed only below the hashrate_drop's startup grace (10 minutes), and not at all
    # where the miner has an expected hashrate (no baseline to leave a grace out of).
    assert engine.history["keep"].elapsed_kept_s == 600.0
    assert engine.history["gone"].elapsed_kept_s == 0.0
    engine.configure(
        [rule(**HW), rule(**{**DROP, "baseline": "80m", "startup_grace": "20m"})], [keep],
        restart_grace_s=60.0,
    )  # fmt: skip
    assert list(engine.history) == ["keep"]
    assert engine.history["keep"].retention_s == 4800.0
    assert engine.history["keep"].elapsed_kept_s == 1200.0
    assert len(engine.history["keep"]) == 40
    now = T0 + 40 * STEP
    after = engine.observe(
        [snap(now, "keep", "10.0.0.1", elapsed=7200 + 40 * STEP, ghs=5000.0)], now
    )
    assert [s.labels["alertname"] for s in after.signals] == ["HashrateDrop"]  # baseline kept
    engine.configure([rule(**HW)], [keep])
    assert engine.history["keep"].frozen_baseline("HashrateDrop") is None
    assert engine.history["keep"].retention_s == 900.0
    engine.configure([rule(**DROP)], [keep])
    assert engine.history["keep"].retention_s == 3600.0
    assert engine.history["keep"].counter_retention_s == 0.0  # no rule reads them
    assert engine.history["keep"].elapsed_kept_s == 600.0  # the packaged startup grace


def test_a_rule_type_that_does_not_say_keeps_the_counters_as_long_as_it_looks_back() -> None:
    """Only a rule type that says it never reads the counters lets them go sooner."""
    assert RULE_TYPES["hashrate_drop"].reads_counters is False
    assert RULE_TYPES["hardware_errors"].reads_counters is True
    assert RuleType("x", RuleBase, lambda *args: None).reads_counters is True
    # Likewise a rule type keeps Elapsed as far as it looks back unless it says less.
    assert RuleType("x", RuleBase, lambda *args: None).startup_grace_s is None
    assert RULE_TYPES["hashrate_drop"].startup_grace_s is not None
    assert RULE_TYPES["hardware_errors"].startup_grace_s is not None


def test_to_dict_from_dict_round_trip() -> None:
    rules = [rule(**DROP), rule(**HW), rule(**DOWN)]
    miners = [miner()]
    engine = RuleEngine(rules, miners)
    now = T0
    for i in range(60):
        now = T0 + i * STEP
        engine.observe([snap(now, elapsed=7200 + i * STEP, hw=30 * i, diff1=1000.0 * i)], now)
    text = json.dumps(engine.to_dict(), allow_nan=False)
    restored = RuleEngine.from_dict(json.loads(text), rules, miners)
    now += STEP
    probe = [snap(now, elapsed=7200 + 60 * STEP, hw=30 * 60, diff1=60_000.0, ghs=6000.0)]
    original, again = engine.observe(probe, now), restored.observe(probe, now)
    assert [(dict(s.labels), s.value) for s in original.signals] == [
        (dict(s.labels), s.value) for s in again.signals
    ]
    assert {s.labels["alertname"] for s in again.signals} == {
        "HashrateDrop",
        "HardwareErrorsRising",
    }
    assert set(original.evaluated) == set(again.evaluated)
    with pytest.raises(ValueError):
        RuleEngine.from_dict({"version": 7}, rules, miners)
    # What was read from the state file is not kept twice over: the history goes under
    # the configuration's name object and shares its plan's retention floats.
    (name,) = list(restored.history)
    assert name is miners[0].name
    history = restored.history[name]
    plan = restored._plans[name].selection
    assert history.retention_s is plan.retention_s
    assert history.counter_retention_s is plan.counter_retention_s
    assert history.elapsed_kept_s is plan.elapsed_kept_s


def test_state_in_records_through_a_store_matches_the_document_form(tmp_path: Path) -> None:
    from cgwatchdog.errors import StoreError
    from cgwatchdog.store import Store
    from cgwatchdog.watchdog import STATE_RULES, save_rules

    rules = [rule(**DROP), rule(**HW), rule(**DOWN)]
    miners = [miner(), miner(name="m2")]
    engine = RuleEngine(rules, miners)
    now = T0
    for i in range(60):
        now = T0 + i * STEP
        engine.observe(
            [snap(now, elapsed=7200 + i * STEP, hw=30 * i, diff1=1000.0 * i),
             snap(now, name="m2", elapsed=7200 + i * STEP)],
            now,
        )  # fmt: skip
    store = Store(tmp_path / "state.sqlite")
    save_rules(store, engine, now)
    save_rules(store, engine, now)  # replaces, never duplicates
    header = store.load_state(STATE_RULES)
    assert header is not None and "history" not in header  # the records are rows
    assert len(list(store.load_rows(STATE_RULES))) == 2
    restored = RuleEngine.from_dict(header, rules, miners, records=store.load_rows(STATE_RULES))
    assert restored.to_dict() == json.loads(json.dumps(engine.to_dict(), allow_nan=False))
    # A state file written as one document (earlier versions) is still read.
    old = RuleEngine.from_dict(json.loads(json.dumps(engine.to_dict())), rules, miners)
    assert old.to_dict() == restored.to_dict()
    with pytest.raises(ValueError):
        RuleEngine.from_dict({"version": 1, "history_records": 99}, rules, miners, records=[])
    store._db.execute("UPDATE state_rows SET value = '{broken' WHERE name = 'm2'")
    with pytest.raises(StoreError, match="record 'm2' of 'rules' is corrupt"):
        RuleEngine.from_dict(header, rules, miners, records=store.load_rows(STATE_RULES))
    store.close()


# --------------------------------------------------------------------------- field replies


@pytest.mark.skipif(not FIXTURES, reason=f"field replies not found at {FIXTURE_DIR}")
@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_field_replies_run_through_the_default_rules(path: Path) -> None:
    data = json.loads(path.read_text())
    rules = load_rule_file(default_rules_path())
    engine = RuleEngine(rules, [miner(path.stem, "192.0.2.1")])
    for i in range(3):
        at = T0 + i * STEP
        answer = build_snapshot(data["replies"], name=path.stem, host="192.0.2.1", port=4028, at=at)
        evaluation = engine.observe([answer], at)
        assert ("MinerUnreachable", path.stem) in evaluation.evaluated
        assert ("DeviceDead", path.stem) in evaluation.evaluated
        for signal in evaluation.signals:
            assert signal.labels["miner"] == path.stem and signal.value
