"""The durable outbox (cgwatchdog/notify/outbox.py) against real local HTTP receivers.

The receivers are real servers on 127.0.0.1 that go down (connection refused), fail
(503, 429 with Retry-After, 400) and come back; the outbox's clock is driven by hand,
so hours of outage take a few hundred quick passes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from cgwatchdog.alerts import AlertView, Notification, fingerprint
from cgwatchdog.notify import Integration, Outbox, build_integration, receiver_model
from cgwatchdog.store import Store

TOKEN = "T0KEN-outbox-9d2f61"
T0 = 1_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Sink:
    """A webhook receiver on a fixed 127.0.0.1 port that can be down, failing or up."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []  # summaries of delivered notifications, in order
        self.requests = 0
        self.status = 200
        self.headers: dict[str, str] = {}
        self.reject: set[str] = set()  # summaries answered 400
        self._server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{TOKEN}"

    def up(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                summary = body["alerts"][0]["annotations"]["summary"]
                sink.requests += 1
                status = 400 if summary in sink.reject else sink.status
                if status == 200:
                    sink.received.append(summary)
                self.send_response(status)
                for name, value in sink.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(b"invalid_payload" if status == 400 else b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = HTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def sinks() -> Iterator[tuple[Sink, Sink]]:
    a, b = Sink(), Sink()
    yield a, b
    a.down()
    b.down()


def hook(url: str, *, name: str = "a", timeout: str = "2s") -> Integration:
    receiver = receiver_model().model_validate(
        {"name": name, "webhook": {"url": url, "timeout": timeout}}
    )
    return build_integration(receiver)


def note(receiver: str, group: str, summary: str) -> Notification:
    labels = {"alertname": "DeviceDead", "miner": f"{group}-miner"}
    return Notification(
        receiver=receiver,
        group_key=f"{{}}:{{alertname=DeviceDead, group={group}}}",
        group_labels={"alertname": "DeviceDead"},
        status="firing",
        alerts=(
            AlertView(fingerprint(labels), labels, {"summary": summary}, "", "firing", T0, None),
        ),
    )


def outbox(store: Store, clock: Clock, **integrations: Integration) -> Outbox:
    return Outbox(store, integrations, clock=clock, rng=random.Random(7), budget_s=10.0)


def test_outage_then_recovery_delivers_everything_once_in_group_order(
    tmp_path: Path, sinks: tuple[Sink, Sink]
) -> None:
    flaky, steady = sinks
    steady.up()  # flaky starts down: connection refused
    store = Store(tmp_path / "state.sqlite")
    clock = Clock(T0)
    box = outbox(store, clock, a=hook(flaky.url), b=hook(steady.url, name="b"))

    first = [note("a", "g1", "g1#1"), note("a", "g2", "g2#1"), note("b", "g1", "b#1")]
    box.enqueue(first, clock.now)
    assert [item.payload for item in store.pending()] == [n.to_dict() for n in first]

    report = box.deliver_due(clock.now)
    assert (report.sent, report.failed, report.dropped, report.pending) == (1, 1, 0, 2)
    assert steady.received == ["b#1"] and flaky.requests == 0
    box.enqueue([note("a", "g1", "g1#2")], clock.now + 1)

    extra = {1200.0: note("b", "g1", "b#2"), 2000.0: note("a", "g1", "g1#3")}
    while clock.now < T0 + 4000:
        clock.now += 7
        offset = clock.now - T0
        for at in [at for at in extra if offset >= at]:
            box.enqueue([extra.pop(at)], clock.now)
            if at == 1200.0:  # the other receiver is not held back by the outage
                box.deliver_due(clock.now)
                assert steady.received == ["b#1", "b#2"]
        if offset >= 1500 and flaky._server is None:
            flaky.status = 503  # answering now, but failing
            flaky.up()
        if offset >= 2500:
            flaky.status = 200
        box.deliver_due(clock.now)
        if offset > 2500 and store.outbox_depth() == 0:
            break

    assert store.outbox_depth() == 0
    assert sorted(flaky.received) == ["g1#1", "g1#2", "g1#3", "g2#1"]  # each exactly once
    assert [s for s in flaky.received if s.startswith("g1")] == ["g1#1", "g1#2", "g1#3"]
    assert steady.received == ["b#1", "b#2"]
    counters = box.counters()
    assert (counters["a"].sent, counters["a"].dropped) == (4, 0)
    assert counters["a"].failed >= 4  # refused and 503s, retried with backoff
    assert (counters["b"].sent, counters["b"].failed) == (2, 0)
    box.close()


def test_backoff_is_exponential_with_full_jitter() -> None:
    box = Outbox(Store(":memory:"), {}, clock=Clock(T0), rng=random.Random(3))
    for attempts in range(1, 11):
        cap = min(600.0, 5.0 * 2 ** (attempts - 1))
        draws = [box.backoff_s(attempts) for _ in range(400)]
        assert all(1.0 <= d <= cap for d in draws)
        assert max(draws) > 0.9 * cap  # spread over the whole range, not bunched
        if cap >= 20:
            assert 0.4 * cap < sum(draws) / len(draws) < 0.6 * cap


def test_each_retry_waits_longer_on_average_and_records_the_error(
    tmp_path: Path, sinks: tuple[Sink, Sink]
) -> None:
    flaky, _ = sinks  # down throughout
    store = Store(tmp_path / "state.sqlite")
    clock = Clock(T0)
    box = outbox(store, clock, a=hook(flaky.url))
    box.enqueue([note("a", "g1", "g1#1")], clock.now)
    delays = []
    for attempt in range(1, 9):
        box.deliver_due(clock.now)
        (item,) = store.pending()
        assert item.attempts == attempt
        assert item.last_error is not None and "connection refused" in item.last_error
        assert TOKEN not in item.last_error
        delay = item.next_attempt_at - clock.now
        assert 1.0 <= delay <= min(600.0, 5.0 * 2 ** (attempt - 1))
        delays.append(delay)
        box.deliver_due(item.next_attempt_at - 0.5)  # not due yet: nothing is attempted
        assert store.pending()[0].attempts == attempt
        clock.now = item.next_attempt_at
    assert sum(delays[4:]) > sum(delays[:4])
    box.close()


def test_a_failing_receiver_is_listed_with_its_oldest_notification_until_it_delivers(
    tmp_path: Path, sinks: tuple[Sink, Sink], caplog: pytest.LogCaptureFixture
) -> None:
    flaky, _ = sinks  # down: connection refused
    store = Store(tmp_path / "state.sqlite")
    clock = Clock(T0)
    box = Outbox(store, {"a": hook(flaky.url)}, clock=clock, rng=random.Random(7), round_s=30.0)
    assert box.failing() == []
    box.enqueue([note("a", "g1", "g1#1")], clock.now - 90)
    with caplog.at_level(logging.WARNING, logger="cgwatchdog.notify"):
        box.deliver_due(clock.now)
    (problem,) = box.failing()
    assert (problem.receiver, problem.oldest_queued_at) == ("a", clock.now - 90)
    assert "connection refused" in problem.error and TOKEN not in problem.error
    assert problem.describe(clock.now + 30) == (
        f"receiver 'a' failing: {problem.error} (oldest undelivered notification queued 2m ago)"
    )
    # The backoff is a few seconds, but deliveries come once per 30 s round: the log
    # says when the next try really happens.
    (line,) = [r.getMessage() for r in caplog.records if "failed at attempt 1" in r.getMessage()]
    assert "next try at the next delivery round, in about 30s" in line
    flaky.up()
    clock.now = store.pending()[0].next_attempt_at
    box.deliver_due(clock.now)
    assert flaky.received == ["g1#1"] and box.failing() == []
    box.close()


def test_retry_after_pauses_the_receiver(tmp_path: Path, sinks: tuple[Sink, Sink]) -> None:
    limited, _ = sinks
    limited.status, limited.headers = 429, {"Retry-After": "120"}
    limited.up()
    store = Store(tmp_path / "state.sqlite")
    clock = Clock(T0)
    box = outbox(store, clock, a=hook(limited.url))
    box.enqueue([note("a", "g1", "g1#1"), note("a", "g2", "g2#1")], clock.now)

    box.deliver_due(clock.now)
    assert limited.requests == 1  # the receiver's turn ended at the first refusal
    first = next(i for i in store.pending() if i.group_key.endswith("g1}"))
    assert first.next_attempt_at >= clock.now + 120

    clock.now += 60
    box.deliver_due(clock.now)  # g2 is due, but the service asked for 120 s of quiet
    assert limited.requests == 1

    limited.status, limited.headers = 200, {}
    clock.now = T0 + 121
    report = box.deliver_due(clock.now)
    assert report.sent == 2 and sorted(limited.received) == ["g1#1", "g2#1"]
    box.close()


def test_a_refused_payload_is_dropped_and_its_group_moves_on(
    tmp_path: Path, sinks: tuple[Sink, Sink], caplog: pytest.LogCaptureFixture
) -> None:
    sink, _ = sinks
    sink.reject = {"poison"}
    sink.up()
    store = Store(tmp_path / "state.sqlite")
    box = outbox(store, Clock(T0), a=hook(sink.url))
    box.enqueue([note("a", "g1", "poison"), note("a", "g1", "after")], T0)
    with caplog.at_level(logging.ERROR, logger="cgwatchdog.notify"):
        report = box.deliver_due(T0)
    assert (report.sent, report.failed, report.dropped, report.pending) == (1, 1, 1, 0)
    assert sink.received == ["after"]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert message.startswith(
        "dropped a notification to receiver 'a' (group {}:{alertname=DeviceDead, group=g1})"
    )
    assert "HTTP 400" in message and "invalid_payload" in message
    assert TOKEN not in message
    box.close()


def test_expiry_drops_with_a_logged_loss_and_no_secret(
    tmp_path: Path, sinks: tuple[Sink, Sink], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flaky, _ = sinks  # down throughout
    store = Store(tmp_path / "state.sqlite")
    clock = Clock(T0)
    box = Outbox(store, {"a": hook(flaky.url)}, clock=clock, max_age_s=3600.0, rng=random.Random(1))
    box.enqueue([note("a", "g1", "g1#1"), note("gone", "g9", "orphan")], clock.now)
    dropped = 0
    while clock.now <= T0 + 3600:
        dropped += box.deliver_due(clock.now).dropped
        clock.now += 30
    assert dropped == 2 and store.outbox_depth() == 0
    assert box.counters()["a"].dropped == 1 and box.counters()["gone"].dropped == 1
    losses = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lost")]
    assert len(losses) == 2
    assert losses[0].startswith(
        "lost a notification to receiver 'a' (group {}:{alertname=DeviceDead, group=g1}): "
        "undelivered after "
    )
    assert "last error: connection refused by 127.0.0.1" in losses[0]
    assert "receiver 'gone'" in losses[1] and "never attempted" in losses[1]
    unknown = [r for r in caplog.records if "is not configured" in r.getMessage()]
    assert len(unknown) == 1  # warned once, not every pass
    assert TOKEN not in caplog.text
    box.close()


def test_a_slow_receiver_does_not_hold_the_others(tmp_path: Path, sinks: tuple[Sink, Sink]) -> None:
    fast, _ = sinks
    fast.up()
    with socket.socket() as silent:  # accepts (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        slow_url = f"http://127.0.0.1:{silent.getsockname()[1]}/{TOKEN}"
        store = Store(tmp_path / "state.sqlite")
        box = outbox(
            store, Clock(T0), a=hook(fast.url), slow=hook(slow_url, name="slow", timeout="1s")
        )
        box.enqueue([note("slow", "g1", "s#1"), note("a", "g1", "a#1")], T0)
        started = time.monotonic()
        report = box.deliver_due(T0, wait_s=0.5)
        assert time.monotonic() - started < 0.9
        assert report.sent == 1 and report.busy == ("slow",)
        assert fast.received == ["a#1"]

        box.enqueue([note("a", "g1", "a#2")], T0 + 1)
        report = box.deliver_due(T0 + 1, wait_s=5.0)  # collects the slow one's timeout too
        assert (report.sent, report.failed, report.busy) == (1, 1, ())
        (item,) = store.pending()
        assert item.receiver == "slow" and item.attempts == 1  # tried once, not twice
        assert item.last_error is not None and "did not answer within 1 s" in item.last_error
        box.close()


_ENQUEUE_THEN_DIE = """
import json, os, signal, sys
from cgwatchdog.alerts import Notification
from cgwatchdog.notify import Outbox, build_integration, receiver_model
from cgwatchdog.store import Store

path, receiver, notification = sys.argv[1:]
integration = build_integration(receiver_model().model_validate(json.loads(receiver)))
outbox = Outbox(Store(path), {"a": integration}, clock=lambda: 1000000.0)
outbox.enqueue([Notification.from_dict(json.loads(notification))], 1000000.0)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_after_enqueue_is_delivered_once_by_the_next_process(
    tmp_path: Path, sinks: tuple[Sink, Sink]
) -> None:
    sink, _ = sinks
    sink.up()
    path = tmp_path / "state.sqlite"
    receiver = {"name": "a", "webhook": {"url": sink.url}}
    died = subprocess.run(
        [
            sys.executable,
            "-c",
            _ENQUEUE_THEN_DIE,
            str(path),
            json.dumps(receiver),
            json.dumps(note("a", "g1", "survivor").to_dict()),
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        timeout=60,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr.decode()
    assert sink.requests == 0

    store = Store(path)
    box = outbox(store, Clock(T0 + 5), a=hook(sink.url))
    assert box.deliver_due(T0 + 5).sent == 1
    assert box.deliver_due(T0 + 600).sent == 0
    assert sink.received == ["survivor"] and sink.requests == 1
    assert store.outbox_depth() == 0
    box.close()
