"""Fault injection (DESIGN §9): what cgwatchdog does when miners, receivers or the state
file misbehave. RELIABILITY.md tabulates these tests.

Everything is real and on 127.0.0.1: miners are the simulator (its ``hang``, ``mute``,
``down`` modes and ``garbage`` scenario) or small asyncio servers written here for the
byte-level faults (trickle, flood, reset, cut); receivers are HTTP servers and aiosmtpd;
the state file is sqlite made to fail by a full tmpfs, the immutable flag, ``query_only``
or another connection's lock. Outages of an hour run on a clock moved by hand; the daemon
tests run the real :class:`~cgwatchdog.daemon.Daemon` in this process, on the real clock,
and wait for events with deadlines. Durations are bounds with generous slack, not
benchmarks. The kill -9 loop is in test_faults_daemon.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import cgwatchdog.daemon as daemon_module
from cgwatchdog.alerts import AlertView, Notification, fingerprint
from cgwatchdog.client import SILENT_CLOSE_HINT
from cgwatchdog.config.loader import load_config
from cgwatchdog.daemon import STATE_FILE, Daemon
from cgwatchdog.errors import FailureKind, StoreError
from cgwatchdog.notify import Integration, Outbox, build_integration, receiver_model
from cgwatchdog.poller import Poller
from cgwatchdog.protocol import MAX_REPLY_BYTES, encode_reply
from cgwatchdog.sdnotify import Notifier
from cgwatchdog.simulator import FakeClock, Fleet, make_scenario, serve
from cgwatchdog.snapshot import Snapshot, Unreachable
from cgwatchdog.store import Store
from cgwatchdog.watchdog import Watchdog
from tests.conftest import until
from tests.test_daemon import NotifySocket, free_port

TIMEOUT_S = 0.5
"""The poller's read deadline here: loopback answers in a millisecond."""
SLACK_S = 3.0
"""Added to a deadline when a test bounds how long something took: generous, because the
machine is noisy; a poll that waited for a trickle or a hang would take minutes."""
T0 = 1_800_000_000.0


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int


# == miners ==================================================================================

STATUS_S = [{"STATUS": "S", "When": 1732121693, "Code": 11, "Msg": "Summary",
             "Description": "cgminer 4.11.1"}]  # fmt: skip
