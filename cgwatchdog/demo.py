"""``cgwatchdog demo``: a simulated farm with failures, watched and repaired, in one minute.

Everything is real but the miners: the simulator serves a dozen miners over TCP on
127.0.0.1, the watchdog runs the shipped ``rules/default.yaml`` with its store, outbox
and actions, and a local webhook sink receives the notifications. Time runs
``SPEED`` times faster for the miners and the watchdog alike (one real second is one
simulated minute), so ``for: 10m`` takes ten seconds. Nothing leaves this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cgwatchdog.alerts import AlertState
from cgwatchdog.config.loader import default_rules_path, load_config
from cgwatchdog.notify import Outbox, build_integration
from cgwatchdog.simulator import Fleet, ScaledClock, Scenario, make_scenario, serve
from cgwatchdog.snapshot import Snapshot
from cgwatchdog.store import Store
from cgwatchdog.units import format_duration, format_hashrate
from cgwatchdog.watchdog import CycleReport, Watchdog

__all__ = ["SPEED", "DemoSummary", "run_demo"]

SPEED = 60.0
"""Simulated seconds per real second: the default rules' minutes pass in seconds."""
INTERVAL_S = 30.0
"""The poll interval, in simulated seconds (half a real second)."""

# (scenario, minutes into the demo when it fails, scenario options); the rest is healthy.
FAILURES: tuple[tuple[str, float, dict[str, Any]], ...] = (
    ("device_dead", 3, {}),
    ("hw_errors_rising", 4, {}),
    ("unreachable", 8, {"duration_s": 6 * 60}),
    ("pool_dead_failover", 12, {}),
    ("hashrate_drop", 14, {}),
)
FLEET_SIZE = 12


@dataclass
class DemoSummary:
    """What happened, for the closing lines (and tests)."""

    fired: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    cycles: int = 0


