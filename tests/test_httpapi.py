"""The daemon's HTTP endpoint: routes, limits, health over a driven clock, metrics.

The endpoint runs on aiohttp (cgwatchdog/web/server.py) on 127.18.1.1; requests are
written byte by byte where the defences are the point.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import logging
import socket
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from cgwatchdog.alerts import AlertEngine, Evaluation, Signal
from cgwatchdog.config import Config, HttpConfig, MinerConfig
from cgwatchdog.errors import FailureKind
from cgwatchdog.notify.outbox import DeliveryProblem, ReceiverCounters
from cgwatchdog.simulator import FakeClock
from cgwatchdog.snapshot import Device, PollResult, Pool, Snapshot, Unreachable
from cgwatchdog.web import pages
from cgwatchdog.web.fleetview import FleetView
from cgwatchdog.web.metrics import LINES_A_CHUNK, SERIES, Metrics, render_fleet
from cgwatchdog.web.server import (
    MAX_LINE_BYTES,
    HttpServer,
    Limits,
    accepts_gzip,
    host_allowed,
)
from cgwatchdog.web.sources import Sources
from cgwatchdog.web.status import (
    HEALTHY_WITHIN_INTERVALS,
    DaemonStatus,
    alerts_document,
    status_lines,
)

HOST = "127.18.1.1"
INTERVAL_S = 30.0


def alert_engine(now: float) -> AlertEngine:
    """One firing DeviceDead on m1 and one pending HashrateDrop on m2."""
    engine = AlertEngine()
    dead = Signal(
        {"alertname": "DeviceDead", "miner": "m1", "device": "1", "severity": "critical"},
        {"summary": "m1: device 1 is Dead"},
        "Dead",
    )
    drop = Signal({"alertname": "HashrateDrop", "miner": "m2"}, {}, "50%", for_s=600.0)
    evaluated = [("DeviceDead", "m1"), ("HashrateDrop", "m2")]
    engine.update(Evaluation([dead, drop], evaluated), now)
    return engine


def results(now: float) -> list[Snapshot | Unreachable]:
    m1 = Snapshot(
        name="m1",
        host="127.0.0.1",
        port=4028,
        at=now,
        hashrate_hs=1.35e13,
        hardware_errors=10,
        diff1_work=99_990,
        temperature_max_c=71.0,
        elapsed_s=86400.0,
        fans_rpm=(5400, 5520, 5600, 5460),
        family="antminer",
        firmware_version="Thu May 25 12:00:00 CST 2023",
        model="Antminer S19j Pro",
        fork="bmminer 1.0.0",
        devices=(
            Device(0, "ASC", "BC5", "Alive", hashrate_hs=4.5e12, temperature_c=70.0),
            Device(1, "ASC", "BC5", "Dead", hashrate_hs=0.0, temperature_c=38.0),
        ),
        pools=(
            Pool(
                0,
                "stratum+tcp://pool.example.org:3333",
                status="Alive",
                active=True,
                accepted=9000,
                rejected=12,
                stale=3,
            ),
            Pool(1, "stratum+tcp://backup.example.org:3333", status="Dead"),
        ),
    )
    m2 = Unreachable(
        "m2", "127.0.0.2", 4028, now, "connection refused", FailureKind.REFUSED,
        family="whatsminer", firmware_version="20200917.22.REL",
    )  # fmt: skip
    return [m1, m2]


MINERS = (
    MinerConfig(name="m1", host="127.0.0.1", labels={"site": "north", "rack": "r7"}),
    # The operator's model wins over the one the miner reports.
    MinerConfig(name="m2", host="127.0.0.2", labels={"site": "south", "model": "M30S+"}),
)


@dataclass
class Endpoint:
    clock: FakeClock
    status: DaemonStatus
    metrics: Metrics
    engine: AlertEngine
    server: HttpServer
    port: int


def sources(clock: FakeClock, engine: AlertEngine, **http: object) -> Sources:
    return Sources(
        DaemonStatus(interval_s=INTERVAL_S, started_at=clock()),
        Metrics(CollectorRegistry()),
        alerts=engine.alerts,
        clock=clock,
        http=HttpConfig(listen=f"{HOST}:9841", **http),  # type: ignore[arg-type]
    )


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    clock = FakeClock()
    engine = alert_engine(clock())
    found = sources(clock, engine)
    server = HttpServer(found, limits=Limits(head_timeout_s=0.3, max_connections=2))
    await server.start(port=0)
    yield Endpoint(clock, found.status, found.metrics, engine, server, server.port)
    await server.stop()


def completed_cycle(e: Endpoint) -> None:
    """What the daemon records after a cycle, at the clock's time now."""
    now = e.clock()
    e.status.cycles += 1
    e.status.last_cycle_at = now
    e.status.last_cycle_duration_s = 1.25
    e.status.miners, e.status.up = 2, 1
    e.metrics.observe_cycle(
        results(now),
        e.engine.alerts(),
        duration_s=1.25,
        finished_at=now,
        interval_s=INTERVAL_S,
        miners=MINERS,
    )
    e.metrics.observe_outbox(
        2, {"chat": ReceiverCounters(sent=3, failed=1, dropped=0)}, failing=["chat"]
    )


