"""``cgwatchdog demo``: a simulated farm with failures, watched and repaired, in one minute.

Everything is real but the miners: the simulator serves a dozen miners of several
firmware families over TCP on 127.0.0.1 (each with its own control channel: a stock
Antminer's web UI with HTTP Digest, Whatsminer's encrypted API, a LuxOS session...),
the watchdog runs the shipped ``rules/default.yaml`` with its store, outbox and actions,
and a local webhook sink receives the notifications. Time runs ``SPEED`` times faster
for the miners and the watchdog alike (one real second is one farm minute), so
``for: 10m`` takes ten seconds. Nothing leaves this machine.

On a terminal the lines are coloured and a live table of the miners sits below them
(``NO_COLOR`` turns the colour off); piped, it prints plain lines only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from cgwatchdog.alerts import AlertState
from cgwatchdog.config import Config
from cgwatchdog.config.loader import default_rules_path, load_config
from cgwatchdog.notify import Outbox, build_integration
from cgwatchdog.simulator import Fleet, FleetMember, ScaledClock, Scenario, make_scenario, serve
from cgwatchdog.snapshot import Snapshot
from cgwatchdog.store import Store
from cgwatchdog.units import format_duration, format_hashrate
from cgwatchdog.watchdog import CycleReport, Watchdog

__all__ = ["SPEED", "DemoSummary", "run_demo"]

SPEED = 60.0
"""Simulated seconds per real second: the default rules' minutes pass in seconds."""
INTERVAL_S = 30.0
"""The poll interval, in simulated seconds (half a real second)."""

# (scenario, minutes into the demo when it fails, scenario options), for the first miners
# (their firmware is FIRMWARE's in turn); the rest stay healthy.
FAILURES: tuple[tuple[str, float, dict[str, Any]], ...] = (
    ("device_dead", 3, {}),  # a stock Antminer: restarted through its web UI
    ("hw_errors_rising", 4, {}),
    ("unreachable", 8, {"duration_s": 6 * 60}),
    ("pool_dead_failover", 12, {}),  # failed over to a working pool: a notice, no repair
    ("hashrate_drop", 14, {}),
)
FIRMWARE: tuple[str, ...] = (
    "antminer", "cgminer", "whatsminer", "luxos", "avalon", "vnish", "bfgminer", "epic",
)  # fmt: skip
"""The simulator flavours the miners get in turn: several firmware families, each
repaired through its own channel (Braiins OS needs the [braiins] extra, so it is left
out of the demo)."""
FLEET_SIZE = 12


@dataclass
class DemoSummary:
    """What happened, for the closing lines (and tests)."""

    fired: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)  # pending, then gone before firing
    actions: list[str] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    still_firing: list[str] = field(default_factory=list)  # at the end, with why
    not_reached: list[str] = field(default_factory=list)  # failures after the end
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
    def entry(m: FleetMember) -> str:
        control = f", control_port: {m.control_port}" if m.control_port else ""
        return (
            f"  - {{name: {m.name}, host: {m.host}, port: {m.port}{control}, "
            f"expected_hashrate: {m.miner.hashrate_hs(clock()):.0f}, "
            f"labels: {{rack: r{1 + m.index // 6}}}}}\n"
        )

    config = directory / "demo.yaml"
    # firmware: auto (the default) recognises each family; no credentials: each
    # family's factory-default login, as the simulated miners still have it.
    config.write_text(
        "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
        f"state_dir: {directory}\n"
        f"miners:\n{''.join(entry(m) for m in fleet.members)}"
        f"rule_files: [{default_rules_path()}]\n"
        f"receivers: [{{name: sink, webhook: {{url: 'http://127.0.0.1:{sink_port}/hook'}}}}]\n"
        "route: {receiver: sink, group_by: [alertname, miner], group_wait: 30s,"
        " group_interval: 2m, repeat_interval: 4h}\n"
        "actions: {dry_run: false, cooldown: 10m, max_per_miner_per_hour: 3, max_in_flight: 5,"
        " restart_grace: 5m}\n"
    )
    return config


_COLOURS: Final = {"red": "31", "green": "32", "yellow": "33", "cyan": "36", "dim": "2"}


