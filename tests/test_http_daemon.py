"""The endpoint as ``cgwatchdog run`` wires it: the page, the Host check and the token
follow the configuration across a reload (SIGHUP), and ``cgwatchdog status`` still reads
/api/alerts. A daemon subprocess watches two simulated miners on 127.18.6.1; its
endpoint is on 127.18.6.2.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import yaml

from cgwatchdog.simulator import Fleet, serve
from tests.conftest import until

REPO = Path(__file__).resolve().parents[1]
SIM, HOST = "127.18.6.1", "127.18.6.2"
TOKEN = "reloaded-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def fetch(
    port: int, path: str, *, host: str = "localhost", method: str = "GET", body: bytes = b""
) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection(HOST, port)
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if method == "POST":
        head += (
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
        )
    writer.write((head + "\r\n").encode() + body)
    await writer.drain()
    async with asyncio.timeout(10):
        data = await reader.read()
    writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.decode(errors="replace")


async def test_the_daemon_serves_the_page_and_reloads_its_http_settings(tmp_path: Path) -> None:
    fleet = Fleet.build(2, listen=SIM, base_port=0, clock=time.time)
    port = free_port()
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "token").chmod(0o600)
    async with serve(fleet):
        config = {
            "poll": {"interval": "500ms", "timeout": "400ms", "jitter": "0%"},
            "state_dir": str(tmp_path / "state"),
            "http": {"listen": f"{HOST}:{port}"},
            "miners": [{"name": m.name, "host": m.host, "port": m.port} for m in fleet],
            "rules": [{"name": "MinerUnreachable", "type": "unreachable", "for": "0s"}],
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        log = tmp_path / "daemon.log"
        with log.open("wb") as out:
            daemon = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cgwatchdog", "run", "-c", str(path), cwd=REPO,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        context = lambda: log.read_text(errors="replace")[-3000:]  # noqa: E731
        try:

            async def page_up() -> bool:
                try:
                    status, text = await fetch(port, "/")
                except OSError:
                    return False
                return status == 200 and "sim-002" in text and "miners up" in text

            await until("the status page", page_up, 20, context=context)
            assert (await fetch(port, "/miners/sim-001"))[0] == 200
            assert (await fetch(port, "/", host="farm.example.org"))[0] == 421
            status, text = await fetch(port, "/login")
            assert status == 403 and "read-only" in text
            login = f"token={TOKEN}&next=/".encode()
            assert (await fetch(port, "/login", method="POST", body=login))[0] == 403

            # A reload brings a token and a name; http.listen stays (it needs a restart).
            config["http"] = {"listen": f"{HOST}:{port}", "token_file": str(tmp_path / "token"),
                              "hosts": ["farm.example.org"]}  # fmt: skip
            path.write_text(yaml.safe_dump(config))
            daemon.send_signal(signal.SIGHUP)
            await until(
                "the reload", lambda: "configuration reloaded" in log.read_text(), 20,
                context=context,
            )  # fmt: skip
            assert (await fetch(port, "/", host="farm.example.org:443"))[0] == 200
            assert (await fetch(port, "/login"))[0] == 200
            status, _ = await fetch(port, "/login", method="POST", body=login)
            assert status == 303
            wrong = b"token=nope&next=/"
            assert (await fetch(port, "/login", method="POST", body=wrong))[0] == 401
            assert TOKEN not in log.read_text()

            # `cgwatchdog status` still reads /api/alerts.
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cgwatchdog", "status", "--url", f"http://{HOST}:{port}",
                cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            async with asyncio.timeout(30):
                out, _ = await process.communicate()
            assert process.returncode == 0, out.decode()
            assert out.decode().splitlines()[0] == "cgwatchdog ok"
        finally:
            daemon.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                assert await daemon.wait() == 0, context()
