"""Pushing alert state to a real Alertmanager (cgwatchdog/notify/alertmanager.py).

Debian's ``prometheus-alertmanager`` runs on 127.0.0.1 (no cluster) with a webhook
receiver pointing at a local HTTP sink, so the whole path is real: our push, its API,
its grouping, its webhook. Waits for that external process are polled and bounded.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer

from cgwatchdog.alerts import Alert, AlertState, AlertView, Notification, fingerprint
from cgwatchdog.config.loader import load_config
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify import build_integration, receiver_model, send_test
from cgwatchdog.notify.formats.alertmanager import payload
from cgwatchdog.notify.receivers.alertmanager import (
    ENDS_AT_INTERVALS,
    MIN_RESEND_S,
    AlertmanagerIntegration,
)
from cgwatchdog.notify.render import FormatContext
from cgwatchdog.notify.testing import synthetic_notification

# Debian's package; CGW_ALERTMANAGER_BIN names another (tests/test_ci.py names a missing
# one to show that CI fails, not skips, without it).
ALERTMANAGER = os.environ.get("CGW_ALERTMANAGER_BIN", "/usr/bin/prometheus-alertmanager")
WAIT_S = 8.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def eventually(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll an external process's visible state until ``check`` returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"Alertmanager did not {what} within {timeout_s:g} s")
        time.sleep(0.05)


@pytest.fixture
def sink(httpserver_ipv4: HTTPServer) -> Iterator[HTTPServer]:
    httpserver_ipv4.expect_request("/am-hook", method="POST").respond_with_data("ok")
    yield httpserver_ipv4
    httpserver_ipv4.clear()


@contextlib.contextmanager
def running_alertmanager(tmp_path: Path, config_text: str) -> Iterator[str]:
    """Debian's Alertmanager alone (no cluster) on a free 127.0.0.1 port; its base URL.
    Skips the test where the binary is absent."""
    if not os.access(ALERTMANAGER, os.X_OK):
        pytest.skip(f"{ALERTMANAGER} not found: apt-get install prometheus-alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text(config_text)
    port = free_port()
    log_path = tmp_path / "alertmanager.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"alertmanager exited: {log_path.read_text()}")
        try:
            return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        eventually(ready, "become ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def alertmanager(tmp_path: Path, sink: HTTPServer) -> Iterator[str]:
    with running_alertmanager(
        tmp_path,
        "route:\n"
        "  receiver: sink\n"
        "  group_by: [alertname]\n"
        "  group_wait: 0s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: sink\n"
        "    webhook_configs:\n"
        f"      - url: http://127.0.0.1:{sink.port}/am-hook\n"
        "        send_resolved: true\n",
    ) as url:
        yield url


def integration(*urls: str) -> AlertmanagerIntegration:
    receiver = receiver_model().model_validate(
        {"name": "am", "alertmanager": {"urls": list(urls), "timeout": "2s"}}
    )
    built = build_integration(receiver, interval_s=30.0, external_url="http://127.0.0.1:9841")
    assert isinstance(built, AlertmanagerIntegration)
    return built


def engine_alert(miner: str, state: AlertState, now: float, **labels: str) -> Alert:
    all_labels = {"alertname": "DeviceDead", "miner": miner, "severity": "critical", **labels}
    return Alert(
        fingerprint=fingerprint(all_labels),
        labels=all_labels,
        annotations={"summary": f"a device of {miner} is Dead"},
        value="Dead",
        state=state,
        active_since=now - 300,
        fired_at=None if state is AlertState.PENDING else now - 120,
        resolved_at=now - 1 if state is AlertState.RESOLVED else None,
        last_seen=now - 1,
        for_s=120.0,
        keep_firing_for_s=0.0,
    )


def webhooks(sink: HTTPServer) -> list[dict[str, Any]]:
    return [request.get_json() for request, _ in sink.log if request.path == "/am-hook"]


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_push_firing_then_resolved_round_trip(alertmanager: str, sink: HTTPServer) -> None:
    am = integration(alertmanager)
    now = time.time()
    firing = [engine_alert(m, AlertState.FIRING, now) for m in ("rack1-s9-01", "rack1-s9-02")]
    pending = engine_alert("rack1-s9-03", AlertState.PENDING, now)

    result = am.push([*firing, pending], now)
    assert result.alerts == 2 and result.accepted == (alertmanager.removeprefix("http://"),)
    assert result.receipt() == "2 alerts accepted by 1 of 1 Alertmanager peer"

    listed = am.alerts({"alertname": "DeviceDead"})
    assert sorted(a["labels"]["miner"] for a in listed) == ["rack1-s9-01", "rack1-s9-02"]
    for found in listed:
        assert found["status"]["state"] == "active"
        assert found["generatorURL"] == "http://127.0.0.1:9841"
        assert found["fingerprint"] == fingerprint(found["labels"])  # same hash as ours
        ttl = ENDS_AT_INTERVALS * max(30.0, MIN_RESEND_S)
        assert abs(epoch(found["endsAt"]) - (now + ttl)) < 1.0
        assert abs(epoch(found["startsAt"]) - (now - 120)) < 1.0

    # Alertmanager groups and notifies; its webhook is the shape our default body copies.
    (sent,) = eventually(lambda: webhooks(sink), "send the firing webhook")
    assert sent["status"] == "firing" and len(sent["alerts"]) == 2
    assert {a["fingerprint"] for a in sent["alerts"]} == {a.fingerprint for a in firing}
    ours = payload(
        Notification("sink", "k", {}, "firing", tuple(AlertView.of(a) for a in firing)),
        FormatContext("sink", ""),
    )
    assert set(ours) == set(sent)
    assert set(ours["alerts"][0]) == set(sent["alerts"][0])
    assert ours["version"] == sent["version"] == "4"

    # Resolved: endsAt in the past; it leaves the active list and a resolve goes out.
    resolved = firing[0]
    resolved.state, resolved.resolved_at = AlertState.RESOLVED, now - 1
    later = time.time()
    am.push([resolved, firing[1]], later)
    still = am.alerts({"alertname": "DeviceDead"})
    assert [a["labels"]["miner"] for a in still] == ["rack1-s9-02"]

    def resolve_sent() -> list[dict[str, Any]]:
        return [
            a
            for hook in webhooks(sink)
            for a in hook["alerts"]
            if a["status"] == "resolved" and a["labels"]["miner"] == "rack1-s9-01"
        ]

    (gone,) = eventually(resolve_sent, "send the resolve webhook")
    assert abs(epoch(gone["endsAt"]) - (now - 1)) < 1.0
    am.close()


def test_every_peer_is_tried_and_one_accepting_is_enough(alertmanager: str) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    am = integration(down, alertmanager)
    now = time.time()
    result = am.push([engine_alert("rack2-s9-01", AlertState.FIRING, now)], now)
    assert result.accepted == (alertmanager.removeprefix("http://"),)
    ((peer, error),) = result.failed
    assert peer == down.removeprefix("http://") and error.startswith("connection refused")
    assert "1 alert accepted by 1 of 2 Alertmanager peers; " in result.receipt()
    # Reading back falls over to a peer that answers.
    assert [a["labels"]["miner"] for a in am.alerts({"miner": "rack2-s9-01"})] == ["rack2-s9-01"]
    am.close()

    nobody = integration(down, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(NotifyError) as caught:
        nobody.push([engine_alert("rack2-s9-01", AlertState.FIRING, now)], now)
    assert caught.value.recoverable
    assert str(caught.value).count("connection refused") == 2
    nobody.close()


def test_an_alert_alertmanager_refuses_is_not_recoverable(alertmanager: str) -> None:
    am = integration(alertmanager)
    now = time.time()
    bad = engine_alert("rack3-s9-01", AlertState.FIRING, now, **{"bad-name": "x"})
    with pytest.raises(NotifyError) as caught:
        am.push([bad], now)
    assert not caught.value.recoverable
    assert "HTTP 400" in str(caught.value) and "bad-name" in str(caught.value)
    am.close()


def test_nothing_to_push_sends_nothing(alertmanager: str) -> None:
    am = integration(alertmanager)
    now = time.time()
    result = am.push([engine_alert("m", AlertState.PENDING, now)], now)
    assert result.alerts == 0
    assert am.alerts() == []
    am.close()


def test_test_notify_pushes_a_test_alert_that_expires(alertmanager: str, tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        f"receivers:\n  - name: am\n    alertmanager: {{url: '{alertmanager}'}}\n"
    )
    now = time.time()
    (result,) = send_test(load_config(config_file), now=now)
    assert result.ok and result.message == "1 alert accepted by 1 of 1 Alertmanager peer"
    am = integration(alertmanager)
    (found,) = am.alerts({"alertname": "CgwatchdogTest"})
    am.close()
    assert found["labels"]["miner"] == "test-notify"
    assert epoch(found["endsAt"]) > now  # a few intervals ahead, then it resolves itself
    expected = synthetic_notification("am", now).alerts[0]
    assert found["fingerprint"] == expected.fingerprint
