"""The status page over real HTTP: the fleet and a miner as the snapshots say, every
value escaped, filtering, sorting and pages without JavaScript, and the token for writes.

A simulated fleet (six firmware flavours on 127.18.3.1, a FakeClock) is watched by a
real Watchdog; the page is fed as the daemon feeds it (``Metrics.observe_cycle``, the
hashrate trend, ``replies_worth_keeping`` as the poller's ``keep_replies``) and served by
the real endpoint on 127.18.3.2. One miner is named ``<script>...`` in the configuration
and another mines on a pool whose URL is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from aiohttp import web
from markupsafe import escape as _escape
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from cgwatchdog.config import HttpConfig, MinerConfig
from cgwatchdog.config.loader import load_config
from cgwatchdog.simulator import FakeClock, Fleet, make_scenario, serve
from cgwatchdog.snapshot import PollResult, Snapshot, Unreachable
from cgwatchdog.trend import HashrateTrend
from cgwatchdog.units import format_hashrate
from cgwatchdog.watchdog import Watchdog
from cgwatchdog.web.auth import AUTHORIZED_BY, SESSION_COOKIE, require_token
from cgwatchdog.web.fleetview import replies_worth_keeping, sparkline
from cgwatchdog.web.metrics import FleetView, Metrics, series_budget
from cgwatchdog.web.pages import PAGE_SIZE
from cgwatchdog.web.server import HttpServer
from cgwatchdog.web.sources import PageSources, Sources
from cgwatchdog.web.status import DaemonStatus

SIM = "127.18.3.1"
HOST = "127.18.3.2"
T0 = 1_800_000_000.0
TOKEN = "page-token-1234567890"
HOSTILE_NAME = '<script>alert("name")</script>'
HOSTILE_POOL = 'stratum+tcp://<script>alert("pool")</script>.example:3333'
FLAVOURS = ("cgminer", "antminer", "whatsminer", "braiins", "avalon", "luxos")


def escape(text: str) -> str:
    """``text`` as the page's templates escape it."""
    return str(_escape(text))


# -- a fleet, watched, and its page ------------------------------------------------------------


@dataclass
class Page:
    clock: FakeClock
    fleet: Fleet
    watchdog: Watchdog
    status: DaemonStatus
    metrics: Metrics
    server: HttpServer
    results: list[PollResult]
    names: list[str]
    trend: HashrateTrend
    config: Path

    @property
    def port(self) -> int:
        return self.server.port

    def result(self, name: str) -> PollResult:
        return next(r for r in self.results if r.name == name)


async def cycle(page: Page) -> None:
    """One cycle, fed to the page as the daemon feeds it."""
    page.clock.advance(30.0)
    await page.fleet.sync()
    report = await page.watchdog.cycle()
    now = page.clock()
    status = page.status
    status.cycles += 1
    status.last_cycle_at, status.last_cycle_duration_s = now, 0.25
    status.miners, status.up = len(report.results), report.up
    status.record_actions(report.action_events)
    alerts = page.watchdog.alerts.alerts()
    page.metrics.observe_cycle(
        report.results, alerts, duration_s=0.25, finished_at=now, interval_s=30.0,
        miners=page.watchdog.config.miners,
    )  # fmt: skip
    page.trend.record(
        ((r.name, r.hashrate_hs if isinstance(r, Snapshot) else None) for r in report.results),
        now,
    )
    keep = replies_worth_keeping(report.results, alerts)
    page.watchdog.poller.keep_replies = keep.__contains__
    page.results = list(report.results)


