"""Every simulator scenario through the whole engine, with a fake clock.

A real TCP fleet (the simulator on 127.0.x addresses) is polled by the real poller; the
rules, the alert lifecycle and the dispatcher run on the same FakeClock, moved 30 s per
cycle by hand, so hours of history take a second. Each test asserts exactly which alerts
go pending, fire and resolve, with which labels.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cgwatchdog.alerts import AlertState
from cgwatchdog.client import AsyncCgminerAPI
from cgwatchdog.config.loader import load_config
from cgwatchdog.simulator import FakeClock, Fleet
from cgwatchdog.watchdog import Watchdog

INTERVAL_S = 30.0
FAIL_AFTER_S = 600.0  # ten minutes of healthy history first, for the hashrate baseline

RULES = """
rules:
  - {name: HashrateDrop, type: hashrate_drop, below: 80%, baseline: 10m, for: 2m}
  - {name: DeviceDead, type: device_status, status: [Dead, Sick, NoStart], for: 1m,
     severity: critical}
  - {name: HardwareErrorsRising, type: hardware_errors, above: 1%, window: 5m, for: 1m}
  - {name: PoolStale, type: pool_stale, no_accepted_share_for: 5m, stale_above: 50%,
     severity: critical}
  - {name: MinerUnreachable, type: unreachable, for: 1m, severity: critical}
  - {name: TooHot, type: threshold, field: temperature.max, above: 95, for: 1m}
