"""Remediation: the pure planner with a hand-driven clock, the executor on real sockets.

Planner tests build alerts and snapshots by hand (snapshots through ``build_snapshot`` from
small reply dicts) and move ``now`` themselves: no sockets, no sleeping. Executor tests run
against the simulator on loopback and against small helper programs in ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgwatchdog.actions import (
    ACCEPTING_WITHIN_S,
    READ_ONLY_PROBE_INTERVAL_S,
    REMEDIATION_DENIED,
    REMEDIATION_FAILED,
    SAFE_PATH,
    SAFEGUARDS,
    TRANSITIONS,
    ActionEvent,
    ActionEventKind,
    ActionExecutor,
    ActionOutcome,
    ActionPlanner,
    Busy,
    Candidate,
    Capabilities,
    Exhausted,
    LadderEvent,
    LadderState,
    PlanContext,
    PlannedAction,
    hold_busy,
    hold_condition_gone,
    hold_cooldown,
    hold_exhausted,
    hold_fleet_incident,
    hold_hourly_cap,
    hold_in_flight,
    hold_read_only,
    hold_restart_grace,
)
from cgwatchdog.actions.planner import BUSY_RETRY_S
from cgwatchdog.alerts import (
    Alert,
    AlertEngine,
    AlertState,
    Evaluation,
    Judged,
    Signal,
    fingerprint,
    fleet_incidents,
)
from cgwatchdog.config import ActionsConfig, MinerConfig, RuleBase
from cgwatchdog.errors import FailureKind
from cgwatchdog.firmware import FAMILIES, Channel
from cgwatchdog.firmware.families.cgminer import device_command
from cgwatchdog.poller import Poller
from cgwatchdog.rules import rule_config
from cgwatchdog.simulator import FakeClock, Fleet, make_scenario, serve
from cgwatchdog.snapshot import PollResult, Snapshot, Unreachable, build_snapshot

T0 = 1_800_000_000.0
MINUTE = 60.0
HOUR = 3600.0


# --- builders ---------------------------------------------------------------------------


def actions_config(**values: Any) -> ActionsConfig:
    base: dict[str, Any] = {
        "dry_run": False,
        "cooldown": "15m",
        "max_per_miner_per_hour": 3,
        "max_in_flight": 5,
        "restart_grace": "5m",
    }
    base.update(values)
    return ActionsConfig.model_validate(base)


def rule(name: str, type_: str, actions: Sequence[Mapping[str, Any]], **extra: Any) -> RuleBase:
    return rule_config({"name": name, "type": type_, "actions": list(actions), **extra})


DEVICE_DEAD = rule(
    "DeviceDead",
    "device_status",
    [
        {"do": "restart", "verify_within": "3m"},
        {
            "do": "exec",
            "argv": ["/usr/local/bin/pdu-cycle", "{{ labels.miner }}"],
            "verify_within": "5m",
        },
    ],
)
POOL_STALE = rule("PoolStale", "pool_stale", [{"do": "switchpool"}])
HASHRATE_DROP = rule("HashrateDrop", "hashrate_drop", [{"do": "restart", "after": "20m"}])


def miner(name: str, host: str = "192.0.2.10", port: int = 4028, **labels: str) -> MinerConfig:
    return MinerConfig(name=name, host=host, port=port, labels=labels)


def fleet_of(n: int, prefix: str = "m") -> dict[str, MinerConfig]:
    return {f"{prefix}{i:03d}": miner(f"{prefix}{i:03d}", site="north") for i in range(n)}


def alert(
    miner_name: str,
    alertname: str = "DeviceDead",
    *,
    fired_at: float = T0,
    last_seen: float | None = None,
    state: AlertState = AlertState.FIRING,
    **labels: str,
) -> Alert:
    all_labels = {
        "site": "north",
        "alertname": alertname,
        "miner": miner_name,
        "severity": "critical",
    }
    all_labels.update(labels)
    if alertname == "DeviceDead" and "device" not in labels:
        all_labels["device"] = "ASC1"
    return Alert(
        fingerprint=fingerprint(all_labels),
        labels=all_labels,
        annotations={},
        value="Dead",
        state=state,
        active_since=fired_at - 2 * MINUTE,
        fired_at=fired_at,
        resolved_at=None,
        last_seen=fired_at if last_seen is None else last_seen,
        for_s=2 * MINUTE,
        keep_firing_for_s=0.0,
    )


def seen(a: Alert, now: float) -> Alert:
    """The condition is true at ``now`` (the engine refreshed last_seen)."""
    a.last_seen = now
    return a


def snapshot(
    name: str,
    at: float,
    *,
    elapsed: float = 7 * 86400,
    devices: Iterable[tuple[str, int, str, bool]] = (
        ("ASC", 0, "Alive", True),
        ("ASC", 1, "Dead", True),
    ),
    pools: Iterable[tuple[int, str, int, bool]] = ((0, "Alive", 0, True), (1, "Alive", 1, False)),
) -> Snapshot:
    """A miner's Snapshot from minimal cgminer replies (devices: kind, id, status, enabled;
    pools: id, status, priority, stratum active)."""

    def status(code: int, msg: str) -> list[dict[str, Any]]:
        return [
            {
                "STATUS": "S",
                "When": int(at),
                "Code": code,
                "Msg": msg,
                "Description": "cgminer 4.11.1",
            }
        ]

    devs = [
        {
            kind: number, "Name": "GSF", "ID": number, "Enabled": "Y" if enabled else "N",
            "Status": status_, "MHS 5s": 400_000.0 if status_ == "Alive" else 0.0,
        }
        for kind, number, status_, enabled in devices
    ]  # fmt: skip
    pool_rows = [
        {
            "POOL": pid, "URL": f"stratum+tcp://pool{pid}.example.org:3333", "Status": status_,
            "Priority": priority, "Stratum Active": active, "Accepted": 10, "Last Share Time": 0,
        }
        for pid, status_, priority, active in pools
    ]  # fmt: skip
    replies = {
        "summary": {
            "STATUS": status(11, "Summary"),
            "SUMMARY": [{"Elapsed": elapsed, "MHS 5s": 800_000.0}],
        },
        "devs": {"STATUS": status(9, "1 ASC(s)"), "DEVS": devs},
        "pools": {"STATUS": status(7, "3 Pool(s)"), "POOLS": pool_rows},
    }
    return build_snapshot(replies, name=name, host="192.0.2.10", port=4028, at=at)


def outcome(
    action: PlannedAction, now: float, *, ok: bool = True, detail: str = "", **kw: Any
) -> ActionOutcome:
    return ActionOutcome(action, ok, detail or ("done" if ok else "failed"), now, now, **kw)


def run(planner: ActionPlanner, action: PlannedAction, now: float, **kw: Any) -> None:
    """What the daemon does with a planned action, with the executor's result given."""
    planner.started(action, now)
    planner.finished(outcome(action, now, **kw), now)


def kinds(events: Iterable[ActionEvent]) -> list[str]:
    return [e.kind.value for e in events]


class Driver:
    """One planner driven cycle by cycle the way the daemon will: verify, then plan."""

    def __init__(
        self,
        settings_: ActionsConfig,
        rules: Sequence[RuleBase],
        miners: Mapping[str, MinerConfig],
    ) -> None:
        self.planner = ActionPlanner(settings_, rules)
        self.miners = dict(miners)
        self.capabilities: Callable[[str], Capabilities] | None = None

    def cycle(
        self,
        now: float,
        alerts: Sequence[Alert],
        results: Iterable[PollResult] = (),
        *,
        incidents: Iterable[str] = (),
        evaluated: Iterable[tuple[str, str]] | None = None,
    ) -> list[PlannedAction]:
        by_name = {r.name: r for r in results}
        judged = None if evaluated is None else set(evaluated)
        self.planner.verify(by_name, alerts, now, evaluated=judged)
        return self.planner.plan(
            alerts,
            by_name,
            fleet_incidents=set(incidents),
            miners=self.miners,
            now=now,
            capabilities=self.capabilities,
        )