@contextlib.asynccontextmanager
async def watched_fleet(tmp_path: Path, sim: str, host: str) -> AsyncIterator[Page]:
    """The fleet served on ``sim``, watched for four cycles, its page on ``host``; the
    configuration is ``tmp_path / "config.yaml"`` (for ``poll --json``)."""
    clock = FakeClock(T0)
    fleet = Fleet.build(
        len(FLAVOURS),
        {make_scenario("device_dead", fail_after_s=1.0, device=1): 1},
        flavours=FLAVOURS,
        listen=sim,
        base_port=0,
        clock=clock,
        restart_downtime_s=0.0,
    )
    fleet[2].miner.set_pools([(HOSTILE_POOL, "farm.x"), ("stratum+tcp://b.example:3333", "y")], T0)
    names = [HOSTILE_NAME, *(m.name for m in list(fleet)[1:])]
    async with serve(fleet):
        config = {
            "poll": {"interval": "30s", "timeout": "2s"},
            "miners": [
                {"name": name, "host": m.host, "port": m.port,
                 "labels": {"site": "north" if i % 2 == 0 else "south", "rack": f"r{i}"}}
                for i, (name, m) in enumerate(zip(names, fleet, strict=True))
            ],
            "rules": [
                {"name": "DeviceDead", "type": "device_status", "status": ["Dead"], "for": "0s",
                 "severity": "critical"},
                {"name": "MinerUnreachable", "type": "unreachable", "for": "0s"},
            ],
        }  # fmt: skip
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        loaded = load_config(path)
        await fleet.set_mode(names[5], "down")
        watchdog = Watchdog(loaded, clock=clock)
        trend = HashrateTrend()
        status = DaemonStatus(interval_s=30.0, started_at=clock())
        metrics = Metrics(CollectorRegistry())
        server = HttpServer(
            Sources(
                status, metrics, alerts=watchdog.alerts.alerts, clock=clock,
                http=HttpConfig(listen=f"{host}:9841"),
                pages=PageSources(trend=trend, replies=watchdog.poller.last_replies,
                                  redact=loaded.redact, write_forms=True),
            ),
            extra_routes=write_routes(),
        )  # fmt: skip
        await server.start(host, 0)
        found = Page(clock, fleet, watchdog, status, metrics, server, [], names, trend, path)
        try:
            for _ in range(4):
                await cycle(found)
            yield found
        finally:
            await server.stop()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    async with watched_fleet(tmp_path, SIM, HOST) as found:
        yield found


# -- HTTP -------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


async def request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> Answer:
    reader, writer = await asyncio.open_connection(HOST, port)
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    async with asyncio.timeout(10):
        data = await reader.read()
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    head_lines = head.decode("latin-1").split("\r\n")
    pairs = [line.split(": ", 1) for line in head_lines[1:]]
    return Answer(
        int(head_lines[0].split()[1]),
        {k.lower(): v for k, v in pairs},
        [v for k, v in pairs if k.lower() == "set-cookie"],
        rest,
    )


def rows_of(text: str) -> dict[str, str]:
    """The miner table's rows: the miner's name (unescaped) -> the row's visible text."""
    rows = {}
    for attrs, inner in re.findall(r'<tr ([^>]*data-miner="[^"]*"[^>]*)>(.*?)</tr>', text, re.S):
        name = html.unescape(re.search(r'data-miner="([^"]*)"', attrs)[1])  # type: ignore[index]
        rows[name] = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inner)).split())
    return rows


# -- the fleet ---------------------------------------------------------------------------------


async def test_the_fleet_page_shows_what_the_snapshots_say(page: Page) -> None:
    answer = await request(page.port, "/")
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    rows = rows_of(answer.text)
    assert list(rows) == sorted(page.names)
    for result in page.results:
        row = rows[result.name]
        data = result.to_json()
        if isinstance(result, Snapshot):
            assert format_hashrate(result.hashrate_hs or 0) in row, row
            if result.temperature_max_c is not None:
                assert f"{result.temperature_max_c:.0f} °C" in row
            alive = sum(1 for p in data["pools"] if p["status"] == "Alive")  # type: ignore[attr-defined]
            assert f"{alive}/{len(result.pools)} alive" in row
            assert (result.family or "") in row
        else:
            assert "down" in row and result.error in row
    # The totals: miners up, the fleet's hashrate, per site.
    up = sum(1 for r in page.results if r.up)
    assert f'data-figure="up">{up}<' in answer.text
    total = sum(r.hashrate_hs or 0 for r in page.results if isinstance(r, Snapshot))
    assert format_hashrate(total) in answer.text
    north = sum(
        r.hashrate_hs or 0
        for i, r in enumerate(page.results)
        if isinstance(r, Snapshot) and page.names.index(r.name) % 2 == 0 and i >= 0
    )
    assert re.search(
        rf'data-site="north">.*?{re.escape(format_hashrate(north))}', answer.text, re.S
    )
    # Firing alerts with their age; the dead device and the miner that is down.
    assert "DeviceDead" in answer.text and "MinerUnreachable" in answer.text
    assert "device ASC1" in answer.text or "device 1" in answer.text


async def test_every_value_is_escaped(page: Page) -> None:
    fleet = (await request(page.port, "/")).text
    assert "<script>alert(" not in fleet  # no markup of a miner's ever reaches the page
    assert escape(HOSTILE_NAME) in fleet
    assert escape(HOSTILE_POOL) in fleet
    for name in (HOSTILE_NAME, page.names[2]):
        miner = await request(page.port, "/miners/" + quote(name, safe=""))
        assert miner.status == 200, name
        assert "<script>alert(" not in miner.text
    miner = (await request(page.port, "/miners/" + quote(page.names[2], safe=""))).text
    assert escape(HOSTILE_POOL) in miner
    missing = await request(page.port, "/miners/" + quote("<img src=x onerror=alert(1)>"))
    assert missing.status == 404 and "<img" not in missing.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in missing.text