"""

_subnets = itertools.count(60)


class Run:
    """A fleet, a watchdog on one FakeClock, and every transition seen, by cycle."""

    def __init__(self, fleet: Fleet, watchdog: Watchdog, clock: FakeClock) -> None:
        self.fleet = fleet
        self.watchdog = watchdog
        self.clock = clock
        self.start = clock()
        self.transitions: list[tuple[float, str, dict[str, str], str]] = []

    async def cycles(self, count: int) -> None:
        for _ in range(count):
            self.clock.advance(INTERVAL_S)
            await self.fleet.sync()
            report = await self.watchdog.cycle()
            for transition in report.transitions:
                alert = transition.alert
                labels = {
                    k: v for k, v in alert.labels.items() if k in ("device", "pool", "miner")
                }
                self.transitions.append(
                    (self.clock() - self.start, alert.alertname, labels, transition.new.name)
                )

    async def until(self, seconds: float) -> None:
        """Run cycles until ``seconds`` after the start."""
        while self.clock() - self.start + INTERVAL_S <= seconds:
            await self.cycles(1)

    def seen(self) -> list[tuple[str, dict[str, str], str]]:
        """(alertname, labels, new state) by time, then alertname within one cycle."""
        ordered = sorted(self.transitions, key=lambda t: (t[0], t[1]))
        return [(name, labels, state) for _, name, labels, state in ordered]

    def at(self, name: str, state: str) -> float:
        return next(t for t, n, _, s in self.transitions if n == name and s == state)

    def states(self) -> dict[str, str]:
        return {a.alertname: a.state.name for a in self.watchdog.alerts.alerts()}


@pytest.fixture
async def run_factory(tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Fleet] = []

    async def make(
        scenario: str, *, flavour: str = "cgminer", timeout_s: float = 2.0, **options: Any
    ) -> Run:
        clock = FakeClock(1_800_000_000.0)
        options.setdefault("fail_after_s", FAIL_AFTER_S)
        subnet = next(_subnets)
        fleet = Fleet.build(
            1, scenario, flavours=[flavour], listen=f"127.0.{subnet}.1", clock=clock,
            scenario_options=options, restart_downtime_s=5.0,
        )  # fmt: skip
        await fleet.start()
        started.append(fleet)
        member = fleet.members[0]
        config = tmp_path / f"{scenario}-{subnet}.yaml"
        config.write_text(
            f"poll: {{interval: 30s, timeout: {timeout_s}s, "
            f"connect_timeout: {min(timeout_s, 0.5)}s}}\n"
            f"state_dir: {tmp_path}\n"
            f"miners:\n  - {{name: {member.name}, host: {member.address[0]}, "
            f"labels: {{site: lab}}}}\n"
            f"actions: {{dry_run: false, restart_grace: 2m}}\n" + RULES
        )
        return Run(fleet, Watchdog(load_config(config), clock=clock), clock)

    yield make
    for fleet in started:
        await fleet.stop()


async def test_healthy_fleet_raises_nothing(run_factory: Any) -> None:
    run = await run_factory("healthy")
    await run.cycles(60)  # 30 minutes
    assert run.transitions == []
    assert run.watchdog.alerts.alerts() == []


@pytest.mark.parametrize(
    ("flavour", "device"), [("cgminer", "ASC1"), ("bfgminer", "PGA1"), ("bmminer", "BOARD7")]
)
async def test_device_dead_fires_then_resolves_after_a_restart(
    run_factory: Any, flavour: str, device: str
) -> None:
    run = await run_factory("device_dead", flavour=flavour)
    await run.until(FAIL_AFTER_S + 4 * 60)
    miner = run.fleet.members[0].name
    dead = {"miner": miner, "device": device}
    assert run.seen() == [
        ("DeviceDead", dead, "PENDING"),
        ("HashrateDrop", {"miner": miner}, "PENDING"),
        ("DeviceDead", dead, "FIRING"),
        ("HashrateDrop", {"miner": miner}, "FIRING"),
    ]
    assert run.at("DeviceDead", "FIRING") - run.at("DeviceDead", "PENDING") == 60
    assert run.at("HashrateDrop", "FIRING") - run.at("HashrateDrop", "PENDING") == 120

    # The repair an action would send: restart. The alerts hold through the grace,
    # then resolve once each.
    host, port = run.fleet.members[0].address
    await AsyncCgminerAPI(host, port).command("restart")
    restarted = run.clock() - run.start
    run.transitions.clear()
    await run.cycles(30)
    assert run.seen() == [
        ("DeviceDead", dead, "RESOLVED"),
        ("HashrateDrop", {"miner": miner}, "RESOLVED"),
    ]
    # restart_grace 2m: nothing resolves (or re-fires) inside it; the hashrate is not
    # judged during the miner's startup_grace (10m by default) and resolves after it.
    assert run.at("DeviceDead", "RESOLVED") - restarted >= 120
    assert run.at("HashrateDrop", "RESOLVED") - restarted >= 600


async def test_device_sick_is_caught_by_the_status_rule(run_factory: Any) -> None:
    run = await run_factory("device_sick")
    await run.until(FAIL_AFTER_S + 4 * 60)
    miner = run.fleet.members[0].name
    assert ("DeviceDead", {"miner": miner, "device": "ASC1"}, "FIRING") in run.seen()
    (alert,) = [a for a in run.watchdog.alerts.firing() if a.alertname == "DeviceDead"]
    assert alert.value == "Sick"


async def test_hashrate_drop_against_the_miners_own_baseline(run_factory: Any) -> None:
    run = await run_factory("hashrate_drop")
    await run.until(FAIL_AFTER_S + 10 * 60)
    miner = run.fleet.members[0].name
    assert run.seen() == [
        ("HashrateDrop", {"miner": miner}, "PENDING"),
        ("HashrateDrop", {"miner": miner}, "FIRING"),
    ]
    # The baseline is frozen at the drop: ten minutes later it still fires.
    assert run.states() == {"HashrateDrop": "FIRING"}
    (alert,) = run.watchdog.alerts.firing()
    assert "%" in alert.value and "H/s" in alert.value


async def test_hardware_errors_rising(run_factory: Any) -> None:
    run = await run_factory("hw_errors_rising")
    await run.until(FAIL_AFTER_S + 6 * 60)
    miner = run.fleet.members[0].name
    assert run.seen() == [
        ("HardwareErrorsRising", {"miner": miner}, "PENDING"),
        ("HardwareErrorsRising", {"miner": miner}, "FIRING"),
    ]


async def test_pool_stale_fires_on_the_active_pool(run_factory: Any) -> None:
    run = await run_factory("pool_stale")
    await run.until(FAIL_AFTER_S + 8 * 60)
    miner = run.fleet.members[0].name
    assert run.seen() == [("PoolStale", {"miner": miner, "pool": "0"}, "FIRING")]
    # switchpool (what the PoolStale action sends) repairs it.
    host, port = run.fleet.members[0].address
    await AsyncCgminerAPI(host, port).command("switchpool", 1)
    run.transitions.clear()
    await run.cycles(2)
    assert run.seen() == [("PoolStale", {"miner": miner, "pool": "0"}, "RESOLVED")]


async def test_pool_dead_failover_names_the_dead_primary(run_factory: Any) -> None:
    run = await run_factory("pool_dead_failover")
    await run.until(FAIL_AFTER_S + 3 * 60)
    miner = run.fleet.members[0].name
    assert run.seen() == [("PoolStale", {"miner": miner, "pool": "0"}, "FIRING")]
    (alert,) = run.watchdog.alerts.firing()
    assert "Dead" in alert.value or "fail" in alert.value


async def test_unreachable_fires_and_keeps_other_alerts(run_factory: Any) -> None:
    run = await run_factory("unreachable", duration_s=300.0)
    await run.until(FAIL_AFTER_S + 3 * 60)
    miner = run.fleet.members[0].name
    assert run.seen() == [
        ("MinerUnreachable", {"miner": miner}, "PENDING"),
        ("MinerUnreachable", {"miner": miner}, "FIRING"),
    ]
    assert run.at("MinerUnreachable", "FIRING") - run.at("MinerUnreachable", "PENDING") == 60
    (alert,) = run.watchdog.alerts.firing()
    assert "refused" in alert.value
    # It comes back after five minutes: the alert resolves once, nothing else moves.
    run.transitions.clear()
    await run.until(FAIL_AFTER_S + 10 * 60)
    assert run.seen() == [("MinerUnreachable", {"miner": miner}, "RESOLVED")]


async def test_flapping_shorter_than_for_never_fires(run_factory: Any) -> None:
    # The device is Dead for 60 s, Alive for 60 s, ...: with for: 1m it goes pending and
    # back, and never pages anyone.
    run = await run_factory("flapping", period_s=60.0)
    await run.until(FAIL_AFTER_S + 10 * 60)
    states = {state for name, _, state in run.seen() if name == "DeviceDead"}
    assert states == {"PENDING", "INACTIVE"}
    assert not any(state == "FIRING" for _, _, state in run.seen())


async def test_slow_miner_past_the_read_deadline_is_unreachable(run_factory: Any) -> None:
    run = await run_factory("slow", timeout_s=0.3, delay_s=1.0, fail_after_s=60.0)
    await run.until(60 + 2 * 60)
    miner = run.fleet.members[0].name
    assert run.seen() == [
        ("MinerUnreachable", {"miner": miner}, "PENDING"),
        ("MinerUnreachable", {"miner": miner}, "FIRING"),
    ]
    (alert,) = run.watchdog.alerts.firing()
    assert "within 0.3s" in alert.value


async def test_garbage_replies_count_as_unreachable(run_factory: Any) -> None:
    run = await run_factory("garbage", garbage="junk")
    await run.until(FAIL_AFTER_S + 2 * 60)
    miner = run.fleet.members[0].name
    assert run.seen() == [
        ("MinerUnreachable", {"miner": miner}, "PENDING"),
        ("MinerUnreachable", {"miner": miner}, "FIRING"),
    ]
    (alert,) = run.watchdog.alerts.firing()
    assert "unreadable reply" in alert.value


async def test_read_only_miner_is_healthy_but_refuses_restart(run_factory: Any) -> None:
    from cgwatchdog.errors import AccessDenied

    run = await run_factory("read_only")
    await run.cycles(30)
    assert run.transitions == []
    host, port = run.fleet.members[0].address
    with pytest.raises(AccessDenied, match="--api-allow"):
        await AsyncCgminerAPI(host, port).command("restart")


def test_alert_states_used_in_these_tests_exist() -> None:
    assert {s.name for s in AlertState} >= {"PENDING", "FIRING", "RESOLVED", "INACTIVE"}