# --- the state machine as data ----------------------------------------------------------


def test_ladder_table_reaches_every_state_and_rejects_unknown_moves() -> None:
    reached = {LadderState.IDLE}
    frontier = [LadderState.IDLE]
    while frontier:
        for target in TRANSITIONS[frontier.pop()].values():
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(LadderState)
    # Every kept state can end (the alert resolves): nothing is stuck forever.
    assert all(
        TRANSITIONS[s][LadderEvent.RESOLVED] is LadderState.IDLE
        for s in set(LadderState) - {LadderState.IDLE}
    )
    with pytest.raises(ValueError, match="no ladder transition"):
        TRANSITIONS.next(LadderState.EXHAUSTED, LadderEvent.PLANNED)


# --- the safeguard stages, alone ---------------------------------------------------------


def candidate(**changes: Any) -> Candidate:
    values: dict[str, Any] = {
        "miner": "m1", "alertname": "DeviceDead", "fingerprint": "f", "step": 0, "do": "restart",
        "escalation": False, "dry_run": False, "condition_seen": True,
    }  # fmt: skip
    values.update(changes)
    return Candidate(**values)


def test_stages_alone() -> None:
    cfg = actions_config(cooldown="15m", max_per_miner_per_hour=2, max_in_flight=2)
    now = T0
    empty = PlanContext(now=now, settings=cfg)
    assert all(stage(candidate(), empty) is None for stage in SAFEGUARDS)

    history = {"m1": [(now - 10 * MINUTE, False)]}
    ctx = PlanContext(now=now, settings=cfg, history=history)
    hold = hold_cooldown(candidate(), ctx)
    assert hold is not None and hold.kind == "cooldown" and "10m ago (cooldown 15m)" in hold.reason
    assert hold_cooldown(candidate(escalation=True), ctx) is None  # escalations skip it
    # A pretend (dry-run) action does not hold a real one back, but does hold dry ones.
    dry_history = {"m1": [(now - 10 * MINUTE, True)]}
    ctx = PlanContext(now=now, settings=cfg, history=dry_history)
    assert hold_cooldown(candidate(), ctx) is None
    assert hold_cooldown(candidate(dry_run=True), ctx) is not None

    two = {"m1": [(now - 59 * MINUTE, False), (now - 20 * MINUTE, False)]}
    ctx = PlanContext(now=now, settings=cfg, history=two)
    hold = hold_hourly_cap(candidate(escalation=True), ctx)
    assert hold is not None and hold.kind == "hourly_cap"
    ctx = PlanContext(now=now + MINUTE, settings=cfg, history=two)  # the first left the hour
    assert hold_hourly_cap(candidate(), ctx) is None

    ctx = PlanContext(now=now, settings=cfg, in_flight=2)
    assert hold_in_flight(candidate(), ctx) is not None
    assert hold_in_flight(candidate(dry_run=True), ctx) is None

    ctx = PlanContext(now=now, settings=cfg, incidents={"DeviceDead": 0.97})
    hold = hold_fleet_incident(candidate(), ctx)
    assert hold is not None and hold.reason == "fleet incident: DeviceDead on 97% of the fleet"
    assert hold_fleet_incident(candidate(alertname="PoolStale"), ctx) is None

    ctx = PlanContext(now=now, settings=cfg, busy={"m1": Busy("ascdisable|1, verifying", True)})
    assert hold_busy(candidate(), ctx) is None  # only a dry run is in progress
    assert hold_busy(candidate(dry_run=True), ctx) is not None

    ctx = PlanContext(now=now, settings=cfg, exhausted={"m1": Exhausted("DeviceDead", True)})
    assert hold_exhausted(candidate(alertname="PoolStale"), ctx) is not None
    ctx = PlanContext(now=now, settings=cfg, read_only={"m1"})
    hold = hold_read_only(candidate(), ctx)
    assert hold is not None and "--api-allow" in hold.reason

    assert hold_condition_gone(candidate(condition_seen=False), empty) is not None
    # An escalation waits too when the miner answered and the condition is gone (the step
    # before worked late), but not when the miner is silent (power-cycling it is the point).
    gone = candidate(condition_seen=False, escalation=True)
    assert hold_condition_gone(gone, empty) is not None
    assert (
        hold_condition_gone(
            candidate(condition_seen=False, escalation=True, miner_answered=False), empty
        )
        is None
    )

    ctx = PlanContext(now=now, settings=cfg, restarted_at={"m1": now - MINUTE})
    assert hold_restart_grace(candidate(), ctx) is not None
    young = snapshot("m1", now, elapsed=90)
    ctx = PlanContext(now=now, settings=cfg, results={"m1": young})
    hold = hold_restart_grace(candidate(), ctx)
    assert hold is not None and "started 1m30s ago" in hold.reason
    assert hold_restart_grace(candidate(escalation=True), ctx) is None


# --- planning -----------------------------------------------------------------------------


def test_after_is_measured_from_fired_at_and_needs_the_condition_now() -> None:
    d = Driver(actions_config(), [HASHRATE_DROP], fleet_of(10))
    a = alert("m001", "HashrateDrop", fired_at=T0)
    assert d.cycle(T0, [a]) == []
    now = T0 + 20 * MINUTE - 1
    assert d.cycle(now, [seen(a, now)]) == []
    now = T0 + 20 * MINUTE
    a.last_seen = now - 30  # still firing, but the condition was not seen this cycle
    assert d.cycle(now, [a]) == []
    events = d.planner.events()
    assert kinds(events) == ["held-back"] and "not seen this cycle" in events[0].detail
    (action,) = d.cycle(now + 30, [seen(a, now + 30)])
    assert (action.miner, action.do, action.pool, action.device) == ("m001", "restart", None, None)
    assert action.alertname == "HashrateDrop" and action.alert_fingerprint == a.fingerprint
    assert "firing for 20m" in action.reason and not action.dry_run


def test_cooldown_between_two_alerts_on_one_miner_logged_once() -> None:
    stale = rule("PoolStale", "pool_stale", [{"do": "switchpool", "pool": 2}])
    d = Driver(
        actions_config(cooldown="15m", restart_grace="1m"), [DEVICE_DEAD, stale], fleet_of(10)
    )
    dead = alert("m001")
    (restart,) = d.cycle(T0, [dead])
    run(d.planner, restart, T0)
    d.cycle(T0 + 2 * MINUTE, [])  # DeviceDead resolved: its ladder ends
    pool = alert("m001", "PoolStale", fired_at=T0 + 5 * MINUTE, pool="0")
    d.planner.events()
    for minute in range(5, 15):
        now = T0 + minute * MINUTE
        assert d.cycle(now, [seen(pool, now)]) == []
    held = [e for e in d.planner.events() if e.kind is ActionEventKind.HELD_BACK]
    assert len(held) == 1  # once per reason, not once per cycle
    assert held[0].detail == "cooldown: last action on this miner 5m ago (cooldown 15m)"
    now = T0 + 15 * MINUTE
    (switch,) = d.cycle(now, [seen(pool, now)])
    assert (switch.do, switch.pool, switch.describe()) == ("switchpool", 2, "switchpool 2")