async def test_filtering_and_sorting_work_without_javascript(page: Page) -> None:
    north = rows_of((await request(page.port, "/?q=north")).text)
    assert set(north) == {n for i, n in enumerate(page.names) if i % 2 == 0}
    words = rows_of((await request(page.port, "/?q=south+r3")).text)
    assert set(words) == {page.names[3]}
    down = rows_of((await request(page.port, "/?state=down")).text)
    assert set(down) == {page.names[5]}
    alerting = rows_of((await request(page.port, "/?state=alerting")).text)
    assert set(alerting) == {HOSTILE_NAME, page.names[5]}
    by_hashrate = list(rows_of((await request(page.port, "/?sort=hashrate&order=desc")).text))
    snapshots = [r for r in page.results if isinstance(r, Snapshot)]
    expected = [r.name for r in sorted(snapshots, key=lambda r: -(r.hashrate_hs or 0))]
    assert by_hashrate == [*expected, page.names[5]]  # unknown last
    # Bad parameters fall back; nothing is echoed unescaped.
    answer = await request(page.port, "/?sort=%3Cx%3E&state=%3Cy%3E&page=-3&q=%3Cb%3E")
    assert answer.status == 200 and "<b>" not in answer.text and "<x>" not in answer.text


async def test_the_table_pages_a_large_fleet() -> None:
    clock = FakeClock(T0)
    results = [
        Snapshot(name=f"m{i:04d}", host="10.0.0.1", port=4028, at=T0, hashrate_hs=1e12 + i)
        for i in range(2 * PAGE_SIZE + 50)
    ]
    metrics = Metrics(CollectorRegistry())
    metrics.observe_cycle(results, [], duration_s=1, finished_at=T0, interval_s=30)
    server = HttpServer(
        Sources(DaemonStatus(interval_s=30, started_at=T0), metrics, alerts=list, clock=clock)
    )
    await server.start(HOST, 0)
    try:
        first = await request(server.port, "/")
        assert len(rows_of(first.text)) == PAGE_SIZE and 'rel="next"' in first.text
        last = await request(server.port, "/?page=3")
        assert list(rows_of(last.text)) == [
            f"m{i:04d}" for i in range(2 * PAGE_SIZE, 2 * PAGE_SIZE + 50)
        ]
        assert "page 3 of 3" in last.text
        beyond = await request(server.port, "/?page=99")
        assert "page 3 of 3" in beyond.text
    finally:
        await server.stop()


async def test_a_miner_page_shows_devices_pools_alerts_and_kept_replies(page: Page) -> None:
    dead = page.result(HOSTILE_NAME)
    assert isinstance(dead, Snapshot)
    text = (await request(page.port, "/miners/" + quote(HOSTILE_NAME, safe=""))).text
    devices = re.findall(r'<tr class="(ok|bad)" data-device="(\d+)">', text)
    assert [(int(i), c == "ok") for c, i in devices] == [
        (d.id, d.status == "Alive") for d in dead.devices
    ]
    for pool in dead.pools:
        assert escape(pool.url) in text
    assert 'data-alert="DeviceDead"' in text
    # Alerting: its raw replies were kept, and are shown (escaped, redacted).
    assert "Last raw replies" in text and "as the miner answered at" in text
    assert escape('"SUMMARY"') in text
    # A healthy miner's are not kept.
    healthy = (await request(page.port, "/miners/" + page.names[1])).text
    assert "kept only for miners that are down or alerting" in healthy
    assert page.watchdog.poller.last_replies(page.names[1]) is None
    # The one that is down says why.
    down = page.result(page.names[5])
    assert isinstance(down, Unreachable)
    down_page = (await request(page.port, "/miners/" + page.names[5])).text
    assert escape(down.error) in down_page


async def test_the_sparkline_draws_the_hour(page: Page) -> None:
    text = (await request(page.port, "/")).text
    name = html.escape(page.names[1])
    row = re.search(rf'data-miner="{re.escape(name)}".*?</tr>', text, re.S)
    assert row is not None
    path = re.search(r'<svg class="spark"[^>]*><path d="([^"]+)"', row[0])
    assert path is not None and path[1].startswith("M") and " L" in path[1]
    assert sparkline([None, 2.0, 4.0, None, 4.0]) == "M30.0 12.0 L60.0 1.0 M120.0 1.0"
    assert sparkline([None, None]) == ""


