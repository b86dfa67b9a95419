"""kill -9 at random points of the daemon's cycles, restarted again and again (DESIGN §9).

``python -m cgwatchdog run`` is a subprocess (the harness of test_daemon.py) watching six
simulated miners served by this test's loop, and a webhook sink on 127.0.0.1. Each round
starts the daemon, takes a miner down or brings one back, and kills the daemon with
SIGKILL after a seeded random delay: before the change is seen, after its notification
is queued, while it is sent, after it arrived but before the outbox recorded it, or in
the quiet after. A last daemon runs until everything settled and stops cleanly.

The outbox promises at least once: every firing and resolved notification arrives, and
one arrives twice only when a kill fell between its send and the record of it. That
window is measured, not timed: after each kill the test reads the outbox the dead process
left and counts the notifications that are still queued although the sink has them.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cgwatchdog.daemon import STATE_FILE
from cgwatchdog.simulator import Fleet, serve
from cgwatchdog.units import rfc3339
from tests.test_daemon import Harness, Mailbox, NotifySocket, free_port

ROUNDS = 8
SEED = 9_2026
MINERS = 6
KILL_WITHIN_S = 1.5
"""Kills fall uniformly within this long after a change: three poll intervals."""
SINK_DELAY_S = 0.25
"""How long the sink takes to answer: the send-to-record window a kill may fall into."""

Key = tuple[str, str, str]  # (miner, "firing"/"resolved", startsAt): one notification


@dataclass
class CountingSink:
    """A webhook receiver that keeps every notification it got, with when it got it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    arrivals: list[tuple[float, Key]] = field(default_factory=list)

    def hook(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        time.sleep(SINK_DELAY_S)
        with self.lock:
            for alert in body["alerts"]:
                key = (alert["labels"]["miner"], alert["status"], alert["startsAt"])
                self.arrivals.append((time.time(), key))
        return Response("ok")

    def counts(self) -> Counter[Key]:
        with self.lock:
            return Counter(key for _, key in self.arrivals)

    def first_arrival(self, key: Key) -> float | None:
        with self.lock:
            return next((at for at, k in self.arrivals if k == key), None)

    def episodes(self, miner: str, status: str) -> set[str]:
        """The distinct startsAt of ``miner``'s notifications in ``status``."""
        return {starts for (m, s, starts) in self.counts() if (m, s) == (miner, status)}


@pytest.fixture
def counting_sink() -> Iterator[tuple[CountingSink, int]]:
    sink = CountingSink()
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("/hook", method="POST").respond_with_handler(sink.hook)
    server.start()
    yield sink, server.port
    server.clear()
    server.stop()


@pytest.fixture
async def harness(
    tmp_path: Path, counting_sink: tuple[CountingSink, int]
) -> AsyncIterator[Harness]:
    fleet = Fleet.build(
        MINERS, flavours=("cgminer",), listen="127.0.0.1", base_port=0, clock=time.time
    )
    notify = NotifySocket()
    collector = asyncio.get_running_loop().create_task(notify.collect())
    sink, hook_port = counting_sink
    async with serve(fleet):
        h = Harness(
            tmp=tmp_path, fleet=fleet, sink=sink, hook_port=hook_port,  # type: ignore[arg-type]
            mailbox=Mailbox(), smtp_port=0, notify=notify, http_port=free_port(),
            config=tmp_path / "config.yaml",
        )  # fmt: skip
        miners = "".join(f"  - {{name: {m.name}, host: {m.host}, port: {m.port}}}\n" for m in fleet)
        h.config.write_text(
            "poll: {interval: 500ms, timeout: 300ms, connect_timeout: 200ms, jitter: 0%}\n"
            f"state_dir: {tmp_path / 'state'}\n"
            f'http: {{listen: "127.0.0.1:{h.http_port}"}}\n'
            f"miners:\n{miners}"
            "rules:\n  - {name: MinerUnreachable, type: unreachable, for: 0s, severity: warning}\n"
            f'receivers:\n  - {{name: hook, webhook: {{url: "http://127.0.0.1:{hook_port}/hook"}}}}\n'
            "route: {receiver: hook, group_by: [alertname, miner], group_wait: 0s,"
            " group_interval: 500ms, repeat_interval: 1h}\n"
            # One notification per miner and change: a fleet incident (30% of the fleet
            # down) would fold them into one grouped notice, sent again as it grows.
            "actions: {dry_run: false, fleet_incident_share: 100%}\n"
        )
        try:
            yield h
        finally:
            for daemon in h.started:
                if daemon.process.returncode is None:
                    daemon.process.kill()
                    await daemon.process.wait()
            collector.cancel()
            notify.sock.close()


def queued(state_file: Path) -> list[tuple[Key, float]]:
    """What the outbox holds, read from the file a killed daemon left: (key, created_at)."""
    db = sqlite3.connect(f"file:{state_file}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT payload, created_at FROM outbox ORDER BY id").fetchall()
    finally:
        db.close()
    found = []
    for payload, created_at in rows:
        for alert in json.loads(payload)["alerts"]:
            key = (alert["labels"]["miner"], alert["status"], rfc3339(alert["starts_at"]))
            found.append((key, float(created_at)))
    return found


async def test_kill_9_at_random_points_loses_nothing_and_repeats_only_the_unrecorded(
    harness: Harness, counting_sink: tuple[CountingSink, int]
) -> None:
    h, (sink, _) = harness, counting_sink
    rng = random.Random(SEED)
    names = [m.name for m in h.fleet]
    times_down: Counter[str] = Counter()
    down: set[str] = set()
    allowed: Counter[Key] = Counter()  # sent but not recorded when a kill fell
    state_file = h.tmp / "state" / STATE_FILE
    kill_delays = []
    kills: list[float] = []  # time.time() of each kill

    for _ in range(ROUNDS):
        began = time.monotonic()
        daemon = await h.start()
        await h.wait_ready(began)
        # Change one miner whose last change has been notified, so every change is seen.
        notified = {
            n: len(sink.episodes(n, "firing" if n in down else "resolved")) == times_down[n]
            for n in names
        }
        can_fail = [n for n in names if n not in down and notified[n]]
        can_heal = [n for n in down if notified[n]]
        if can_fail or can_heal:
            miner = rng.choice(sorted(can_fail + can_heal))
            if miner in down:
                down.discard(miner)
                await h.fleet.set_mode(miner, "normal")
            else:
                down.add(miner)
                times_down[miner] += 1
                await h.fleet.set_mode(miner, "down")
        delay = rng.uniform(0.0, KILL_WITHIN_S)
        kill_delays.append(delay)
        await asyncio.sleep(delay)
        daemon.process.kill()
        assert await daemon.process.wait() == -9
        kills.append(time.time())
        await asyncio.sleep(SINK_DELAY_S + 0.3)  # a request the dead one sent still lands
        for key, created_at in queued(state_file):
            first = sink.first_arrival(key)
            if first is not None and created_at <= first:
                allowed[key] += 1  # queued before it arrived: arrived, not yet recorded

    # The last daemon delivers what is left, sees the down miners back, and stops cleanly.
    began = time.monotonic()
    last = await h.start()
    await h.wait_ready(began)
    await h.wait(
        "every firing notification",
        lambda: all(len(sink.episodes(n, "firing")) == times_down[n] for n in names),
    )
    for miner in sorted(down):
        await h.fleet.set_mode(miner, "normal")
    await h.wait(
        "every resolved notification",
        lambda: all(len(sink.episodes(n, "resolved")) == times_down[n] for n in names),
    )
    await h.wait("an empty outbox", h.outbox_empty)
    assert await h.stop(last) == 0

    counts = sink.counts()
    assert sum(times_down.values()) >= 3, times_down  # the seed makes enough happen
    for miner in names:  # one episode per time down: none lost, none split by a restart
        assert sink.episodes(miner, "firing") == sink.episodes(miner, "resolved")
        assert len(sink.episodes(miner, "firing")) == times_down[miner]
    unexplained = {key: n for key, n in counts.items() if n - 1 > allowed[key]}
    assert not unexplained, (unexplained, allowed, kills, sink.arrivals)
    print(
        f"\n{ROUNDS} kills at {[round(d, 2) for d in kill_delays]} s after a change: "
        f"{len(counts)} notifications, {sum(counts.values()) - len(counts)} duplicate(s), "
        f"{sum(allowed.values())} sent-but-unrecorded at a kill"
    )
