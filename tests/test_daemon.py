"""The daemon end to end: ``python -m cgwatchdog run`` as a subprocess.

Around it, all real and on 127.0.0.1: simulated miners served by this test's event loop
(cgminer flavour, one with a device that dies after 1 s), a webhook sink that also
plays Alertmanager (pytest-httpserver), an SMTP sink (aiosmtpd) and a datagram socket
standing in for systemd's NOTIFY_SOCKET. The poll interval is 0.5 s, so the daemon runs
on the real clock here: every wait is for an event, bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cgwatchdog.alerts import AlertView, Notification
from cgwatchdog.config import Config
from cgwatchdog.config.loader import load_config
from cgwatchdog.daemon import STATE_FILE
from cgwatchdog.logs import setup_logging, stderr_is_journal
from cgwatchdog.notify import Outbox, SendPolicy
from cgwatchdog.simulator import Fleet, make_scenario, serve
from cgwatchdog.store import Store
from cgwatchdog.watchdog import Watchdog
from tests.conftest import until

REPO = Path(__file__).resolve().parents[1]
INTERVAL = "500ms"
WATCHDOG_USEC = 2_000_000  # idle pings every second; cycles ping every 0.5 s anyway


# -- sinks ----------------------------------------------------------------------------------


@dataclass
class WebhookSink:
    """Receives webhooks at /hook (or answers 503 while ``failing``) and Alertmanager
    pushes at /api/v2/alerts."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    delivered: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    pushes: list[list[dict[str, Any]]] = field(default_factory=list)
    failing: bool = False

    def hook(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        with self.lock:
            if self.failing:
                self.refused.append(body)
                return Response("down for maintenance", status=503)
            self.delivered.append(body)
        return Response("ok")

    def alertmanager(self, request: Request) -> Response:
        with self.lock:
            self.pushes.append(json.loads(request.get_data()))
        return Response("{}", content_type="application/json")

    def firing(self, alertname: str, miner: str, *, refused: bool = False) -> int:
        """Notifications that carry ``alertname`` firing on ``miner``."""
        with self.lock:
            bodies = list(self.refused if refused else self.delivered)
        return sum(
            1
            for body in bodies
            if any(
                a["status"] == "firing"
                and a["labels"].get("alertname") == alertname
                and a["labels"].get("miner") == miner
                for a in body["alerts"]
            )
        )


@dataclass
class Mailbox:
    subjects: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        self.subjects.append(str(message_from_bytes(content)["Subject"]))
        return "250 OK"


class NotifySocket:
    """A datagram socket in the abstract namespace, like systemd's; keeps what arrives."""

    def __init__(self) -> None:
        self.address = f"@cgwatchdog-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str]]] = []

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def times(self, key: str, since: float = 0.0) -> list[float]:
        return [at for at, fields in self.messages if key in fields and at >= since]

    def with_key(self, key: str) -> list[dict[str, str]]:
        return [fields for _, fields in self.messages if key in fields]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the harness ------------------------------------------------------------------------------


@dataclass
class Daemon:
    process: asyncio.subprocess.Process
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)


