"""Security properties of DESIGN.md §9, tried from the outside with real parts.

- The HTTP endpoint: loopback by default; oversized heads, announced bodies and chunked
  uploads get a 4xx and a closed connection; a client trickling its head (slowloris) or
  never reading its answer is cut off; the endpoint keeps serving others throughout.
- Operator templates (webhook bodies, rule annotations, exec argv) run in Jinja's sandbox:
  reaching ``__class__``/``__globals__`` fails with a clear error and runs nothing.
- ``exec`` actions take an argv list, never a shell.
- Secrets stay out of ``cgwatchdog check``, logs and /api/alerts.
- Polling sends only read-only commands; privileged ones go out only for configured actions.

Already covered elsewhere, and not repeated here:
- tests/test_httpapi.py::test_binds_loopback_by_default (the real bind),
  ::test_an_oversized_request_head_is_refused, ::test_a_slow_client_is_dropped,
  ::test_connections_past_the_limit_get_503, ::test_bodies_and_broken_requests_are_refused,
  ::test_the_host_header_must_name_this_endpoint (DNS rebinding);
- tests/test_status_page.py: every value escaped (a ``<script>`` miner name and pool URL),
  the token, sessions and CSRF for writes;
- tests/test_notify_webhook.py::test_custom_template_is_sandboxed (``__subclasses__``),
  ::test_an_echoed_token_is_redacted, ::test_connection_refused_is_recoverable_and_never_shows_the_url;
- tests/test_notify_email.py::test_auth_failure_is_not_recoverable_and_hides_the_password;
- tests/test_outbox.py::test_expiry_drops_with_a_logged_loss_and_no_secret;
- tests/test_daemon.py::test_no_secret_reaches_the_log (one webhook URL);
- tests/test_config.py::test_secrets_never_print, ::test_world_readable_secrets_warn (0644);
- tests/test_actions.py::test_exec_passes_argv_and_env_byte_for_byte_without_a_shell,
  tests/test_remediation.py::test_a_miner_that_does_not_recover_escalates_to_exec.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import select
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry
from pytest_httpserver import HTTPServer

from cgwatchdog.actions import ActionExecutor, PlannedAction
from cgwatchdog.alerts import AlertView, Notification, fingerprint
from cgwatchdog.cli import main
from cgwatchdog.config import Config, MinerConfig
from cgwatchdog.config.loader import load_config
from cgwatchdog.errors import ConfigError, NotifyError
from cgwatchdog.logs import setup_logging
from cgwatchdog.notify import build_integration
from cgwatchdog.protocol import PRIVILEGED_COMMANDS
from cgwatchdog.simulator import FakeClock, Fleet
from cgwatchdog.watchdog import Watchdog
from cgwatchdog.web.metrics import Metrics
from cgwatchdog.web.server import MAX_LINE_BYTES, HttpServer, Limits
from cgwatchdog.web.sources import Sources
from cgwatchdog.web.status import DaemonStatus

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_800_000_000.0
INTERVAL_S = 30.0
_subnets = itertools.count(150)


# --- the HTTP endpoint ------------------------------------------------------------------------

BIG_ANSWER_BYTES = 32 << 20  # far more than the socket buffers of both ends hold


HOST = "127.18.2.1"


async def big_answer(request: web.Request) -> web.StreamResponse:
    """A stand-in for /metrics of a huge fleet: 32 MiB."""
    return web.Response(body=b"x" * BIG_ANSWER_BYTES)


async def boom(request: web.Request) -> web.StreamResponse:
    """A handler with a bug."""
    raise RuntimeError("the internals of /boom")


@dataclass
class Endpoint:
    server: HttpServer
    port: int


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    clock = FakeClock()
    server = HttpServer(
        Sources(
            DaemonStatus(interval_s=INTERVAL_S, started_at=clock()),
            Metrics(CollectorRegistry()),
            alerts=list,
            clock=clock,
        ),
        limits=Limits(
            head_timeout_s=0.3, write_timeout_s=0.3, body_timeout_s=0.3, max_connections=8
        ),
        extra_routes=[web.get("/big", big_answer), web.get("/boom", boom)],
    )
    await server.start(HOST, 0)
    yield Endpoint(server, server.port)
    await server.stop()


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, then read until the server closes (bounded)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(data)
    await writer.drain()
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def still_serving(port: int) -> None:
    answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status_of(answer) == 200 and b"/api/alerts" in answer


def test_http_endpoint_listens_on_loopback_unless_configured(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("miners: [{host: 127.0.0.1}]\n")
    assert load_config(config).http.host == "127.0.0.1"
    shipped = yaml.safe_load((ROOT / "systemd" / "config.yaml").read_text())
    assert shipped["http"]["listen"].startswith("127.0.0.1:")
    config.write_text("http: {listen: '0.0.0.0:9841'}\n")  # only when asked for
    assert load_config(config).http.host == "0.0.0.0"


H = b"Host: localhost\r\n"
OVERSIZED = {
    "request line without end": (b"GET /" + b"a" * (4 * MAX_LINE_BYTES), 400),
    "many headers": (
        b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 90) for i in range(200)),
        400,
    ),
    "one huge header": (
        b"GET / HTTP/1.1\r\n" + H + b"Cookie: " + b"c" * (2 * MAX_LINE_BYTES) + b"\r\n\r\n",
        400,
    ),
    "a gigabyte announced": (
        b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 1000000000\r\n\r\n",
        400,
    ),
    "a chunked upload": (
        b"GET / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "a POST with its body": (
        b"POST /api/alerts HTTP/1.1\r\n" + H + b'Content-Length: 9\r\n\r\n{"a": 1}\n',
        405,
    ),
    "a write's body past the limit": (
        b"POST /login HTTP/1.1\r\n" + H + b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100000\r\n\r\n" + b"t" * 100_000,
        413,
    ),
    "NUL in the target": (b"GET /\x00 HTTP/1.1\r\n" + H + b"\r\n", 400),
    "a bad method": (b"G\x01T / HTTP/1.1\r\n" + H + b"\r\n", 400),
}


@pytest.mark.parametrize("data, status", OVERSIZED.values(), ids=OVERSIZED.keys())
async def test_oversized_requests_get_4xx_and_the_connection_closes(
    endpoint: Endpoint, data: bytes, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        answer = await exchange(endpoint.port, data)  # returns only once the server closed
    assert status_of(answer) == status
    # Closed (exchange returns only then), and said so: HTTP/1.0 closes by default.
    assert b"Connection: close" in answer or answer.startswith(b"HTTP/1.0 ")
    # No traceback, neither to the client nor in the log: a bad request is not an error.
    assert b"Traceback" not in answer and b'File "' not in answer
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    await still_serving(endpoint.port)


async def test_a_bug_in_a_handler_is_a_500_without_its_traceback(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="cgwatchdog.http"):
        answer = await exchange(endpoint.port, b"GET /boom HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status_of(answer) == 500
    assert answer.endswith(b"\r\n\r\n500 Internal Server Error: internal error (see the log)\n")
    assert b"internals" not in answer and b"Traceback" not in answer
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and "GET /boom" in logged[0].getMessage()
    await still_serving(endpoint.port)


async def test_slowloris_is_cut_off_while_others_are_served(endpoint: Endpoint) -> None:
    reader, writer = await asyncio.open_connection(HOST, endpoint.port)
    writer.write(b"GET / HTTP/1.1\r\nX-Slow: ")
    sent = 0

    async def trickle() -> None:
        nonlocal sent
        while not writer.is_closing():
            writer.write(b"a")  # one byte each 20 ms: never a whole head, never idle long
            sent += 1
            try:
                await writer.drain()
            except ConnectionError:
                return
            await asyncio.sleep(0.02)

    trickling = asyncio.create_task(trickle())
    await still_serving(endpoint.port)  # answered while the slow client holds its slot
    async with asyncio.timeout(5):
        try:
            answer = await reader.read()
        except ConnectionResetError:
            answer = b""
    assert answer == b""  # dropped at the head timeout (0.3 s here), without an answer
    writer.close()
    await trickling
    assert sent < MAX_LINE_BYTES
    await still_serving(endpoint.port)


async def test_a_client_that_never_reads_its_answer_is_dropped_with_it(endpoint: Endpoint) -> None:
    sockets = []
    for _ in range(3):
        sock = socket.create_connection((HOST, endpoint.port))
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        sockets.append(sock)
    async with asyncio.timeout(5):
        # Every answer has begun to arrive, then past the write timeout each connection
        # is let go.
        while select.select(sockets, [], [], 0)[0] != sockets:
            await asyncio.sleep(0.01)
        while endpoint.server.open_connections:
            await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    for sock in sockets:
        sock.setblocking(False)
        received = 0
        try:
            async with asyncio.timeout(5):
                while chunk := await loop.sock_recv(sock, 1 << 20):
                    received += len(chunk)
        except ConnectionResetError:
            pass
        sock.close()
        # Cut off: only what already sat in the socket buffers arrived, not 32 MiB that
        # the server would otherwise have kept for a client that never reads.
        assert received < BIG_ANSWER_BYTES
    await still_serving(endpoint.port)


async def test_a_write_whose_body_never_arrives_gets_408(endpoint: Endpoint) -> None:
    reader, writer = await asyncio.open_connection(HOST, endpoint.port)
    writer.write(
        b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\ntoken="
    )
    await writer.drain()
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    assert status_of(answer) == 408 and b"did not arrive" in answer


# --- templates run in the sandbox -----------------------------------------------------------


def notification() -> Notification:
    labels = {"alertname": "DeviceDead", "miner": "rack1-s9-01", "device": "0"}
    view = AlertView(
        fingerprint=fingerprint(labels),
        labels=labels,
        annotations={"summary": "Device 0 of rack1-s9-01 is Dead"},
        value="Dead",
        status="firing",
        starts_at=T0,
        ends_at=None,
    )
    return Notification(
        receiver="hook",
        group_key='{}:{alertname="DeviceDead"}',
        group_labels={"alertname": "DeviceDead"},
        status="firing",
        alerts=(view,),
    )


def escapes(marker: Path) -> dict[str, str]:
    """Templates that would run a command or dump Python internals outside a sandbox."""
    touch = f"'touch {marker}'"
    return {
        "cycler globals": f"{{{{ cycler.__init__.__globals__.os.system({touch}) }}}}",
        "lipsum globals": f"{{{{ lipsum.__globals__['os'].popen({touch}).read() }}}}",
        "joiner globals": "{{ joiner.__init__.__globals__ }}",
        "namespace globals": "{{ namespace.__init__.__globals__ }}",
        "self globals": "{{ self.__init__.__globals__ }}",
        "attr filter": "{{ (title|attr('__class__')).__mro__ }}",
        "str.format": "{{ '{0.__class__.__mro__}'.format(title) }}",
        "subclasses via data": "{{ alerts.__class__.__base__.__subclasses__() }}",
        "huge range": "{% for x in range(10**9) %}{% endfor %}",
        # Constants Jinja would fold while compiling: memory and time at start or reload.
        "huge repeat": '{{ "ab" * 10**7 }}',
        "huge power": "{{ 7 ** 99999 }}",
    }


ESCAPE_IDS = list(escapes(Path("m")))


@pytest.mark.parametrize("name", ESCAPE_IDS)
def test_webhook_templates_cannot_reach_python_internals(
    name: str, tmp_path: Path, httpserver_ipv4: HTTPServer
) -> None:
    marker = tmp_path / "escaped"
    template = escapes(marker)[name]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "receivers": [
                    {
                        "name": "hook",
                        "webhook": {
                            "url": httpserver_ipv4.url_for("/hook"),
                            "format": "custom",
                            "template": template,
                        },
                    }
                ]
            }
        )
    )
    cfg = load_config(config)  # the template is valid Jinja: the sandbox judges it when it runs
    integration = build_integration(cfg.receivers[0])
    try:
        with pytest.raises(NotifyError) as caught:
            integration.notify(notification())
    finally:
        integration.close()
    message = str(caught.value)
    assert not caught.value.recoverable
    assert message.startswith("template failed: ")
    assert "SecurityError" in message or "Range too big" in message, message
    assert "<class" not in message and "__builtins__" not in message
    assert httpserver_ipv4.log == []  # nothing was sent
    assert not marker.exists()


async def test_annotation_templates_are_sandboxed(tmp_path: Path) -> None:
    marker = tmp_path / "escaped"
    with socket.socket() as probe:  # a port nobody listens on: the miner is unreachable
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "config.yaml"
    templates = escapes(marker)
    config.write_text(
        yaml.safe_dump(
            {
                "poll": {"interval": "30s", "timeout": "1s", "connect_timeout": "0.5s"},
                "miners": [{"name": "m1", "host": "127.0.0.1", "port": port}],
                "rules": [
                    {
                        "name": "Gone",
                        "type": "unreachable",
                        "for": "0s",
                        "annotations": {
                            "summary": templates["cycler globals"],
                            "description": templates["subclasses via data"],
                            "repeat": templates["huge repeat"],
                            "power": templates["huge power"],
                        },
                    }
                ],
            }
        )
    )
    watchdog = Watchdog(load_config(config), acting=False, clock=FakeClock(T0))
    report = await watchdog.cycle()
    (signal,) = report.evaluation.signals
    for text in signal.annotations.values():
        assert "[template error: SecurityError" in text, text
        assert "<class" not in text
    assert not marker.exists()


# --- exec: an argv list, no shell ---------------------------------------------------------------

DUMP_ARGV = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"


async def test_exec_arguments_reach_the_program_byte_for_byte_and_no_shell_runs(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "x"
    out = tmp_path / "argv.json"
    hostile = [
        f"a; touch {marker}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"| touch {marker}",
        f"&& touch {marker} #",
        f"\n touch {marker}",
        "*",
    ]
    action = PlannedAction(
        miner="m1", alert_fingerprint="0" * 16, alertname="DeviceDead", step=1, do="exec",
        pool=None, device=None, argv=(sys.executable, "-c", DUMP_ARGV, str(out), *hostile),
        env={}, timeout_s=10.0, dry_run=False, reason="test",
    )  # fmt: skip

    def no_channel(miner: MinerConfig, timeout_s: float) -> Any:
        raise AssertionError("exec needs no miner channel")

    result = await ActionExecutor(no_channel).execute(
        action, MinerConfig(name="m1", host="127.0.0.1")
    )
    assert result.ok, result.detail
    assert json.loads(out.read_text()) == hostile
    assert not marker.exists()


def test_exec_argv_must_be_a_list_not_a_command_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "rules:\n"
        "  - name: DeviceDead\n"
        "    type: device_status\n"
        "    actions: [{do: exec, argv: \"/bin/sh -c 'touch /tmp/x'\"}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value) == f"{config}:4: rules[0].actions[0].argv: expected a list, found text"


# --- privileged miner commands ---------------------------------------------------------------


class Farm:
    """Simulated miners on loopback and a watchdog over them, on a FakeClock."""

    def __init__(self, fleet: Fleet, watchdog: Watchdog, clock: FakeClock) -> None:
        self.fleet, self.watchdog, self.clock = fleet, watchdog, clock
        self.events: list[Any] = []

    async def cycles(self, count: int) -> None:
        for _ in range(count):
            self.clock.advance(INTERVAL_S)
            await self.fleet.sync()
            report = await self.watchdog.cycle()
            self.events += report.action_events

    def received(self, name: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for member in self.fleet.members:
            if name is None or member.name == name:
                for command, count in member.commands.items():
                    counts[command] = counts.get(command, 0) + count
        return counts


def farm_config(path: Path, fleet: Fleet, rules: str) -> Config:
    miners = "".join(
        f"  - {{name: {m.name}, host: {m.host}, port: {m.port}}}\n" for m in fleet.members
    )
    path.write_text(
        "poll: {interval: 30s, timeout: 2s, connect_timeout: 0.5s}\n"
        f"state_dir: {path.parent}\nminers:\n{miners}"
        "actions: {dry_run: false, cooldown: 15m, max_per_miner_per_hour: 3, max_in_flight: 5, restart_grace: 2m,"
        " fleet_incident_share: 50%}\n" + rules
    )
    return load_config(path)


@pytest.fixture
async def farm(tmp_path: Path) -> AsyncIterator[Any]:
    fleets: list[Fleet] = []

    async def make(scenarios: list[str], rules: str, **options: Any) -> Farm:
        clock = FakeClock(T0)
        fleet = Fleet.build(
            len(scenarios), lambda i: scenarios[i], flavours=["cgminer", "bmminer", "bfgminer"],
            listen=f"127.0.{next(_subnets)}.1", base_port=0, clock=clock,
            scenario_options={"fail_after_s": 60.0, **options}, restart_downtime_s=5.0,
        )  # fmt: skip
        await fleet.start()
        fleets.append(fleet)
        cfg = farm_config(tmp_path / f"farm{len(fleets)}.yaml", fleet, rules)
        return Farm(fleet, Watchdog(cfg, clock=clock), clock)

    yield make
    for fleet in fleets:
        await fleet.stop()


NO_ACTIONS = """
rules:
  - {name: DeviceDead, type: device_status, for: 1m, severity: critical}
  - {name: PoolStale, type: pool_stale, no_accepted_share_for: 5m}
  - {name: Drop, type: hashrate_drop, below: 80%, for: 2m}
  - {name: Hw, type: hardware_errors, above: 1%, window: 5m}
  - {name: Gone, type: unreachable, for: 1m}
