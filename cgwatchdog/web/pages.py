"""The status page: the fleet at ``/``, one miner at ``/miners/{name}``, and sign-in.

Server-rendered HTML (Jinja2 with autoescape: every value, miner names and pool URLs
included, is escaped) with inline SVG for the sparklines and bars; it works without
JavaScript (sorting and filtering are links and a GET form; ``<noscript>`` refreshes
it) and ``/static/page.js`` adds a little: filtering as one types and a refresh that
keeps the filter. The fleet table shows ``PAGE_SIZE`` miners a page. Nothing here
changes state except signing in and out (``auth.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from cgwatchdog import __version__
from cgwatchdog.errors import StoreError
from cgwatchdog.snapshot import Snapshot
from cgwatchdog.units import format_duration, format_hashrate, format_percent, iso_seconds
from cgwatchdog.web import fleetview
from cgwatchdog.web.auth import AUTH, CSRF_FIELD, SESSION_COOKIE, SESSION_LIFETIME_S
from cgwatchdog.web.sources import SOURCES, Sources

__all__ = ["PAGE_SIZE", "Handler", "install", "routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PAGE_SIZE: Final = 200
"""Miners a page of the fleet table shows (10,000 rows would be 15 MB of HTML)."""
SHOWN_ALERTS: Final = 50
SHOWN_ACTIONS: Final = 15
MINER_ACTIONS: Final = 30
ACK_ROUTE: Final = ("POST", "/api/alerts/{id}/ack")
SILENCE_ROUTE: Final = ("POST", "/api/silences")


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("cgwatchdog.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["hashrate"] = lambda hs: "-" if hs is None else format_hashrate(hs)
_env.filters["duration"] = lambda s: "-" if s is None else format_duration(s)
_env.filters["percent"] = lambda r: "-" if r is None or not math.isfinite(r) else format_percent(r)
_env.filters["iso"] = lambda ts: "-" if ts is None else iso_seconds(ts)
_env.filters["num"] = lambda n: "-" if n is None else f"{n:,}"


def _sources(request: web.Request) -> Sources:
    return request.app[SOURCES]


def _has_route(app: web.Application, method: str, canonical: str) -> bool:
    for resource in app.router.resources():
        if resource.canonical == canonical and any(r.method == method for r in resource):
            return True
    return False


def _auth_context(request: web.Request) -> dict[str, Any]:
    auth = request.app[AUTH]
    session = request.cookies.get(SESSION_COOKIE)
    signed_in = auth.session_ok(session)
    forms = signed_in and _sources(request).pages.write_forms
    return {
        "writes_enabled": auth.enabled,
        "signed_in": signed_in,
        "csrf_field": CSRF_FIELD,
        "csrf": auth.csrf_token(session) if signed_in and session else "",
        "can_ack": forms and _has_route(request.app, *ACK_ROUTE),
        "can_silence": forms and _has_route(request.app, *SILENCE_ROUTE),
    }


def _common(request: web.Request, title: str) -> dict[str, Any]:
    sources = _sources(request)
    status = sources.status
    now = sources.clock()
    health = status.health(now)
    age = None if status.last_cycle_at is None else max(0.0, now - status.last_cycle_at)
    return {
        "title": title,
        "version": __version__,
        "now": now,
        "health": health,
        "status": status,
        "cycle_age_s": age,
        "refresh_s": int(min(60.0, max(5.0, status.interval_s))),
        "path": request.path_qs,
        **_auth_context(request),
    }


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


_DEFAULTS: Final = {"q": "", "state": "all", "sort": "name", "order": "asc", "page": "1"}
_DESCENDING_FIRST: Final = frozenset({"hashrate", "temperature", "alerts"})


def _query_link(query: Mapping[str, str], **changes: str | int) -> str:
    """``?...`` for the fleet page with ``changes``, leaving out the defaults."""
    merged = {**query, **{k: str(v) for k, v in changes.items()}}
    kept = {k: v for k, v in merged.items() if v and _DEFAULTS.get(k) != v}
    return "?" + urlencode(kept) if kept else "/"


def _sort_link(query: Mapping[str, str], key: str, sort: str, descending: bool) -> str:
    """A column header's link: the other order of the column sorted by, else the
    column's natural order (largest first for figures)."""
    if key == sort:
        order = "asc" if descending else "desc"
    else:
        order = "desc" if key in _DESCENDING_FIRST else "asc"
    return _query_link(query, sort=key, order=order, page=1)