@dataclass
class Harness:
    tmp: Path
    fleet: Fleet
    sink: WebhookSink
    hook_port: int
    mailbox: Mailbox
    smtp_port: int
    notify: NotifySocket
    http_port: int
    config: Path
    started: list[Daemon] = field(default_factory=list)

    def write_config(self, miners: int = 2, *, broken: bool = False) -> None:
        if broken:
            self.config.write_text("poll:\n  interval: whenever\nminers: [\n")
            return
        members = list(self.fleet)[:miners]
        miner_lines = "".join(
            f"  - {{name: {m.name}, host: {m.host}, port: {m.port}}}\n" for m in members
        )
        hook = f"http://127.0.0.1:{self.hook_port}"
        self.config.write_text(
            f"""\
poll: {{interval: {INTERVAL}, timeout: 400ms, connect_timeout: 200ms, jitter: 0%}}
state_dir: {self.tmp / "state"}
http: {{listen: "127.0.0.1:{self.http_port}"}}
miners:
{miner_lines}rules:
  - {{name: DeviceDead, type: device_status, status: [Dead], for: 0s, severity: critical}}
  - {{name: MinerUnreachable, type: unreachable, for: 0s, severity: warning}}
receivers:
  - name: hook
    webhook: {{url: "{hook}/hook"}}
  - name: mail
    email: {{smtp: "127.0.0.1:{self.smtp_port}", starttls: false,
             from: cgwatchdog@example.org, to: [ops@example.org]}}
  - name: am
    alertmanager: {{url: "{hook}"}}
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 0s
  group_interval: 500ms
  repeat_interval: 1h
  routes:
    - {{match: {{alertname: DeviceDead}}, receiver: mail, continue: true}}
    - {{match: {{alertname: DeviceDead}}, receiver: am, continue: true}}
    - {{receiver: hook}}
"""
        )

    async def start(self) -> Daemon:
        env = {
            **os.environ,
            "NOTIFY_SOCKET": self.notify.address,
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("JOURNAL_STREAM", None)
        log = self.tmp / f"daemon-{len(self.started) + 1}.log"
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cgwatchdog",
                "run",
                "-c",
                str(self.config),
                cwd=REPO,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        daemon = Daemon(process, log)
        self.started.append(daemon)
        return daemon

    async def wait(
        self, what: str, check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0
    ) -> None:
        """Poll ``check`` until it holds; fail with the daemon's log after ``timeout``."""
        await until(
            what,
            check,
            timeout,
            context=lambda: "\n".join(d.text()[-3000:] for d in self.started),
        )

    async def wait_ready(self, since: float) -> dict[str, str]:
        await self.wait("READY=1", lambda: bool(self.notify.times("READY", since)))
        return next(f for at, f in self.notify.messages if "READY" in f and at >= since)

    async def get(self, path: str) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.http_port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        async with asyncio.timeout(15):
            data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    async def alerts(self) -> dict[str, Any]:
        code, body = await self.get("/api/alerts")
        assert code == 200
        document: dict[str, Any] = json.loads(body)
        return document

    async def outbox_empty(self) -> bool:
        depth: int = (await self.alerts())["outbox_depth"]
        return depth == 0

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        code, body = await self.get("/metrics")
        assert code == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }

    async def stop(self, daemon: Daemon) -> int:
        daemon.signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            return await daemon.process.wait()


@pytest.fixture
def webhook_sink() -> Iterator[tuple[WebhookSink, int]]:
    sink = WebhookSink()
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("/hook", method="POST").respond_with_handler(sink.hook)
    server.expect_request("/api/v2/alerts", method="POST").respond_with_handler(sink.alertmanager)
    server.start()
    yield sink, server.port
    server.clear()
    server.stop()


@pytest.fixture
def smtp_sink() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield mailbox, controller.port
    controller.stop()


@pytest.fixture
async def harness(
    tmp_path: Path,
    webhook_sink: tuple[WebhookSink, int],
    smtp_sink: tuple[Mailbox, int],
) -> AsyncIterator[Harness]:
    fleet = Fleet.build(
        3,
        {make_scenario("device_dead", fail_after_s=1.0, device=1): 1},
        flavours=("cgminer",),
        listen="127.0.0.1",
        base_port=0,
        clock=time.time,
    )
    notify = NotifySocket()
    collector = asyncio.get_running_loop().create_task(notify.collect())
    sink, hook_port = webhook_sink
    mailbox, smtp_port = smtp_sink
    async with serve(fleet):
        h = Harness(
            tmp=tmp_path,
            fleet=fleet,
            sink=sink,
            hook_port=hook_port,
            mailbox=mailbox,
            smtp_port=smtp_port,
            notify=notify,
            http_port=free_port(),
            config=tmp_path / "config.yaml",
        )
        h.write_config()
        try:
            yield h
        finally:
            for daemon in h.started:
                if daemon.process.returncode is None:
                    daemon.process.kill()
                    await daemon.process.wait()
            collector.cancel()
            notify.sock.close()