def large_cycle(e: Endpoint, count: int, note_bytes: int) -> None:
    """A cycle of ``count`` more miners, down, each with a ``note`` label of ``note_bytes``:
    a large /metrics (``count * note_bytes`` bytes of info lines) from few objects."""
    now = e.clock()
    down = [
        Unreachable(f"big{i}", "127.0.0.9", 4028, now, "timed out", FailureKind.CONNECT_TIMEOUT)
        for i in range(count)
    ]
    big = [
        MinerConfig(name=f"big{i}", host="127.0.0.9", labels={"note": "n" * note_bytes})
        for i in range(count)
    ]
    e.metrics.observe_cycle(
        [*results(now), *down],
        e.engine.alerts(),
        duration_s=1.25,
        finished_at=now,
        interval_s=INTERVAL_S,
        miners=[*MINERS, *big],
    )


async def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(5):
        data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def get(port: int, path: str, *extra: str) -> tuple[int, dict[str, str], bytes]:
    host = [] if any(h.lower().startswith("host:") for h in extra) else ["Host: localhost"]
    head = "\r\n".join([f"GET {path} HTTP/1.1", *host, *extra]) + "\r\n\r\n"
    return await exchange(port, head.encode())


def samples_of(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


# -- routes ---------------------------------------------------------------------------------


async def test_metrics_show_miners_devices_pools_alerts_outbox(endpoint: Endpoint) -> None:
    completed_cycle(endpoint)
    endpoint.metrics.record_action("restart", "verified")
    code, headers, body = await get(endpoint.port, "/metrics")
    assert code == 200
    assert headers["content-type"].startswith("text/plain")
    samples = samples_of(body)
    assert samples["cgwatchdog_miner_up", (("miner", "m1"),)] == 1
    assert samples["cgwatchdog_miner_up", (("miner", "m2"),)] == 0
    # One info series a miner to join on: its address, its firmware as recognised and
    # its configured labels (the operator's model wins); a miner that went away keeps
    # its family.
    info = {labels: v for (name, labels), v in samples.items() if name == "cgwatchdog_miner_info"}
    assert info == {
        (("family", "antminer"), ("firmware_version", "Thu May 25 12:00:00 CST 2023"),
         ("fork", "bmminer 1.0.0"), ("host", "127.0.0.1"), ("miner", "m1"),
         ("model", "Antminer S19j Pro"), ("rack", "r7"), ("site", "north")): 1,
        (("family", "whatsminer"), ("firmware_version", "20200917.22.REL"), ("fork", ""),
         ("host", "127.0.0.2"), ("miner", "m2"), ("model", "M30S+"), ("site", "south")): 1,
    }  # fmt: skip
    assert samples["cgwatchdog_miner_hashrate_hashes_per_second", (("miner", "m1"),)] == 1.35e13
    assert samples["cgwatchdog_miner_hardware_error_ratio", (("miner", "m1"),)] == pytest.approx(
        1e-4
    )
    assert samples["cgwatchdog_miner_uptime_seconds", (("miner", "m1"),)] == 86400
    assert samples["cgwatchdog_miner_fan_speed_min_rpm", (("miner", "m1"),)] == 5400
    assert (
        samples["cgwatchdog_device_status", (("device", "1"), ("miner", "m1"), ("status", "Dead"))]
        == 1
    )
    assert (
        samples["cgwatchdog_pool_status", (("miner", "m1"), ("pool", "1"), ("status", "Dead"))] == 1
    )
    assert samples["cgwatchdog_pool_active", (("miner", "m1"), ("pool", "0"))] == 1
    # Shares of the active pool only.
    shares = {
        labels: v for (name, labels), v in samples.items() if name == "cgwatchdog_pool_shares_total"
    }
    assert shares == {
        (("miner", "m1"), ("pool", "0"), ("result", "accepted")): 9000,
        (("miner", "m1"), ("pool", "0"), ("result", "rejected")): 12,
        (("miner", "m1"), ("pool", "0"), ("result", "stale")): 3,
    }
    # Per-device detail is off by default (the series budget).
    assert not any(name.startswith("cgwatchdog_device_hashrate") for name, _ in samples)
    # Alerts like Prometheus' ALERTS.
    alerts = {labels for (name, labels), _ in samples.items() if name == "cgwatchdog_alert"}
    assert alerts == {
        (("alertname", "DeviceDead"), ("alertstate", "firing"), ("device", "1"), ("miner", "m1"),
         ("pool", ""), ("severity", "critical")),
        (("alertname", "HashrateDrop"), ("alertstate", "pending"), ("device", ""), ("miner", "m2"),
         ("pool", ""), ("severity", "")),
    }  # fmt: skip
    assert samples["cgwatchdog_alerts", (("state", "firing"),)] == 1
    assert samples["cgwatchdog_alerts", (("state", "pending"),)] == 1
    assert samples["cgwatchdog_alerts", (("state", "resolved"),)] == 0
    assert (
        samples[
            "cgwatchdog_alerts_by_alertname", (("alertname", "DeviceDead"), ("state", "firing"))
        ]
        == 1
    )
    assert (
        samples["cgwatchdog_actions_total", (("action", "restart"), ("outcome", "verified"))] == 1
    )
    assert samples["cgwatchdog_cycles_total", ()] == 1
    assert samples["cgwatchdog_cycle_duration_seconds_count", ()] == 1
    assert samples["cgwatchdog_poll_errors_total", (("kind", "refused"),)] == 1
    assert samples["cgwatchdog_outbox_depth", ()] == 2
    assert (
        samples["cgwatchdog_notifications_total", (("outcome", "sent"), ("receiver", "chat"))] == 3
    )
    assert samples["cgwatchdog_receiver_failing", (("receiver", "chat"),)] == 1
    assert samples["cgwatchdog_miners_up", ()] == 1
    assert samples["cgwatchdog_store_healthy", ()] == 1
    # No *_created clutter.
    assert b"_created" not in body


async def test_per_device_series_are_a_switch(endpoint: Endpoint) -> None:
    completed_cycle(endpoint)
    endpoint.server.configure(HttpConfig(per_device_metrics=True))
    samples = samples_of((await get(endpoint.port, "/metrics"))[2])
    assert (
        samples["cgwatchdog_device_hashrate_hashes_per_second", (("device", "0"), ("miner", "m1"))]
        == 4.5e12
    )
    assert (
        samples["cgwatchdog_device_temperature_celsius", (("device", "0"), ("miner", "m1"))] == 70
    )
    fans = {labels for (name, labels), _ in samples.items() if name == "cgwatchdog_fan_speed_rpm"}
    assert len(fans) == 4


async def test_metrics_are_rendered_once_per_cycle(endpoint: Endpoint) -> None:
    completed_cycle(endpoint)
    first = endpoint.metrics.fleet_exposition(openmetrics=False)
    assert endpoint.metrics.fleet_exposition(openmetrics=False) is first  # cached
    endpoint.metrics.record_action("restart", "failed")  # the daemon's part stays live
    body = (await get(endpoint.port, "/metrics"))[2]
    fleet_text = b"".join(render_fleet(endpoint.metrics.view, openmetrics=False, per_device=False))
    assert len(fleet_text) == first.text_bytes
    assert body.startswith(fleet_text)
    assert b'cgwatchdog_actions_total{action="restart",outcome="failed"} 1.0' in body
    completed_cycle(endpoint)  # a new cycle: rendered again, the old copy let go
    assert endpoint.metrics.fleet_exposition(openmetrics=False) is not first


async def test_a_cycles_snapshots_go_when_the_next_cycle_replaces_them(endpoint: Endpoint) -> None:
    """Neither the kept /metrics body nor the page's kept table holds the view it was
    made from: once the next cycle's view replaces it, nothing holds the last cycle's
    results (else two cycles' snapshots, 20 MB at 10,000 miners, would live at once)."""
    completed_cycle(endpoint)
    first = endpoint.metrics.view
    assert (await get(endpoint.port, "/metrics"))[0] == 200  # the body kept for this cycle
    endpoint.metrics.fleet_exposition(openmetrics=True)
    table = pages._table(pages._Table(), first, {})  # what the page keeps
    assert table.rows and pages._table(table, first, {}) is table
    kept_results = first.results
    serial = first.serial
    del first
    completed_cycle(endpoint)
    assert endpoint.metrics.view.serial == serial + 1
    gc.collect()
    holders = [r for r in gc.get_referrers(kept_results) if isinstance(r, FleetView)]
    assert holders == []
    assert pages._table(table, endpoint.metrics.view, {}) is not table  # a new cycle's table


async def test_a_miner_s_result_takes_its_place_as_the_next_cycle_polls(endpoint: Endpoint) -> None:
    """The daemon's poller hands each result to ``take_result`` as it is made: the view
    shows that miner's new result at once, in its place, while its cycle is the same
    (the page and /metrics show each miner as it last answered)."""
    completed_cycle(endpoint)
    view = endpoint.metrics.view
    now = endpoint.clock()
    down = Unreachable("m1", "127.0.0.1", 4028, now, "timed out", FailureKind.CONNECT_TIMEOUT)
    endpoint.metrics.take_result(down)
    endpoint.metrics.take_result(  # not in the view's cycle: it joins when one is observed
        Unreachable("m9", "127.0.0.9", 4028, now, "timed out", FailureKind.CONNECT_TIMEOUT)
    )
    assert endpoint.metrics.view is view
    assert [result.name for result in view.results] == ["m1", "m2"]
    assert view.results[0] is down
    samples = samples_of((await get(endpoint.port, "/metrics"))[2])
    assert samples["cgwatchdog_miner_up", (("miner", "m1"),)] == 0
    assert ("cgwatchdog_miner_up", (("miner", "m9"),)) not in samples


def test_the_view_keeps_one_model_and_fork_pair_for_miners_alike(endpoint: Endpoint) -> None:
    now = endpoint.clock()
    fleet = [
        Snapshot(f"s{i}", "127.0.0.1", 4028 + i, now, fork="bmminer", model="Antminer S9")
        for i in range(3)
    ]
    fleet.append(Snapshot("t", "127.0.0.1", 5000, now, fork="cgminer", model="Avalon"))
    endpoint.metrics.observe_cycle(
        fleet, [], duration_s=1.0, finished_at=now, interval_s=INTERVAL_S, miners=MINERS
    )
    identity = endpoint.metrics.view.identity
    assert identity["s0"] == ("Antminer S9", "bmminer") and identity["t"] == ("Avalon", "cgminer")
    assert identity["s0"] is identity["s1"] is identity["s2"]


async def test_metrics_speak_openmetrics_when_asked(endpoint: Endpoint) -> None:
    completed_cycle(endpoint)
    code, headers, body = await get(
        endpoint.port, "/metrics", "Accept: application/openmetrics-text; version=1.0.0"
    )
    assert code == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
    assert b"# TYPE cgwatchdog_pool_shares counter\n" in body
    assert b"_created" not in body
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om

    names = {family.name for family in om(body.decode())}
    assert {"cgwatchdog_miner_info", "cgwatchdog_pool_shares", "cgwatchdog_cycles"} <= names


@pytest.mark.parametrize(
    "accept, openmetrics",
    [("text/plain", False), ("application/openmetrics-text;version=1.0.0", True)],
    ids=["text", "openmetrics"],
)
@pytest.mark.parametrize("gzip_", [False, True], ids=["plain", "gzip"])
async def test_metrics_stream_the_rendered_families_unchanged(
    endpoint: Endpoint, accept: str, openmetrics: bool, gzip_: bool
) -> None:
    """/metrics is written piece by piece, never joined: what arrives (inflated, when a
    gzip answer) is the render followed by the daemon's own families, byte for byte,
    under a Content-Length that counts what was sent."""
    large_cycle(endpoint, 300, 1000)  # the info family is more than one write piece
    extra = [f"Accept: {accept}"] + (["Accept-Encoding: gzip, deflate"] if gzip_ else [])
    code, headers, body = await get(endpoint.port, "/metrics", *extra)
    assert code == 200 and "transfer-encoding" not in headers
    assert headers["content-type"].startswith(
        "application/openmetrics-text" if openmetrics else "text/plain"
    )
    assert headers["vary"] == "Accept-Encoding"
    assert int(headers["content-length"]) == len(body)
    if gzip_:
        assert headers["content-encoding"] == "gzip"
        text = gzip.decompress(body)  # one gzip member: zlib stops at the first
        assert zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body) == text
        assert len(body) * 5 < len(text)
    else:
        assert "content-encoding" not in headers
        text = body
    fleet = render_fleet(endpoint.metrics.view, openmetrics=openmetrics, per_device=False)
    whole = b"".join(fleet)
    assert len(fleet) > 10 and max(len(family) for family in fleet) > 256 * 1024
    assert text.startswith(whole)
    own = text[len(whole) :]
    assert own.startswith(b"# HELP cgwatchdog_") and b"cgwatchdog_cycles_total" in own
    assert own.endswith(b"# EOF\n") == openmetrics
    assert text == b"".join(endpoint.metrics.exposition(openmetrics=openmetrics))