def test_hourly_cap_is_a_sliding_hour() -> None:
    d = Driver(
        actions_config(cooldown="0s", max_per_miner_per_hour=2, restart_grace="0s"),
        [DEVICE_DEAD],
        fleet_of(10),
    )
    planned_at: list[float] = []
    for minute in range(0, 75, 5):
        now = T0 + minute * MINUTE
        a = alert("m001", fired_at=now)  # resolved and fired anew every 5 minutes
        for action in d.cycle(now, [a]):
            planned_at.append(now)
            run(d.planner, action, now)
    assert [t - T0 for t in planned_at] == [0, 5 * MINUTE, 60 * MINUTE, 65 * MINUTE]


def test_escalation_skips_the_cooldown_but_not_the_hourly_cap() -> None:
    for cap, expect_exec in ((1, False), (2, True)):
        d = Driver(
            actions_config(cooldown="15m", max_per_miner_per_hour=cap), [DEVICE_DEAD], fleet_of(10)
        )
        a = alert("m001")
        (restart,) = d.cycle(T0, [a], [snapshot("m001", T0)])
        run(d.planner, restart, T0)
        now = T0 + 3 * MINUTE  # verify_within: the miner never restarted
        planned = d.cycle(now, [seen(a, now)], [snapshot("m001", now, elapsed=7 * 86400 + 180)])
        events = d.planner.events()
        assert "escalated" in kinds(events)
        if expect_exec:
            (exec_,) = planned
            assert exec_.do == "exec" and exec_.step == 1
        else:
            assert planned == []
            held = [e for e in events if e.kind is ActionEventKind.HELD_BACK]
            assert "max_per_miner_per_hour 1" in held[-1].detail


def test_max_in_flight_is_fleet_wide_oldest_first() -> None:
    miners = fleet_of(100)
    d = Driver(actions_config(max_in_flight=3), [DEVICE_DEAD], miners)
    alerts = [alert(f"m{i:03d}", fired_at=T0 - i, last_seen=T0) for i in range(10)]  # m009 first
    planned = d.cycle(T0, alerts)
    assert [a.miner for a in planned] == ["m009", "m008", "m007"]
    assert d.cycle(T0 + 30, [seen(a, T0 + 30) for a in alerts]) == []  # planned, not finished
    for action in planned:
        run(d.planner, action, T0 + 31)
    now = T0 + MINUTE  # m009 came back restarted and its device alive
    results = [
        snapshot(
            "m009", now, elapsed=25, devices=(("ASC", 0, "Alive", True), ("ASC", 1, "Alive", True))
        )
    ]
    alerts[9].last_seen = T0 + 30
    current = [seen(a, now) if a.miner != "m009" else a for a in alerts]
    more = d.cycle(now, current, results, evaluated=[("DeviceDead", "m009")])
    assert kinds(d.planner.events()).count("verified") == 1
    assert [a.miner for a in more] == ["m006"]


def test_dry_run_global_and_per_rule() -> None:
    miners = fleet_of(100)
    d = Driver(actions_config(dry_run=True, max_in_flight=2), [DEVICE_DEAD], miners)
    alerts = [alert(f"m{i:03d}") for i in range(6)]
    planned = d.cycle(T0, alerts)
    assert len(planned) == 6 and all(a.dry_run for a in planned)  # never in flight
    events = d.planner.events()
    assert kinds(events) == ["planned"] * 6 and all(e.dry_run for e in events)

    per_rule = [
        rule("DeviceDead", "device_status", [{"do": "restart", "dry_run": True}]),
        rule("PoolStale", "pool_stale", [{"do": "switchpool", "pool": 1}]),
    ]
    d = Driver(actions_config(), per_rule, miners)
    planned = d.cycle(T0, [alert("m001"), alert("m002", "PoolStale")])
    assert [(a.miner, a.dry_run) for a in planned] == [("m001", True), ("m002", False)]
    # A rule cannot switch a global dry run off.
    forced = [rule("DeviceDead", "device_status", [{"do": "restart", "dry_run": False}])]
    d = Driver(actions_config(dry_run=True), forced, miners)
    (action,) = d.cycle(T0, [alert("m001")])
    assert action.dry_run


def test_dry_run_ladder_runs_through_without_a_remediation_failed_notice() -> None:
    d = Driver(actions_config(dry_run=True), [DEVICE_DEAD], fleet_of(10))
    a = alert("m001")
    (restart,) = d.cycle(T0, [a], [snapshot("m001", T0)])
    run(d.planner, restart, T0)
    now = T0 + 3 * MINUTE
    (exec_,) = d.cycle(now, [seen(a, now)], [snapshot("m001", now)])
    assert exec_.dry_run and exec_.argv == ("/usr/local/bin/pdu-cycle", "m001")
    run(d.planner, exec_, now)
    now += 5 * MINUTE
    assert d.cycle(now, [seen(a, now)], [snapshot("m001", now)]) == []
    assert "exhausted" in kinds(d.planner.events())
    assert d.planner.signals(now) == []  # nothing was really tried


def test_fleet_incident_holds_back_every_action_and_logs_it_once() -> None:
    miners = fleet_of(100)
    d = Driver(actions_config(), [DEVICE_DEAD], miners)
    alerts = [alert(name) for name in miners]
    incidents = fleet_incidents(alerts, len(miners), d.planner.settings.fleet_incident_share)
    assert incidents == {"DeviceDead"}
    for minute in range(10):
        now = T0 + minute * MINUTE
        assert d.cycle(now, [seen(a, now) for a in alerts], incidents=incidents) == []
    events = d.planner.events()
    assert len(events) == 1 and events[0].kind is ActionEventKind.HELD_BACK
    assert events[0].miner == "" and events[0].detail.startswith(
        "fleet incident: DeviceDead on 100% of the fleet"
    )
    # The pool came back for all but two: those two are repaired one by one now.
    now = T0 + 10 * MINUTE
    left = [seen(a, now) for a in alerts[:2]]
    incidents = fleet_incidents(left, len(miners), 0.3)
    assert incidents == set()
    assert [a.miner for a in d.cycle(now, left, incidents=incidents)] == ["m000", "m001"]


def test_ladder_escalates_restart_to_exec_after_failed_verification() -> None:
    d = Driver(actions_config(), [DEVICE_DEAD], fleet_of(10))
    a = alert("m001")
    (restart,) = d.cycle(T0, [a], [snapshot("m001", T0)])
    d.planner.started(restart, T0 + 1)
    assert d.planner.held_miners(T0 + 2) == {"m001"}
    d.planner.finished(outcome(restart, T0 + 1, detail="STATUS RESTART"), T0 + 1)
    for minute in (1, 2):  # within verify_within: waiting for the effect
        now = T0 + minute * MINUTE
        assert d.cycle(now, [seen(a, now)], [snapshot("m001", now)]) == []
    now = T0 + 3 * MINUTE + 1
    (exec_,) = d.cycle(now, [seen(a, now)], [snapshot("m001", now)])
    events = d.planner.events()
    escalated = next(e for e in events if e.kind is ActionEventKind.ESCALATED)
    assert "restart not verified within 3m: Elapsed did not go down" in escalated.detail
    assert (exec_.do, exec_.step, exec_.pool, exec_.device) == ("exec", 1, None, None)
    assert exec_.argv == ("/usr/local/bin/pdu-cycle", "m001")
    assert exec_.env["CGWATCHDOG_LABEL_MINER"] == "m001"
    assert exec_.env["CGWATCHDOG_LABEL_DEVICE"] == "ASC1"
    assert exec_.env["CGWATCHDOG_LABEL_SITE"] == "north"
    assert exec_.env["CGWATCHDOG_HOST"] == "192.0.2.10" and exec_.env["CGWATCHDOG_PORT"] == "4028"
    assert "PATH" not in exec_.env  # the executor adds its own
    assert exec_.reason.startswith(
        "step 1/2: restart not verified within 3m"
    ) and exec_.reason.endswith("; step 2/2 exec")