async def cli(*args: str) -> tuple[int, str]:
    """Run ``python -m cgwatchdog ARGS``; its exit code and its stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cgwatchdog",
        *args,
        cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


# -- the tests --------------------------------------------------------------------------------


async def test_an_invalid_config_stops_the_start_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("poll:\n  interval: whenever\n")
    code, out = await cli("run", "-c", str(config))
    assert code == 2
    assert f"{config}:2: " in out and "not starting: 1 problem" in out
    assert not (tmp_path / "state").exists()


async def test_ready_watchdog_notifications_reload_stall_and_stop(harness: Harness) -> None:
    h = harness
    began = time.monotonic()
    daemon = await h.start()

    # READY=1 once the port is bound and the first cycle ran: its STATUS tells of it.
    ready = await h.wait_ready(began)
    assert re.fullmatch(
        r"2 miners, 2 up, \d firing, outbox \d, last cycle \d+\.\ds", ready["STATUS"]
    )
    assert (await h.get("/healthz"))[0] == 200
    ready_at = h.notify.times("READY")[0]
    await h.wait("WATCHDOG=1 pings", lambda: len(h.notify.times("WATCHDOG", ready_at)) >= 3)

    # The dead device fires: webhook and email get it once, Alertmanager gets the state
    # pushed every cycle, and nothing for Alertmanager waits in the outbox.
    await h.wait("the webhook", lambda: h.sink.firing("DeviceDead", "sim-001") == 1)
    await h.wait("the email", lambda: len(h.mailbox.subjects) == 1)
    assert "DeviceDead" in h.mailbox.subjects[0]
    await h.wait("repeated pushes", lambda: len(h.sink.pushes) >= 2)
    assert all(p[0]["labels"]["alertname"] == "DeviceDead" for p in h.sink.pushes)
    await h.wait("an empty outbox", h.outbox_empty)
    document = await h.alerts()
    assert document["firing"] == 1
    assert "'am' is not configured" not in daemon.text()
    assert "FIRING DeviceDead on sim-001 (device ASC1): Dead" in daemon.text()

    # A broken config on SIGHUP: reported, refused, the old one keeps working.
    h.write_config(broken=True)
    reload_at = time.monotonic()
    daemon.signal(signal.SIGHUP)
    await h.wait("RELOADING=1", lambda: bool(h.notify.times("RELOADING", reload_at)))
    await h.wait_ready(reload_at)
    assert "config reload refused" in daemon.text()
    assert daemon.process.returncode is None
    await h.fleet.set_mode("sim-002", "down")
    await h.wait("the old config", lambda: h.sink.firing("MinerUnreachable", "sim-002") == 1)
    document = await h.alerts()
    assert document["miners"] == 2
    assert "config reload" in document["warnings"][0]

    # A good one: applied, alert state kept.
    await h.fleet.set_mode("sim-002", "normal")
    h.write_config(miners=3)
    reload_at = time.monotonic()
    daemon.signal(signal.SIGHUP)
    await h.wait_ready(reload_at)
    await h.wait("the new miner", lambda: "configuration reloaded: 3 miners" in daemon.text())
    await h.wait("a cycle with it", lambda: "3 miners" in h.notify.with_key("STATUS")[-1]["STATUS"])
    samples = await h.metrics()
    assert samples["cgwatchdog_miner_up", (("miner", "sim-003"),)] == 1
    assert samples["cgwatchdog_config_reloads_total", (("result", "failed"),)] == 1
    assert samples["cgwatchdog_config_reloads_total", (("result", "ok"),)] == 1
    document = await h.alerts()
    assert document["warnings"] == []
    assert [a["alertname"] for a in document["alerts"] if a["state"] == "firing"] == ["DeviceDead"]
    assert h.sink.firing("DeviceDead", "sim-001") == 1  # not notified again after reload

    # A frozen process pings no more (SIGSTOP freezes every thread, so this shows what
    # systemd sees; that the pings come from the loop itself and no timer thread is in
    # the code: daemon._cycle and daemon._idle_until).
    stopped_at = time.monotonic()
    daemon.signal(signal.SIGSTOP)
    await asyncio.sleep(1.5)
    daemon.signal(signal.SIGCONT)
    await h.wait("pings after SIGCONT", lambda: bool(h.notify.times("WATCHDOG", stopped_at + 1.5)))
    pings = h.notify.times("WATCHDOG", ready_at)
    gaps = [(b - a, a) for a, b in itertools.pairwise(pings)]
    assert max(gap for gap, at in gaps if at < stopped_at - 1.0) < 1.2
    assert max(gap for gap, _ in gaps) >= 1.4

    # `cgwatchdog status` asks it over HTTP.
    code, out = await cli("status", "--url", f"http://127.0.0.1:{h.http_port}")
    assert code == 0, out
    assert out.splitlines()[0] == "cgwatchdog ok"
    assert any(
        line.startswith("FIRING  DeviceDead  sim-001  device=ASC1") for line in out.splitlines()
    )

    # SIGTERM: STOPPING=1, exit 0.
    stop_at = time.monotonic()
    assert await h.stop(daemon) == 0
    assert h.notify.times("STOPPING", stop_at)
    assert "stopped" in daemon.text()
    code, out = await cli("status", "--url", f"http://127.0.0.1:{h.http_port}")
    assert code == 1 and "cannot reach the daemon" in out


async def test_kill_9_then_restart_loses_nothing_and_repeats_nothing(harness: Harness) -> None:
    h = harness
    first = await h.start()
    await h.wait("the webhook", lambda: h.sink.firing("DeviceDead", "sim-001") == 1)
    await h.wait("the email", lambda: len(h.mailbox.subjects) == 1)

    # The webhook goes down; a new alert's notification waits in the outbox.
    h.sink.failing = True
    await h.fleet.set_mode("sim-002", "down")
    await h.wait(
        "a refused attempt",
        lambda: h.sink.firing("MinerUnreachable", "sim-002", refused=True) >= 1,
    )

    async def degraded() -> bool:
        return (await h.alerts())["health"] == "degraded"

    # The refused receiver degrades health: `status` says who and why, and exits 1.
    await h.wait("health degraded", degraded)
    code, out = await cli("status", "--url", f"http://127.0.0.1:{h.http_port}")
    assert code == 1, out
    assert out.splitlines()[0] == "cgwatchdog DEGRADED (1 problem)"
    assert "degraded: receiver 'hook' failing: " in out, out
    first.process.kill()
    assert await first.process.wait() == -signal.SIGKILL

    h.sink.failing = False
    began = time.monotonic()
    second = await h.start()
    await h.wait_ready(began)
    await h.wait(
        "the queued notification",
        lambda: h.sink.firing("MinerUnreachable", "sim-002") == 1,
    )
    statuses = len(h.notify.with_key("STATUS"))
    await h.wait("four more cycles", lambda: len(h.notify.with_key("STATUS")) >= statuses + 4)
    await h.wait("an empty outbox", h.outbox_empty)
    document = await h.alerts()
    assert {a["alertname"] for a in document["alerts"]} == {"DeviceDead", "MinerUnreachable"}
    assert h.sink.firing("DeviceDead", "sim-001") == 1  # not again after the restart
    assert h.sink.firing("MinerUnreachable", "sim-002") == 1
    assert len(h.mailbox.subjects) == 1
    assert await h.stop(second) == 0


async def test_a_locked_state_file_never_stops_the_loop(harness: Harness) -> None:
    h = harness
    daemon = await h.start()
    await h.wait("the webhook", lambda: h.sink.firing("DeviceDead", "sim-001") == 1)

    # Someone holds the write lock (a backup, the sqlite3 shell): saving fails after the
    # store's busy timeout, the alert is notified from memory once the file works again.
    lock = sqlite3.connect(h.tmp / "state" / STATE_FILE, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    await h.fleet.set_mode("sim-002", "down")
    warned: list[bytes] = []

    async def poll_health() -> bool:
        code, body = await h.get("/healthz")
        if code == 200 and b"degraded: state file" in body:
            warned.append(body)
        return bool(warned)

    await h.wait("the warning", poll_health, 20)
    assert warned[0].startswith(b"degraded: state file")
    samples = await h.metrics()
    assert samples["cgwatchdog_store_healthy", ()] == 0
    assert samples["cgwatchdog_store_errors_total", ()] >= 1
    assert "STATE NOT SAVED" in daemon.text()
    # Sent from memory meanwhile: a locked file does not silence alerting.
    await h.wait("the notification", lambda: h.sink.firing("MinerUnreachable", "sim-002") == 1)

    lock.execute("ROLLBACK")
    lock.close()
    await h.wait("recovery", lambda: "the state file works again" in daemon.text(), 20)
    await h.wait("an empty outbox", h.outbox_empty)
    assert h.sink.firing("MinerUnreachable", "sim-002") == 1  # not again once saved
    code, body = await h.get("/healthz")
    assert (code, body) == (200, b"ok\n")
    assert await h.stop(daemon) == 0


# -- in-process: logging, and what reaches the outbox ------------------------------------------


@pytest.fixture
def root_logging() -> Iterator[None]:
    """setup_logging changes the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