"""
SCENARIOS = ["device_dead", "pool_dead_failover", "hashrate_drop", "hw_errors_rising",
             "pool_stale", "flapping", "healthy", "garbage", "unreachable"]  # fmt: skip


async def test_polling_sends_only_read_only_commands(farm: Any) -> None:
    f = await farm(SCENARIOS, NO_ACTIONS)
    await f.cycles(20)
    received = f.received()
    assert received.get("summary", 0) >= 20 * (len(SCENARIOS) - 2)  # polled all along
    # version: asked at a first contact (and after a miner comes back), to recognise the
    # firmware family.
    # The garbage-answering port is probed, now and then, for a family's own read path
    # (ePIC's HTTP on the API port): a GET, a read like the rest.
    api = {c for c in received if not c.startswith("GET /")}
    assert api <= {"version", "summary", "devs", "pools", "stats", "fans", "temps"}
    assert not set(received) & PRIVILEGED_COMMANDS
    assert f.events == []


@pytest.fixture
def fleet_thread() -> Iterator[Any]:
    """Serve fleets from an event loop in a thread, for commands that run their own loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fleets: list[Fleet] = []

    def start(fleet: Fleet) -> Fleet:
        asyncio.run_coroutine_threadsafe(fleet.start(), loop).result(10)
        fleets.append(fleet)
        return fleet

    yield start
    for fleet in fleets:
        asyncio.run_coroutine_threadsafe(fleet.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


POLL_RULES = (
    NO_ACTIONS
    + """\
  - name: Restart
    type: device_status
    actions: [{do: restart}, {do: disable}, {do: switchpool}]
"""
)


def test_cgwatchdog_poll_sends_only_read_only_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet_thread: Any
) -> None:
    clock = FakeClock(T0)
    scenarios = [s for s in SCENARIOS if s != "unreachable"]  # it never gets a port here
    fleet = fleet_thread(
        Fleet.build(
            len(scenarios), lambda i: scenarios[i], flavours=["cgminer", "bmminer", "bfgminer"],
            listen=f"127.0.{next(_subnets)}.1", base_port=0, clock=clock,
            scenario_options={"fail_after_s": 0.0},
        )
    )  # fmt: skip
    config = tmp_path / "config.yaml"
    farm_config(config, fleet, POLL_RULES)  # actions are configured: poll must not use them
    assert main(["poll", "-c", str(config), "--json"]) == 1  # the scenarios' failures
    document = json.loads(capsys.readouterr().out)
    assert len(document["miners"]) == len(scenarios)
    received: dict[str, int] = {}
    for member in fleet.members:
        for command, count in member.commands.items():
            received[command] = received.get(command, 0) + count
    assert received.get("summary", 0) >= len(scenarios)
    assert not set(received) & PRIVILEGED_COMMANDS, received