def test_escalation_power_cycles_a_silent_miner_but_waits_for_a_recovered_one() -> None:
    d = Driver(actions_config(), [DEVICE_DEAD], fleet_of(10))
    a = alert("m001")
    (restart,) = d.cycle(T0, [a], [snapshot("m001", T0)])
    # The connection dropped after the request: maybe restarted; verification decides.
    run(d.planner, restart, T0, ok=False, detail="connection reset mid-reply", unconfirmed=True)
    assert d.planner.ladders()[0].state is LadderState.VERIFYING
    now = T0 + 3 * MINUTE  # the restart hung the miner: it does not answer at all
    hung = Unreachable("m001", "192.0.2.10", 4028, now, "connection refused", FailureKind.REFUSED)
    (exec_,) = d.cycle(now, [a], [hung])
    assert exec_.do == "exec"
    assert "restart not verified within 3m: the miner did not answer" in exec_.reason

    d = Driver(actions_config(), [DEVICE_DEAD], fleet_of(10))
    (restart,) = d.cycle(T0, [a], [snapshot("m001", T0)])
    run(d.planner, restart, T0)
    now = T0 + 3 * MINUTE  # it answers, did not restart, and the device is fine again
    assert d.cycle(now, [a], [snapshot("m001", now)]) == []
    held = [e for e in d.planner.events() if e.kind is ActionEventKind.HELD_BACK]
    assert len(held) == 1 and "not seen this cycle" in held[0].detail
    now += MINUTE  # ... until the condition is back
    (exec_,) = d.cycle(now, [seen(a, now)], [snapshot("m001", now)])
    assert exec_.do == "exec"


def exhaust(d: Driver, a: Alert) -> float:
    """Drive ``a``'s ladder (restart, exec) to exhaustion; returns the time it happened."""
    (restart,) = d.cycle(T0, [a], [snapshot(a.miner, T0)])
    run(d.planner, restart, T0)
    now = T0 + 3 * MINUTE
    (exec_,) = d.cycle(now, [seen(a, now)], [snapshot(a.miner, now)])
    run(d.planner, exec_, now, ok=False, detail="exit status 1: PDU unreachable")
    return now


def test_exhaustion_notifies_once_and_never_loops() -> None:
    d = Driver(actions_config(max_per_miner_per_hour=100), [DEVICE_DEAD, POOL_STALE], fleet_of(10))
    a = alert("m001")
    now = exhaust(d, a)
    events = d.planner.events()
    exhausted = [e for e in events if e.kind is ActionEventKind.EXHAUSTED]
    assert len(exhausted) == 1 and "PDU unreachable" in exhausted[0].detail
    (signal,) = d.planner.signals(now)
    assert signal.labels == {
        "alertname": REMEDIATION_FAILED, "severity": "critical", "original_alertname": "DeviceDead",
        "miner": "m001", "device": "ASC1", "site": "north",
    }  # fmt: skip
    assert signal.value == (
        "restart not verified within 3m: Elapsed did not go down; "
        "exec /usr/local/bin/pdu-cycle m001 failed: exit status 1: PDU unreachable"
    )

    # Through the alert engine: one RemediationFailed alert, fired once, for ten hours.
    engine = AlertEngine()
    pool = alert("m001", "PoolStale", fired_at=now, pool="0")
    fired = 0
    for step in range(1, 120):
        t = now + step * 5 * MINUTE
        current = [seen(a, t), seen(pool, t)]
        assert d.cycle(t, current, [snapshot("m001", t)]) == []
        evaluation = d.planner.with_signals(Evaluation([], set()), d.miners, t)
        fired += sum(1 for tr in engine.update(evaluation, t) if tr.new is AlertState.FIRING)
    assert fired == 1 and len(engine.firing()) == 1
    held = [e for e in d.planner.events() if e.kind is ActionEventKind.HELD_BACK]
    assert [e.alertname for e in held] == ["PoolStale"]
    assert held[0].detail.startswith("every remediation step for DeviceDead on this miner failed")

    # The alert resolves: the ladder ends, the notice resolves, actions may start again.
    t = now + 11 * HOUR
    d.cycle(t, [])
    assert d.planner.signals(t) == []
    engine.update(d.planner.with_signals(Evaluation([], set()), d.miners, t), t)
    assert engine.firing() == []


def test_clear_lets_an_operator_restart_the_ladder() -> None:
    d = Driver(actions_config(), [DEVICE_DEAD], fleet_of(10))
    a = alert("m001")
    now = exhaust(d, a) + 20 * MINUTE
    assert d.cycle(now, [seen(a, now)], [snapshot("m001", now)]) == []
    d.planner.clear("m001", now)
    assert d.planner.signals(now) == []
    assert "cleared" in kinds(d.planner.events())
    now += MINUTE
    (again,) = d.cycle(now, [seen(a, now)], [snapshot("m001", now)])
    assert again.do == "restart" and again.step == 0


def test_read_only_miner_one_denied_signal_no_retries_until_it_accepts() -> None:
    stale = rule("PoolStale", "pool_stale", [{"do": "switchpool", "pool": 1}])
    d = Driver(
        actions_config(cooldown="0s", restart_grace="0s"), [DEVICE_DEAD, stale], fleet_of(10)
    )
    dead = alert("m001")
    (restart,) = d.cycle(T0, [dead])
    detail = "'restart' refused: Code 45: Access denied ... add W:10.0.0.5 to its --api-allow"
    run(d.planner, restart, T0, ok=False, detail=detail, access_denied=True)
    assert d.planner.read_only_miners() == {"m001"}
    assert d.planner.held_miners(T0) == set()  # refused: it did not restart, no grace
    pool = alert("m001", "PoolStale", fired_at=T0 + MINUTE, pool="0")
    for minute in range(1, 15):
        now = T0 + minute * MINUTE
        assert d.cycle(now, [seen(dead, now), seen(pool, now)]) == []
        (signal,) = d.planner.signals(now)
        assert signal.labels == {
            "alertname": REMEDIATION_DENIED, "miner": "m001", "severity": "warning", "site": "north"
        }  # fmt: skip
        assert "W:10.0.0.5" in signal.value
    # Once a probe interval has passed, the channel's harmless check asks again.
    now = T0 + READ_ONLY_PROBE_INTERVAL_S
    (probe,) = d.cycle(now, [seen(dead, now), seen(pool, now)])
    assert (probe.do, probe.pool, probe.device) == ("probe", None, None)
    run(d.planner, probe, now, ok=False, detail=detail, access_denied=True)
    assert len(d.planner.signals(now)) == 1
    now += MINUTE
    assert d.cycle(now, [seen(dead, now), seen(pool, now)]) == []  # the next probe waits
    now += READ_ONLY_PROBE_INTERVAL_S
    (probe,) = d.cycle(now, [seen(dead, now), seen(pool, now)])
    run(d.planner, probe, now, detail="STATUS S, Code 46: Privileged access OK")
    assert d.planner.signals(now) == [] and d.planner.read_only_miners() == set()
    assert "access-restored" in kinds(d.planner.events())
    now += MINUTE
    (restart_again,) = d.cycle(now, [seen(dead, now), seen(pool, now)])
    assert (restart_again.do, restart_again.step, restart_again.alertname) == (
        "restart",
        0,
        "DeviceDead",
    )


