"""Shared fixtures: the field captures and a replay server that serves them over TCP;
CGW_REQUIRE_REAL; running a test body as an unprivileged user."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import select
import socket
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "peer-replies"

REQUIRE_REAL = os.environ.get("CGW_REQUIRE_REAL") == "1"
"""CI sets it: a test whose real part (a binary, an extra, the field captures) is
missing fails instead of skipping."""
ALLOWED_SKIPS = ("cannot make a loopback connect hang here",)
"""Skips that hide no missing part: the machine cannot stage the situation at all."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    outcome = yield
    report = outcome.get_result()
    if not (REQUIRE_REAL and report.skipped) or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    if any(allowed in reason for allowed in ALLOWED_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = f"CGW_REQUIRE_REAL=1 and this test would skip: {reason}"


def _uvloop_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        pytest.skip("uvloop is not installed (pip install '.[dev]')")
    return uvloop.new_event_loop()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """asyncio's own event loop for every async test; uvloop's as well for those marked
    ``both_loops`` (the client: ``cgwatchdog run`` takes uvloop where it is installed)."""
    if item.get_closest_marker("both_loops") is not None:
        return {"asyncio": asyncio.new_event_loop, "uvloop": _uvloop_loop}
    return {"asyncio": asyncio.new_event_loop}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say, in CI's output, which skips remain and why."""
    skipped = terminalreporter.stats.get("skipped", [])
    if REQUIRE_REAL:
        terminalreporter.write_line(
            f"CGW_REQUIRE_REAL=1: {len(skipped)} skip(s) remain"
            + ("".join(f"\n  {r.nodeid}: {r.longrepr[2]}" for r in skipped) if skipped else "")
        )


def unprivileged(body: Callable[[Path], None]) -> None:
    """Run ``body(directory)`` as an unprivileged user (nobody) in a fresh directory it
    owns, in a forked child, when this process is root (root ignores file permissions);
    as this user otherwise. Fails the calling test if the body fails."""
    if os.geteuid() != 0:
        with tempfile.TemporaryDirectory() as directory:
            body(Path(directory))
        return
    try:
        user = pwd.getpwnam("nobody")
        uid, gid = user.pw_uid, user.pw_gid
    except KeyError:
        uid = gid = 65534
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with tempfile.TemporaryDirectory() as directory:
                body(Path(directory))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged run failed (see stderr)"


def fixture_files() -> list[Path]:
    """The captured field replies, or an empty list outside this setup."""
    return sorted(FIXTURES.glob("*.json")) if FIXTURES.is_dir() else []


def require_fixtures() -> list[Path]:
    """The captures; skip the calling test with a reason when they are absent."""
    files = fixture_files()
    if not files:
        pytest.skip(f"field captures not found at {FIXTURES} (a clone outside this setup)")
    return files


@dataclass
class Capture:
    """One captured miner: its replies as the bytes the firmware sent."""

    name: str
    expect: dict[str, Any]
    reply_bytes: dict[str, bytes]
    requests: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Capture:
        data = json.loads(path.read_text())
        raw: dict[str, str] = data.get("raw") or {}
        replies = {
            command: (
                raw[command] if command in raw else json.dumps(reply, separators=(",", ":"))
            ).encode()
            for command, reply in data["replies"].items()
        }
        return cls(name=data["name"], expect=data["expect"], reply_bytes=replies)

    def answer(self, command: str) -> bytes:
        """The bytes a miner would send for ``command`` (``a+b`` joined as cgminer does)."""
        names = command.split("+")
        if len(names) == 1:
            return self._one(names[0])
        # cgminer embeds each command's own reply, byte for byte, in one object.
        parts = ",".join(f'"{name}":[{self._one(name).decode()}]' for name in names)
        return ("{" + parts + ',"id":1}').encode()

    def _one(self, name: str) -> bytes:
        if name in self.reply_bytes:
            return self.reply_bytes[name]
        # The README: commands that were not captured answer STATUS E Code 14.
        return b'{"STATUS":[{"STATUS":"E","When":0,"Code":14,"Msg":"Invalid command"}],"id":1}'


@pytest.fixture
async def replay_server() -> AsyncIterator[Callable[[Capture], Any]]:
    """Start a TCP server on 127.0.0.1 replaying one capture; returns its port."""
    servers: list[asyncio.Server] = []

    async def start(capture: Capture) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read(65536)
            request = json.loads(data.split(b"\0")[0])
            capture.requests.append(request["command"])
            writer.write(capture.answer(request["command"]) + b"\0")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def until(
    what: str,
    check: Callable[[], Any],
    timeout_s: float = 10.0,
    *,
    context: Callable[[], str] = lambda: "",
) -> Any:
    """Poll ``check`` (sync or async) every 50 ms until it returns something truthy, and
    return that; at the deadline fail naming ``what``, with ``context()`` (e.g. logs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if isinstance(found, Awaitable):
            found = await found
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}\n{context()}")
        await asyncio.sleep(0.05)


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A loopback port whose accept queue is full, so a new connect hangs in SYN_SENT.

    Linux drops the SYN when a listener's accept queue is full; elsewhere the connect may
    be refused or complete, and the test is skipped.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            filler.connect_ex(("127.0.0.1", port))
            _, writable, _ = select.select([], [filler], [], 0.1)
            if not writable:  # this SYN was dropped: the queue is full
                break
        else:
            pytest.skip("cannot make a loopback connect hang here (accept queue never fills)")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