ACTIONS = """
rules:
  - name: DeviceDead
    type: device_status
    for: 1m
    severity: critical
    actions:
      - {do: restart, verify_within: 3m}
      - do: exec
        argv: ["@PYTHON@", "-c", "open('@MARKER@', 'w')", "{{ labels.__class__.__mro__ }}"]
        verify_within: 3m
  - {name: PoolStale, type: pool_stale, no_accepted_share_for: 5m}
  - {name: Gone, type: unreachable, for: 1m}
"""


async def test_privileged_commands_only_for_configured_actions(farm: Any, tmp_path: Path) -> None:
    marker = tmp_path / "exec-ran"
    rules = ACTIONS.replace("@PYTHON@", sys.executable).replace("@MARKER@", str(marker))
    f = await farm(["device_dead", "pool_dead_failover", "healthy"], rules,
                   recovers_on_restart=False)  # fmt: skip
    await f.cycles(40)
    dead, failover, healthy = (m.name for m in f.fleet.members)
    privileged = {
        name: {c: n for c, n in f.received(name).items() if c in PRIVILEGED_COMMANDS}
        for name in (dead, failover, healthy)
    }
    # DeviceDead's ladder: one restart; its exec step's argv template reaches for
    # Python internals, so the sandbox stops it before anything runs.
    assert privileged == {dead: {"restart": 1}, failover: {}, healthy: {}}
    restarts = [e for e in f.events if e.action == "restart" and e.kind.value == "succeeded"]
    assert len(restarts) == 1 and restarts[0].miner == dead
    refused = [e for e in f.events if "argv template failed: SecurityError" in e.detail]
    assert refused and all(e.miner == dead for e in refused)
    assert not marker.exists()


