"""Remediation end to end: the simulator, the whole cycle and the action safeguards.

As in test_scenarios, real sockets and a FakeClock moved 30 s per cycle by hand.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cgwatchdog.alerts import Notification
from cgwatchdog.config.loader import load_config
from cgwatchdog.notify import Outbox
from cgwatchdog.simulator import FakeClock, Fleet
from cgwatchdog.store import Store
from cgwatchdog.watchdog import CycleReport, Watchdog

INTERVAL_S = 30.0
_subnets = itertools.count(120)


class Farm:
    def __init__(self, fleet: Fleet, watchdog: Watchdog, clock: FakeClock) -> None:
        self.fleet, self.watchdog, self.clock = fleet, watchdog, clock
        self.reports: list[CycleReport] = []

    async def cycles(self, count: int) -> None:
        for _ in range(count):
            self.clock.advance(INTERVAL_S)
            await self.fleet.sync()
            self.reports.append(await self.watchdog.cycle())

    def transitions(self, alertname: str) -> list[str]:
        return [
            t.new.name
            for r in self.reports
            for t in r.transitions
            if t.alert.alertname == alertname
        ]

    def notifications(self) -> list[Notification]:
        return [n for r in self.reports for n in r.notifications]

    def sent(self, command: str) -> int:
        return sum(m.commands.get(command, 0) for m in self.fleet.members)


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Any]:
    fleets: list[Fleet] = []

    async def make(n: int, scenario: str, rules: str, **options: Any) -> Farm:
        clock = FakeClock(1_800_000_000.0)
        options.setdefault("fail_after_s", 60.0)
        fleet = Fleet.build(
            n, scenario, flavours=["cgminer"], listen=f"127.0.{next(_subnets)}.1",
            base_port=0, clock=clock, scenario_options=options, restart_downtime_s=5.0,
        )  # fmt: skip
        await fleet.start()
        fleets.append(fleet)
        miners = "".join(
            f"  - {{name: {m.name}, host: {m.host}, port: {m.port}}}\n" for m in fleet.members
        )
        config = tmp_path / f"farm{len(fleets)}.yaml"
        config.write_text(
            "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
            f"state_dir: {tmp_path}\nminers:\n{miners}"
            "receivers: [{name: ops, webhook: {url: 'http://127.0.0.1:9/hook'}}]\n"
            "route: {receiver: ops, group_by: [alertname], group_wait: 30s,"
            " group_interval: 5m, repeat_interval: 4h}\n"
            "actions: {dry_run: false, cooldown: 15m, max_per_miner_per_hour: 3, max_in_flight: 5,"
            " restart_grace: 2m}\n" + rules
        )
        cfg = load_config(config)
        store = Store(tmp_path / f"farm{len(fleets)}.sqlite")
        outbox = Outbox(store, {}, clock=clock)
        return Farm(fleet, Watchdog(cfg, store=store, outbox=outbox, clock=clock), clock)

    yield make
    for fleet in fleets:
        await fleet.stop()


RESTART_RULE = """
rules:
  - name: DeviceDead
    type: device_status
    for: 1m
    severity: critical
    actions: [{do: restart, verify_within: 5m}]
"""


async def test_dead_device_restart_recovers_and_resolves_once(farm: Any) -> None:
    f = await farm(1, "device_dead", RESTART_RULE)
    await f.cycles(40)
    assert f.sent("restart") == 1
    assert f.fleet.members[0].miner.restarts == 1
    # Resolved once; 15 minutes later the resolved alert is forgotten (INACTIVE).
    assert f.transitions("DeviceDead") == ["PENDING", "FIRING", "RESOLVED", "INACTIVE"]
    statuses = [(n.status, len(n.alerts)) for n in f.notifications()]
    assert statuses == [("firing", 1), ("resolved", 1)]
    kinds = [e.kind.value for r in f.reports for e in r.action_events]
    assert "verified" in kinds and "succeeded" in kinds, kinds
    # Recorded in the store's action log, and announced to the alert's receiver.
    store = f.watchdog.store
    assert store is not None
    logged = [(a.action, a.outcome) for a in store.actions()]
    assert ("restart", "succeeded") in logged and ("restart", "verified") in logged
    queued = [item.payload for item in store.pending()]
    announced = [
        p for p in queued if p["alerts"][0]["labels"]["alertname"] == "RemediationAction"
    ]
    assert len(announced) == 1 and announced[0]["receiver"] == "ops"
    assert "restart" in announced[0]["alerts"][0]["annotations"]["summary"]


async def test_a_miner_that_does_not_recover_escalates_to_exec(
    farm: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "power-cycled.json"
    script = tmp_path / "pdu-cycle.py"
    script.write_text(
        "import json, os, sys\n"
        f"open({str(marker)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    rules = f"""