SECRET_URL = "https://hooks.example.org/services/T000/B000/XXXXsecretXXXX"


def secret_config(tmp_path: Path) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(
        """\
receivers:
  - {name: chat, webhook: {url: "${HOOK_URL}"}}
route: {receiver: chat}
"""
    )
    return load_config(path, environ={"HOOK_URL": SECRET_URL})


def test_no_secret_reaches_the_log(tmp_path: Path, root_logging: None) -> None:
    out = io.StringIO()
    redactor = setup_logging(stream=out, environ={})
    redactor.set_config(secret_config(tmp_path))
    log = logging.getLogger("cgwatchdog.test")
    log.warning("posting to %s failed", SECRET_URL, extra={"MINER": "m1", "ALERTNAME": "X"})
    try:
        raise OSError(f"cannot reach {SECRET_URL}")
    except OSError:
        log.exception("delivery failed")
    logging.getLogger("urllib3").error("path /services/T000/B000/XXXXsecretXXXX refused")
    text = out.getvalue()
    assert "XXXXsecretXXXX" not in text
    assert "posting to <redacted> failed" in text
    assert "OSError: cannot reach <redacted>" in text  # the traceback, scrubbed
    assert "path <redacted> refused" in text


def test_on_the_journal_stream_lines_carry_the_priority(tmp_path: Path, root_logging: None) -> None:
    with (tmp_path / "stream").open("w+") as stream:
        stat = os.fstat(stream.fileno())
        environ = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        assert stderr_is_journal(stream, environ)
        setup_logging(stream=stream, environ=environ, use_journal=False)
        log = logging.getLogger("cgwatchdog.test")
        log.warning("FIRING X on m1", extra={"MINER": "m1", "ALERTNAME": "X"})
        log.info("resolved")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        stream.seek(0)
        lines = stream.read().splitlines()
    assert lines[:3] == ["<4>FIRING X on m1", "<6>resolved", "<3>failed"]
    assert all(line.startswith("<3>") for line in lines[3:])  # every traceback line
    assert not stderr_is_journal(io.StringIO(), environ)