def test_reload_forgets_read_only_marks_and_keeps_counters() -> None:
    d = Driver(actions_config(cooldown="15m", restart_grace="0s"), [DEVICE_DEAD], fleet_of(10))
    dead = alert("m001")
    (restart,) = d.cycle(T0, [dead])
    run(d.planner, restart, T0, ok=False, detail="denied", access_denied=True)
    d.planner.configure(actions_config(cooldown="15m", restart_grace="0s"), [DEVICE_DEAD])
    assert d.planner.signals(T0) == [] and d.planner.read_only_miners() == set()
    now = T0 + 5 * MINUTE
    assert d.cycle(now, [seen(dead, now)]) == []  # the cooldown survived the reload
    assert "cooldown" in d.planner.events()[-1].detail
    # Changed steps: the ladder starts again from its (new) first step.
    new_rule = rule("DeviceDead", "device_status", [{"do": "disable"}])
    d.planner.configure(actions_config(cooldown="0s"), [new_rule])
    (disable,) = d.cycle(now, [seen(dead, now)])
    assert (disable.do, disable.device) == ("disable", "ASC1")
    d.planner.configure(actions_config(), [])  # no more actions: ladders end
    assert d.planner.ladders() == []


def cgminer_capabilities(name: str) -> Capabilities:
    family = FAMILIES["cgminer"]
    return Capabilities("cgminer", lambda do, device: family.why_not(do, None, device), 120.0, 0.0)


@pytest.mark.parametrize(
    ("do", "device", "command"),
    [
        ("disable", "ASC1", ("ascdisable", "1")),
        ("disable", "PGA0", ("pgadisable", "0")),
        ("disable", "GPU2", ("gpudisable", "2")),
        ("enable", "ASC1", ("ascenable", "1")),
        ("disable", "BOARD6", "not supported by cgminer: BOARD6 is a board only STATS describes"),
        ("disable", "CPU0", "CPU devices cannot be disabled"),
        ("enable", "", "has none"),
    ],
)
def test_device_steps_the_family_can_and_cannot_take(
    do: str, device: str, command: tuple[str, str] | str
) -> None:
    d = Driver(actions_config(), [rule("DeviceDead", "device_status", [{"do": do}])], fleet_of(10))
    d.capabilities = cgminer_capabilities
    a = alert("m001", device=device)
    if not device:
        del a.labels["device"]
    planned = d.cycle(T0, [a])
    if isinstance(command, tuple):
        (action,) = planned
        assert (action.do, action.device) == (do, device)
        assert device_command(do, device) == command  # how the cgminer channel sends it
        return
    assert planned == []
    events = d.planner.events()
    assert kinds(events) == ["skipped", "exhausted"] and command in events[0].detail
    assert d.planner.signals(T0) == []  # nothing was tried: no RemediationFailed


def test_switchpool_picks_the_best_other_alive_pool() -> None:
    d = Driver(actions_config(), [POOL_STALE], fleet_of(10))
    pools = (
        (0, "Alive", 0, True),
        (1, "Dead", 1, False),
        (3, "Alive", 3, False),
        (2, "Alive", 2, False),
    )
    a = alert("m001", "PoolStale", pool="0")
    (switch,) = d.cycle(T0, [a], [snapshot("m001", T0, pools=pools)])
    assert (switch.do, switch.pool) == ("switchpool", 2)
    run(d.planner, switch, T0)
    now = T0 + MINUTE
    moved = (
        (0, "Alive", 0, False),
        (1, "Dead", 1, False),
        (3, "Alive", 3, False),
        (2, "Alive", 2, True),
    )
    d.cycle(now, [seen(a, now)], [snapshot("m001", now, pools=moved)])
    assert "verified" in kinds(d.planner.events())

    # No other Alive pool: switchpool cannot help; the ladder ends without a notice.
    d = Driver(actions_config(), [POOL_STALE], fleet_of(10))
    lonely = ((0, "Alive", 0, True), (1, "Dead", 1, False))
    assert d.cycle(T0, [a], [snapshot("m001", T0, pools=lonely)]) == []
    events = d.planner.events()
    assert kinds(events) == ["skipped", "exhausted"] and "no other Alive pool" in events[0].detail
    # Pools unknown (the miner did not answer): wait, do not guess.
    d = Driver(actions_config(), [POOL_STALE], fleet_of(10))
    gone = Unreachable("m001", "192.0.2.10", 4028, T0, "connection refused", FailureKind.REFUSED)
    assert d.cycle(T0, [a], [gone]) == []
    assert kinds(d.planner.events()) == ["held-back"]


def test_verified_restart_holds_the_miner_then_ends_with_its_alert() -> None:
    d = Driver(actions_config(), [DEVICE_DEAD], fleet_of(10))
    a = alert("m001")
    (restart,) = d.cycle(T0, [a], [snapshot("m001", T0)])
    run(d.planner, restart, T0)
    now = T0 + 30  # the miner is back: Elapsed 20 s, every device Alive
    back = snapshot(
        "m001", now, elapsed=20, devices=(("ASC", 0, "Alive", True), ("ASC", 1, "Alive", True))
    )
    events = d.planner.verify({"m001": back}, [a], now, evaluated={("DeviceDead", "m001")})
    assert kinds(events) == ["verified"]
    assert d.planner.ladders()[0].state is LadderState.VERIFIED
    assert d.planner.held_miners(now) == {"m001"}
    assert d.planner.held_miners(T0 + 5 * MINUTE) == set()
    # While held the alert keeps firing (restart grace); nothing more is done.
    for minute in range(1, 6):
        t = T0 + minute * MINUTE
        assert d.cycle(t, [a], [back], evaluated={("DeviceDead", "m001")}) == []
    d.cycle(T0 + 6 * MINUTE, [])
    assert d.planner.ladders() == [] and "ended" in kinds(d.planner.events())


def test_a_restart_judged_before_the_rule_ran_is_not_verified() -> None:
    # The miner answered but the rule was not judged (e.g. hashrate_drop's startup grace).
    d = Driver(actions_config(), [DEVICE_DEAD], fleet_of(10))
    a = alert("m001")
    (restart,) = d.cycle(T0, [a], [snapshot("m001", T0)])
    run(d.planner, restart, T0)
    now = T0 + 30
    back = snapshot("m001", now, elapsed=20)
    assert d.planner.verify({"m001": back}, [a], now, evaluated=set()) == []
    assert d.planner.ladders()[0].state is LadderState.VERIFYING


def test_condition_back_after_a_verified_restart_escalates() -> None:
    d = Driver(actions_config(), [DEVICE_DEAD], fleet_of(10))
    a = alert("m001")
    (restart,) = d.cycle(T0, [a], [snapshot("m001", T0)])
    run(d.planner, restart, T0)
    now = T0 + 30
    d.cycle(now, [a], [snapshot("m001", now, elapsed=20)], evaluated={("DeviceDead", "m001")})
    assert "verified" in kinds(d.planner.events())
    now = T0 + 90  # the device died again while the alert still fires
    (exec_,) = d.cycle(now, [seen(a, now)], [snapshot("m001", now, elapsed=80)])
    assert exec_.do == "exec"
    assert "the condition came back after restart" in d.planner.events()[0].detail


