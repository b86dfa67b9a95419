"""Silences and acknowledgements over HTTP: routes for the daemon's aiohttp application.

::

    GET    /api/silences              every silence: pending, active, recently expired
    POST   /api/silences              make one (JSON below); 200 {"silenceID", "silence"}
    DELETE /api/silences/{id}         expire one (its id, or a unique start of it)
    POST   /api/alerts/{id}/ack       acknowledge an alert: {"by": "alice"}

A silence to make: ``{"matchers": [{"name": "miner", "value": "sim-001", "isRegex":
false}], "duration": "2h"`` (or ``"endsAt": "2026-11-25T23:00:00Z"``, optionally
``"startsAt"``)``, "comment": "board swap", "createdBy": "alice", "maintenance":
true}``; matchers are ``=`` and ``=~`` (Alertmanager's API shape).

Reads are open like ``/api/alerts``. Writes need ``Authorization: Bearer <token>``
(``http.token_file``), compared in constant time: 403 when no token is configured (the
daemon is then read-only), 401 when it is missing or wrong; a request the endpoint's
``write_guard`` already let through (:mod:`cgwatchdog.web.auth`: the token, or the
status page's session and CSRF token) is taken as it is. Bad input is 400 with
``{"error": "..."}`` saying what to fix, an unknown id 404, a silence from the config
file or an alert already resolved 409, and the Alertmanager cluster out of reach when
silences live there 503 (nothing was changed).

The status page posts HTML forms to the same routes: a silence as ``matchers``
(``miner=sim-001``, several separated by spaces), ``for``, ``comment`` and
``maintenance``; an acknowledgement with an optional ``by``. A form is answered with a
redirect (303) to its ``next`` (a path on this endpoint), or a plain-text error.

The book's writes run in a worker thread: with a cluster they wait on Alertmanager.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from cgwatchdog.alerts import Alert
from cgwatchdog.errors import NotifyError
from cgwatchdog.silences import Matcher, SilenceBook
from cgwatchdog.units import iso_seconds, parse_duration, parse_rfc3339
from cgwatchdog.web.auth import AUTHORIZED_BY

__all__ = ["MAX_BODY_BYTES", "alert_json", "routes"]

log = logging.getLogger("cgwatchdog.web")

# A silence is a few hundred bytes; anything much bigger is not one.
MAX_BODY_BYTES: Final = 64 * 1024
_DEFAULT_CREATED_BY: Final = "api"
_PAGE_USER: Final = "the status page"
_FORMS: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _BadRequest(Exception):
    """Input that cannot be a silence or an acknowledgement: 400 with this message."""


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def alert_json(alert: Alert) -> dict[str, Any]:
    """An alert as the ack route answers it."""
    return {
        "fingerprint": alert.fingerprint,
        "alertname": alert.alertname,
        "miner": alert.miner,
        "labels": dict(alert.labels),
        "state": alert.state.value,
        "acknowledgedBy": alert.acknowledged_by,
        "acknowledgedAt": None
        if alert.acknowledged_at is None
        else iso_seconds(alert.acknowledged_at),
    }


def _authorized(request: web.Request, token: str | None) -> web.Response | None:
    """None when the request may write; else the 403/401 answer."""
    if request.get(AUTHORIZED_BY):
        return None  # the endpoint's write guard checked it (token, or session and CSRF)
    if token is None:
        return _error(
            403,
            "this daemon is read-only: no http.token_file is configured, so silences and "
            "acknowledgements cannot be changed over HTTP",
        )
    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="cgwatchdog"'}
    if scheme.lower() != "bearer" or not supplied.strip():
        return _error(
            401, "send the token from http.token_file as Authorization: Bearer", **challenge
        )
    if not hmac.compare_digest(supplied.strip().encode(), token.encode()):
        return _error(401, "wrong token (see http.token_file)", **challenge)
    return None


async def _json_body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
    # read(), not the stream: the endpoint's middlewares may have read the body already
    # (it is kept), and the application's client_max_size bounds what is read.
    raw = await request.read()
    if len(raw) > MAX_BODY_BYTES:
        raise _BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        if required:
            raise _BadRequest("send a JSON object in the body")
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _BadRequest("the body must be a JSON object")
    return data


def _is_form(request: web.Request) -> bool:
    return request.content_type in _FORMS


async def _form(request: web.Request) -> dict[str, str]:
    """A page form's fields (the write guard may have read them already: cached)."""
    fields = await request.post()
    return {key: value for key, value in fields.items() if isinstance(value, str)}


def _silence_from_form(form: dict[str, str]) -> dict[str, Any]:
    """A page form as the JSON a silence is made from."""
    try:
        matchers = [Matcher.parse(text) for text in form.get("matchers", "").split()]
    except ValueError as exc:
        raise _BadRequest(str(exc)) from None
    return {
        "matchers": [m.to_json() for m in matchers],
        "duration": form.get("for") or None,
        "comment": form.get("comment", "").strip() or "silenced from the status page",
        "createdBy": form.get("createdBy", "").strip() or _PAGE_USER,
        "maintenance": form.get("maintenance", "") in ("1", "on", "true"),
    }


def _back(form: dict[str, str]) -> web.Response:
    """The form's answer: back to the page it came from (a local path only)."""
    target = form.get("next", "/")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = "/"
    return web.Response(status=303, headers={"Location": target})


def _form_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=f"{message}\n(go back and try again)\n")