def _receivers(sources: Sources) -> list[dict[str, Any]]:
    counters = sources.metrics.notifications
    problems = sources.status.delivery_problems
    failing = sources.metrics.failing_receivers
    out = []
    for name in sorted(set(counters) | set(failing)):
        counts = counters.get(name)
        problem = next((p for p in problems if f"receiver {name!r} failing" in p), "")
        out.append(
            {
                "name": name,
                "sent": counts.sent if counts else 0,
                "failed": counts.failed if counts else 0,
                "dropped": counts.dropped if counts else 0,
                "failing": name in failing or bool(problem),
                "problem": problem,
            }
        )
    return out


@dataclass(slots=True)
class _Table:
    """The fleet's rows and totals, built once per cycle (and alert counts): 10,000
    rows take ~90 ms, too long to build at every request."""

    serial: int | None = None  # the view's (see FleetView.serial)
    counts: tuple[tuple[str, tuple[int, int]], ...] = ()
    rows: list[fleetview.MinerRow] = field(default_factory=list)
    sites: list[fleetview.SiteTotal] = field(default_factory=list)
    up: int = 0
    hashrate_hs: float = 0.0


@dataclass(slots=True)
class _Kept:
    """What the page keeps between requests: the last table."""

    table: _Table = field(default_factory=_Table)


KEPT: Final = web.AppKey("cgwatchdog_page", _Kept)


def install(app: web.Application) -> None:
    """Give the app what the page keeps between requests (before it starts)."""
    app[KEPT] = _Kept()


def _table(table: _Table, view: fleetview.FleetView, counts: dict[str, tuple[int, int]]) -> _Table:
    """The table for this view and these alert counts (the cached one if it is that)."""
    counted = tuple(sorted(counts.items()))
    if table.serial == view.serial and table.counts == counted:
        return table
    rows = fleetview.miner_rows(view, (), counts=counts)
    return _Table(
        view.serial,
        counted,
        rows,
        fleetview.site_totals(rows),
        sum(1 for r in rows if r.up),
        sum(r.hashrate_hs or 0.0 for r in rows),
    )


def _shown(
    table: _Table, q: str, state: str, sort: str, descending: bool
) -> list[fleetview.MinerRow]:
    return fleetview.sort_rows(
        fleetview.filter_rows(table.rows, q, state), sort, descending=descending
    )