def test_an_action_without_outcome_is_judged_by_its_effect_after_a_daemon_restart() -> None:
    d = Driver(actions_config(), [DEVICE_DEAD], fleet_of(10))
    a = alert("m001")
    (restart,) = d.cycle(T0, [a], [snapshot("m001", T0)])
    d.planner.started(restart, T0)  # ... and the daemon is killed before finished()
    saved = json.loads(json.dumps(d.planner.to_dict()))
    d.planner = ActionPlanner.from_dict(saved, actions_config(), [DEVICE_DEAD])
    now = T0 + 30
    assert d.cycle(now, [a], [snapshot("m001", now, elapsed=25)]) == []  # still "running"
    now = T0 + restart.timeout_s + 61
    back = snapshot("m001", now, elapsed=now - T0 - 5, devices=(("ASC", 1, "Alive", True),))
    assert d.cycle(now, [a], [back], evaluated={("DeviceDead", "m001")}) == []
    events = d.planner.events()
    assert kinds(events) == ["failed", "verified"] and "no outcome" in events[0].detail


def test_plan_is_deterministic_whatever_the_input_order() -> None:
    miners = fleet_of(50)
    alerts = [alert(name, fired_at=T0 - (i % 7), last_seen=T0) for i, name in enumerate(miners)]
    alerts += [
        alert(name, "PoolStale", fired_at=T0 - 3, last_seen=T0, pool="0")
        for name in list(miners)[:20]
    ]
    results = [snapshot(name, T0) for name in miners]
    outputs = []
    for seed in range(3):
        shuffled = alerts[:]
        random.Random(seed).shuffle(shuffled)
        d = Driver(actions_config(max_in_flight=12), [DEVICE_DEAD, POOL_STALE], miners)
        outputs.append([a.to_dict() for a in d.cycle(T0, shuffled, results)])
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0]) == 12


def test_exec_argv_template_errors_skip_the_step() -> None:
    broken = rule(
        "DeviceDead", "device_status", [{"do": "exec", "argv": ["/bin/x", "{{ labels.rack }}"]}]
    )
    d = Driver(actions_config(), [broken], fleet_of(10))
    assert d.cycle(T0, [alert("m001")]) == []
    events = d.planner.events()
    assert kinds(events) == ["skipped", "exhausted"]
    assert "argv template failed: UndefinedError" in events[0].detail


def script(d: Driver, start: int, stop: int) -> list[Any]:
    """A fixed story of cycles (indexes start..stop-1): what the planner says in each."""
    a = alert("m001")
    b = alert("m002", "PoolStale", fired_at=T0 + 2 * MINUTE, pool="0")
    said: list[Any] = []
    for i in range(start, stop):
        now = T0 + i * MINUTE
        current = [seen(a, now)] + ([seen(b, now)] if i >= 2 else [])
        results = [snapshot("m001", now), snapshot("m002", now)]
        planned = d.cycle(now, current, results)
        for action in planned:
            run(d.planner, action, now, ok=action.do != "exec", detail=f"cycle {i}")
        said.append(
            ([p.to_dict() for p in planned], [(e.kind, e.detail) for e in d.planner.events()])
        )
        said.append([s.labels for s in d.planner.signals(now)])
    return said


def test_to_dict_from_dict_mid_ladder_continues_identically() -> None:
    miners = fleet_of(10)
    straight = Driver(actions_config(), [DEVICE_DEAD, POOL_STALE], miners)
    whole = script(straight, 0, 12)
    resumed = Driver(actions_config(), [DEVICE_DEAD, POOL_STALE], miners)
    first = script(resumed, 0, 2)  # the restart verifying, PoolStale not yet firing
    data = json.loads(json.dumps(resumed.planner.to_dict()))
    resumed.planner = ActionPlanner.from_dict(data, actions_config(), [DEVICE_DEAD, POOL_STALE])
    assert resumed.planner.to_dict() == data
    assert first + script(resumed, 2, 12) == whole
    assert '"state": "exhausted"' in json.dumps(straight.planner.to_dict())
    with pytest.raises(ValueError):
        ActionPlanner.from_dict({"version": 99}, actions_config(), [])
    with pytest.raises(ValueError):
        ActionPlanner.from_dict({"version": 1, "ladders": [{"bad": 1}]}, actions_config(), [])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=10, max_value=900),  # seconds to the next cycle
            st.lists(st.booleans(), min_size=4, max_size=4),  # each miner's alert firing?
            st.sampled_from(["ok", "fail", "unconfirmed"]),
            st.booleans(),  # the miner restarted (Elapsed small) this cycle
        ),
        min_size=1,
        max_size=40,
    )
)
def test_safeguards_hold_whatever_happens(steps: list[tuple[int, list[bool], str, bool]]) -> None:
    cfg = actions_config(
        cooldown="10m", max_per_miner_per_hour=3, max_in_flight=2, restart_grace="2m"
    )
    d = Driver(cfg, [DEVICE_DEAD], fleet_of(20))
    names = [f"m{i:03d}" for i in range(4)]
    fired: dict[str, float | None] = dict.fromkeys(names)
    real: dict[str, list[float]] = {n: [] for n in names}
    now = T0
    for gap, firing, result, restarted in steps:
        now += gap
        alerts = []
        for name, on in zip(names, firing, strict=True):
            if not on:
                fired[name] = None
                continue
            fired[name] = fired[name] or now
            alerts.append(alert(name, fired_at=fired[name] or now, last_seen=now))
        results = [snapshot(n, now, elapsed=30 if restarted else 7 * 86400) for n in names]
        planned = d.cycle(now, alerts, results)
        assert len({p.miner for p in planned}) == len(planned)  # one at a time per miner
        in_flight = sum(
            1
            for v in d.planner.ladders()
            if v.state in (LadderState.RUNNING, LadderState.VERIFYING)
        )
        assert in_flight <= cfg.max_in_flight
        for action in planned:
            history = real[action.miner]
            assert sum(1 for t in history if t > now - HOUR) < cfg.max_per_miner_per_hour
            if action.step == 0 and history:
                assert now - history[-1] >= cfg.cooldown_s
            history.append(now)
            run(d.planner, action, now, ok=result == "ok", unconfirmed=result == "unconfirmed")
        assert len(d.planner.signals(now)) == sum(
            1 for v in d.planner.ladders() if v.state is LadderState.EXHAUSTED
        )


# --- the executor, on real sockets and processes ------------------------------------------


def planned(miner_name: str, what: str, **kw: Any) -> PlannedAction:
    values: dict[str, Any] = {
        "miner": miner_name, "alert_fingerprint": "0" * 16, "alertname": "Test", "step": 0,
        "do": what, "pool": None, "device": None, "argv": None, "env": {},
        "timeout_s": 5.0, "dry_run": False, "reason": "test",
    }  # fmt: skip
    values.update(kw)
    return PlannedAction(**values)


def exec_action(*argv: str, timeout_s: float = 10.0) -> PlannedAction:
    return planned("m1", "exec", do="exec", argv=argv, timeout_s=timeout_s)


def cgminer_channel(miner: MinerConfig, timeout_s: float) -> Channel:
    """What the watchdog gives the executor for a miner recognised as cgminer."""
    family = FAMILIES["cgminer"]
    return family.channel(family.target(miner, timeout_s=timeout_s, connect_timeout_s=0.5))


def executor(clock: Callable[[], float] = time.time, **kw: Any) -> ActionExecutor:
    return ActionExecutor(cgminer_channel, clock=clock, **kw)


def as_miner(member: Any) -> MinerConfig:
    host, port = member.address
    return MinerConfig(name=member.name, host=host, port=port)


