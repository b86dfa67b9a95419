"""The command line as an operator uses it: real processes, real sockets, exit codes."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from cgwatchdog.cli import main, status_url
from tests.conftest import Capture, require_fixtures

ROOT = Path(__file__).resolve().parents[1]
LISTEN = "127.0.97.1"


def cgwatchdog(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cgwatchdog", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def simulated() -> Iterator[list[str]]:
    """`cgwatchdog simulate --miners 3` in its own process, as the README runs it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cgwatchdog", "simulate", "--miners", "3", "--listen", LISTEN],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip() for _ in range(3)]
    try:
        yield lines
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_simulate_prints_each_miner(simulated: list[str]) -> None:
    assert simulated[0].split() == ["sim-001", f"{LISTEN}:4028", "cgminer", "healthy"]
    assert [line.split()[2] for line in simulated] == ["cgminer", "bmminer", "bfgminer"]


def test_query_prints_the_reply_as_json(simulated: list[str]) -> None:
    result = cgwatchdog("query", LISTEN, "summary")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["STATUS"][0]["STATUS"] == "S"
    assert reply["SUMMARY"][0]["MHS 5s"] > 0


def test_query_parameter_text_and_raw_forms(simulated: list[str]) -> None:
    asc = cgwatchdog("query", f"{LISTEN}:4028", "asc", "0")
    assert asc.returncode == 0 and json.loads(asc.stdout)["ASC"][0]["ASC"] == 0
    text = cgwatchdog("query", LISTEN, "summary", "--text")
    assert json.loads(text.stdout)["SUMMARY"][0]["Elapsed"] > 0
    raw = subprocess.run(
        [sys.executable, "-m", "cgwatchdog", "query", "127.0.97.2", "stats", "--raw"],
        capture_output=True, timeout=30, cwd=ROOT, check=False,
    )  # fmt: skip
    # bmminer's own bytes, quirk and NUL included.
    assert raw.stdout.endswith(b"\0") and b'"}{"STATS":0' in raw.stdout


def test_query_failures_are_one_line_with_exit_1(simulated: list[str]) -> None:
    bad_pool = cgwatchdog("query", LISTEN, "switchpool", "9")
    assert bad_pool.returncode == 1
    assert bad_pool.stderr.strip() == (
        "cgwatchdog: 'switchpool' failed: STATUS E, Code 26: Invalid pool id 9 - range is 0 - 2"
    )
    refused = cgwatchdog("query", "127.0.97.250", "summary")
    assert refused.returncode == 1
    assert "connection refused" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_usage_errors_exit_2() -> None:
    assert cgwatchdog("query", "127.0.0.1:notaport", "summary").returncode == 2
    assert cgwatchdog("query", "127.0.0.1", "sum mary").returncode == 2
    assert cgwatchdog("frobnicate").returncode == 2


