"""sd_notify over real AF_UNIX datagram sockets: a path, an abstract name, systemd-python."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cgwatchdog.sdnotify import Notifier, watchdog_interval_s


@pytest.fixture
def short_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, or a shorter directory if it is too long for AF_UNIX (107 bytes)."""
    if len(str(tmp_path / "notify")) < 100:
        yield tmp_path
        return
    base = Path(tempfile.mkdtemp(prefix="cgw-", dir="/tmp"))
    yield base
    shutil.rmtree(base)


def listen(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


def receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_fallback_sends_each_message_to_a_socket_path(short_dir: Path) -> None:
    path = str(short_dir / "notify")
    with listen(path) as server:
        notifier = Notifier(environ={"NOTIFY_SOCKET": path}, use_systemd=False)
        assert notifier.enabled and notifier.backend == "socket"
        assert notifier.ready("3 miners, 3 up")
        assert receive(server) == {"READY": "1", "STATUS": "3 miners, 3 up"}
        assert notifier.watchdog()
        assert receive(server) == {"WATCHDOG": "1"}
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading()
        message = receive(server)
        assert message["RELOADING"] == "1"
        assert int(message["MONOTONIC_USEC"]) >= before
        assert notifier.stopping()
        assert receive(server) == {"STOPPING": "1"}
        assert notifier.status("line one\nline two")
        assert receive(server) == {"STATUS": "line one line two"}  # one line, always
        notifier.close()


def test_fallback_reaches_an_abstract_socket() -> None:
    name = f"cgwatchdog-test-{uuid.uuid4().hex}"
    with listen("\0" + name) as server:
        notifier = Notifier(environ={"NOTIFY_SOCKET": "@" + name}, use_systemd=False)
        assert notifier.backend == "socket"
        assert notifier.ready()
        assert receive(server) == {"READY": "1"}
        notifier.close()


def test_systemd_python_is_used_when_installed(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("systemd.daemon") is None:
        pytest.skip("systemd-python is not installed (extra [systemd])")
    path = str(short_dir / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    with listen(path) as server:
        notifier = Notifier()
        assert notifier.backend == "systemd-python"
        assert notifier.ready("up")
        assert receive(server) == {"READY": "1", "STATUS": "up"}
        forced = Notifier(use_systemd=False)
        assert forced.backend == "socket"
        assert forced.watchdog()
        assert receive(server) == {"WATCHDOG": "1"}
        forced.close()


def test_without_a_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier(environ={})
    assert not notifier.enabled and notifier.backend == "none"
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert notifier.watchdog_interval_s is None


def test_a_vanished_socket_costs_the_message_not_the_caller(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(short_dir / "nobody-listens"), use_systemd=False)
    assert not notifier.watchdog()
    assert not notifier.watchdog()
    warnings = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(warnings) == 1  # warned once, not on every cycle
    assert not Notifier("vsock:2:1234", use_systemd=False).ready()


def test_a_full_socket_never_blocks(short_dir: Path) -> None:
    path = str(short_dir / "notify")
    with listen(path):
        notifier = Notifier(path, use_systemd=False)
        started = time.monotonic()
        sent = [notifier.watchdog() for _ in range(5000)]  # nobody reads: the queue fills
        assert time.monotonic() - started < 2.0
        assert sent[0] and not all(sent)
        notifier.close()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "120000000"}, 120.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_the_environment(
    environ: dict[str, str], expected: float | None
) -> None:
    assert watchdog_interval_s(environ) == expected
    assert Notifier(environ=environ).watchdog_interval_s == expected