async def poll(poller: Poller) -> Snapshot:
    (result,) = await poller.poll()
    assert isinstance(result, Snapshot), result
    return result


async def test_restart_revives_a_device_dead_miner_and_is_verified() -> None:
    clock = FakeClock(T0)
    fleet = Fleet.build(
        1, make_scenario("device_dead", fail_after_s=0), flavours=("cgminer",), listen="127.66.1.1",
        base_port=0, clock=clock, restart_downtime_s=1.0, uptime_s=7200.0,
    )  # fmt: skip
    async with serve(fleet):
        member = fleet[0]
        cfg = as_miner(member)
        poller = Poller([cfg], timeout=2.0, connect_timeout=0.5, clock=clock)
        before = await poll(poller)
        assert before.elapsed_s == 7200 and [d.status for d in before.devices] == [
            "Alive",
            "Dead",
            "Alive",
        ]
        d = Driver(actions_config(), [DEVICE_DEAD], {cfg.name: cfg})
        a = alert(cfg.name, fired_at=clock())
        (restart,) = d.cycle(clock(), [a], [before])
        d.planner.started(restart, clock())
        result = await executor(clock).execute(restart, cfg)
        d.planner.finished(result, clock())
        assert result.ok and result.detail == "STATUS RESTART" and member.miner.restarts == 1
        clock.advance(2.0)
        await fleet.sync()
        after = await poll(poller)
        assert after.elapsed_s is not None and after.elapsed_s <= 2
        assert [d.status for d in after.devices] == ["Alive", "Alive", "Alive"]
        events = d.planner.verify(
            {cfg.name: after}, [a], clock(), evaluated={("DeviceDead", cfg.name)}
        )
        assert kinds(events) == ["verified"]


def test_a_busy_session_waits_doubling_and_uses_neither_cooldown_nor_cap() -> None:
    # cooldown 15m, max 3 per hour: five busy tries within the hour would exhaust both
    # if they counted; nothing was done by them, so they do not.
    d = Driver(actions_config(), [DEVICE_DEAD], fleet_of(1))
    a = alert("m000", fired_at=T0)
    now, tries, held = T0, [], []
    for _ in range(200):  # 100 minutes of 30 s cycles
        planned = d.cycle(now, [seen(a, now)], [snapshot("m000", now)])
        held += [e.detail for e in d.planner.events() if e.kind is ActionEventKind.HELD_BACK]
        if planned:
            (action,) = planned
            tries.append(now - T0)
            run(d.planner, action, now, ok=False, retry=len(tries) <= 3)
            if len(tries) == 4:
                break
        now += 30
    # Tried at once, then after 1, 2 and 4 minutes (BUSY_RETRY_S doubling): the fourth
    # try is the restart itself, not held by a cooldown the busy tries never started.
    assert tries == [0, BUSY_RETRY_S, 3 * BUSY_RETRY_S, 7 * BUSY_RETRY_S]
    assert any("control session is busy" in h for h in held), held


def test_switchpool_never_picks_a_pool_the_family_excludes() -> None:
    # VNish lists its dev-fee pool among the miner's pools: never a repair's target.
    vnish = FAMILIES["vnish"]
    d = Driver(actions_config(), [POOL_STALE], fleet_of(10))
    d.capabilities = lambda name: Capabilities("vnish", why_not_pool=vnish.why_not_pool)
    before = snapshot("m001", T0, pools=((0, "Alive", 0, True), (1, "Dead", 1, False)))
    dev_fee = dataclasses.replace(before.pools[1], url="DevFee", user="DevFee", status="Alive")
    a = alert("m001", "PoolStale", pool="0")
    only_dev_fee = dataclasses.replace(before, pools=(before.pools[0], dev_fee))
    assert d.cycle(T0, [a], [only_dev_fee]) == []
    assert "no other Alive pool" in d.planner.events()[0].detail
    # Without the family's word, the same pool would have been picked.
    d = Driver(actions_config(), [POOL_STALE], fleet_of(10))
    (switch,) = d.cycle(T0, [a], [only_dev_fee])
    assert switch.pool == 1


def test_switchpool_is_verified_by_url_where_the_firmware_renumbers_its_pools() -> None:
    # Braiins OS and LuxOS rewrite the pool list with the target first: the new active
    # pool is id 0 again, and only its URL shows the switch.
    for still_on_old_pool in (False, True):
        d = Driver(actions_config(), [POOL_STALE], fleet_of(10))
        a = alert("m001", "PoolStale", pool="0")
        before = snapshot("m001", T0)
        (switch,) = d.cycle(T0, [a], [before])
        assert (switch.do, switch.pool) == ("switchpool", 1)
        run(d.planner, switch, T0)
        now = T0 + MINUTE
        old, target = before.pools
        first = old if still_on_old_pool else target
        second = target if still_on_old_pool else old
        rewritten = (
            dataclasses.replace(first, id=0, active=True),
            dataclasses.replace(second, id=1, active=False),
        )
        after = dataclasses.replace(snapshot("m001", now), pools=rewritten)
        d.cycle(now, [seen(a, now)], [after])
        if still_on_old_pool:
            assert "verified" not in kinds(d.planner.events())
        else:
            assert "verified" in kinds(d.planner.events())


async def test_switchpool_changes_the_active_pool() -> None:
    clock = FakeClock(T0)
    fleet = Fleet.build(
        1, make_scenario("pool_stale", fail_after_s=0), flavours=("cgminer",),
        listen="127.66.2.1", base_port=0, clock=clock,
    )  # fmt: skip
    async with serve(fleet):
        cfg = as_miner(fleet[0])
        poller = Poller([cfg], timeout=2.0, connect_timeout=0.5, clock=clock)
        clock.advance(ACCEPTING_WITHIN_S + 60)  # pool 0 has accepted nothing since
        before = await poll(poller)
        assert before.active_pool is not None and before.active_pool.id == 0
        d = Driver(actions_config(), [POOL_STALE], {cfg.name: cfg})
        a = alert(cfg.name, "PoolStale", fired_at=clock(), pool="0")
        (switch,) = d.cycle(clock(), [a], [before])
        assert (switch.do, switch.pool) == ("switchpool", 1)
        result = await executor(clock).execute(switch, cfg)
        assert result.ok and "Code 27" in result.detail
        d.planner.finished(result, clock())
        clock.advance(30)
        after = await poll(poller)
        assert after.active_pool is not None and after.active_pool.id == 1
        assert kinds(d.planner.verify({cfg.name: after}, [a], clock())) == ["verified"]


async def test_ascdisable_then_ascenable_reinitialises_a_dead_board() -> None:
    clock = FakeClock(T0)
    fleet = Fleet.build(
        1, make_scenario("device_dead", fail_after_s=0), flavours=("cgminer",),
        listen="127.66.3.1", base_port=0, clock=clock,
    )  # fmt: skip
    ladder = rule("DeviceDead", "device_status", [{"do": "disable"}, {"do": "enable"}])
    async with serve(fleet):
        cfg = as_miner(fleet[0])
        poller = Poller([cfg], timeout=2.0, connect_timeout=0.5, clock=clock)
        run_it = executor(clock)
        d = Driver(actions_config(), [ladder], {cfg.name: cfg})
        a = alert(cfg.name, fired_at=clock())
        (disable,) = d.cycle(clock(), [a], [await poll(poller)])
        assert (disable.do, disable.device) == ("disable", "ASC1")
        result = await run_it.execute(disable, cfg)
        assert result.ok and result.detail == "STATUS I, Code 111: ASC 1 set disable flag"
        d.planner.finished(result, clock())
        clock.advance(30)
        seen(a, clock())
        snap = await poll(poller)
        assert not snap.devices[1].enabled
        (enable,) = d.cycle(clock(), [a], [snap])  # verified, and the pair goes on
        assert (enable.do, enable.device) == ("enable", "ASC1")
        assert "disable ASC1 verified, the enable follows" in enable.reason
        result = await run_it.execute(enable, cfg)
        d.planner.finished(result, clock())
        clock.advance(30)
        snap = await poll(poller)
        assert snap.devices[1].enabled and snap.devices[1].status == "Alive"
        events = d.planner.verify(
            {cfg.name: snap}, [a], clock(), evaluated={("DeviceDead", cfg.name)}
        )
        assert kinds(events) == ["verified"]