class Screen:
    """Event lines stamped with farm time; on a terminal, coloured, with a live table of
    the miners redrawn below them."""

    def __init__(self, out: TextIO, start: float, clock: Callable[[], float]) -> None:
        self.out = out
        self.start = start
        self.clock = clock
        self.tty = out.isatty()
        self.colour = self.tty and not os.environ.get("NO_COLOR")
        self._table: list[str] = []
        self._drawn = 0

    def stamp(self) -> str:
        minutes, seconds = divmod(int(self.clock() - self.start), 60)
        return f"[+{minutes:02d}:{seconds:02d}]"

    def paint(self, text: str, colour: str) -> str:
        return f"\033[{_COLOURS[colour]}m{text}\033[0m" if self.colour else text

    def line(self, text: str, colour: str | None = None) -> None:
        self._erase_table()
        shown = text if colour is None else self.paint(text, colour)
        self.out.write(f"{self.paint(self.stamp(), 'dim')} {shown}\n")
        self._draw_table()
        self.out.flush()

    def table(self, rows: list[str]) -> None:
        """Replace the live table (shown on a terminal only)."""
        if not self.tty:
            return
        self._erase_table()
        self._table = rows
        self._draw_table()
        self.out.flush()

    def close(self) -> None:
        self._erase_table()
        self._table = []
        self.out.flush()

    def _erase_table(self) -> None:
        if self._drawn:
            self.out.write(f"\033[{self._drawn}F\033[J")  # up to its first line, clear below
            self._drawn = 0

    def _draw_table(self) -> None:
        if self.tty and self._table:
            self.out.write("".join(f"{row}\n" for row in self._table))
            self._drawn = len(self._table)


def _table_rows(
    screen: Screen, fleet: Fleet, report: CycleReport, watchdog: Watchdog, summary: DemoSummary
) -> list[str]:
    firing: dict[str, list[str]] = {}
    for alert in watchdog.alerts.firing():
        firing.setdefault(alert.miner, []).append(alert.alertname)
    by_name = {r.name: r for r in report.results}
    rows = [
        screen.paint(f"{'MINER':<9}{'FIRMWARE':<12}{'STATE':<7}{'HASHRATE':>11}  ALERTS", "dim")
    ]
    for member in fleet.members:
        result = by_name.get(member.name)
        up = isinstance(result, Snapshot)
        rate = "-"
        if isinstance(result, Snapshot) and result.hashrate_hs:
            rate = format_hashrate(result.hashrate_hs)
        family = (result.family if result is not None else None) or "?"
        state = screen.paint(f"{'up':<7}", "green") if up else screen.paint(f"{'DOWN':<7}", "red")
        names = ", ".join(sorted(firing.get(member.name, ())))
        rows.append(
            f"{member.name:<9}{family:<12}{state}{rate:>11}  "
            + (screen.paint(names, "red") if names else "")
        )
    rows.append(
        screen.paint(
            f"{report.up}/{len(fleet.members)} up, {len(watchdog.alerts.firing())} firing, "
            f"{len(summary.webhooks)} webhooks; times are farm time",
            "dim",
        )
    )
    return rows


def _describe_labels(labels: dict[str, str]) -> str:
    where = [labels.get("miner", "?")]
    where += [f"{key}={labels[key]}" for key in ("device", "pool") if key in labels]
    return " ".join(where)