def test_a_render_cuts_each_family_into_chunks_of_bounded_lines(endpoint: Endpoint) -> None:
    """A family longer than ``LINES_A_CHUNK`` lines comes in several chunks, none with more
    sample lines than that (what a render holds at once), and the chunks join into the
    families in order, each header once before its samples."""
    count = 2 * LINES_A_CHUNK + 5
    large_cycle(endpoint, count, 8)
    fleet = render_fleet(endpoint.metrics.view, openmetrics=False, per_device=False)
    sample_lines = [
        [line for line in chunk.splitlines() if not line.startswith(b"#")] for chunk in fleet
    ]
    assert max(len(lines) for lines in sample_lines) == LINES_A_CHUNK
    up_family = (b"# HELP cgwatchdog_miner_up ", b"cgwatchdog_miner_up{")
    up = [chunk for chunk in fleet if chunk.startswith(up_family)]
    assert len(up) == 3 and up[0].startswith(b"# HELP cgwatchdog_miner_up ")
    text = b"".join(fleet).decode()
    heads = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP")]
    assert heads == [series.sample for series in SERIES if not series.per_device]
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert len(families["cgwatchdog_miner_up"].samples) == count + len(MINERS)
    assert sum(1 for line in text.splitlines() if line.startswith("cgwatchdog_miner_up{")) == (
        count + len(MINERS)
    )