rules:
  - name: DeviceDead
    type: device_status
    for: 1m
    severity: critical
    actions:
      - {{do: restart, verify_within: 3m}}
      - {{do: exec, argv: [{sys.executable}, {script}, "{{{{ labels.miner }}}}", "a b; $(id)"],
          timeout: 10s, verify_within: 3m}}
"""
    f = await farm(1, "device_dead", rules, recovers_on_restart=False)
    await f.cycles(60)
    name = f.fleet.members[0].name
    assert f.sent("restart") == 1
    assert [json.loads(line) for line in marker.read_text().splitlines()] == [
        [name, "a b; $(id)"]
    ]
    # The ladder is spent: one RemediationFailed, then no more actions (no restart loop).
    assert f.transitions("RemediationFailed") in (["FIRING"], ["PENDING", "FIRING"])
    await f.cycles(60)
    assert f.sent("restart") == 1
    assert len(marker.read_text().splitlines()) == 1


async def test_fleet_wide_failure_restarts_nothing_and_notifies_once(farm: Any) -> None:
    f = await farm(100, "device_dead", RESTART_RULE)
    await f.cycles(12)
    assert f.sent("restart") == 0
    dead = [n for n in f.notifications() if n.group_labels.get("alertname") == "DeviceDead"]
    assert len(dead) == 1 and len(dead[0].alerts) == 100
    held = [e for r in f.reports for e in r.action_events if e.kind.value == "held-back"]
    assert any("fleet incident" in e.detail for e in held)


async def test_read_only_miner_gives_one_clear_notification(farm: Any) -> None:
    f = await farm(1, "device_dead", RESTART_RULE)
    f.fleet.members[0].miner.write_access = False
    await f.cycles(40)
    assert f.sent("restart") == 1  # tried once, refused, never again
    denied = [
        a for n in f.notifications() for a in n.alerts if a.labels["alertname"] == "RemediationDenied"
    ]
    assert len(denied) == 1
    text = " ".join(denied[0].annotations.values()) + denied[0].value
    assert "--api-allow" in text and "W:" in text


async def test_a_healthy_backup_pool_is_never_switched_away_from(farm: Any) -> None:
    """The demo case: pool 0 goes Dead, cgminer fails over to pool 1 (Alive, accepting
    shares). PoolStale fires on pool 0 as a warning, and its switchpool step waits: the
    miner is never moved off the working backup (the old planner sent switchpool|2)."""
    rules = Path(__file__).resolve().parent.parent / "rules" / "default.yaml"
    f = await farm(1, "pool_dead_failover", f"rule_files: [{rules}]\n", pool=0)
    miner = f.fleet.members[0].miner
    await f.cycles(50)  # 25 minutes: 10 for the share to age, the rule's 5m `for`, and more
    assert miner.active_pool(f.clock()) == 1
    assert f.sent("switchpool") == 0 and f.sent("restart") == 0
    (stale,) = [a for a in f.watchdog.alerts.alerts() if a.alertname == "PoolStale"]
    assert stale.state.name == "FIRING"
    assert stale.labels["pool"] == "0" and stale.labels["severity"] == "warning"
    held = [
        e.detail for r in f.reports for e in r.action_events if e.kind.value == "held-back"
    ]
    assert held == [
        "the miner already mines on pool 1 (Alive); pool 0 being down is a notice, not a repair"
    ]