def test_alertmanager_notifications_never_reach_the_outbox(tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        f"""\
state_dir: {tmp_path}
receivers:
  - {{name: chat, webhook: {{url: "http://127.0.0.1:9/hook"}}}}
  - {{name: am, alertmanager: {{url: "http://127.0.0.1:9"}}}}
route:
  receiver: chat
  routes: [{{receiver: am, continue: true}}, {{receiver: chat}}]
"""
    )
    config = load_config(config_path)
    store = Store(tmp_path / STATE_FILE)
    outbox = Outbox(store, {}, clock=time.time, policy=SendPolicy({"am"}))
    watchdog = Watchdog(config, store=store, outbox=outbox, clock=time.time)
    report = watchdog.evaluate([], time.time())
    view = AlertView("f", {"alertname": "X"}, {}, "", "firing", 0.0, None)
    report.notifications = [
        Notification(receiver, f"{receiver}:g", {}, "firing", (view,))
        for receiver in ("am", "chat")
    ]
    assert watchdog.commit(report) and watchdog.saved
    assert [item.receiver for item in store.pending()] == ["chat"]
    # Any other path into the outbox (action announcements) is filtered the same way.
    outbox.enqueue([Notification("am", "am:h", {}, "firing", (view,))], time.time())
    assert [item.receiver for item in store.pending()] == ["chat"]
    assert watchdog.save(time.time())
    store.close()


