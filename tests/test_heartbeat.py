"""The dead man's switch ping (cgwatchdog/heartbeat.py) against a real local HTTP server."""

from __future__ import annotations

import contextlib
import json
import socket
import traceback
from collections.abc import Iterator

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cgwatchdog.config import HeartbeatConfig
from cgwatchdog.errors import NotifyError
from cgwatchdog.heartbeat import HeartbeatPinger

# healthchecks.io style: the check's secret is the path.
SECRET = "5f0c2a8e-91d3-4c1b-a7e4-0b6d9e3f2c11"
START = 1_790_000_000.0


@pytest.fixture
def server(httpserver_ipv4: HTTPServer) -> Iterator[HTTPServer]:
    yield httpserver_ipv4
    httpserver_ipv4.clear()


def pinger(url: str, *, interval: str = "1m", timeout: str = "2s") -> HeartbeatPinger:
    config = HeartbeatConfig.model_validate({"url": url, "interval": interval, "timeout": timeout})
    return HeartbeatPinger(config)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def assert_no_secret(error: NotifyError) -> None:
    shown = "".join(traceback.format_exception(error))
    assert SECRET not in shown, shown
    assert SECRET[:8] not in str(error)


def run_cycles(beat: HeartbeatPinger, *, cycle_s: float, cycles: int) -> list[float]:
    """What the daemon does: after each good cycle, ping when due. Returns attempt times."""
    attempts = []
    for n in range(cycles):
        now = START + n * cycle_s
        if beat.due(now):
            attempts.append(now)
            with contextlib.suppress(NotifyError):
                beat.ping(now)
    return attempts


def test_one_get_per_interval_however_often_cycles_run(server: HTTPServer) -> None:
    server.expect_request(f"/{SECRET}", method="GET").respond_with_data("OK")
    beat = pinger(server.url_for(f"/{SECRET}"))
    try:
        # Ten minutes of 5 s cycles with a 1 min interval: ten pings, the first at once.
        attempts = run_cycles(beat, cycle_s=5.0, cycles=120)
    finally:
        beat.close()
    assert attempts == [START + 60.0 * k for k in range(10)]
    assert len(server.log) == 10
    for request, response in server.log:
        assert request.method == "GET"
        assert request.path == f"/{SECRET}"
        assert request.headers["User-Agent"].startswith("cgwatchdog/")
        assert response.status_code == 200
    assert beat.last_success_at == attempts[-1]
    assert beat.last_error is None


def test_due_honours_the_interval() -> None:
    beat = pinger("http://127.0.0.1:9/ping/" + SECRET, interval="30s")
    try:
        assert beat.due(START)  # never pinged: due at once
        beat.last_attempt_at = START
        assert not beat.due(START)
        assert not beat.due(START + 29.9)
        assert beat.due(START + 30.0)
        assert beat.due(START + 3600.0)
        # The wall clock stepped back past the last attempt: due now, not in an hour.
        assert beat.due(START - 3600.0)
        # After a cycle the daemon allows half a poll interval of early.
        assert not beat.due(START + 14.9, early_s=15.0)
        assert beat.due(START + 15.0, early_s=15.0)
    finally:
        beat.close()


def test_a_failing_monitor_is_tried_once_per_interval_and_the_secret_stays_out(
    server: HTTPServer,
) -> None:
    # The monitor echoes the path back in its error page, as some do.
    server.expect_request(f"/ping/{SECRET}").respond_with_data(
        f"internal error handling /ping/{SECRET}", status=500
    )
    beat = pinger(server.url_for(f"/ping/{SECRET}"))
    try:
        with pytest.raises(NotifyError) as caught:
            beat.ping(START)
        error = caught.value
        assert error.recoverable
        assert f"127.0.0.1:{server.port}" in str(error)
        assert "HTTP 500" in str(error)
        assert_no_secret(error)
        assert beat.last_error == str(error)
        assert beat.last_success_at is None
        # A dead monitor is not hammered: the failed attempt counts for the interval.
        assert not beat.due(START + 59.0)
        attempts = run_cycles(beat, cycle_s=10.0, cycles=30)  # the next 5 minutes
        assert attempts == [START + 60.0 * k for k in range(1, 5)]
        assert len(server.log) == 1 + 4
    finally:
        beat.close()


def test_a_wrong_check_id_is_not_recoverable_and_not_shown(server: HTTPServer) -> None:
    # Uptime Kuma style: the token is a path segment, and the answer names it.
    server.expect_request("/api/push/Tk9wQzY3bmFtZQ").respond_with_data(
        json.dumps({"ok": False, "msg": "Monitor Tk9wQzY3bmFtZQ not found or not active."}),
        status=404,
        content_type="application/json",
    )
    beat = pinger(server.url_for("/api/push/Tk9wQzY3bmFtZQ") + "?status=up&msg=OK")
    try:
        with pytest.raises(NotifyError) as caught:
            beat.ping(START)
    finally:
        beat.close()
    assert not caught.value.recoverable
    assert "HTTP 404" in str(caught.value)
    assert "Tk9wQzY3bmFtZQ" not in "".join(traceback.format_exception(caught.value))


def test_a_redirect_is_not_followed(server: HTTPServer) -> None:
    server.expect_request(f"/{SECRET}").respond_with_data(
        "", status=301, headers={"Location": f"http://127.0.0.1:{free_port()}/{SECRET}"}
    )
    beat = pinger(server.url_for(f"/{SECRET}"))
    try:
        with pytest.raises(NotifyError, match="moved") as caught:
            beat.ping(START)
    finally:
        beat.close()
    assert_no_secret(caught.value)
    assert len(server.log) == 1


def test_connection_refused_names_the_host_not_the_url() -> None:
    port = free_port()  # nothing listens there any more
    beat = pinger(f"http://127.0.0.1:{port}/{SECRET}?token={SECRET}")
    try:
        assert beat.due(START)
        with pytest.raises(NotifyError, match="connection refused") as caught:
            beat.ping(START)
    finally:
        beat.close()
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert caught.value.recoverable
    assert_no_secret(caught.value)
    assert beat.last_attempt_at == START
    assert not beat.due(START + 1.0)


def test_a_silent_monitor_times_out() -> None:
    # Accepted by the kernel's backlog but never answered: the read deadline fires.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        beat = pinger(f"http://127.0.0.1:{port}/{SECRET}", timeout="300ms")
        try:
            with pytest.raises(NotifyError, match=r"did not answer within 0\.3 s") as caught:
                beat.ping(START)
        finally:
            beat.close()
    assert_no_secret(caught.value)


def test_no_second_ping_while_one_is_in_flight(server: HTTPServer) -> None:
    seen: list[bool] = []

    def answer(request: Request) -> Response:
        # The daemon pings from a thread; the loop asking due() meanwhile must hear no.
        seen.append(beat.due(START + 120.0))
        return Response("OK")

    server.expect_request(f"/{SECRET}").respond_with_handler(answer)
    beat = pinger(server.url_for(f"/{SECRET}"))
    try:
        beat.ping(START)
    finally:
        beat.close()
    assert seen == [False]
    assert beat.due(START + 120.0)


def test_a_shared_session_is_left_open(server: HTTPServer) -> None:
    server.expect_request(f"/{SECRET}").respond_with_data("OK")
    config = HeartbeatConfig.model_validate({"url": server.url_for(f"/{SECRET}")})
    with requests.Session() as session:
        beat = HeartbeatPinger(config, session=session)
        beat.ping(START)
        beat.close()
        beat = HeartbeatPinger(config, session=session)  # the session still works
        beat.ping(START + 60.0)
        beat.close()
    assert len(server.log) == 2
