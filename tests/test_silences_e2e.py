"""Silences end to end, without the daemon's wiring: the simulator over real sockets
(127.58.2.x), a Watchdog with a real state file and outbox, the silence API on a real
aiohttp server over the Watchdog's book, and the CLI talking to it; then a two-peer
cluster of Debian's ``prometheus-alertmanager`` (tests/clusterkit.py) sharing the
silences between two replicas' books.

The Watchdog runs on a FakeClock moved 30 s per cycle (as in test_remediation); the
Alertmanager part on the real clock, which Alertmanager uses.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cgwatchdog.actions import ActionEventKind
from cgwatchdog.config.loader import load_config
from cgwatchdog.errors import EXIT_OK
from cgwatchdog.notify import IntegrationContext, Outbox
from cgwatchdog.notify.receivers.alertmanager import (
    AlertmanagerConfig,
    AlertmanagerIntegration,
    silence_remote,
)
from cgwatchdog.silencecli import add_parsers
from cgwatchdog.silences import Matcher, SilenceBook
from cgwatchdog.simulator import FakeClock, Fleet
from cgwatchdog.store import Store
from cgwatchdog.watchdog import STATE_SILENCES, CycleReport, Watchdog
from tests.test_notify_alertmanager import ALERTMANAGER

INTERVAL_S = 30.0
TOKEN = "e2e-token-0123456789"
RULES = """
rules:
  - name: DeviceDead
    type: device_status
    for: 1m
    severity: critical
    actions: [{do: restart, verify_within: 5m}]
"""


def write_config(tmp_path: Path, fleet: Fleet) -> Path:
    miners = "".join(f"  - {{name: {m.name}, host: {m.host}, port: {m.port}}}\n" for m in fleet)
    path = tmp_path / "config.yaml"
    path.write_text(
        "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
        f"state_dir: {tmp_path}\nminers:\n{miners}"
        "receivers: [{name: ops, webhook: {url: 'http://127.0.0.1:9/hook'}}]\n"
        "route: {receiver: ops, group_by: [alertname, miner], group_wait: 30s,"
        " group_interval: 5m, repeat_interval: 4h}\n"
        "actions: {dry_run: false, cooldown: 15m, max_per_miner_per_hour: 3, restart_grace: 2m}\n"
        + RULES
    )
    return path


@dataclass
class Farm:
    """A Watchdog over the simulator with its state file, and the silence API over it."""

    fleet: Fleet
    config: Path
    state: Path
    clock: FakeClock
    reports: list[CycleReport] = field(default_factory=list)
    watchdog: Watchdog | None = None
    store: Store | None = None
    outbox: Outbox | None = None
    runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> None:
        """A fresh Watchdog on the state file (as after a restart), and its API."""
        self.store = Store(self.state)
        self.outbox = Outbox(self.store, {}, clock=self.clock)
        self.watchdog = Watchdog(
            load_config(self.config), store=self.store, outbox=self.outbox, clock=self.clock
        )
        from cgwatchdog.web.silence_api import routes

        app = web.Application()
        app.add_routes(
            routes(self.watchdog.silence_book, self.watchdog.acknowledge, self.clock, TOKEN)
        )
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.58.2.250", 0).start()
        self.url = f"http://127.58.2.250:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        """As the daemon stops: state saved, store closed, the API gone."""
        if self.runner is not None:
            await self.runner.cleanup()
        if self.watchdog is not None:
            self.watchdog.save(self.clock())
        if self.outbox is not None:
            self.outbox.close()
        if self.store is not None:
            self.store.close()

    async def cycles(self, count: int) -> None:
        assert self.watchdog is not None
        for _ in range(count):
            self.clock.advance(INTERVAL_S)
            await self.fleet.sync()
            self.reports.append(await self.watchdog.cycle())

    def notified(self, miner: str) -> list[str]:
        """The statuses of the notifications about ``miner``'s DeviceDead so far."""
        return [
            view.status
            for report in self.reports
            for n in report.notifications
            for view in n.alerts
            if view.labels.get("miner") == miner and view.labels.get("alertname") == "DeviceDead"
        ]

    def announced(self, miner: str) -> list[str]:
        """The actions announced to receivers about ``miner`` (queued in the outbox)."""
        assert self.store is not None
        return [
            view["labels"]["action"]
            for item in self.store.pending()
            for view in item.payload["alerts"]
            if view["labels"].get("alertname") == "RemediationAction"
            and view["labels"].get("miner") == miner
        ]

    def restarts(self, miner: str) -> int:
        return self.fleet[miner].commands.get("restart", 0)

    def held(self, miner: str) -> list[str]:
        return [
            e.detail
            for r in self.reports
            for e in r.action_events
            if e.miner == miner and e.kind is ActionEventKind.HELD_BACK
        ]

    def firing(self, miner: str) -> bool:
        assert self.watchdog is not None
        return any(a.miner == miner for a in self.watchdog.firing())


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Farm]:
    clock = FakeClock(1_800_000_000.0)
    fleet = Fleet.build(
        2, "device_dead", flavours=["cgminer"], listen="127.58.2.1", base_port=0,
        clock=clock, scenario_options={"fail_after_s": 90.0}, restart_downtime_s=5.0,
    )  # fmt: skip
    await fleet.start()
    made = Farm(fleet, write_config(tmp_path, fleet), tmp_path / "state.sqlite", clock)
    await made.start()
    yield made
    await made.stop()
    await fleet.stop()


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="cgwatchdog")
    add_parsers(parser.add_subparsers())
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