# --- secrets --------------------------------------------------------------------------------

SLACK_URL = "https://hooks.slack.example.com/services/T0SEC/B0SEC/slackSecretToken42"
SECRETS = {
    "SLACK_WEBHOOK_URL": SLACK_URL,
    "API_KEY": "api-key-7f3c9a1e5b",
}
BOT_TOKEN = "123456789:AAHsecretBotTokenXYZ"
SMTP_PASSWORD = "smtp-pass-9d8c7b6a"
BASIC_PASSWORD = "basic-pass-1a2b3c4d"
BEARER_TOKEN = "bearer-token-5e6f7a8b"
APPRISE_TOKEN = "apprisetokenQWERTY"
HEARTBEAT_UUID = "0b5c-heartbeat-uuid-7d1e"
EVERY_SECRET = [
    "slackSecretToken42", "api-key-7f3c9a1e5b", BOT_TOKEN, "AAHsecretBotTokenXYZ", SMTP_PASSWORD,
    BASIC_PASSWORD, BEARER_TOKEN, APPRISE_TOKEN, HEARTBEAT_UUID,
]  # fmt: skip

SECRET_CONFIG = f"""\
receivers:
  - name: chat
    webhook: {{url: "${{SLACK_WEBHOOK_URL}}", format: slack, headers: {{X-Api-Key: "${{API_KEY}}"}}}}
  - name: bot
    webhook: {{url: "https://api.telegram.example.org/bot{BOT_TOKEN}/sendMessage",
               format: telegram, chat_id: 42}}
  - name: mail
    email: {{smtp: "127.0.0.1:2525", starttls: false, username: u, password_file: smtp-password,
             from: a@example.org, to: [b@example.org]}}
  - name: hook
    webhook: {{url: "https://example.org/hook", auth: {{basic: {{user: u, password: {BASIC_PASSWORD}}}}}}}
  - name: bearer
    webhook: {{url: "https://example.org/b", auth: {{bearer: {{token_file: token}}}}}}
  - name: phone
    apprise: {{urls: ["pover://user@{APPRISE_TOKEN}"]}}
route:
  receiver: chat
  routes: [{{receiver: bot}}, {{receiver: mail}}, {{receiver: hook}}, {{receiver: bearer}},
           {{receiver: phone}}]
heartbeat: {{url_file: heartbeat-url}}
rules: [{{name: Gone, type: unreachable}}]
"""