def _text(data: dict[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if value is None:
        raise _BadRequest(f"{key} is missing")
    if not isinstance(value, str):
        raise _BadRequest(f"{key} must be text")
    return value


def _matchers(data: dict[str, Any]) -> list[Matcher]:
    given = data.get("matchers")
    if not isinstance(given, list) or not given:
        raise _BadRequest(
            'matchers must be a non-empty list, e.g. [{"name": "miner", "value": "sim-001"}]'
        )
    matchers = []
    for index, item in enumerate(given):
        try:
            matcher = Matcher.from_json(item)
        except ValueError as exc:
            raise _BadRequest(f"matchers[{index}]: {exc}") from None
        if not matcher.equal:
            raise _BadRequest(f"matchers[{index}]: only = and =~ matchers (isEqual true)")
        matchers.append(matcher)
    return matchers


def _time(data: dict[str, Any], key: str) -> float | None:
    if data.get(key) is None:
        return None
    at = parse_rfc3339(data[key])
    if at is None:
        raise _BadRequest(f"{key} must be an RFC 3339 time such as 2026-11-25T21:00:00Z")
    return at


def _ends_at(data: dict[str, Any], starts: float) -> float:
    ends = _time(data, "endsAt")
    duration = data.get("duration")
    if (ends is None) == (duration is None):
        raise _BadRequest('give endsAt (an RFC 3339 time) or duration (e.g. "2h"), one of them')
    if ends is not None:
        return ends
    if not isinstance(duration, str | int | float):
        raise _BadRequest('duration must be a duration such as "2h" or a number of seconds')
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise _BadRequest(f"duration: {exc}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise _BadRequest("duration must be positive")
    return starts + seconds


def routes(
    book: SilenceBook,
    acknowledge: Callable[[str, str, float], Alert],
    clock: Callable[[], float],
    token: str | None,
) -> list[web.RouteDef]:
    """The routes of the silence and acknowledgement API over ``book`` and
    ``acknowledge(alert_id, by, now)`` (``Watchdog.acknowledge``); ``token`` is the
    configured write token (None or "": writes are refused with 403)."""
    token = token or None

    async def list_silences(request: web.Request) -> web.Response:
        now = clock()
        return web.json_response(
            {
                "silences": [s.to_json(now) for s in book.list(now)],
                "cluster": {"shared": book.remote is not None, "error": book.remote_error},
            }
        )

    async def add_silence(request: web.Request) -> web.Response:
        denied = _authorized(request, token)
        if denied is not None:
            return denied
        now = clock()
        form = await _form(request) if _is_form(request) else None
        fail = _error if form is None else _form_error
        try:
            data = await _json_body(request) if form is None else _silence_from_form(form)
            matchers = _matchers(data)
            starts = _time(data, "startsAt")
            ends = _ends_at(data, now if starts is None else starts)
            comment = _text(data, "comment", "")
            created_by = _text(data, "createdBy", _DEFAULT_CREATED_BY)
            maintenance = data.get("maintenance", False)
            if not isinstance(maintenance, bool):
                raise _BadRequest("maintenance must be true or false")
            silence = await asyncio.to_thread(
                book.add,
                matchers,
                ends,
                comment,
                created_by,
                maintenance,
                now,
                starts_at=starts,
            )
        except (_BadRequest, ValueError) as exc:
            return fail(400, str(exc))
        except NotifyError as exc:
            return fail(503, f"the silence was not made: {exc}")
        log.warning(
            "%s made over HTTP from %s, on %s",
            silence.describe(),
            request.remote,
            ", ".join(map(str, silence.matchers)),
        )
        if form is not None:
            return _back(form)
        return web.json_response({"silenceID": silence.id, "silence": silence.to_json(now)})

    async def expire_silence(request: web.Request) -> web.Response:
        denied = _authorized(request, token)
        if denied is not None:
            return denied
        now = clock()
        try:
            silence = await asyncio.to_thread(book.expire, request.match_info["id"], now)
        except KeyError as exc:
            return _error(404, str(exc.args[0]))
        except ValueError as exc:
            return _error(409, str(exc))
        except NotifyError as exc:
            return _error(503, f"the silence was not expired: {exc}")
        log.warning("%s expired over HTTP from %s", silence.describe(), request.remote)
        return web.json_response({"silence": silence.to_json(now)})

    async def ack_alert(request: web.Request) -> web.Response:
        denied = _authorized(request, token)
        if denied is not None:
            return denied
        form = await _form(request) if _is_form(request) else None
        fail = _error if form is None else _form_error
        try:
            if form is not None:
                by = " ".join(form.get("by", "").split()) or _PAGE_USER
            else:
                by = " ".join(_text(await _json_body(request, required=False), "by", "").split())
            if not by:
                raise _BadRequest('say who acknowledges: {"by": "alice"}')
        except _BadRequest as exc:
            return fail(400, str(exc))
        try:
            alert = acknowledge(request.match_info["id"], by, clock())
        except KeyError as exc:
            return fail(404, str(exc.args[0]))
        except ValueError as exc:
            return fail(409, str(exc))
        if form is not None:
            return _back(form)
        return web.json_response({"alert": alert_json(alert)})

    return [
        web.get("/api/silences", list_silences, allow_head=False),
        web.post("/api/silences", add_silence),
        web.delete("/api/silences/{id}", expire_silence),
        web.post("/api/alerts/{id}/ack", ack_alert),
    ]