class WebhookSink:
    """A tiny HTTP server on 127.0.0.1 that records each webhook body it receives."""

    def __init__(self, on_body: Callable[[dict[str, Any]], None]) -> None:
        self.on_body = on_body
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            with contextlib.suppress(ValueError):
                self.on_body(json.loads(body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()


def _write_config(directory: Path, fleet: Fleet, sink_port: int, clock: ScaledClock) -> Path:
    miners = "".join(
        f"  - {{name: {m.name}, host: {m.host}, port: {m.port}, "
        f"expected_hashrate: {m.miner.hashrate_hs(clock()):.0f}, "
        f"labels: {{rack: r{1 + m.index // 6}}}}}\n"
        for m in fleet.members
    )
    config = directory / "demo.yaml"
    config.write_text(
        "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
        f"state_dir: {directory}\n"
        f"miners:\n{miners}"
        f"rule_files: [{default_rules_path()}]\n"
        f"receivers: [{{name: sink, webhook: {{url: 'http://127.0.0.1:{sink_port}/hook'}}}}]\n"
        "route: {receiver: sink, group_by: [alertname, miner], group_wait: 30s,"
        " group_interval: 2m, repeat_interval: 4h}\n"
        "actions: {dry_run: false, cooldown: 10m, max_per_miner_per_hour: 3, max_in_flight: 5,"
        " restart_grace: 5m}\n"
    )
    return config


class Screen:
    """Event lines with the simulated time, and a progress line on a terminal."""

    def __init__(self, out: TextIO, start: float, clock: Callable[[], float]) -> None:
        self.out = out
        self.start = start
        self.clock = clock
        self.tty = out.isatty()
        self._progress = False

    def stamp(self) -> str:
        minutes, seconds = divmod(int(self.clock() - self.start), 60)
        return f"[+{minutes:02d}:{seconds:02d}]"

    def line(self, text: str) -> None:
        if self._progress:
            self.out.write("\r\033[K")
            self._progress = False
        self.out.write(f"{self.stamp()} {text}\n")
        self.out.flush()

    def progress(self, text: str) -> None:
        if self.tty:
            self.out.write(f"\r\033[K{self.stamp()} {text}")
            self.out.flush()
            self._progress = True


def _describe_labels(labels: dict[str, str]) -> str:
    where = [labels.get("miner", "?")]
    where += [f"{key}={labels[key]}" for key in ("device", "pool") if key in labels]
    return " ".join(where)


def _report(screen: Screen, report: CycleReport, summary: DemoSummary) -> None:
    for transition in report.transitions:
        alert = transition.alert
        state = transition.new
        if state is AlertState.INACTIVE:
            continue
        what = f"{alert.alertname} on {_describe_labels(alert.labels)}"
        if state is AlertState.PENDING:
            screen.line(f"pending   {what}: {alert.value} (waits for its 'for' duration)")
        elif state is AlertState.FIRING:
            summary.fired.append(what)
            screen.line(f"FIRING    {what}: {alert.value}")
        elif state is AlertState.RESOLVED:
            summary.resolved.append(what)
            screen.line(f"resolved  {what}")
    for event in report.action_events:
        if event.kind.value in ("planned", "started"):
            continue
        summary.actions.append(event.message)
        screen.line(f"action    {event.message}")


async def run_demo(
    duration_s: float = 60.0, out: TextIO = sys.stdout, *, speed: float = SPEED
) -> DemoSummary:
    """Run the demo for ``duration_s`` real seconds and return what happened.

    ``speed`` is simulated seconds per real second (tests run it faster).
    """
    # The screen tells the story; the watchdog's own log lines would repeat it.
    quiet = logging.getLogger("cgwatchdog")
    muted = logging.NullHandler()
    quiet.addHandler(muted)
    quiet.propagate = False
    try:
        return await _run(duration_s, out, speed)
    finally:
        quiet.removeHandler(muted)
        quiet.propagate = True


async def _run(duration_s: float, out: TextIO, speed: float) -> DemoSummary:
    clock = ScaledClock(speed)
    start = clock()
    summary = DemoSummary()
    screen = Screen(out, start, clock)

    def on_webhook(body: dict[str, Any]) -> None:
        summary.webhooks.append(body)
        alerts = body.get("alerts", [])
        names = sorted({a["labels"].get("alertname", "?") for a in alerts})
        screen.line(
            f"webhook   received [{str(body.get('status', '?')).upper()}:{len(alerts)}] "
            f"{', '.join(names)} ({_describe_labels(alerts[0]['labels']) if alerts else ''})"
        )

    scenarios = {
        index: make_scenario(name, fail_after_s=after_min * 60, **options)
        for index, (name, after_min, options) in enumerate(FAILURES)
    }

    def choose(index: int) -> str | Scenario:
        return scenarios.get(index, "healthy")

    fleet = Fleet.build(
        FLEET_SIZE, choose, listen="127.0.0.1", base_port=0, clock=clock,
        restart_downtime_s=5.0,
    )  # fmt: skip

    sink = WebhookSink(on_webhook)
    await sink.start()
    with tempfile.TemporaryDirectory(prefix="cgwatchdog-demo-") as tmp:
        async with serve(fleet):
            config = load_config(_write_config(Path(tmp), fleet, sink.port, clock))
            store = Store(Path(tmp) / "cgwatchdog.sqlite")
            integrations = {r.name: build_integration(r) for r in config.receivers}
            outbox = Outbox(store, integrations, clock=clock, base_backoff_s=30.0)
            watchdog = Watchdog(config, store=store, outbox=outbox, clock=clock)
            screen.line(
                f"demo: {FLEET_SIZE} simulated miners on 127.0.0.1, rules {default_rules_path()}, "
                f"webhook sink on 127.0.0.1:{sink.port}; 1 s = {format_duration(speed)} of farm time"
            )
            for index, scenario in scenarios.items():
                screen.line(
                    f"scenario  {fleet.members[index].name}: {scenario.name} after "
                    f"{format_duration(scenario.fail_after_s)}"
                )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + duration_s
            while loop.time() < deadline:
                tick = loop.time()
                await fleet.sync()
                report = await watchdog.cycle()
                summary.cycles += 1
                _report(screen, report, summary)
                await asyncio.to_thread(outbox.deliver_due, clock(), wait_s=1.0)
                firing = len(watchdog.alerts.firing())
                pending = sum(1 for a in watchdog.alerts.alerts() if a.state is AlertState.PENDING)
                rate = sum(r.hashrate_hs or 0.0 for r in report.results if isinstance(r, Snapshot))
                screen.progress(
                    f"{report.up}/{FLEET_SIZE} up, {format_hashrate(rate)}, {firing} firing, "
                    f"{pending} pending, {len(summary.webhooks)} webhooks"
                )
                await asyncio.sleep(max(0.0, INTERVAL_S / speed - (loop.time() - tick)))
            await asyncio.to_thread(outbox.deliver_due, clock(), wait_s=2.0)
            outbox.close()
            store.close()
    await sink.stop()
    screen.line(
        f"summary   {summary.cycles} cycles; {len(summary.fired)} alerts fired, "
        f"{len(summary.resolved)} resolved, {len(summary.actions)} action events, "
        f"{len(summary.webhooks)} webhooks received"
    )
    return summary