async def fleet_page(request: web.Request) -> web.StreamResponse:
    """``/``: the fleet at a glance and the miner table (``q``, ``state``, ``sort``,
    ``order``, ``page`` in the query)."""
    sources = _sources(request)
    context = _common(request, "fleet")
    now = context["now"]
    alerts = list(sources.alerts())  # the engine's live records: read them here, on the loop
    alert_lines = fleetview.alert_lines(alerts, now)
    counts = fleetview.alert_counts(alerts)
    query = {
        k: request.query.get(k, "").strip()[:200] for k in ("q", "state", "sort", "order", "page")
    }
    state = query["state"] if query["state"] in fleetview.STATES else "all"
    sort = query["sort"] if query["sort"] in fleetview.SORT_KEYS else "name"
    descending = query["order"] == "desc"
    # The view is never changed once made: rows are built, filtered and sorted off the loop.
    kept = request.app[KEPT]
    kept.table = table = await asyncio.to_thread(_table, kept.table, sources.metrics.view, counts)
    shown = await asyncio.to_thread(_shown, table, query["q"], state, sort, descending)
    pages = max(1, math.ceil(len(shown) / PAGE_SIZE))
    page = min(max(1, int(query["page"]) if query["page"].isdigit() else 1), pages)
    page_rows = shown[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    trend = sources.pages.trend
    sparks = {
        row.name: fleetview.sparkline(trend.series(row.name, now)) if trend is not None else ""
        for row in page_rows
    }
    actions = list(sources.status.recent_actions)[-SHOWN_ACTIONS:][::-1]
    base_query = {"q": query["q"], "state": state, "sort": sort, "order": query["order"]}
    columns = [(key, _sort_link(base_query, key, sort, descending)) for key in fleetview.SORT_KEYS]
    text = _env.get_template("fleet.html").render(
        **context,
        miners=len(table.rows),
        up=table.up,
        hashrate_hs=table.hashrate_hs,
        firing=sum(1 for a in alert_lines if a.state == "firing"),
        pending=sum(1 for a in alert_lines if a.state == "pending"),
        sites=table.sites,
        alerts=alert_lines[:SHOWN_ALERTS],
        more_alerts=max(0, len(alert_lines) - SHOWN_ALERTS),
        actions=actions,
        receivers=_receivers(sources),
        rows=page_rows,
        matched=len(shown),
        sparks=sparks,
        q=query["q"],
        state=state,
        states=fleetview.STATES,
        sort=sort,
        descending=descending,
        columns=columns,
        page=page,
        pages=pages,
        prev_link=_query_link(base_query, page=page - 1) if page > 1 else "",
        next_link=_query_link(base_query, page=page + 1) if page < pages else "",
    )
    return _html(text)


def _raw_text(replies: Mapping[str, Any], redact: Callable[[str], str]) -> str:
    try:
        text = json.dumps(replies, indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(replies)
    return redact(text)


async def miner_page(request: web.Request) -> web.StreamResponse:
    """``/miners/{name}``: one miner's devices, pools, alerts, actions and raw replies."""
    sources = _sources(request)
    name = request.match_info["name"]
    context = _common(request, name)
    now = context["now"]
    view = sources.metrics.view
    result = next((r for r in view.results if r.name == name), None)
    if result is None:
        context["title"] = "no such miner"
        text = _env.get_template("missing.html").render(**context, name=name)
        return _html(text, 404)
    alerts = list(sources.alerts())
    row = fleetview.miner_rows(dataclasses.replace(view, results=(result,)), alerts)[0]
    trend = sources.pages.trend
    series = trend.series(name, now) if trend is not None else []
    actions: list[dict[str, Any]] = []
    action_log = sources.pages.action_log
    log_error = ""
    if action_log is not None:
        try:
            records = await asyncio.to_thread(action_log, name, MINER_ACTIONS)
        except StoreError as exc:
            log_error = str(exc)
        else:
            actions = [
                {"at": iso_seconds(r.at), "alertname": r.alertname, "action": r.action,
                 "outcome": r.outcome, "detail": r.detail}
                for r in reversed(records)
            ]  # fmt: skip
    if action_log is None or log_error:
        actions = [a for a in reversed(sources.status.recent_actions) if a.get("miner") == name]
    kept = sources.pages.replies(name)
    raw = None if kept is None else (kept[0], _raw_text(kept[1], sources.pages.redact))
    snapshot = result if isinstance(result, Snapshot) else None
    text = _env.get_template("miner.html").render(
        **context,
        row=row,
        result=result,
        snapshot=snapshot,
        hardware_error_ratio=None if snapshot is None else snapshot.hardware_error_ratio,
        spark=fleetview.sparkline(series),
        spark_known=sum(1 for v in series if v is not None),
        spark_peak=max((v for v in series if v is not None), default=None),
        alerts=fleetview.alert_lines(alerts, now, miner=name),
        actions=actions,
        log_error=log_error,
        raw=raw,
        polled_at=result.at,
        config=view.miners.get(name),
    )
    return _html(text)


def _local_next(value: object) -> str:
    text = value if isinstance(value, str) else ""
    # Only a path on this endpoint: never //elsewhere or a scheme.
    if not text.startswith("/") or text.startswith("//") or "\\" in text:
        return "/"
    return text


async def login_page(request: web.Request) -> web.StreamResponse:
    """``GET /login``: the sign-in form (the token), or why there is none."""
    context = _common(request, "sign in")
    text = _env.get_template("login.html").render(
        **context, next=_local_next(request.query.get("next", "/")), error=""
    )
    return _html(text, 200 if context["writes_enabled"] else 403)


async def login(request: web.Request) -> web.StreamResponse:
    """``POST /login``: check the token, set the session cookie, go back."""
    auth = request.app[AUTH]
    form = await request.post()
    next_path = _local_next(form.get("next"))
    origin = request.headers.get("Origin")
    token = form.get("token")
    offered = token if isinstance(token, str) else ""
    same_origin = (
        origin is None or origin.split("://", 1)[-1].lower() == (request.host or "").lower()
    )
    if not auth.enabled or not same_origin or not auth.token_matches(offered):
        context = _common(request, "sign in")
        error = (
            "writes are disabled: no http.token_file is configured"
            if not auth.enabled
            else "that is not the token"
        )
        text = _env.get_template("login.html").render(**context, next=next_path, error=error)
        return _html(text, 403 if not auth.enabled else 401)
    response = _see_other(next_path)
    response.set_cookie(
        SESSION_COOKIE,
        auth.new_session(),
        httponly=True,
        samesite="Strict",
        path="/",
        max_age=int(SESSION_LIFETIME_S),
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """``POST /logout`` (a write: session and CSRF token checked): forget the session."""
    response = _see_other("/")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def _see_other(path: str) -> web.Response:
    return web.Response(status=303, headers={"Location": path}, text=f"see {path}\n")


def routes() -> list[web.RouteDef]:
    """The page's routes."""
    return [
        web.get("/", fleet_page),
        web.get("/miners/{name:.+}", miner_page),
        web.get("/login", login_page),
        web.post("/login", login),
        web.post("/logout", logout),
    ]