@pytest.mark.parametrize(
    "header, takes",
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, GZIP;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("", False),
        ("identity", False),
        ("br, deflate", False),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("gzip;q=0, *", False),
        ("*;q=0", False),
        ("gzip;q=nonsense", False),
    ],
)
def test_accept_encoding_is_read_as_http_says(header: str, takes: bool) -> None:
    assert accepts_gzip(header) is takes


async def test_metrics_in_gzip_and_plain_say_the_same(endpoint: Endpoint) -> None:
    """The two encodings of one scrape carry the same text, and the cached stream is not
    used up by being answered from: the next scrape of either gets it all again."""
    large_cycle(endpoint, 50, 100)
    for _ in range(2):
        _, zipped_headers, zipped = await get(endpoint.port, "/metrics", "Accept-Encoding: gzip")
        _, plain_headers, plain = await get(endpoint.port, "/metrics", "Accept-Encoding: gzip;q=0")
        assert zipped_headers["content-encoding"] == "gzip"
        assert "content-encoding" not in plain_headers
        assert gzip.decompress(zipped) == plain and b"cgwatchdog_miner_up" in plain


async def test_metrics_end_quietly_when_the_client_leaves_mid_body(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    large_cycle(endpoint, 3000, 4000)  # 12 MB: far more than the socket buffers hold
    with caplog.at_level(logging.DEBUG):
        client = socket.socket()
        # A receive buffer that fills at once: the server is mid-body when the client goes.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        await asyncio.get_running_loop().sock_connect(client, (HOST, endpoint.port))
        reader, writer = await asyncio.open_connection(sock=client)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(1000)  # some of the body, then gone
        assert head.startswith(b"HTTP/1.1 200 ")
        writer.transport.abort()
        async with asyncio.timeout(5):
            while endpoint.server.open_connections:
                await asyncio.sleep(0.01)
        assert (await get(endpoint.port, "/api/alerts"))[0] == 200  # still serving
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_api_alerts_lists_firing_then_pending_with_health(endpoint: Endpoint) -> None:
    completed_cycle(endpoint)
    endpoint.clock.advance(5)
    code, headers, body = await get(endpoint.port, "/api/alerts")
    assert code == 200 and headers["content-type"] == "application/json"
    document = json.loads(body)
    assert document["health"] == "ok" and document["reason"] is None
    assert document["shard"] == "1/1" and document["replica"] is None
    assert document["role"] == "leader"
    assert document["last_cycle"] == {
        "finished_at": "2025-11-25T20:00:00Z",
        "age_s": 5.0,
        "duration_s": 1.25,
    }
    assert (document["miners"], document["up"]) == (2, 1)
    assert (document["firing"], document["pending"]) == (1, 1)
    first, second = document["alerts"]
    assert first["state"] == "firing" and first["alertname"] == "DeviceDead"
    assert first["labels"]["device"] == "1"
    assert first["annotations"] == {"summary": "m1: device 1 is Dead"}
    assert first["value"] == "Dead" and first["since"] == "2025-11-25T20:00:00Z"
    assert second["state"] == "pending" and second["miner"] == "m2"
    # The keys scripts and `cgwatchdog status` read are all still there.
    assert set(document) >= {
        "time", "version", "health", "reason", "degraded", "warnings", "last_cycle", "cycles",
        "interval_s", "shard", "replica", "role", "miners", "miner_names", "up", "outbox_depth",
        "firing", "pending", "alerts", "actions",
    }  # fmt: skip


async def test_healthz_turns_503_when_the_last_cycle_is_too_old(endpoint: Endpoint) -> None:
    code, _, body = await get(endpoint.port, "/healthz")
    assert code == 503 and b"no cycle has completed yet" in body
    completed_cycle(endpoint)
    code, _, body = await get(endpoint.port, "/healthz")
    assert (code, body) == (200, b"ok\n")
    endpoint.clock.advance(HEALTHY_WITHIN_INTERVALS * INTERVAL_S)  # exactly at the limit
    assert (await get(endpoint.port, "/healthz"))[0] == 200
    endpoint.clock.advance(1)
    code, _, body = await get(endpoint.port, "/healthz")
    assert code == 503
    assert body.startswith(b"unhealthy: the last cycle completed 91 s ago, more than 3 poll")
    completed_cycle(endpoint)
    assert (await get(endpoint.port, "/healthz"))[0] == 200


async def test_a_failing_state_file_is_degraded_not_unhealthy(endpoint: Endpoint) -> None:
    completed_cycle(endpoint)
    endpoint.status.store_error = "state file /x: cannot write: database or disk is full"
    code, _, body = await get(endpoint.port, "/healthz")
    assert code == 200
    assert body == b"degraded: state file: state file /x: cannot write: database or disk is full\n"
    document = json.loads((await get(endpoint.port, "/api/alerts"))[2])
    assert document["health"] == "degraded" and "disk is full" in document["degraded"][0]
    assert "disk is full" in document["reason"]


async def test_failing_deliveries_are_degraded_with_receiver_error_and_age(
    endpoint: Endpoint,
) -> None:
    completed_cycle(endpoint)
    problem = DeliveryProblem("ops-slack", "connection refused", endpoint.clock() - 200)
    endpoint.status.delivery_problems = (problem.describe(endpoint.clock()),)
    endpoint.status.config_error = "rules.yaml:3: bad"
    code, _, body = await get(endpoint.port, "/healthz")
    assert code == 200
    assert body.decode().splitlines() == [
        "degraded: receiver 'ops-slack' failing: connection refused "
        "(oldest undelivered notification queued 3m20s ago)",
        "warning: config reload: rules.yaml:3: bad",
    ]
    document = json.loads((await get(endpoint.port, "/api/alerts"))[2])
    assert document["health"] == "degraded"
    assert document["degraded"] == [endpoint.status.delivery_problems[0]]
    lines = status_lines(document)
    assert lines[0] == "cgwatchdog DEGRADED (1 problem)"
    assert endpoint.status.delivery_problems[0] in " ".join(lines)
    # A stuck loop is still unhealthy, whatever else is degraded.
    endpoint.clock.advance(HEALTHY_WITHIN_INTERVALS * INTERVAL_S + 1)
    code, _, body = await get(endpoint.port, "/healthz")
    assert code == 503 and body.startswith(b"unhealthy: the last cycle completed")
    assert b"degraded: receiver 'ops-slack'" in body
    endpoint.status.delivery_problems = ()
    completed_cycle(endpoint)
    code, _, body = await get(endpoint.port, "/healthz")
    assert code == 200 and body == b"ok\nwarning: config reload: rules.yaml:3: bad\n"


async def test_head_answers_without_a_body(endpoint: Endpoint) -> None:
    completed_cycle(endpoint)
    code, headers, body = await exchange(
        endpoint.port, b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    assert code == 200 and headers["content-length"] == "3" and body == b""
    # /metrics streams its body: HEAD gets its length and no byte of it.
    code, headers, body = await exchange(
        endpoint.port, b"HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    whole = b"".join(endpoint.metrics.exposition(openmetrics=False))
    assert code == 200 and headers["content-length"] == str(len(whole)) and body == b""
    code, headers, body = await exchange(
        endpoint.port,
        b"HEAD /metrics HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\n\r\n",
    )
    zipped = endpoint.metrics.exposition(openmetrics=False, compressed=True)
    assert code == 200 and headers["content-length"] == str(zipped.length) and body == b""
    assert headers["content-encoding"] == "gzip" and zipped.length < len(whole)


async def test_unknown_path_is_404_and_other_methods_405(endpoint: Endpoint) -> None:
    code, _, body = await get(endpoint.port, "/nothing")
    assert code == 404 and body == b"404 Not Found: nothing at /nothing\n"
    code, headers, body = await exchange(
        endpoint.port,
        b"POST /api/alerts HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}",
    )
    assert code == 405 and headers["allow"] == "GET, HEAD"
    assert b"POST is not allowed here: only GET, HEAD" in body
    code, _, _ = await exchange(
        endpoint.port, b"DELETE /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    assert code == 405


async def test_bodies_and_broken_requests_are_refused(endpoint: Endpoint) -> None:
    code, _, body = await exchange(
        endpoint.port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert code == 400 and b"bodies are not accepted" in body
    assert (await exchange(endpoint.port, b"GARBAGE\r\n\r\n"))[0] == 400
    # HTTP/1.1 without Host is malformed (RFC 9112); HTTP/1.0 may leave it out.
    assert (await exchange(endpoint.port, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 400
    assert (await exchange(endpoint.port, b"GET /healthz HTTP/1.0\r\n\r\n"))[0] == 503
    assert (await exchange(endpoint.port, b"GET /metrics HTTP/2.0\r\n\r\n"))[0] in (400, 505)


async def test_an_oversized_request_head_is_refused(endpoint: Endpoint) -> None:
    padding = "X-Padding: " + "a" * (MAX_LINE_BYTES + 1)
    code, _, _ = await get(endpoint.port, "/metrics", padding)
    assert code in (400, 431)
    code, _, _ = await exchange(endpoint.port, b"GET /" + b"a" * (2 * MAX_LINE_BYTES))
    assert code in (400, 414, 431)  # a request line that never ends


async def test_a_slow_client_is_dropped(endpoint: Endpoint) -> None:
    reader, writer = await asyncio.open_connection(HOST, endpoint.port)
    writer.write(b"GET /metrics HTTP/1.1\r\n")  # and never the blank line
    await writer.drain()
    async with asyncio.timeout(5):
        data = await reader.read()  # the server closes: no answer to a head never finished
    assert data == b""
    writer.close()


async def test_connections_past_the_limit_get_503(endpoint: Endpoint) -> None:
    idle = [await asyncio.open_connection(HOST, endpoint.port) for _ in range(2)]
    await asyncio.sleep(0.05)  # let the server accept them
    reader, writer = await asyncio.open_connection(HOST, endpoint.port)
    async with asyncio.timeout(5):
        data = await reader.read()
    assert data.startswith(b"HTTP/1.1 503 ")
    writer.close()
    for _, idle_writer in idle:
        idle_writer.close()
    await asyncio.sleep(0.05)
    assert (await get(endpoint.port, "/healthz"))[0] == 503  # served again: no cycle yet


async def test_the_host_header_must_name_this_endpoint(endpoint: Endpoint) -> None:
    """No DNS rebinding: a page of evil.example whose name now points here is refused."""
    for host in ("localhost", "localhost:9841", HOST, f"{HOST}:{endpoint.port}", "[::1]:80"):
        assert (await get(endpoint.port, "/healthz", f"Host: {host}"))[0] == 503, host
    code, _, body = await exchange(
        endpoint.port, b"GET /api/alerts HTTP/1.1\r\nHost: evil.example:9841\r\n\r\n"
    )
    assert code == 421 and b"add the name to http.hosts" in body
    endpoint.server.configure(HttpConfig(hosts=["Miners.Example.org"]))
    head = b"GET /healthz HTTP/1.1\r\nHost: miners.example.org:9841\r\n\r\n"
    assert (await exchange(endpoint.port, head))[0] == 503
    assert (await exchange(endpoint.port, head.replace(b"miners.", b"other.")))[0] == 421


def test_host_allowed() -> None:
    http = HttpConfig(listen="box.lan:9841", hosts=["miners.example.org"])
    allowed = [
        "box.lan",
        "BOX.LAN:9841",
        "miners.example.org.",
        "10.0.0.5:9841",
        "[fe80::1]",
        "localhost",
    ]
    for header in allowed:
        assert host_allowed(header, http), header
    assert host_allowed(None, http)  # HTTP/1.0 and plain scripts send none
    for header in ("evil.example", "box.lan.evil.example", "miners.example.org.evil", "lan"):
        assert not host_allowed(header, http), header


async def test_the_favicon_is_served(endpoint: Endpoint) -> None:
    code, headers, body = await get(endpoint.port, "/favicon.ico")
    assert code == 200 and headers["content-type"] == "image/x-icon"
    assert body[:4] == b"\0\0\1\0" and b"PNG" in body[:40]


# -- binding ------------------------------------------------------------------------------


async def test_binds_loopback_by_default() -> None:
    assert Config().http.listen == "127.0.0.1:9841"
    assert HttpConfig().host == "127.0.0.1"
    clock = FakeClock()
    found = sources(clock, AlertEngine())
    found.http = HttpConfig()
    server = HttpServer(found)
    await server.start(port=0)  # the default address, any free port
    try:
        assert [address[0] for address in server.sockets] == ["127.0.0.1"]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ") and b"/api/alerts" in answer
    finally:
        await server.stop()


async def test_a_taken_port_is_an_oserror() -> None:
    clock = FakeClock()
    first = HttpServer(sources(clock, AlertEngine()))
    await first.start(port=0)
    try:
        found = sources(clock, AlertEngine())
        found.http = HttpConfig(listen=f"{HOST}:{first.port}")
        with pytest.raises(OSError):
            await HttpServer(found).start()
    finally:
        await first.stop()


# -- rendering ------------------------------------------------------------------------------


def status_document() -> dict[str, object]:
    clock = FakeClock()
    status = DaemonStatus(interval_s=INTERVAL_S, started_at=clock(), cycles=4, miners=2, up=1)
    status.last_cycle_at, status.last_cycle_duration_s = clock(), 1.25
    return alerts_document(status, alert_engine(clock()).alerts(), clock.advance(2))


def test_status_lines_show_health_cycle_and_firing_alerts() -> None:
    lines = status_lines(status_document())
    assert lines == [
        "cgwatchdog ok",
        "2 miners, 1 up, 1 firing, 1 pending, outbox 0",
        "last cycle: 2025-11-25T20:00:00Z (2.0 s ago), took 1.25 s",
        "shard 1/1, replica -, role leader",
        "FIRING  DeviceDead  m1  device=1  since 2025-11-25T20:00:00Z  Dead",
    ]
    unhealthy = {**status_document(), "health": "unhealthy", "reason": "stopping"}
    assert status_lines(unhealthy)[0] == "cgwatchdog UNHEALTHY: stopping"


def test_recent_actions_reach_api_alerts_and_status() -> None:
    from cgwatchdog.actions import ActionEvent, ActionEventKind

    clock = FakeClock()
    status = DaemonStatus(interval_s=INTERVAL_S, started_at=clock(), cycles=1, miners=1, up=1)
    status.last_cycle_at, status.last_cycle_duration_s = clock(), 0.5
    event = ActionEvent(
        kind=ActionEventKind.VERIFIED, at=clock(), miner="m1", alertname="DeviceDead",
        alert_fingerprint="f" * 16, step=0, do="restart", action="restart",
        detail="Elapsed went down", dry_run=False,
    )  # fmt: skip
    status.record_actions([event])
    document = alerts_document(status, [], clock())
    assert document["actions"] == [
        {"at": "2025-11-25T20:00:00Z", "miner": "m1", "alertname": "DeviceDead",
         "action": "restart", "outcome": "verified", "detail": "Elapsed went down"}
    ]  # fmt: skip
    assert status_lines(document)[-1] == (
        "ACTION  2025-11-25T20:00:00Z  m1  restart for DeviceDead: verified (Elapsed went down)"
    )


def test_info_lines_share_their_labels_text_and_follow_every_change() -> None:
    """Miners alike (same firmware, same labels) share one cached text after their host; a
    configured ``host`` label wins over the address; a new configuration's labels show at
    the next render, and the cache keeps only the texts the last render used."""
    metrics = Metrics(CollectorRegistry())
    rack = {"site": "north", "model": "S19 (configured)"}
    miners = [MinerConfig(name=f"r{i}", host=f"127.0.3.{i}", labels=rack) for i in range(50)]
    miners.append(MinerConfig(name="odd", host="127.0.3.99", labels={"host": "pdu-7", "x": 'a"b'}))
    now = 1000.0

    def cycle(configured: list[MinerConfig]) -> dict[str, dict[str, str]]:
        found: list[PollResult] = [
            Snapshot(name=m.name, host=m.host, port=4028, at=now, family="antminer",
                     fork="bmminer 1.0.0", model="S19", firmware_version="2023")
            for m in configured
        ]  # fmt: skip
        metrics.observe_cycle(
            found, [], duration_s=1.0, finished_at=now, interval_s=INTERVAL_S, miners=configured
        )
        body = b"".join(metrics.exposition(openmetrics=False)).decode()
        return {
            sample.labels["miner"]: sample.labels
            for family in text_string_to_metric_families(body)
            if family.name == "cgwatchdog_miner_info"
            for sample in family.samples
        }

    info = cycle(miners)
    assert info["r7"] == {
        "miner": "r7", "host": "127.0.3.7", "family": "antminer", "model": "S19 (configured)",
        "firmware_version": "2023", "fork": "bmminer 1.0.0", "site": "north",
    }  # fmt: skip
    assert info["odd"]["host"] == "pdu-7" and info["odd"]["x"] == 'a"b'
    assert len(metrics._info) == 2  # the rack's text, the odd miner's
    moved = {"site": "south"}
    info = cycle([*(m.model_copy(update={"labels": moved}) for m in miners[:50])])
    assert {labels["site"] for labels in info.values()} == {"south"} and len(info) == 50
    assert info["r7"]["model"] == "S19"
    assert len(metrics._info) == 1


def test_role_and_heartbeat_metrics_match_the_cluster_roles() -> None:
    from cgwatchdog.cluster import Role
    from cgwatchdog.web.status import ROLES

    assert tuple(role.value for role in Role) == ROLES
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert registry.get_sample_value("cgwatchdog_heartbeat_last_success_timestamp_seconds") is None
    metrics.record_role("follower")
    metrics.record_role("leader")
    values = {r: registry.get_sample_value("cgwatchdog_role", {"role": r}) for r in ROLES}
    assert values == {"leader": 1.0, "follower": 0.0, "isolated": 0.0}
    metrics.record_heartbeat(False)
    assert registry.get_sample_value("cgwatchdog_heartbeat_last_success_timestamp_seconds") == 0
    metrics.record_heartbeat(True)
    metrics.record_heartbeat(True)
    ok = registry.get_sample_value("cgwatchdog_heartbeat_pings_total", {"result": "ok"})
    failed = registry.get_sample_value("cgwatchdog_heartbeat_pings_total", {"result": "failed"})
    assert (ok, failed) == (2.0, 1.0)
    assert registry.get_sample_value("cgwatchdog_heartbeat_last_success_timestamp_seconds") > 0
