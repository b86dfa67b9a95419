"""The ``vnish`` flavour: an Antminer S19 XP on VNish 1.2.0-rc1, and its REST API.

The API (port 4028) answers as VNish's cgminer 4.11.1 fork does in a field capture
(``kbnchk/minerinfo`` ``miner_test.go``): Description ``cgminer 4.11.1``, "CGMiner
stats", STATS[0] with ``Miner: uart_trans.1.3`` and ``Type: Antminer S19 XP (Vnish
1.2.0-rc1)``, boards in STATS. Its VERSION reply was not captured; it is given the same
keys (asic-rs and pyasic find ``VNISH`` in it).

The control channel (:class:`VnishWebServer`, aiohttp, one per miner on its own port) is
the part of VNish's OpenAPI document (``/api/v1``, as asic-rs ships it) that cgwatchdog
uses: ``POST /unlock`` ``{"pw"}`` -> ``{"token"}`` (403 on a wrong password, 429 when
rate-limited), ``GET /auth-check``, and behind ``Authorization: Bearer <token>`` (a raw
token is accepted too, as pyasic sends it): ``POST /mining/restart``,
``/mining/pause``, ``/mining/resume``, ``/mining/switch-pool`` ``{"pool_id"}`` and
``/system/reboot`` (``{"after": 3}``, then the machine goes away). ``GET /`` serves a
page naming AnthillOS, and ``GET /api/v1/info`` the firmware's version.

Per miner, :func:`vnish_state` holds the switches tests turn (``password``,
``rate_limited``, ``drop_reboot``: the reboot request gets no answer, the connection is
dropped) and ``received``: every request, with whether and how it was authorised.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cgwatchdog.simulator.core import (
    FLAVOURS,
    HttpControlServer,
    MinerStates,
    SimulatedMiner,
    add_flavour,
)

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["FIRMWARE_VERSION", "VNISH", "Received", "VnishState", "VnishWebServer", "vnish_state"]

FIRMWARE_VERSION = "1.2.0-rc1"
MODEL = "Antminer S19 XP"
REBOOT_AFTER_S = 3
"""VNish answers a reboot with ``{"after": 3}`` ("By default, is 3 seconds")."""


@dataclass(frozen=True, slots=True)
class Received:
    """One request the control channel received."""

    method: str
    path: str
    auth: str | None
    """``Bearer`` or ``raw`` (the token without a scheme), None without a header."""
    token_ok: bool
    body: Any


@dataclass(eq=False)
class VnishState:
    """One simulated VNish miner's web side: its switches and what it received."""

    miner: SimulatedMiner
    password: str = "admin"
    rate_limited: bool = False
    drop_reboot: bool = False
    tokens: set[str] = field(default_factory=set)
    received: list[Received] = field(default_factory=list)

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request received, in order."""
        return [(r.method, r.path) for r in self.received]


_STATES: MinerStates[VnishState] = MinerStates(VnishState)


def vnish_state(miner: SimulatedMiner) -> VnishState:
    """``miner``'s VNish web state (made on first use; it outlives a reboot)."""
    return _STATES(miner)


class VnishWebServer(HttpControlServer):
    """VNish's ``/api/v1`` on the miner's control port (aiohttp)."""

    @property
    def state(self) -> VnishState:
        """The miner's switches and request log."""
        return vnish_state(self.miner)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        state = self.state
        path = request.path
        body = await _json_body(request)
        scheme, token = _authorization(request.headers.get("Authorization"))
        token_ok = token is not None and token in state.tokens
        state.received.append(Received(request.method, path, scheme, token_ok, body))
        now = self.now()
        miner = self.miner

        if request.method == "GET" and path == "/":
            return web.Response(
                text="<!doctype html><title>AnthillOS</title><div id=app></div>",
                content_type="text/html",
            )
        if request.method == "GET" and path == "/api/v1/info":
            return web.json_response(
                {"miner": MODEL, "fw_name": "Vnish", "fw_version": FIRMWARE_VERSION}
            )
        if request.method == "POST" and path == "/api/v1/unlock":
            if state.rate_limited:
                return web.json_response({"unlock_timeout": 60}, status=429)
            if not isinstance(body, dict) or body.get("pw") != state.password:
                return web.json_response({"unlock_timeout": None}, status=403)
            token = secrets.token_hex(16)
            state.tokens.add(token)
            return web.json_response({"token": token})
        if not token_ok:
            return web.Response(status=401)
        if request.method == "GET" and path == "/api/v1/auth-check":
            return web.json_response({"unlock_timeout": None})
        if request.method != "POST":
            return web.Response(status=404)
        if path == "/api/v1/mining/restart":
            return await self._then(request, web.Response(), lambda: miner.restart(now))
        if path == "/api/v1/mining/pause":
            miner.sleep(now)
            return web.Response()
        if path == "/api/v1/mining/resume":
            miner.wake(now)
            return web.Response()
        if path == "/api/v1/mining/switch-pool":
            pool_id = body.get("pool_id") if isinstance(body, dict) else None
            if not isinstance(pool_id, int) or not 0 <= pool_id < len(miner.pool_list()):
                return web.json_response({"err": f"no pool with id {pool_id}"}, status=500)
            miner.switch_pool(pool_id)
            return web.Response()
        if path == "/api/v1/system/reboot":
            if state.drop_reboot:
                return await self._drop(request, lambda: miner.reboot(now))
            answer = web.json_response({"after": REBOOT_AFTER_S})
            return await self._then(request, answer, lambda: miner.reboot(now), reboot=True)
        return web.Response(status=404)

    async def _then(
        self,
        request: web.Request,
        response: web.StreamResponse,
        effect: Callable[[], None],
        *,
        reboot: bool = False,
    ) -> web.StreamResponse:
        """Send ``response`` whole, then take the miner away (restart, reboot)."""
        await response.prepare(request)
        await response.write_eof()
        effect()
        if reboot:
            self.state.tokens.clear()  # a reboot forgets every session
        self.changed()
        return response

    async def _drop(self, request: web.Request, effect: Callable[[], None]) -> web.StreamResponse:
        """Take the miner away and drop the connection without an answer."""
        from aiohttp import web

        effect()
        self.state.tokens.clear()
        self.changed()
        transport = request.transport
        if transport is not None:
            transport.abort()
        return web.Response()  # never written: the connection is gone


def _authorization(header: str | None) -> tuple[str | None, str | None]:
    """(scheme, token) of an Authorization header: ``Bearer <token>`` or the bare token."""
    if header is None:
        return None, None
    if header.startswith("Bearer "):
        return "Bearer", header.removeprefix("Bearer ").strip()
    return "raw", header.strip()


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


VNISH = add_flavour(
    replace(
        FLAVOURS["bmminer"],
        name="vnish",
        firmware="vnish",
        description="cgminer 4.11.1",
        program="CGMiner",
        version=(
            ("CGMiner", "4.11.1"),
            ("API", "3.7"),
            ("Miner", "uart_trans.1.3"),
            ("CompileTime", "Sat Jun 24 11:17:59 UTC 2023"),
            ("Type", f"{MODEL} (Vnish {FIRMWARE_VERSION})"),
        ),
        device_model=MODEL,
        device_hs=47e12,
        device_temp_c=60.0,
        pool_difficulty=524288.0,
        stats_brace_quirk=False,
        reboot_downtime_s=90.0,
        control=VnishWebServer,
    )
)
"""VNish 1.2.0-rc1 on an S19 XP: the API as captured, the REST API as its OpenAPI says."""