async def test_pages_are_hardened(page: Page) -> None:
    answer = await request(page.port, "/")
    csp = answer.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["connection"] == "close"
    # Nothing inline, nothing from elsewhere.
    assert "<script>" not in answer.text and " style=" not in answer.text
    assert "http://" not in answer.text.replace("http://127.18", "")
    assert "https://" not in answer.text
    for path, kind in (("/static/page.js", "text/javascript"), ("/static/page.css", "text/css")):
        asset = await request(page.port, path)
        assert asset.status == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.headers["cache-control"] == "public, max-age=3600"


# -- writes ------------------------------------------------------------------------------------


async def _write(request_: web.Request) -> web.StreamResponse:
    return web.json_response({"by": request_[AUTHORIZED_BY]})


@require_token
async def _private(request_: web.Request) -> web.StreamResponse:
    return web.json_response({"secret": "yes"})


async def _stand_in(request_: web.Request) -> web.StreamResponse:
    """Where another module's ack/silence routes would be: the page shows its forms."""
    return web.json_response({"ok": True})


def write_routes() -> Sequence[web.RouteDef]:
    return [
        web.post("/api/things", _write),
        web.delete("/api/things/{id}", _write),
        web.get("/api/private", _private),
        web.post("/api/alerts/{id}/ack", _stand_in),
        web.post("/api/silences", _stand_in),
    ]


def with_token(page: Page, token: str | None) -> None:
    page.server.configure(HttpConfig(token=None if token is None else SecretStr(token)))