class _Story:
    """Turns each cycle's transitions and action events into the demo's lines."""

    def __init__(self, screen: Screen, summary: DemoSummary, config: Config) -> None:
        self.screen = screen
        self.summary = summary
        self.config = config
        self.pending_since: dict[str, float] = {}

    def cycle(self, report: CycleReport, now: float) -> None:
        screen, summary = self.screen, self.summary
        resolved_now: set[tuple[str, str]] = set()
        for transition in report.transitions:
            alert, old, state = transition.alert, transition.old, transition.new
            what = f"{alert.alertname} on {_describe_labels(alert.labels)}"
            if state is AlertState.PENDING:
                self.pending_since[transition.fingerprint] = now
                screen.line(f"pending   {what}: {alert.value} (waits for its 'for' duration)",
                            "yellow")  # fmt: skip
            elif state is AlertState.FIRING:
                self.pending_since.pop(transition.fingerprint, None)
                summary.fired.append(what)
                screen.line(f"FIRING    {what}: {alert.value}", "red")
            elif state is AlertState.RESOLVED:
                resolved_now.add((alert.alertname, alert.miner))
                summary.resolved.append(what)
                screen.line(f"resolved  {what}", "green")
            elif old is AlertState.PENDING:
                since = self.pending_since.pop(transition.fingerprint, now)
                summary.cleared.append(what)
                screen.line(
                    f"cleared   {what} cleared before firing "
                    f"(pending for {format_duration(now - since)})",
                    "green",
                )
        for event in report.action_events:
            if event.kind.value in ("planned", "started"):
                continue
            summary.actions.append(event.message)
            screen.line(f"action    {event.message}", "cyan")
            if (
                event.kind.value == "verified"
                and (event.alertname, event.miner) not in resolved_now
            ):
                self._explain_resolve(event.alertname, event.miner)

    def _explain_resolve(self, alertname: str, miner: str) -> None:
        rule = next((r for r in self.config.rules if r.name == alertname), None)
        keep = rule.keep_firing_for_s if rule is not None else 0.0
        grace = self.config.actions.restart_grace_s
        why = [f"the miner has run restart_grace ({format_duration(grace)}) since the repair"]
        if keep > 0:
            why.append(
                f"its condition has been false for keep_firing_for ({format_duration(keep)})"
            )
        self.screen.line(
            f"note      {alertname} on {miner} resolves once {' and '.join(why)}; "
            "until then it stays firing, so a repair that does not hold is not announced "
            "as fixed",
            "dim",
        )


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
    summary = DemoSummary()
    screen = Screen(out, clock(), clock)

    def on_webhook(body: dict[str, Any]) -> None:
        summary.webhooks.append(body)
        alerts = body.get("alerts", [])
        names = sorted({a["labels"].get("alertname", "?") for a in alerts})
        status = str(body.get("status", "?"))
        screen.line(
            f"webhook   received [{status.upper()}:{len(alerts)}] "
            f"{', '.join(names)} ({_describe_labels(alerts[0]['labels']) if alerts else ''})",
            "red" if status == "firing" else "green",
        )

    scenarios = {
        index: make_scenario(name, fail_after_s=after_min * 60, **options)
        for index, (name, after_min, options) in enumerate(FAILURES)
    }

    def choose(index: int) -> str | Scenario:
        return scenarios.get(index, "healthy")

    fleet = Fleet.build(
        FLEET_SIZE, choose, flavours=FIRMWARE, listen="127.0.0.1", base_port=0, clock=clock,
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
            story = _Story(screen, summary, config)
            screen.start = clock()  # farm time starts now
            screen.line(
                f"demo: {FLEET_SIZE} simulated miners on 127.0.0.1 "
                f"({', '.join(dict.fromkeys(FIRMWARE))}), rules {default_rules_path()}, "
                f"webhook sink on 127.0.0.1:{sink.port}"
            )
            screen.line(
                f"times are farm time since the start: 1 real second = {format_duration(speed)}"
                f"; {format_duration(duration_s * speed)} of farm time in all"
            )
            for index, scenario in scenarios.items():
                member = fleet.members[index]
                screen.line(
                    f"scenario  {member.name} ({member.miner.flavour.firmware}): "
                    f"{scenario.name} after {format_duration(scenario.fail_after_s)}"
                )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + duration_s
            while loop.time() < deadline:
                tick = loop.time()
                await fleet.sync()
                report = await watchdog.cycle()
                summary.cycles += 1
                story.cycle(report, clock())
                await asyncio.to_thread(outbox.deliver_due, clock(), wait_s=1.0)
                screen.table(_table_rows(screen, fleet, report, watchdog, summary))
                await asyncio.sleep(max(0.0, INTERVAL_S / speed - (loop.time() - tick)))
            await asyncio.to_thread(outbox.deliver_due, clock(), wait_s=2.0)
            elapsed = clock() - screen.start
            for alert in sorted(watchdog.alerts.firing(), key=lambda a: a.active_since):
                why = alert.annotations.get("summary") or str(alert.value)
                summary.still_firing.append(
                    f"{alert.alertname} on {_describe_labels(alert.labels)}: {why} "
                    f"(firing for {format_duration(clock() - (alert.fired_at or clock()))})"
                )
            for index, scenario in scenarios.items():
                if scenario.fail_after_s > elapsed:
                    summary.not_reached.append(
                        f"{fleet.members[index].name} {scenario.name} "
                        f"(at {format_duration(scenario.fail_after_s)})"
                    )
            outbox.close()
            store.close()
    await sink.stop()
    screen.close()
    _summarise(screen, summary, speed)
    return summary


def _summarise(screen: Screen, summary: DemoSummary, speed: float) -> None:
    screen.line(
        f"summary   {summary.cycles} cycles; {len(summary.fired)} alerts fired, "
        f"{len(summary.resolved)} resolved, {len(summary.cleared)} cleared before firing, "
        f"{len(summary.actions)} action events, {len(summary.webhooks)} webhooks received"
    )
    for text in summary.still_firing:
        screen.line(f"  still firing: {text}", "red")
    if summary.not_reached:
        last = max(after for _, after, _ in FAILURES) * 60
        need = math.ceil(last / speed) + 20
        screen.line(
            f"  not reached in this run: {', '.join(summary.not_reached)}; "
            f"run with --duration {need} or more to see every failure"
        )