@pytest.fixture
def secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in (
        ("smtp-password", SMTP_PASSWORD),
        ("token", BEARER_TOKEN),
        ("heartbeat-url", f"https://hc-ping.example.com/{HEARTBEAT_UUID}"),
    ):
        (tmp_path / name).write_text(value + "\n")
        (tmp_path / name).chmod(0o600)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def shows_no_secret(text: str) -> None:
    for secret in EVERY_SECRET:
        assert secret not in text, secret


def test_check_output_shows_no_secret_and_warns_of_a_group_readable_file(
    secret_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = secret_files / "config.yaml"
    config.write_text(SECRET_CONFIG)
    config.chmod(0o640)  # group-readable, with the bot token and a password inline
    assert main(["check", "-c", str(config)]) == 0
    out, err = capsys.readouterr()
    shows_no_secret(out + err)
    assert (
        f"warning: {config}: holds secrets inline and is readable by group or others (mode 0640)"
        in err
    )
    config.chmod(0o600)
    assert main(["check", "-c", str(config)]) == 0
    assert "holds secrets inline" not in capsys.readouterr().err


def test_check_errors_show_no_secret(
    secret_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = secret_files / "config.yaml"
    # Secrets where they do not belong: a file name, a duration, a shard, a rule name.
    config.write_text(
        SECRET_CONFIG.replace("heartbeat: {url_file: heartbeat-url}",
                              'heartbeat: {url_file: "${SLACK_WEBHOOK_URL}"}')
        .replace("rules: [{name: Gone,", 'rules: [{name: "${API_KEY}/x",')
        + 'poll: {interval: "${API_KEY}"}\n'
        + "cluster: {shard: '${SLACK_WEBHOOK_URL}'}\n"
    )  # fmt: skip
    config.chmod(0o600)
    assert main(["check", "-c", str(config)]) == 2
    out, err = capsys.readouterr()
    shows_no_secret(out + err)
    assert "heartbeat.url_file: cannot read" in err and "poll.interval" in err
    assert "cluster.shard" in err and "rules[0].name" in err


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_logs_show_no_secret_of_any_kind(secret_files: Path, root_logging: None) -> None:
    config = secret_files / "config.yaml"
    config.write_text(SECRET_CONFIG)
    config.chmod(0o600)
    out = io.StringIO()
    redactor = setup_logging(stream=out, environ={})
    redactor.set_config(load_config(config))
    log = logging.getLogger("cgwatchdog.test")
    leaks = [
        SLACK_URL, "/services/T0SEC/B0SEC/slackSecretToken42",
        f"https://api.telegram.example.org/bot{BOT_TOKEN}/sendMessage", f"/bot{BOT_TOKEN}/sendMessage",
        SMTP_PASSWORD, BASIC_PASSWORD, BEARER_TOKEN, f"pover://user@{APPRISE_TOKEN}",
        f"https://hc-ping.example.com/{HEARTBEAT_UUID}", "api-key-7f3c9a1e5b",
    ]  # fmt: skip
    for leak in leaks:
        log.warning("as text: %s", leak, extra={"MINER": "m1"})
        log.error(f"in the message: {leak}")
        try:
            raise OSError(f"in a traceback: {leak}")
        except OSError:
            log.exception("delivery failed")
    logging.getLogger("urllib3.connectionpool").warning("POST %s HTTP/1.1 401", leaks[3])
    text = out.getvalue()
    shows_no_secret(text)
    assert text.count("<redacted>") >= 3 * len(leaks)


async def test_api_alerts_shows_no_secret(secret_files: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = secret_files / "config.yaml"
    config.write_text(
        SECRET_CONFIG.replace("rules: [{name: Gone, type: unreachable}]",
                              "rules: [{name: Gone, type: unreachable, for: 0s,"
                              " annotations: {summary: '{{ labels.miner }} is gone'}}]")
        + f"miners: [{{name: m1, host: 127.0.0.1, port: {port}, labels: {{site: north}}}}]\n"
        + "poll: {interval: 30s, timeout: 1s, connect_timeout: 0.5s}\n"
        + "http: {token_file: token}\n"
    )  # fmt: skip
    cfg = load_config(config)
    assert cfg.http.token is not None and cfg.http.token.get_secret_value() == BEARER_TOKEN
    clock = FakeClock(T0)
    watchdog = Watchdog(cfg, acting=False, clock=clock)
    status = DaemonStatus(interval_s=INTERVAL_S, started_at=clock())
    for _ in range(2):
        clock.advance(INTERVAL_S)
        report = await watchdog.cycle()
        status.cycles += 1
        status.last_cycle_at = clock()
        status.record_actions(report.action_events)
    metrics = Metrics(CollectorRegistry())
    metrics.observe_cycle(
        report.results, watchdog.alerts.alerts(), duration_s=0.1, finished_at=clock(),
        interval_s=INTERVAL_S, miners=cfg.miners,
    )  # fmt: skip
    server = HttpServer(
        Sources(status, metrics, alerts=watchdog.alerts.alerts, clock=clock, http=cfg.http)
    )
    await server.start(HOST, 0)
    try:
        served = server.port
        for path in ("/api/alerts", "/healthz", "/metrics", "/", "/miners/m1"):
            answer = await exchange(
                served, f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
            )
            assert status_of(answer) == 200, path
            shows_no_secret(answer.decode())
        document = json.loads(
            (await exchange(served, b"GET /api/alerts HTTP/1.1\r\nHost: localhost\r\n\r\n")).split(
                b"\r\n\r\n", 1
            )[1]
        )
        assert [a["alertname"] for a in document["alerts"]] == ["Gone"]
    finally:
        await server.stop()


def test_a_config_with_inline_secrets_is_flagged_only_when_others_can_read_it(
    secret_files: Path,
) -> None:
    config = secret_files / "config.yaml"
    config.write_text(SECRET_CONFIG)
    flagged = {}
    for mode in (0o600, 0o400, 0o640, 0o604, 0o644):
        config.chmod(mode)
        flagged[oct(mode)] = any("holds secrets inline" in w for w in load_config(config).warnings)
    assert flagged == {"0o600": False, "0o400": False, "0o640": True, "0o604": True, "0o644": True}


@pytest.mark.parametrize("name", ["huge repeat", "huge power"])
def test_every_template_sandbox_bounds_folded_constants(name: str) -> None:
    """Webhook bodies, annotations and exec argv: ``*`` and ``**`` judged before they run."""
    from jinja2.exceptions import SecurityError

    from cgwatchdog.actions.planner import _template as argv_template
    from cgwatchdog.sandbox import BoundedSandbox, ImmutableBoundedSandbox

    source = escapes(Path("m"))[name]
    for compiled in (
        BoundedSandbox().from_string(source),
        ImmutableBoundedSandbox().from_string(source),
        argv_template(source),
    ):
        with pytest.raises(SecurityError):
            compiled.render()
    assert BoundedSandbox().from_string('{{ 2 ** 10 }} {{ "ab" * 3 }} {{ 3 * [1] }}').render() == (
        "1024 ababab [1, 1, 1]"
    )