async def test_without_a_token_every_write_is_forbidden(page: Page) -> None:
    for method, path in (("POST", "/api/things"), ("DELETE", "/api/things/1"), ("POST", "/logout")):
        answer = await request(page.port, path, method=method, body=b"{}")
        assert answer.status == 403, path
    answer = await request(page.port, "/api/things", method="POST", headers={
        "Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert answer.status == 403 and "no http.token_file" in answer.text
    assert (await request(page.port, "/login")).status == 403
    assert "read-only" in (await request(page.port, "/")).text


async def test_the_token_as_bearer(page: Page) -> None:
    with_token(page, TOKEN)
    missing = await request(page.port, "/api/things", method="POST")
    assert missing.status == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.headers["content-type"] == "application/json"  # the API's error shape
    wrong = await request(page.port, "/api/things", method="POST",
                          headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})  # fmt: skip
    assert wrong.status == 401 and "wrong token" in wrong.text
    right = await request(page.port, "/api/things", method="POST",
                          headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert (right.status, right.text) == (200, '{"by": "token"}')
    assert (await request(page.port, "/api/private")).status == 401
    private = await request(page.port, "/api/private", headers={"Authorization": f"bearer {TOKEN}"})
    assert private.status == 200
    # Reads stay open.
    assert (await request(page.port, "/api/alerts")).status == 200


def _csrf(text: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', text)
    assert found is not None, "no CSRF field on the page"
    return found[1]


async def test_the_page_signs_in_and_its_forms_carry_csrf(page: Page) -> None:
    with_token(page, TOKEN)
    form = "application/x-www-form-urlencoded"
    assert 'href="/login?next=' in (await request(page.port, "/")).text
    refused = await request(page.port, "/login", method="POST", headers={"Content-Type": form},
                            body=b"token=nope&next=/")  # fmt: skip
    assert refused.status == 401 and "that is not the token" in refused.text
    assert not refused.cookies
    signed = await request(page.port, "/login", method="POST", headers={"Content-Type": form},
                           body=f"token={TOKEN}&next=/miners/sim-002".encode())  # fmt: skip
    assert signed.status == 303 and signed.headers["location"] == "/miners/sim-002"
    cookie = signed.cookies[0]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    session = cookie.split(";", 1)[0]
    jar = {"Cookie": session}
    # Signed in: the miner page offers acknowledgement and silence forms, with CSRF.
    miner = (await request(page.port, "/miners/" + quote(HOSTILE_NAME, safe=""), headers=jar)).text
    token = _csrf(miner)
    assert 'action="/api/alerts/' in miner and 'action="/api/silences"' in miner
    assert miner.count(f'value="{token}"') >= 3  # sign-out, ack, silence
    # The cookie alone is not enough: a form must carry the CSRF token.
    bare = await request(page.port, "/api/things", method="POST",
                         headers={**jar, "Content-Type": form}, body=b"x=1")  # fmt: skip
    assert bare.status == 403 and "CSRF" in bare.text
    ok = await request(page.port, "/api/things", method="POST",
                       headers={**jar, "Content-Type": form}, body=f"csrf={token}".encode())  # fmt: skip
    assert (ok.status, ok.text) == (200, '{"by": "session"}')
    header = await request(page.port, "/api/things/7", method="DELETE",
                           headers={**jar, "X-CSRF-Token": token})  # fmt: skip
    assert header.status == 200
    # Another site's form, even with a stolen CSRF token, is refused by its Origin.
    foreign = await request(page.port, "/api/things", method="POST",
                            headers={**jar, "Content-Type": form, "Origin": "http://evil.example"},
                            body=f"csrf={token}".encode())  # fmt: skip
    assert foreign.status == 403
    same = await request(page.port, "/api/things", method="POST",
                         headers={**jar, "Content-Type": form, "Origin": "http://localhost"},
                         body=f"csrf={token}".encode())  # fmt: skip
    assert same.status == 200
    # A new token signs everyone out.
    with_token(page, TOKEN + "-new")
    stale = await request(page.port, "/api/things", method="POST",
                          headers={**jar, "Content-Type": form}, body=f"csrf={token}".encode())  # fmt: skip
    assert stale.status == 401
    with_token(page, TOKEN)
    out = await request(page.port, "/logout", method="POST",
                        headers={**jar, "Content-Type": form}, body=f"csrf={token}".encode())  # fmt: skip
    assert out.status == 303 and out.cookies[0].startswith(f"{SESSION_COOKIE}=")
    assert "Max-Age=0" in out.cookies[0]


async def test_a_login_redirect_stays_on_this_endpoint(page: Page) -> None:
    with_token(page, TOKEN)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for target in ("//evil.example/", "http://evil.example/", "\\\\evil", "javascript:alert(1)"):
        answer = await request(page.port, "/login", method="POST", headers=form,
                               body=f"token={TOKEN}&next={quote(target)}".encode())  # fmt: skip
        assert answer.status == 303 and answer.headers["location"] == "/", target


def test_replies_worth_keeping_puts_firing_first_and_is_bounded() -> None:
    from cgwatchdog.alerts import AlertEngine, Evaluation, Signal
    from cgwatchdog.errors import FailureKind

    engine = AlertEngine()
    signals = [Signal({"alertname": "A", "miner": f"m{i}"}, {}, "x") for i in range(5)]
    engine.update(Evaluation(signals, [("A", f"m{i}") for i in range(5)]), T0)
    results: list[Any] = [
        Unreachable(f"d{i}", "10.0.0.1", 4028, T0, "refused", FailureKind.REFUSED) for i in range(3)
    ]
    assert replies_worth_keeping(results, engine.alerts()) == frozenset(
        [*(f"m{i}" for i in range(5)), "d0", "d1", "d2"]
    )
    assert len(replies_worth_keeping(results, engine.alerts(), limit=4)) == 4
    assert replies_worth_keeping([], []) == frozenset()


def test_a_fleet_view_without_config_still_renders_rows() -> None:
    from cgwatchdog.web.fleetview import miner_rows, site_totals

    view = FleetView(
        (Snapshot(name="x", host="h", port=1, at=T0, hashrate_hs=5.0),),
        {"x": MinerConfig(name="x", host="h", labels={"site": "s1"})},
    )
    rows = miner_rows(view, [])
    assert rows[0].site == "s1" and rows[0].hashrate_text == "5.0 H/s"
    assert [(s.site, s.miners, s.up) for s in site_totals(rows)] == [("s1", 1, 1)]


async def test_each_miner_stays_within_the_series_budget(page: Page) -> None:
    """Real snapshots of six firmware flavours: no miner exports more series than the
    documented budget (docs/STATUS-PAGE.md), with per-device series off and on."""
    for per_device in (False, True):
        page.metrics.per_device = per_device
        text = b"".join(page.metrics.exposition(openmetrics=False)).decode()
        per_miner: dict[str, int] = {}
        for line in text.splitlines():
            found = re.match(r'(\w+)\{miner="((?:[^"\\]|\\.)*)"', line)
            if found and found[1] != "cgwatchdog_alert":
                per_miner[found[2]] = per_miner.get(found[2], 0) + 1
        assert len(per_miner) == len(page.names)
        budget = series_budget(per_device=per_device)
        assert max(per_miner.values()) <= budget, (per_device, per_miner)


def test_a_short_token_is_refused_without_showing_it() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        HttpConfig(token=SecretStr("guessable"))
    assert "shorter than 16 characters" in str(caught.value)
    assert "guessable" not in str(caught.value)
    assert HttpConfig(token=SecretStr(TOKEN)).token is not None