async def post(url: str, body: Any, token: str | None) -> int:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as response,
    ):
        return response.status


async def test_a_maintenance_silence_from_the_cli_holds_notifications_and_actions_across_a_restart(
    farm: Farm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "http-token"
    token_file.write_text(TOKEN)
    body = {
        "matchers": [{"name": "miner", "value": "sim-001"}],
        "duration": "4h",
        "comment": "x",
    }
    assert await post(farm.url + "/api/silences", body, None) == 401
    assert await post(farm.url + "/api/silences", body, "wrong") == 401
    code = await asyncio.to_thread(
        cli, "silence", "add", "miner=sim-001", "--for", "4h", "--comment", "board swap",
        "--maintenance", "--url", farm.url, "--token-file", str(token_file),
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == EXIT_OK, out.err
    silence_id = out.out.strip()

    await farm.cycles(12)  # both devices die at 90 s; DeviceDead fires a minute later
    assert farm.firing("sim-001") and farm.notified("sim-001") == []
    assert farm.restarts("sim-001") == 0
    assert any("in maintenance" in d and "board swap" in d for d in farm.held("sim-001"))
    # The other miner is told of and repaired as usual.
    assert farm.notified("sim-002")[:1] == ["firing"] and farm.restarts("sim-002") == 1

    # A restart: a new Watchdog (and API) on the same state file.
    await farm.stop()
    assert Store(farm.state).load_state(STATE_SILENCES) is not None
    await farm.start()
    assert farm.watchdog is not None
    assert farm.watchdog.silence_book.get(silence_id).maintenance
    assert await asyncio.to_thread(cli, "silence", "list", "--url", farm.url) == EXIT_OK
    assert silence_id[:8] in capsys.readouterr().out
    await farm.cycles(12)
    assert farm.firing("sim-001") and farm.notified("sim-001") == []
    assert farm.restarts("sim-001") == 0

    # Expired: the next flush tells of the firing alert, and the repair goes ahead.
    code = await asyncio.to_thread(
        cli, "silence", "expire", silence_id, "--url", farm.url, "--token-file", str(token_file)
    )
    assert code == EXIT_OK
    await farm.cycles(12)
    assert farm.notified("sim-001")[:1] == ["firing"]
    assert farm.restarts("sim-001") == 1


async def test_a_plain_silence_holds_the_notification_but_not_the_repair(farm: Farm) -> None:
    body = {
        "matchers": [{"name": "miner", "value": "sim-001"}, {"name": "alertname", "value": "Dev.*", "isRegex": True}],
        "duration": "4h",
        "comment": "known",
        "createdBy": "alice",
    }  # fmt: skip
    assert await post(farm.url + "/api/silences", body, TOKEN) == 200
    await farm.cycles(16)
    # Not maintenance: repaired, quietly (fired, restarted, resolved: nothing told, the
    # restart's announcement neither).
    assert farm.restarts("sim-001") == 1 and not farm.firing("sim-001")
    assert farm.notified("sim-001") == []
    assert farm.announced("sim-001") == [] and farm.announced("sim-002") != []
    assert farm.notified("sim-002")[:1] == ["firing"]


# --- the Alertmanager cluster ------------------------------------------------------------------

needs_alertmanager = pytest.mark.skipif(
    not os.access(ALERTMANAGER, os.X_OK),
    reason=f"{ALERTMANAGER} not found: apt-get install prometheus-alertmanager",
)


def peer_integration(url: str) -> AlertmanagerIntegration:
    config = AlertmanagerConfig.model_validate({"url": url, "timeout": "2s"})
    return AlertmanagerIntegration("cluster", config, IntegrationContext())


@needs_alertmanager
async def test_a_silence_made_through_one_replica_holds_on_the_other_through_the_cluster(
    tmp_path: Path,
) -> None:
    from tests.clusterkit import AlertmanagerCluster, Sink

    sink = Sink().start()
    cluster = AlertmanagerCluster.start(tmp_path, sink.base_url + "/am-hook", size=2)
    first = peer_integration(cluster.urls[0])
    second = peer_integration(cluster.urls[1])
    try:
        await cluster.formed()
        # Alertmanager starts a silence at its own now: the books read the same clock.
        clock = time.time
        # Each replica reaches a different peer: the silence crosses by gossip.
        a = SilenceBook(remote=silence_remote(first))
        b = SilenceBook(remote=silence_remote(second))
        made = await asyncio.to_thread(
            a.add, [Matcher("miner", "sim-001")], clock() + 7200, "board swap", "alice",
            True, clock(),
        )  # fmt: skip
        assert made.source == "alertmanager"
        labels = {"miner": "sim-001", "alertname": "DeviceDead"}
        started = time.monotonic()
        while not (await asyncio.to_thread(b.sync, clock()) and b.in_maintenance(labels, clock())):
            assert time.monotonic() - started < 10, f"never gossiped\n{cluster.logs()}"
            await asyncio.sleep(0.1)
        print(f"\nsilence seen through the other peer after {time.monotonic() - started:.2f} s")
        seen = b.get(made.id)
        assert seen.maintenance and seen.comment == "board swap" and seen.created_by == "alice"

        # Expired through the other replica: the first one sees it end.
        await asyncio.to_thread(b.expire, made.id[:8], clock())
        started = time.monotonic()
        while not (await asyncio.to_thread(a.sync, clock()) and not a.silenced(labels, clock())):
            assert time.monotonic() - started < 10, f"expiry never gossiped\n{cluster.logs()}"
            await asyncio.sleep(0.1)

        # The cluster gone, the last known silences keep holding actions back.
        again = await asyncio.to_thread(
            a.add, [Matcher("miner", "sim-002")], clock() + 7200, "psu", "bob", True, clock()
        )
        while not b.in_maintenance({"miner": "sim-002"}, clock()):
            assert await asyncio.to_thread(b.sync, clock())
            await asyncio.sleep(0.1)
        for peer in cluster.peers:
            peer.kill()
        assert not await asyncio.to_thread(b.sync, clock())
        assert b.remote_error is not None and "no Alertmanager peer" in b.remote_error
        assert b.in_maintenance({"miner": "sim-002"}, clock())
        assert b.get(again.id[:8]).id == again.id
    finally:
        first.close()
        second.close()
        cluster.stop()
        sink.stop()
