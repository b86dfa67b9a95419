"""The pipeline of one cycle (cgwatchdog/watchdog.py): poll -> rules -> alerts -> dispatch
-> save, then act.

The logic half (``Watchdog.evaluate``) is driven with snapshots built from replies and an
injected clock; ``cycle`` runs against the simulator over 127.0.0.1; the state file is a
real sqlite file (and a real second connection locks it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cgwatchdog.alerts import AlertState
from cgwatchdog.config import Config
from cgwatchdog.config.loader import load_config
from cgwatchdog.notify import Outbox
from cgwatchdog.simulator import FakeClock, Fleet, serve
from cgwatchdog.snapshot import PollResult, build_snapshot
from cgwatchdog.store import Store
from cgwatchdog.watchdog import STATE_ALERTS, STATE_DISPATCHER, Watchdog

T0 = 1_800_000_000.0
INTERVAL_S = 30.0


def config(tmp_path: Path, miners: str = "[{name: m1, host: 127.0.0.1}]", **extra: str) -> Config:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"poll: {{interval: 30s, timeout: 1s, connect_timeout: 0.5s}}\n"
        f"state_dir: {tmp_path}\n"
        f"miners: {miners}\n"
        "rules:\n"
        "  - {name: DeviceDead, type: device_status, status: [Dead], for: 1m, severity: critical}\n"
        "receivers: [{name: chat, webhook: {url: 'http://127.0.0.1:9/hook'}}]\n"
        "route: {receiver: chat, group_wait: 0s}\n"
        + "".join(f"{k}: {v}\n" for k, v in extra.items())
    )
    return load_config(path)


def devs(*statuses: str) -> dict[str, Any]:
    return {
        "summary": {"STATUS": [{"STATUS": "S"}], "SUMMARY": [{"Elapsed": 7200, "MHS 5s": 1e6}]},
        "devs": {
            "STATUS": [{"STATUS": "S"}],
            "DEVS": [
                {"ASC": i, "Name": "BTM", "ID": i, "Enabled": "Y", "Status": status, "MHS 5s": 5e5}
                for i, status in enumerate(statuses)
            ],
        },
    }


def snapshot(at: float, *statuses: str, name: str = "m1") -> PollResult:
    return build_snapshot(devs(*statuses), name=name, host="127.0.0.1", port=4028, at=at)


class Pipeline:
    """A Watchdog over a real store and outbox (no receivers are sent to: the outbox
    only queues), with a clock the test moves."""

    def __init__(self, cfg: Config, path: Path, *, timeout_s: float = 5.0) -> None:
        self.clock = FakeClock(T0)
        self.store = Store(path, timeout_s=timeout_s)
        self.outbox = Outbox(self.store, {}, clock=self.clock)
        self.watchdog = Watchdog(cfg, store=self.store, outbox=self.outbox, clock=self.clock)

    def step(self, *statuses: str) -> Any:
        report = self.watchdog.evaluate([snapshot(self.clock(), *statuses)], self.clock())
        self.watchdog.commit(report)
        self.clock.advance(INTERVAL_S)
        return report

    def queued(self) -> list[str]:
        return [
            f"{item.payload['status']}:{item.payload['alerts'][0]['labels']['alertname']}"
            for item in self.store.pending()
        ]

    def close(self) -> None:
        self.outbox.close()
        self.store.close()


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    made = Pipeline(config(tmp_path), tmp_path / "state.sqlite")
    yield made
    made.close()


def test_a_condition_goes_pending_fires_once_and_resolves(pipeline: Pipeline) -> None:
    assert pipeline.step("Alive", "Alive").transitions == []
    first = pipeline.step("Alive", "Dead")
    assert [(t.alert.alertname, t.new) for t in first.transitions] == [
        ("DeviceDead", AlertState.PENDING)
    ]
    assert first.notifications == [] and pipeline.queued() == []
    pipeline.step("Alive", "Dead")
    fired = pipeline.step("Alive", "Dead")  # 1m `for` after it went pending
    assert [t.new for t in fired.transitions] == [AlertState.FIRING]
    assert [n.status for n in fired.notifications] == ["firing"]
    assert pipeline.queued() == ["firing:DeviceDead"]
    for _ in range(5):
        assert pipeline.step("Alive", "Dead").notifications == []  # told once
    resolved = pipeline.step("Alive", "Alive")
    assert [t.new for t in resolved.transitions] == [AlertState.RESOLVED]
    for _ in range(10):  # the group's next flush, group_interval (5m) after the last
        pipeline.step("Alive", "Alive")
    assert pipeline.queued() == ["firing:DeviceDead", "resolved:DeviceDead"]


def test_alert_state_and_the_notification_log_survive_a_restart(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    for _ in range(4):
        pipeline.step("Dead")
    assert [a.state for a in pipeline.watchdog.alerts.alerts()] == [AlertState.FIRING]
    assert pipeline.store.load_state(STATE_ALERTS) is not None
    assert pipeline.store.load_state(STATE_DISPATCHER) is not None
    clock = pipeline.clock
    pipeline.close()

    again = Pipeline(config(tmp_path), tmp_path / "state.sqlite")
    again.clock.now = clock()
    try:
        assert [a.state for a in again.watchdog.alerts.alerts()] == [AlertState.FIRING]
        report = again.step("Dead")
        assert report.transitions == [] and report.notifications == []  # not sent twice
        assert again.queued() == ["firing:DeviceDead"]
    finally:
        again.close()


def test_a_locked_state_file_keeps_notifications_in_memory_until_it_works(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite"
    made = Pipeline(config(tmp_path), path, timeout_s=0.05)
    try:
        for _ in range(2):
            made.step("Dead")  # pending
        holder = sqlite3.connect(path, timeout=0.05, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another program (a backup) holds the file
        try:
            fired = made.step("Dead")
            assert [n.status for n in fired.notifications] == ["firing"]
            assert not made.watchdog.saved
            assert [n.status for n in made.watchdog.unsaved()] == ["firing"]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        made.step("Dead")  # the next commit queues what waited, once
        assert made.watchdog.saved and made.watchdog.unsaved() == []
        assert made.queued() == ["firing:DeviceDead"]
    finally:
        made.close()


def test_a_reload_without_the_miner_resolves_its_alerts(tmp_path: Path, pipeline: Pipeline) -> None:
    for _ in range(4):
        pipeline.step("Dead")
    pipeline.watchdog.configure(
        config(tmp_path, miners="[{name: m2, host: 127.0.0.2}]"), reload=True
    )
    assert [a.state for a in pipeline.watchdog.alerts.alerts()] == [AlertState.RESOLVED]


def test_a_watchdog_that_does_not_act_plans_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    rule = cfg.rules[0].model_copy(update={"actions": ()})
    acting = Watchdog(cfg.model_copy(update={"rules": (rule,)}), clock=FakeClock(T0))
    assert acting.evaluate([snapshot(T0, "Dead")], T0).planned == []
    path = tmp_path / "r.yaml"
    path.write_text(
        "miners: [{name: m1, host: 127.0.0.1}]\n"
        "rules: [{name: DeviceDead, type: device_status, status: [Dead],"
        " actions: [{do: restart}]}]\n"
    )
    clock = FakeClock(T0)
    follower = Watchdog(load_config(path), acting=False, clock=clock)
    assert follower.evaluate([snapshot(T0, "Dead")], T0).planned == []
    leader = Watchdog(load_config(path), clock=clock)
    assert [a.do for a in leader.evaluate([snapshot(T0, "Dead")], T0).planned] == ["restart"]


async def test_a_cycle_polls_the_fleet_and_reports_what_it_saw(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    fleet = Fleet.build(2, "healthy", listen="127.0.0.1", base_port=0, clock=clock)
    async with serve(fleet):
        miners = ", ".join(
            f"{{name: {m.name}, host: {m.host}, port: {m.port}}}" for m in fleet.members
        )
        cfg = config(tmp_path, miners=f"[{miners}, {{name: gone, host: 127.0.97.250}}]")
        watchdog = Watchdog(cfg, clock=clock)
        report = await watchdog.cycle()
    assert [r.name for r in report.results] == [m.name for m in fleet.members] + ["gone"]
    assert report.up == 2 and report.results[2].error_kind is not None
    assert report.evaluation.signals == [] and report.problems == []
    assert ("DeviceDead", fleet.members[0].name) in report.evaluation.evaluated