REPLY = encode_reply(
    {
        "summary": [{"STATUS": STATUS_S, "SUMMARY": [{"Elapsed": 3600, "MHS 5s": 13612345.67,
                     "Accepted": 1520, "Hardware Errors": 12}], "id": 1}],
        "devs": [{"STATUS": STATUS_S, "DEVS": [{"ASC": 0, "Enabled": "Y", "Status": "Alive",
                  "Temperature": 61.5, "MHS 5s": 13612345.67}], "id": 1}],
        "pools": [{"STATUS": STATUS_S, "POOLS": [{"POOL": 0, "URL": "stratum+tcp://127.0.0.1:3333",
                   "Status": "Alive", "Priority": 0, "Last Share Time": 1732121685}], "id": 1}],
        "stats": [{"STATUS": STATUS_S, "STATS": [], "id": 1}],
        "id": 1,
    }
)  # fmt: skip
"""A whole ``summary+devs+pools+stats`` reply, NUL included, for the servers to cut up."""

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawMiner:
    """An asyncio server on 127.0.0.1 playing one byte-level fault; counts what it sent."""

    behaviour: Behaviour
    server: asyncio.Server | None = None
    sent: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> RawMiner:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            try:
                await reader.read(65536)  # the request, in one read as cgminer does
                await self.behaviour(reader, writer)
            except (ConnectionError, asyncio.CancelledError):
                pass  # the client gave up first: what these faults are about
            finally:
                writer.transport.abort()
                self.tasks.discard(task)

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.sleep(0)

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def closes_mid_reply(miner: RawMiner) -> Behaviour:
    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await miner.write(writer, REPLY[: len(REPLY) // 2])
        writer.close()

    return behave


def trickles_a_byte_a_second(miner: RawMiner) -> Behaviour:
    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for index in range(len(REPLY)):  # ~1,000 s for the whole reply
            await miner.write(writer, REPLY[index : index + 1])
            await asyncio.sleep(1.0)

    return behave


def resets_before_replying(miner: RawMiner) -> Behaviour:
    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reset(writer)

    return behave


def resets_mid_reply(miner: RawMiner) -> Behaviour:
    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await miner.write(writer, REPLY[:200])
        await asyncio.sleep(0.05)  # let the bytes leave before the RST
        reset(writer)

    return behave


def answers_noise(miner: RawMiner) -> Behaviour:
    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        noise = random.Random(9).randbytes(3000)  # control bytes, NULs, invalid UTF-8
        await miner.write(writer, noise.replace(b"\0", b"\1") + b"\0")
        writer.close()

    return behave


FLOOD_BYTES = 100 * 1024 * 1024


def floods_100_mb(miner: RawMiner) -> Behaviour:
    """Starts a JSON reply and sends 100 MB of it, one reused 64 KiB chunk at a time."""

    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await miner.write(writer, b'{"STATUS":[{"STATUS":"S","Msg":"')
        chunk = b"x" * 65536
        while miner.sent < FLOOD_BYTES:
            await miner.write(writer, chunk)
        await miner.write(writer, b'"}],"id":1}\0')

    return behave


@pytest.fixture
async def raw_miner() -> AsyncIterator[
    Callable[[Callable[[RawMiner], Behaviour]], Awaitable[RawMiner]]
]:
    miners: list[RawMiner] = []

    async def start(make: Callable[[RawMiner], Behaviour]) -> RawMiner:
        miner = RawMiner(behaviour=lambda r, w: asyncio.sleep(0))
        miner.behaviour = make(miner)
        miners.append(miner)
        return await miner.start()

    yield start
    for miner in miners:
        await miner.stop()


async def simulated(mode: str) -> tuple[Fleet, Target]:
    """One simulated cgminer in ``mode`` (or a ``garbage:<kind>`` scenario), served."""
    scenario = "healthy"
    if mode.startswith("garbage:"):
        scenario = make_scenario("garbage", fail_after_s=0.0, garbage=mode.split(":")[1])
    fleet = Fleet.build(1, scenario, flavours=("cgminer",), listen="127.0.0.1", base_port=0)
    await fleet.start()
    if mode in ("hang", "mute", "down"):
        await fleet.set_mode(0, mode)  # type: ignore[arg-type]
    member = fleet.members[0]
    return fleet, Target(member.name, member.host, member.port)


# Each fault: how it is made, the kind of Unreachable it must give, words of its reason.
MINER_FAULTS: dict[str, tuple[str | Callable[[RawMiner], Behaviour], str, str]] = {
    "accepts_never_answers": ("hang", "read_timeout", f"no complete reply within {TIMEOUT_S:g}s"),
    "closes_without_a_byte": ("mute", "reset", SILENT_CLOSE_HINT),
    "refuses_connections": ("down", "refused", "connection refused"),
    "closes_mid_reply": (closes_mid_reply, "not_api", "truncated"),
    "trickles_a_byte_a_second": (
        trickles_a_byte_a_second, "read_timeout", f"no complete reply within {TIMEOUT_S:g}s (got "
    ),
    "resets_before_replying": (resets_before_replying, "reset", SILENT_CLOSE_HINT),
    "resets_mid_reply": (resets_mid_reply, "reset", "connection reset mid-reply"),
    "answers_binary_noise": (answers_noise, "not_api", "unreadable reply"),
    "answers_junk": ("garbage:junk", "not_api", "unreadable reply"),
    "answers_cut_replies": ("garbage:truncate", "not_api", "truncated"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(MINER_FAULTS))
async def test_miner_fault_gives_a_typed_unreachable_within_the_deadline(
    fault: str, raw_miner: Callable[[Callable[[RawMiner], Behaviour]], Awaitable[RawMiner]]
) -> None:
    how, kind, reason = MINER_FAULTS[fault]
    fleet: Fleet | None = None
    miner: RawMiner | None = None
    if isinstance(how, str):
        fleet, target = await simulated(how)
    else:
        miner = await raw_miner(how)
        target = Target("m1", "127.0.0.1", miner.port)
    try:
        poller = Poller([target], timeout=TIMEOUT_S, connect_timeout=TIMEOUT_S)
        started = time.monotonic()
        async with asyncio.timeout(TIMEOUT_S + 30):  # the test stops by itself regardless
            (result,) = await poller.poll()
        took = time.monotonic() - started
    finally:
        if fleet is not None:
            await fleet.stop()
    assert isinstance(result, Unreachable), result
    assert result.kind.value == kind, result
    assert result.to_json()["error_kind"] == kind
    assert reason in result.error, result.error
    assert not result.up and result.to_json()["error"] == result.error
    # Ended by its own deadline (at most twice: a first contact may ask once more).
    assert took < 2 * TIMEOUT_S + SLACK_S
    if fault == "trickles_a_byte_a_second":
        assert miner is not None and miner.sent < 2 * TIMEOUT_S + SLACK_S + 1


async def test_a_100_mb_reply_is_cut_at_the_cap_without_buffering_it(
    raw_miner: Callable[[Callable[[RawMiner], Behaviour]], Awaitable[RawMiner]],
) -> None:
    miner = await raw_miner(floods_100_mb)
    poller = Poller([Target("flood", "127.0.0.1", miner.port)], timeout=10.0, connect_timeout=1.0)
    assert poller.max_reply_bytes == MAX_REPLY_BYTES == 4 * 1024 * 1024  # the default cap
    tracemalloc.start()
    try:
        async with asyncio.timeout(30):
            (result,) = await poller.poll()
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, Unreachable) and result.kind is FailureKind.NOT_API, result
    assert f"reply larger than {MAX_REPLY_BYTES} bytes" in result.error
    # The reader stopped at the cap: the miner got nowhere near its 100 MB, and this
    # process (the server's reused chunk included) held a few MB at most, not 100.
    await until("the flood to stop", lambda: not miner.tasks, 10)
    assert miner.sent < FLOOD_BYTES / 4
    assert peak_bytes < 24 * 1024 * 1024, f"peak {peak_bytes / 2**20:.1f} MiB"


# -- a third of the fleet hangs -------------------------------------------------------------


async def test_a_fleet_where_a_third_hangs_still_cycles_within_the_deadline(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    fleet = Fleet.build(9, flavours=("cgminer",), listen="127.0.0.1", base_port=0, clock=clock)
    hung = {"sim-002", "sim-005", "sim-008"}
    async with serve(fleet):
        for name in hung:
            await fleet.hang(name)
        miners = "".join(f"  - {{name: {m.name}, host: {m.host}, port: {m.port}}}\n" for m in fleet)
        config = tmp_path / "config.yaml"
        config.write_text(
            f"poll: {{interval: 30s, timeout: {TIMEOUT_S}s, connect_timeout: {TIMEOUT_S}s}}\n"
            f"state_dir: {tmp_path}\nminers:\n{miners}"
            "rules:\n"
            "  - {name: MinerUnreachable, type: unreachable, for: 1m, severity: critical}\n"
            "  - {name: DeviceDead, type: device_status, status: [Dead, Sick, NoStart], for: 0s}\n"
            "  - {name: PoolStale, type: pool_stale, no_accepted_share_for: 10m}\n"
            "  - {name: TooHot, type: threshold, field: temperature.max, above: 85, for: 0s}\n"
        )
        watchdog = Watchdog(load_config(config), clock=clock)
        states: list[dict[tuple[str, str], str]] = []
        for _ in range(3):  # 0 s: pending; 60 s: past `for`, firing
            clock.advance(30)
            started = time.monotonic()
            async with asyncio.timeout(TIMEOUT_S + 30):
                report = await watchdog.cycle()
            assert time.monotonic() - started < 2 * TIMEOUT_S + SLACK_S
            assert [r.name for r in report.results] == [m.name for m in fleet]
            for result in report.results:
                if result.name in hung:
                    assert (
                        isinstance(result, Unreachable) and result.kind is FailureKind.READ_TIMEOUT
                    ), result
                else:
                    assert isinstance(result, Snapshot) and result.up, result
                    assert result.hashrate_hs and result.devices and result.pools
            states.append({(a.alertname, a.miner): a.state.name for a in watchdog.alerts.alerts()})
    # Only the hung miners have an alert, and only MinerUnreachable: pending, then firing.
    pending = {("MinerUnreachable", name): "PENDING" for name in hung}
    assert states[0] == pending
    assert states[2] == {key: "FIRING" for key in pending}


# == receivers ===============================================================================

HOUR_S = 3600.0
STEP_S = 30.0
"""The outbox is asked every poll interval; its clock moves this much per call here."""


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class HookSink:
    """A webhook receiver on a fixed 127.0.0.1 port: ``ok``, ``down`` (nothing listens),
    ``500``, ``429`` (Retry-After), or ``slow`` (takes the request, answers 200 after
    ``slow_s``: the sender may have given up by then)."""

    def __init__(self, *, slow_s: float = 0.3, retry_after_s: int = 120) -> None:
        self.port = free_port()
        self.mode = "down"
        self.slow_s = slow_s
        self.retry_after_s = retry_after_s
        self.lock = threading.Lock()
        self.received: list[dict[str, Any]] = []  # every body that arrived
        self.accepted: list[dict[str, Any]] = []  # bodies answered 2xx at once
        self.in_flight = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def set(self, mode: str) -> None:
        if mode == "down":
            self._stop()
        elif self._server is None:
            self._start()
        self.mode = mode

    def _start(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with sink.lock:
                    sink.in_flight += 1
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    with sink.lock:
                        sink.received.append(body)
                        mode = sink.mode
                    status, headers = 200, {}
                    if mode == "500":
                        status = 500
                    elif mode == "429":
                        status, headers = 429, {"Retry-After": str(sink.retry_after_s)}
                    elif mode == "slow":
                        time.sleep(sink.slow_s)
                    if status == 200 and mode != "slow":
                        with sink.lock:
                            sink.accepted.append(body)
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up waiting
                finally:
                    with sink.lock:
                        sink.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        self._server = server

    def _stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def count(self, key: tuple[str, ...], *, accepted: bool = False) -> int:
        """Bodies whose alerts carry ``key`` = (alertname, miner, status)."""
        with self.lock:
            bodies = list(self.accepted if accepted else self.received)
        return sum(1 for body in bodies if key in alert_keys(body))

    def close(self) -> None:
        self._stop()


def alert_keys(body: dict[str, Any]) -> set[tuple[str, ...]]:
    """(alertname, miner, status) of each alert in a webhook body."""
    return {
        (a["labels"].get("alertname", ""), a["labels"].get("miner", ""), a["status"])
        for a in body["alerts"]
    }


@pytest.fixture
def hook_sink() -> Iterator[HookSink]:
    sink = HookSink()
    yield sink
    sink.close()


def note(receiver: str, miner: str, status: str = "firing") -> Notification:
    labels = {"alertname": "DeviceDead", "miner": miner}
    view = AlertView(
        fingerprint(labels), labels, {"summary": f"{miner} {status}"}, "", status, T0,
        None if status == "firing" else T0 + 60,
    )  # fmt: skip
    return Notification(receiver, f"{{}}:{{miner={miner}}}", {"miner": miner}, status, (view,))


def webhook(url: str, timeout: str = "2s") -> Integration:
    return build_integration(
        receiver_model().model_validate(
            {"name": "hook", "webhook": {"url": url, "timeout": timeout}}
        )
    )


def run_outage(box: Outbox, clock: Clock, seconds: float) -> int:
    """Ask the outbox every STEP_S of fake time for ``seconds``; the attempts it failed."""
    failed = 0
    end = clock.now + seconds
    while clock.now < end:
        clock.now += STEP_S
        failed += box.deliver_due(clock.now, wait_s=5.0).failed
    return failed


@pytest.mark.parametrize("fault", ["down", "500", "429", "slow"])
def test_webhook_fault_for_an_hour_keeps_the_notification_then_delivers_it(
    fault: str, hook_sink: HookSink, tmp_path: Path
) -> None:
    hook_sink.set(fault)
    store = Store(tmp_path / "state.sqlite")
    clock = Clock(T0)
    # The slow receiver answers after 0.3 s; the webhook gives up after 0.1 s.
    hook = webhook(hook_sink.url, "100ms")
    box = Outbox(store, {"hook": hook}, clock=clock, rng=random.Random(5), budget_s=10.0)
    box.enqueue([note("hook", "m1"), note("hook", "m1", "resolved"), note("hook", "m2")], T0)

    failed = run_outage(box, clock, HOUR_S)
    assert failed >= 5  # retried with backoff, not once and not every 30 s
    assert failed <= HOUR_S / STEP_S / 2
    assert store.outbox_depth() == 3  # all kept
    assert hook_sink.count(("DeviceDead", "m1", "firing"), accepted=True) == 0
    if fault == "429":  # the service's Retry-After (120 s) spaces the attempts at least
        assert failed <= HOUR_S / hook_sink.retry_after_s
    if fault == "slow":  # each attempt reached the receiver, which answered too late
        assert len(hook_sink.received) == failed

    before = len(hook_sink.received)
    hook_sink.set("ok")
    run_outage(box, clock, 900)  # the longest backoff is 600 s
    assert store.outbox_depth() == 0
    arrived = [sorted(alert_keys(body)) for body in hook_sink.received[before:]]
    m1_firing, m1_resolved, m2_firing = (
        [("DeviceDead", miner, status)] for miner, status in
        (("m1", "firing"), ("m1", "resolved"), ("m2", "firing"))
    )  # fmt: skip
    assert sorted(arrived) == sorted([m1_firing, m1_resolved, m2_firing])  # once each
    assert arrived.index(m1_firing) < arrived.index(m1_resolved)  # in group order
    for key in (("m1", "firing"), ("m1", "resolved"), ("m2", "firing")):
        assert hook_sink.count(("DeviceDead", *key), accepted=True) == 1
    assert box.counters()["hook"].sent == 3 and box.counters()["hook"].dropped == 0
    box.close()


class SmtpSink:
    """aiosmtpd on a fixed 127.0.0.1 port: ``ok``, ``down`` (nothing listens), or refusing
    with a code at RCPT or DATA (``rcpt_451``, ``rcpt_550``, ``data_451``, ``data_554``)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mode = "down"
        self.messages: list[bytes] = []
        self._controller: Controller | None = None

    def set(self, mode: str) -> None:
        if mode == "down" and self._controller is not None:
            self._controller.stop()
            self._controller = None
        elif mode != "down" and self._controller is None:
            self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
            self._controller.start()
        self.mode = mode

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mode == "rcpt_451":
            return "451 4.3.0 Mailbox temporarily unavailable"
        if self.mode == "rcpt_550":
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.mode == "data_451":
            return "451 4.7.1 Greylisted, try again later"
        if self.mode == "data_554":
            return "554 5.7.1 Message rejected as spam"
        assert isinstance(envelope.content, bytes)
        self.messages.append(envelope.content)
        return "250 OK"

    def subjects(self) -> list[str]:
        from email import message_from_bytes

        return [str(message_from_bytes(m)["Subject"]) for m in self.messages]

    def close(self) -> None:
        self.set("down")


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.close()


def mail(port: int) -> Integration:
    return build_integration(
        receiver_model().model_validate(
            {"name": "mail", "email": {"smtp": f"127.0.0.1:{port}", "starttls": False,
             "from": "cgwatchdog@example.org", "to": ["ops@example.org"], "timeout": "2s"}}
        )
    )  # fmt: skip


@pytest.mark.parametrize("fault", ["down", "rcpt_451", "data_451"])
def test_smtp_temporary_refusal_for_an_hour_keeps_the_mail_then_sends_it_once(
    fault: str, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    smtp_sink.set(fault)
    store = Store(tmp_path / "state.sqlite")
    clock = Clock(T0)
    box = Outbox(store, {"mail": mail(smtp_sink.port)}, clock=clock, rng=random.Random(5))
    box.enqueue([note("mail", "m1"), note("mail", "m1", "resolved")], T0)
    assert run_outage(box, clock, HOUR_S) >= 5  # never raises: the daemon's loop goes on
    assert store.outbox_depth() == 2
    (head, _) = store.pending()
    assert head.last_error is not None
    assert {"down": "connection refused", "rcpt_451": "451", "data_451": "451"}[fault] in (
        head.last_error
    )
    assert smtp_sink.messages == []

    smtp_sink.set("ok")
    run_outage(box, clock, 900)
    assert store.outbox_depth() == 0
    assert [s.split("]")[0] for s in smtp_sink.subjects()] == ["[FIRING:1", "[RESOLVED:1"]
    box.close()


@pytest.mark.parametrize("fault", ["rcpt_550", "data_554"])
def test_smtp_permanent_refusal_drops_the_mail_with_a_logged_loss(
    fault: str, smtp_sink: SmtpSink, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    smtp_sink.set(fault)
    store = Store(tmp_path / "state.sqlite")
    clock = Clock(T0)
    box = Outbox(store, {"mail": mail(smtp_sink.port)}, clock=clock, rng=random.Random(5))
    box.enqueue([note("mail", "m1")], T0)
    with caplog.at_level(logging.ERROR, logger="cgwatchdog.notify"):
        report = box.deliver_due(clock.now, wait_s=5.0)
    assert (report.sent, report.failed, report.dropped, report.pending) == (0, 1, 1, 0)
    (loss,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    code = fault.split("_")[1]
    assert loss.getMessage().startswith(
        "dropped a notification to receiver 'mail' (group {}:{miner=m1}) at attempt 1: "
    )
    assert f"127.0.0.1:{smtp_sink.port}" in loss.getMessage() and code in loss.getMessage()
    smtp_sink.set("ok")  # the same mail would be refused again: it is not retried
    run_outage(box, clock, 900)
    assert smtp_sink.messages == [] and box.counters()["mail"].dropped == 1
    box.close()


# == the state file ==========================================================================


class StoreFault:
    """A way to make the open state file fail, and to undo it, that works as root
    (file permissions do not stop root, so chmod is no test here)."""

    name = ""

    def prepare(self, state_dir: Path) -> None:
        """Before the store opens in ``state_dir``."""
        state_dir.mkdir(parents=True, exist_ok=True)

    def apply(self, store: Store) -> None:
        raise NotImplementedError

    def remove(self, store: Store) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        """After the test, whatever happened."""


class DiskFull(StoreFault):
    """A real ENOSPC: the state directory is a 2 MiB tmpfs, filled up by another file."""

    name = "disk_full"

    def __init__(self) -> None:
        self.mount: Path | None = None

    def prepare(self, state_dir: Path) -> None:
        super().prepare(state_dir)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(state_dir)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        self.mount = state_dir

    def apply(self, store: Store) -> None:
        assert self.mount is not None
        fd = os.open(self.mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == 28  # ENOSPC
        try:  # the last few bytes
            while True:
                os.write(fd, b"\0")
        except OSError:
            pass
        finally:
            os.close(fd)

    def remove(self, store: Store) -> None:
        assert self.mount is not None
        (self.mount / "filler").unlink()

    def cleanup(self) -> None:
        if self.mount is not None:
            subprocess.run(["umount", "-l", str(self.mount)], check=False)


class Immutable(StoreFault):
    """A real EPERM on every write: the file and its WAL get the immutable attribute
    (``chattr +i``, which binds root too), as when an operator or a tool freezes them.
    (The ``-shm`` index is memory-mapped: made immutable it kills the process with SIGBUS,
    which is no state-file fault cgwatchdog can handle, so it is left writable.)"""

    name = "read_only"

    def __init__(self) -> None:
        self.files: list[Path] = []

    def prepare(self, state_dir: Path) -> None:
        super().prepare(state_dir)
        probe = state_dir / "probe"
        probe.touch()
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, check=False)
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True, check=False)
        probe.unlink()
        if done.returncode != 0:
            pytest.skip("chattr +i is not available here (filesystem or CAP_LINUX_IMMUTABLE)")

    def apply(self, store: Store) -> None:
        self.files = [Path(store.path), Path(store.path + "-wal")]
        subprocess.run(["chattr", "+i", *map(str, self.files)], check=True)

    def remove(self, store: Store) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        if self.files:
            subprocess.run(["chattr", "-i", *map(str, self.files)], check=False)


class QueryOnly(StoreFault):
    """sqlite's SQLITE_READONLY ("attempt to write a readonly database"), the error of a
    file sqlite may only read, made with ``PRAGMA query_only`` on the store's connection."""

    name = "query_only"

    def apply(self, store: Store) -> None:
        with store._lock:
            store._db.execute("PRAGMA query_only = ON")

    def remove(self, store: Store) -> None:
        with store._lock:
            store._db.execute("PRAGMA query_only = OFF")


class Locked(StoreFault):
    """SQLITE_BUSY: another process (a backup, the sqlite3 shell) holds the write lock."""

    name = "locked"

    def __init__(self) -> None:
        self.holder: sqlite3.Connection | None = None

    def apply(self, store: Store) -> None:
        self.holder = sqlite3.connect(store.path, isolation_level=None)
        self.holder.execute("BEGIN EXCLUSIVE")

    def remove(self, store: Store) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        if self.holder is not None:
            with contextlib.suppress(sqlite3.Error):
                self.holder.execute("ROLLBACK")
            self.holder.close()
            self.holder = None


STORE_FAULTS: dict[str, type[StoreFault]] = {
    "disk_full_tmpfs": DiskFull,
    "read_only_immutable": Immutable,
    "read_only_query_only": QueryOnly,
    "locked": Locked,
}


@pytest.fixture
def store_fault(request: pytest.FixtureRequest) -> Iterator[StoreFault]:
    fault = STORE_FAULTS[request.param]()
    yield fault
    fault.cleanup()


@pytest.mark.parametrize("store_fault", list(STORE_FAULTS), indirect=True)
def test_outbox_on_a_failing_state_file_sends_nothing_twice_and_records_later(
    store_fault: StoreFault, tmp_path: Path
) -> None:
    ok, failing = HookSink(), HookSink()
    ok.set("ok")
    failing.set("500")
    state_dir = tmp_path / "state"
    store_fault.prepare(state_dir)
    store = Store(state_dir / STATE_FILE, timeout_s=0.02)  # how long a lock is waited for
    clock = Clock(T0)
    box = Outbox(
        store, {"ok": webhook(ok.url), "failing": webhook(failing.url)}, clock=clock,
        rng=random.Random(5),
    )  # fmt: skip
    try:
        box.enqueue([note("ok", "m1"), note("failing", "m2")], T0)
        store_fault.apply(store)

        # Delivered, or failed, but the file cannot say so: the next calls neither send
        # the delivered one again nor retry the failed one before its backoff.
        calls = 20
        for _ in range(calls):
            with pytest.raises(
                StoreError, match="kept in memory until the state file can be written"
            ):
                box.deliver_due(clock.now, wait_s=5.0)
            clock.now += STEP_S
        assert ok.count(("DeviceDead", "m1", "firing")) == 1
        attempts = failing.count(("DeviceDead", "m2", "firing"))
        assert 3 <= attempts < calls * 3 // 4, attempts

        store_fault.remove(store)
        report = box.deliver_due(clock.now, wait_s=5.0)
        assert report.pending == 1  # the delivered one is gone from the file now
        (kept,) = store.pending()
        assert kept.receiver == "failing" and kept.attempts == attempts
        failing.set("ok")
        run_outage(box, clock, 900)
        assert store.outbox_depth() == 0
        assert ok.count(("DeviceDead", "m1", "firing")) == 1
        assert failing.count(("DeviceDead", "m2", "firing"), accepted=True) == 1
        box.close()
    finally:
        ok.close()
        failing.close()
        store.close()


# -- the daemon, in this process --------------------------------------------------------------


@dataclass
class LiveDaemon:
    """A :class:`Daemon` running on this event loop, with its endpoint and sd_notify socket."""

    daemon: Daemon
    task: asyncio.Task[int]
    http_port: int
    notify: NotifySocket

    async def get(self, path: str) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.http_port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        async with asyncio.timeout(10):
            data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    async def metric(self, name: str) -> float:
        _, body = await self.get("/metrics")
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return float(sample.value)
        raise AssertionError(f"no sample {name}")

    async def alerts(self) -> dict[str, Any]:
        code, body = await self.get("/api/alerts")
        assert code == 200
        document: dict[str, Any] = json.loads(body)
        return document

    async def state(self, alertname: str, miner: str) -> str | None:
        for alert in (await self.alerts())["alerts"]:
            if (alert["alertname"], alert["labels"].get("miner")) == (alertname, miner):
                return str(alert["state"])
        return None

    def in_state(
        self, alertname: str, miner: str, state: str | None
    ) -> Callable[[], Awaitable[bool]]:
        """A check for :func:`until`: the endpoint shows the alert in ``state``."""

        async def check() -> bool:
            return await self.state(alertname, miner) == state

        return check

    async def healthz_clear(self) -> bool:
        return await self.get("/healthz") == (200, b"ok\n")

    def status_lines(self) -> list[str]:
        return [fields["STATUS"] for fields in self.notify.with_key("STATUS")]

    @property
    def cycles(self) -> int:
        return self.daemon.status.cycles


def daemon_config(
    tmp: Path, fleet: Fleet, state_dir: Path, http_port: int, receivers: str, route: str
) -> Path:
    miners = "".join(f"  - {{name: {m.name}, host: {m.host}, port: {m.port}}}\n" for m in fleet)
    path = tmp / "config.yaml"
    path.write_text(
        "poll: {interval: 300ms, timeout: 200ms, connect_timeout: 100ms, jitter: 0%}\n"
        f"state_dir: {state_dir}\n"
        f'http: {{listen: "127.0.0.1:{http_port}"}}\n'
        f"miners:\n{miners}"
        "rules:\n  - {name: MinerUnreachable, type: unreachable, for: 0s, severity: warning}\n"
        f"receivers:\n{receivers}"
        f"route: {route}\n"
    )
    return path


HOOK_ROUTE = (
    "{receiver: hook, group_by: [alertname, miner], group_wait: 0s, group_interval: 300ms, "
    "repeat_interval: 1h}"
)


@contextlib.asynccontextmanager
async def live_daemon(config_path: Path) -> AsyncIterator[LiveDaemon]:
    """Run the daemon on this loop until the block ends; it must then stop with exit 0."""
    config = load_config(config_path)
    notify = NotifySocket()
    collector = asyncio.get_running_loop().create_task(notify.collect())
    daemon = Daemon(
        config_path,
        config,
        notifier=Notifier(socket_path=notify.address, environ={}),
        registry=CollectorRegistry(),
    )
    task = asyncio.get_running_loop().create_task(daemon.run())
    live = LiveDaemon(daemon, task, config.http.port, notify)
    try:
        await until("the first cycle", lambda: live.cycles >= 1 or task.done())
        assert not task.done(), "the daemon stopped at its start"
        yield live
        daemon._on_stop("SIGTERM")  # what the signal handler calls
        async with asyncio.timeout(20):
            assert await task == 0
    finally:
        if not task.done():
            daemon._on_stop("SIGTERM")
            with contextlib.suppress(Exception):
                async with asyncio.timeout(20):
                    await task
        collector.cancel()
        notify.sock.close()


@pytest.mark.parametrize(
    "store_fault",
    ["disk_full_tmpfs", "read_only_immutable", "read_only_query_only"],  # locked: test_daemon.py
    indirect=True,
)
async def test_daemon_on_a_failing_state_file_goes_on_and_loses_nothing(
    store_fault: StoreFault,
    tmp_path: Path,
    hook_sink: HookSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cgwatchdog")
    hook_sink.set("ok")
    state_dir = tmp_path / "state"
    store_fault.prepare(state_dir)
    fleet = Fleet.build(2, flavours=("cgminer",), listen="127.0.0.1", base_port=0)
    receivers = f'  - {{name: hook, webhook: {{url: "{hook_sink.url}"}}}}\n'
    firing = ("MinerUnreachable", "sim-002", "firing")
    resolved = ("MinerUnreachable", "sim-002", "resolved")
    async with serve(fleet):
        config = daemon_config(tmp_path, fleet, state_dir, free_port(), receivers, HOOK_ROUTE)
        async with live_daemon(config) as live:
            store = live.daemon.store
            assert store is not None
            store_fault.apply(store)
            await fleet.down("sim-002")

            # The cycle's state cannot be saved: said loudly, alerting goes on from memory.
            await until("the failure logged", lambda: "STATE NOT SAVED" in caplog.text)
            await until("the alert firing", live.in_state(*firing[:2], "firing"))

            async def healthz_warns() -> bool:
                # The cycle records the file's health after its delivery step, a moment
                # after the log line and the alert's state above.
                code, body = await live.get("/healthz")
                assert code == 200, body
                return b"degraded: state file" in body

            await until("/healthz to report the state file", healthz_warns)
            assert await live.metric("cgwatchdog_store_healthy") == 0
            assert await live.metric("cgwatchdog_store_errors_total") >= 1
            await until(
                "STATUS= to say so", lambda: "STATE FILE FAILING" in live.status_lines()[-1]
            )
            cycles = live.cycles
            await until("more cycles", lambda: live.cycles >= cycles + 3)
            assert live.daemon.watchdog is not None and not live.daemon.watchdog.saved

            await fleet.up("sim-002")  # resolved while the file still fails
            await until("the alert resolved", live.in_state(*firing[:2], None))  # listed no more

            store_fault.remove(store)
            await until(
                "both notifications",
                lambda: hook_sink.count(firing) == 1 and hook_sink.count(resolved) == 1,
            )
            await until("recovery logged", lambda: "the state file works again" in caplog.text)
            await until("/healthz clear", live.healthz_clear)
            assert await live.metric("cgwatchdog_store_healthy") == 1
            assert (await live.alerts())["outbox_depth"] == 0
            cycles = live.cycles
            await until("more cycles", lambda: live.cycles >= cycles + 3)
        # Nothing lost and nothing twice: in order, once each, and all of it on file.
        bodies = [alert_keys(body) for body in hook_sink.accepted]
        assert [keys for keys in bodies if firing in keys or resolved in keys] == [
            {firing}, {resolved},
        ]  # fmt: skip
    after = Store(state_dir / STATE_FILE)
    try:
        assert after.outbox_depth() == 0
        alerts = after.load_state("alerts")
        assert alerts is not None and "sim-002" in json.dumps(alerts)
    finally:
        after.close()


async def test_daemon_on_a_failing_state_file_still_notifies(
    tmp_path: Path, hook_sink: HookSink
) -> None:
    hook_sink.set("ok")
    fault = QueryOnly()
    state_dir = tmp_path / "state"
    fault.prepare(state_dir)
    fleet = Fleet.build(2, flavours=("cgminer",), listen="127.0.0.1", base_port=0)
    receivers = f'  - {{name: hook, webhook: {{url: "{hook_sink.url}"}}}}\n'
    firing = ("MinerUnreachable", "sim-002", "firing")
    async with serve(fleet):
        config = daemon_config(tmp_path, fleet, state_dir, free_port(), receivers, HOOK_ROUTE)
        async with live_daemon(config) as live:
            store = live.daemon.store
            assert store is not None
            fault.apply(store)
            await fleet.down("sim-002")
            await until("the alert firing", live.in_state(*firing[:2], "firing"))
            cycles = live.cycles
            await until("more cycles", lambda: live.cycles >= cycles + 4)
            notified_during_the_fault = hook_sink.count(firing)
            fault.remove(store)
            await until("the notification after it", lambda: hook_sink.count(firing) >= 1)
    assert notified_during_the_fault == 1
    assert hook_sink.count(firing) == 1  # and not again once the file works


async def test_daemon_polls_on_while_a_webhook_is_slow_and_smtp_refuses(
    tmp_path: Path,
    hook_sink: HookSink,
    smtp_sink: SmtpSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cgwatchdog")
    hook_sink.slow_s = 3.0  # holds each request longer than the webhook waits (2 s)
    hook_sink.set("slow")
    smtp_sink.set("rcpt_451")
    fleet = Fleet.build(2, flavours=("cgminer",), listen="127.0.0.1", base_port=0)
    receivers = (
        f'  - {{name: hook, webhook: {{url: "{hook_sink.url}", timeout: 2s}}}}\n'
        f'  - {{name: mail, email: {{smtp: "127.0.0.1:{smtp_sink.port}", starttls: false,'
        " from: cgwatchdog@example.org, to: [ops@example.org]}}\n"
    )
    route = HOOK_ROUTE[:-1] + ", routes: [{receiver: mail, continue: true}, {receiver: hook}]}"
    async with serve(fleet):
        config = daemon_config(tmp_path, fleet, tmp_path / "state", free_port(), receivers, route)
        async with live_daemon(config) as live:
            await fleet.down("sim-002")
            await until("the webhook to hold a request", lambda: hook_sink.in_flight == 1)
            cycles = live.cycles
            # Polling goes on at its interval while the webhook holds the request: each
            # cycle waits DELIVERY_WAIT_S (0.5 s) at most for the receivers.
            await until("cycles meanwhile", lambda: live.cycles >= cycles + 3)
            assert hook_sink.in_flight == 1 and len(hook_sink.received) == 1
            await until(
                "the refused mail",
                lambda: "receiver 'mail'" in caplog.text and "451" in caplog.text,
            )
            assert smtp_sink.messages == []
            document = await live.alerts()
            assert document["outbox_depth"] >= 1  # kept for the retry
            assert [(a["alertname"], a["state"]) for a in document["alerts"]] == [
                ("MinerUnreachable", "firing")
            ]
            # Cycles complete (200) but the refused mail degrades health, with why (the
            # cycle records it after its delivery step, a moment after the log line).
            seen: list[bytes] = []

            async def degraded() -> bool:
                code, body = await live.get("/healthz")
                assert code == 200, body
                seen.append(body)
                return body.startswith(b"degraded: receiver 'mail' failing: ")

            await until("/healthz to report the refused mail", degraded)
            assert b"451" in seen[-1] and b"oldest undelivered notification queued" in seen[-1]
            assert (await live.alerts())["health"] == "degraded"
            hook_sink.set("ok")  # lets the held request end, so the stop is quick


async def test_the_page_s_hour_of_hashrate_comes_from_the_rule_history_that_keeps_it(
    tmp_path: Path, hook_sink: HookSink
) -> None:
    """A rule with an hour's baseline keeps an hour of each miner's samples: the daemon's
    trend keeps no row of its own for those miners and draws their minutes from it."""
    fleet = Fleet.build(3, flavours=("cgminer", "bmminer"), listen="127.0.0.1", base_port=0)
    receivers = f'  - {{name: hook, webhook: {{url: "{hook_sink.url}"}}}}\n'
    async with serve(fleet):
        config = daemon_config(
            tmp_path, fleet, tmp_path / "state", free_port(), receivers, HOOK_ROUTE
        )
        config.write_text(
            config.read_text().replace(
                "rules:\n",
                "rules:\n  - {name: HashrateDrop, type: hashrate_drop, below: 80%, baseline: 1h}\n",
            )
        )
        async with live_daemon(config) as live:
            await until("two cycles", lambda: live.cycles >= 2)
            daemon = live.daemon
            watchdog = daemon.watchdog
            assert watchdog is not None
            for miner in fleet:
                history = watchdog.rules.history.get(miner.name)
                assert history is not None and history.retention_s >= 3600
                last = history.last_at  # drawn as of its last sample: that minute has one
                assert last is not None
                series = daemon.trend.series(miner.name, last)
                known = [rate for _, rate in history.hashrates(last - 120, last)]
                assert series[-1] is not None and min(known) <= series[-1] <= max(known)
            assert len(daemon.trend) == 0 and daemon.trend.memory_bytes() == 0


async def test_after_each_cycle_the_daemon_gives_its_free_heap_back(
    tmp_path: Path, hook_sink: HookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a cycle freed inside the C heap goes back to the system once it ends."""
    trims: list[int] = []
    monkeypatch.setattr(daemon_module, "give_back_free_heap", lambda: trims.append(1) or True)
    fleet = Fleet.build(2, listen="127.0.0.1", base_port=0)
    receivers = f'  - {{name: hook, webhook: {{url: "{hook_sink.url}"}}}}\n'
    async with serve(fleet):
        config = daemon_config(
            tmp_path, fleet, tmp_path / "state", free_port(), receivers, HOOK_ROUTE
        )
        async with live_daemon(config) as live:
            await until("three cycles", lambda: live.cycles >= 3)
            assert len(trims) >= live.cycles - 1  # the last may still be ending


async def test_while_a_cycle_polls_each_miner_s_last_snapshot_goes_as_its_new_one_comes(
    tmp_path: Path, hook_sink: HookSink
) -> None:
    """The view the page and /metrics read takes each miner's new result as it is made,
    so the last cycle's snapshots are let go while the next cycle polls, not all at its
    end: one cycle's snapshots are alive at a time, not two (20 MB at 10,000 miners)."""
    fleet = Fleet.build(4, flavours=("cgminer", "bmminer"), listen="127.0.0.1", base_port=0)
    receivers = f'  - {{name: hook, webhook: {{url: "{hook_sink.url}"}}}}\n'
    checked: list[tuple[bool, list[int]]] = []
    async with serve(fleet):
        config = daemon_config(
            tmp_path, fleet, tmp_path / "state", free_port(), receivers, HOOK_ROUTE
        )
        async with live_daemon(config) as live:
            watchdog, metrics = live.daemon.watchdog, live.daemon.metrics
            assert watchdog is not None
            poller = watchdog.poller
            real_poll = poller.poll

            async def poll() -> list[Snapshot | Unreachable]:
                last = list(metrics.view.results)  # the last cycle's, as the page sees them
                results = await real_poll()
                # Not yet observed, yet the view already holds this cycle's results...
                in_view = all(a is b for a, b in zip(results, metrics.view.results, strict=True))
                # ...and nothing but ``last`` holds the last cycle's (beside the loop's
                # name and getrefcount's argument).
                checked.append((in_view, [sys.getrefcount(result) - 3 for result in last]))
                return results

            poller.poll = poll  # type: ignore[method-assign]
            await until("two cycles checked", lambda: len(checked) >= 2)
    assert checked and all(check == (True, [0] * len(fleet)) for check in checked), checked