async def test_read_only_miner_gives_an_access_denied_outcome() -> None:
    clock = FakeClock(T0)
    fleet = Fleet.build(
        1, "read_only", flavours=("cgminer",), listen="127.66.4.1", base_port=0, clock=clock
    )
    async with serve(fleet):
        cfg = as_miner(fleet[0])
        d = Driver(actions_config(), [DEVICE_DEAD], {cfg.name: cfg})
        (restart,) = d.cycle(clock(), [alert(cfg.name, fired_at=clock())])
        result = await executor(clock).execute(restart, cfg)
        assert not result.ok and result.access_denied and not result.unconfirmed
        assert "Code 45" in result.detail and "add W:127.0.0.1 to its --api-allow" in result.detail
        assert fleet[0].miner.restarts == 0
        d.planner.finished(result, clock())
        (signal,) = d.planner.signals(clock())
        assert signal.labels["alertname"] == REMEDIATION_DENIED and "W:127.0.0.1" in signal.value


async def test_dry_run_and_unreachable_miner() -> None:
    clock = FakeClock(T0)
    fleet = Fleet.build(1, flavours=("cgminer",), listen="127.66.5.1", base_port=0, clock=clock)
    async with serve(fleet):
        cfg = as_miner(fleet[0])
        result = await executor(clock).execute(planned(cfg.name, "restart", dry_run=True), cfg)
        assert result.ok and result.detail.startswith("dry run: would restart")
        assert fleet[0].connections == 0 and fleet[0].miner.restarts == 0
        await fleet.down(cfg.name)
        result = await executor(clock).execute(planned(cfg.name, "restart"), cfg)
        assert not result.ok and "connection refused" in result.detail and not result.unconfirmed
        await fleet.hang(cfg.name)
        result = await executor(clock).execute(planned(cfg.name, "restart", timeout_s=0.2), cfg)
        # Connected, then no reply: the restart may have happened; verification decides.
        assert not result.ok and result.unconfirmed


DUMP_SCRIPT = """\
import json, os, sys
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump({"argv": sys.argv[2:], "env": dict(os.environ)}, out)
print("dumped", len(sys.argv) - 2, "arguments")
"""

NASTY = [
    "; rm -rf /",
    "$(id)",
    "`id`",
    "*",
    "'single' \"double\"",
    "line1\nline2\n",
    "a b  c\t",
    "| cat /etc/passwd && echo pwned > /tmp/x",
    "${HOME} ~ \\",
    "ünïcödé ✓",
    "",
]


async def test_exec_passes_argv_and_env_byte_for_byte_without_a_shell(tmp_path: Path) -> None:
    helper = tmp_path / "dump.py"
    helper.write_text(DUMP_SCRIPT)
    out = tmp_path / "out.json"
    argv = [
        sys.executable,
        str(helper),
        str(out),
        "{{ labels.miner }}",
        "{{ labels.site }}",
        *NASTY,
    ]
    exec_rule = rule(
        "DeviceDead", "device_status", [{"do": "exec", "argv": argv, "timeout": "10s"}]
    )
    name = "rack 1; $(reboot)"
    cfg = MinerConfig(name=name, host="192.0.2.7", port=4028)
    d = Driver(actions_config(), [exec_rule], {name: cfg})
    a = alert(name, site="north & 'south'")
    (action,) = d.cycle(T0, [a])
    assert action.argv == (sys.executable, str(helper), str(out), name, "north & 'south'", *NASTY)
    result = await executor().execute(action, cfg)
    assert result.ok, result.detail
    assert result.detail == f"dumped {len(NASTY) + 2} arguments"
    dumped = json.loads(out.read_text(encoding="utf-8"))
    assert dumped["argv"] == [name, "north & 'south'", *NASTY]
    env = dumped["env"]
    env.pop("LC_CTYPE", None)  # Python's own C-locale coercion (PEP 538) in the child
    assert env == {"PATH": SAFE_PATH, **action.env}
    assert (
        env["CGWATCHDOG_LABEL_MINER"] == name and env["CGWATCHDOG_LABEL_SITE"] == "north & 'south'"
    )
    assert env["CGWATCHDOG_ALERTNAME"] == "DeviceDead" and env["CGWATCHDOG_HOST"] == "192.0.2.7"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


SLEEPER_SCRIPT = """\
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(sys.argv[1], "w") as out:
    out.write(f"{os.getpid()} {child.pid}")
print("started", flush=True)
time.sleep(60)
"""


async def test_exec_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    helper = tmp_path / "sleeper.py"
    helper.write_text(SLEEPER_SCRIPT)
    pids = tmp_path / "pids"
    action = exec_action(sys.executable, str(helper), str(pids), timeout_s=1.5)
    result = await executor(kill_grace_s=0.2).execute(action, miner("m1"))
    assert (
        not result.ok and "timed out after 1.5s; killed its process group: started" in result.detail
    )
    parent, child = (int(p) for p in pids.read_text().split())
    for _ in range(200):  # SIGKILL is sent; its delivery is the kernel's, not instant
        if not alive(parent) and not alive(child):
            break
        await asyncio.sleep(0.005)
    assert not alive(parent) and not alive(child)


async def test_exec_failures_are_outcomes(tmp_path: Path) -> None:
    run_exec = executor()
    missing = exec_action(str(tmp_path / "nope"))
    result = await run_exec.execute(missing, miner("m1"))
    assert not result.ok and "cannot run" in result.detail and "No such file" in result.detail
    failing = exec_action(sys.executable, "-c", "import sys; print('PDU says no'); sys.exit(3)")
    result = await run_exec.execute(failing, miner("m1"))
    assert not result.ok and result.detail.endswith("exit status 3: PDU says no")


def test_signals_flow_through_the_alert_engine_like_any_signal() -> None:
    d = Driver(actions_config(), [DEVICE_DEAD], fleet_of(10))
    now = exhaust(d, alert("m001"))
    rule_signal = Signal({"alertname": "TooHot", "miner": "m002"}, {}, "90")
    merged = d.planner.with_signals(
        Evaluation([rule_signal], {("TooHot", "m002")}, {"m003"}), d.miners, now
    )
    assert [s.labels["alertname"] for s in merged.signals] == ["TooHot", REMEDIATION_FAILED]
    assert ("RemediationFailed", "m009") in merged.evaluated and (
        "TooHot",
        "m002",
    ) in merged.evaluated
    assert merged.held_miners == {"m003"}
    # The rule engine's Judged is widened, not copied into a set, and holds the same pairs.
    judged = d.planner.with_signals(
        Evaluation([rule_signal], Judged({"m002": ("TooHot",)}), {"m003"}), d.miners, now
    )
    assert isinstance(judged.evaluated, Judged) and judged.evaluated == merged.evaluated