async def test_a_silence_from_the_cli_holds_back_notifications_across_a_restart(
    harness: Harness,
) -> None:
    h = harness
    token = h.tmp / "token"
    token.write_text("T0KEN-silences-a4c1e9\n")
    token.chmod(0o600)
    text = h.config.read_text()
    h.config.write_text(
        text.replace(
            f'http: {{listen: "127.0.0.1:{h.http_port}"}}',
            f'http: {{listen: "127.0.0.1:{h.http_port}", token_file: {token}}}',
        )
    )
    first = await h.start()
    await h.wait("the webhook", lambda: h.sink.firing("DeviceDead", "sim-001") == 1)

    # The CLI finds the daemon and its token from the config.
    code, out = await cli(
        "silence", "add", "miner=sim-002", "--for", "2h", "--comment", "PSU swap",
        "--maintenance", "-c", str(h.config),
    )  # fmt: skip
    assert code == 0, out
    silence_id = out.split()[0]
    # Without the token the API refuses writes.
    request = urllib.request.Request(
        f"http://127.0.0.1:{h.http_port}/api/silences",
        data=b'{"matchers": [{"name": "miner", "value": "sim-003"}], "duration": "1h", '
        b'"comment": "x", "createdBy": "t"}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
    assert refused.value.code == 401

    # sim-002 goes down: the alert fires (the page and /api/alerts show it), nobody is told.
    await h.fleet.set_mode("sim-002", "down")

    async def unreachable_firing() -> bool:
        document = await h.alerts()
        return any(
            a["alertname"] == "MinerUnreachable" and a["state"] == "firing"
            for a in document["alerts"]
        )

    await h.wait("MinerUnreachable firing", unreachable_firing)
    statuses = len(h.notify.with_key("STATUS"))
    await h.wait("three more cycles", lambda: len(h.notify.with_key("STATUS")) >= statuses + 3)
    assert h.sink.firing("MinerUnreachable", "sim-002") == 0

    # A restart keeps it.
    assert await h.stop(first) == 0
    began = time.monotonic()
    second = await h.start()
    await h.wait_ready(began)
    code, out = await cli("silence", "list", "-c", str(h.config))
    assert code == 0 and silence_id[:8] in out and "PSU swap" in out, out
    statuses = len(h.notify.with_key("STATUS"))
    await h.wait("three more cycles", lambda: len(h.notify.with_key("STATUS")) >= statuses + 3)
    assert h.sink.firing("MinerUnreachable", "sim-002") == 0

    # Expired: the next notification goes out.
    code, out = await cli("silence", "expire", silence_id, "-c", str(h.config))
    assert code == 0, out
    await h.wait("the notification", lambda: h.sink.firing("MinerUnreachable", "sim-002") == 1)
    assert await h.stop(second) == 0