def test_check_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        f"miners: [{{host: 127.0.0.1}}]\nrule_files: [{ROOT / 'rules' / 'default.yaml'}]\n"
    )
    result = cgwatchdog("check", "-c", str(good))
    assert result.returncode == 0 and result.stdout.splitlines()[-1].startswith("ok:")
    # It says, once, whether repairs reach the miners (a fresh config never acts).
    assert result.stdout.startswith("actions: DRY RUN: 3 rule(s) plan repairs")
    bad = tmp_path / "bad.yaml"
    bad.write_text("poll:\n  interval: soon\nminers: [{host: 127.0.0.1, colour: red}]\n")
    result = cgwatchdog("check", "-c", str(bad))
    assert result.returncode == 2
    assert f"{bad}:2: poll.interval" in result.stderr
    assert f"{bad}:3: miners[0]: unknown key 'colour'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def replayed_captures() -> Iterator[list[tuple[Capture, int]]]:
    """Every field capture served on its own port by a replay server in a thread."""
    files = require_fixtures()
    captures = [Capture.load(path) for path in files]
    loop = asyncio.new_event_loop()
    servers: list[asyncio.Server] = []
    ports: list[int] = []
    ready = threading.Event()

    async def start() -> None:
        for capture in captures:

            async def handle(
                reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter,
                capture: Capture = capture,
            ) -> None:
                request = json.loads((await reader.read(65536)).split(b"\0")[0])
                writer.write(capture.answer(request["command"]) + b"\0")
                await writer.drain()
                writer.close()

            server = await asyncio.start_server(handle, "127.0.98.1", 0)
            servers.append(server)
            ports.append(server.sockets[0].getsockname()[1])
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert ready.wait(10)
    yield list(zip(captures, ports, strict=True))
    for server in servers:
        loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_poll_json_reports_every_field_capture(
    replayed_captures: list[tuple[Capture, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "fleet.yaml"
    miners = "".join(
        f"  - {{name: {c.name}, host: 127.0.98.1, port: {port}, labels: {{site: lab}}}}\n"
        for c, port in replayed_captures
    )
    config.write_text(f"miners:\n{miners}rule_files: [{ROOT / 'rules' / 'default.yaml'}]\n")
    code = main(["poll", "-c", str(config), "--json"])
    document = json.loads(capsys.readouterr().out)
    # Every capture answers; some show a firmware's real trouble, which makes it 1.
    signalled = [m["name"] for m in document["miners"] if m["alerts"]]
    assert code == (1 if signalled else 0), signalled
    assert document["shard"] == "1/1" and document["time"].endswith("Z")
    by_name = {m["name"]: m for m in document["miners"]}
    for capture, port in replayed_captures:
        miner = by_name[capture.name]
        expect, also = capture.expect, capture.expect.get("also", {})
        assert miner["up"] is True and miner["error"] is None, miner["error"]
        assert miner["error_kind"] is None
        assert miner["family"] == capture.expect.get("family", miner["family"])
        assert set(miner["capabilities"]).isdisjoint(miner["unsupported"])
        assert miner["port"] == port and miner["labels"] == {"site": "lab"}
        rates = [expect["hashrate_hs"], *also.get("hashrate_hs", [])]
        assert any(abs(miner["hashrate_hs"] - r) <= 0.02 * r for r in rates), capture.name
        if expect["devices"] is not None:
            assert len(miner["devices"]) in [expect["devices"], *also.get("devices", [])]
        assert len(miner["pools"]) in [expect["pools"], *also.get("pools", [])]
        assert isinstance(miner["alerts"], list)


def test_poll_json_names_why_a_miner_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("miners: [{name: gone, host: 127.0.97.251}]\n")
    main(["poll", "-c", str(config), "--json"])
    assert gc.isenabled()  # a one-shot command pauses the collector, then leaves it as found
    (miner,) = json.loads(capsys.readouterr().out)["miners"]
    assert miner["up"] is False and miner["error_kind"] == "refused"
    assert "connection refused" in miner["error"]
    assert miner["family"] is None and miner["capabilities"] == []  # never answered


def test_poll_table_shows_down_miners_and_signals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "miners: [{name: gone, host: 127.0.97.251}]\n"
        "rules: [{name: MinerUnreachable, type: unreachable, for: 0s}]\n"
    )
    started = time.monotonic()
    assert main(["poll", "-c", str(config)]) == 1  # a miner down
    out = capsys.readouterr().out
    assert "DOWN" in out and "MinerUnreachable" in out and "firing" in out
    assert time.monotonic() - started < 10


def test_poll_exit_status_says_what_it_found(simulated: list[str], tmp_path: Path) -> None:
    healthy = tmp_path / "healthy.yaml"
    healthy.write_text(
        f"miners: [{{host: {LISTEN}}}]\nrule_files: [{ROOT / 'rules' / 'default.yaml'}]\n"
    )
    result = cgwatchdog("poll", "-c", str(healthy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("1/1 miners up, 0 signals")
    one_down = tmp_path / "one-down.yaml"
    one_down.write_text(
        f"miners: [{{host: {LISTEN}}}, {{name: gone, host: 127.0.97.251}}]\n"
        f"rule_files: [{ROOT / 'rules' / 'default.yaml'}]\n"
    )
    result = cgwatchdog("poll", "-c", str(one_down), "--json")
    assert result.returncode == 1  # cron and monit see it
    assert [m["up"] for m in json.loads(result.stdout)["miners"]] == [True, False]
    assert cgwatchdog("poll", "-c", str(tmp_path / "missing.yaml")).returncode == 2


def test_poll_json_is_one_document_pretty_on_a_terminal_and_a_miner_a_line_when_piped() -> None:
    import io

    from cgwatchdog.cli import write_poll_json

    header = {"time": "2026-12-07T09:00:00Z", "shard": "1/1", "replica": None,
              "duration_s": 0.5, "problems": []}  # fmt: skip
    entries = [
        {"name": "a", "up": True, "alerts": [], "pools": [{"url": "stratum+tcp://p\n1"}]},
        {"name": "b<\u00e9>", "up": True, "alerts": [], "hashrate_hs": 1.5e14},
    ]
    document = {**header, "miners": entries}
    pretty, piped = io.StringIO(), io.StringIO()
    assert write_poll_json(header, iter(entries), pretty, pretty=True) == 0
    assert write_poll_json(header, iter(entries), piped, pretty=False) == 0
    # A terminal gets exactly what json.dumps(indent=2) makes of the whole document.
    assert pretty.getvalue() == json.dumps(document, indent=2) + "\n"
    assert json.loads(piped.getvalue()) == document
    lines = piped.getvalue().splitlines()
    assert sum(1 for line in lines if line.lstrip().startswith('{"name"')) == 2
    empty = io.StringIO()
    assert write_poll_json({**header, "problems": ["x"]}, iter([]), empty, pretty=False) == 1
    assert json.loads(empty.getvalue()) == {**header, "problems": ["x"], "miners": []}
    down = io.StringIO()
    assert write_poll_json(header, iter([{"up": False, "alerts": []}]), down, pretty=False) == 1
    with pytest.raises(ValueError):  # NaN is not JSON: never written as such
        write_poll_json(header, iter([{"up": True, "alerts": [], "v": float("nan")}]),
                        io.StringIO(), pretty=False)  # fmt: skip


def test_config_defaults_to_the_service_config_and_debug_goes_anywhere(tmp_path: Path) -> None:
    result = cgwatchdog("check", "--help")
    assert "default /etc/cgwatchdog/config.yaml" in " ".join(result.stdout.split())
    missing = str(tmp_path / "missing.yaml")
    after = cgwatchdog("poll", "-c", missing, "--debug")
    before = cgwatchdog("--debug", "poll", "-c", missing)
    plain = cgwatchdog("poll", "-c", missing)
    assert after.returncode == before.returncode == plain.returncode == 2
    assert "Traceback" in after.stderr and "Traceback" in before.stderr
    assert "Traceback" not in plain.stderr and "cannot read config file" in plain.stderr


class _Daemon(BaseHTTPRequestHandler):
    """A stand-in daemon answering /api/alerts as a healthy one would."""

    def do_GET(self) -> None:
        body = json.dumps({"health": "ok", "miners": 2, "up": 2, "alerts": []}).encode()
        self.send_response(200 if self.path == "/api/alerts" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_status_finds_the_daemon_from_the_config(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.97.9", 0), _Daemon)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        port = server.server_address[1]
        config = tmp_path / "config.yaml"
        # The receivers' secrets are the service's alone: status reads only http:.
        config.write_text(
            f"http: {{listen: '127.0.97.9:{port}'}}\nminers: [{{host: 127.0.0.1}}]\n"
            "receivers: [{name: hook, webhook: {url: '${ONLY_THE_SERVICE_HAS_IT}'}}]\n"
        )
        result = cgwatchdog("status", "-c", str(config))
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == "cgwatchdog ok"
        bad = tmp_path / "bad.yaml"
        bad.write_text("http: {listen: 'nowhere'}\n")
        result = cgwatchdog("status", "-c", str(bad))
        assert result.returncode == 2 and f"{bad}:1: http.listen" in result.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_status_url_from_a_wildcard_listen(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("http: {listen: '0.0.0.0:9900'}\n")
    assert status_url(None, str(config)) == "http://127.0.0.1:9900"
    config.write_text("http: {listen: '[::]:9900'}\n")
    assert status_url(None, str(config)) == "http://[::1]:9900"
    config.write_text("miners: []\n")
    assert status_url(None, str(config)) == "http://127.0.0.1:9841"
    assert status_url("http://127.0.0.5:1", str(config)) == "http://127.0.0.5:1"


def test_simulate_mixes_firmware_and_fails_when_told(tmp_path: Path) -> None:
    listen = "127.0.97.40"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cgwatchdog", "simulate", "--firmware", "antminer,whatsminer",
         "--scenario", "device_dead", "--fail-after", "0", "--listen", listen],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        lines = [proc.stdout.readline().split() for _ in range(3)]
        assert [line[2] for line in lines] == ["antminer", "whatsminer", "antminer"]
        assert lines[0][4] == "control"  # the stock Antminer's web UI
        config = tmp_path / "c.yaml"
        config.write_text(
            f"miners: [{{host: {listen}}}]\n"
            "rules: [{name: DeviceDead, type: device_status, for: 0s}]\n"
        )
        result = cgwatchdog("poll", "-c", str(config), "--json")
        (miner,) = json.loads(result.stdout)["miners"]
        assert miner["family"] == "antminer"
        # --fail-after 0: the board is dead at the first poll, not after a hidden minute.
        assert [a["alertname"] for a in miner["alerts"]] == ["DeviceDead"]
        assert result.returncode == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    bad = cgwatchdog("simulate", "--firmware", "goldshell")
    assert bad.returncode == 2 and "unknown firmware 'goldshell'; choose from" in bad.stderr
    assert cgwatchdog("simulate", "--speed", "0").returncode == 2
    help_text = cgwatchdog("simulate", "--help").stdout
    assert "pool_dead_failover" in help_text and "127.0.0.1, 127.0.0.2" in help_text


def test_query_at_a_web_server_says_what_it_probably_is() -> None:
    # A web UI answers the API's bytes with an HTTP error (nginx: 400 at once), or waits
    # for the rest of an HTTP request (lighttpd, http.server) and answers nothing.
    answering = socket.create_server(("127.0.97.50", 0))
    silent = HTTPServer(("127.0.97.51", 0), BaseHTTPRequestHandler)

    def answer_400() -> None:
        conn, _ = answering.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer_400, daemon=True).start()
    threading.Thread(target=silent.serve_forever, args=(0.05,), daemon=True).start()
    try:
        result = cgwatchdog("query", f"127.0.97.50:{answering.getsockname()[1]}", "summary")
        assert result.returncode == 1
        assert "an HTTP server answered" in result.stderr
        assert "is this the API port (4028), not the miner's web UI?" in result.stderr
        port = silent.server_address[1]
        result = cgwatchdog("query", f"127.0.97.51:{port}", "summary", "--timeout", "0.5")
        assert result.returncode == 1
        assert "nothing at all" in result.stderr and "is this the API port, 4028?" in result.stderr
    finally:
        silent.shutdown()
        silent.server_close()
        answering.close()


def test_check_env_file_gives_the_variables_the_unit_would(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "miners: [{host: 127.0.0.1}]\n"
        "receivers: [{name: chat, webhook: {url: '${CGW_TEST_HOOK}'}}]\n"
        "route: {receiver: chat}\n"
    )
    env = tmp_path / "environment"
    env.write_text("# as EnvironmentFile= reads it\nCGW_TEST_HOOK='http://127.0.0.1:9/hook'\n")
    without = cgwatchdog("check", "-c", str(config))
    assert without.returncode == 2 and "CGW_TEST_HOOK is not set" in without.stderr
    with_file = cgwatchdog("check", "-c", str(config), "--env-file", str(env))
    assert with_file.returncode == 0, with_file.stderr
    missing = cgwatchdog("check", "-c", str(config), "--env-file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "--env-file" in missing.stderr
