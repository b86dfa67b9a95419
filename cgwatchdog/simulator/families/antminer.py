"""Stock Antminer in the simulator: flavours ``antminer`` (an S19j Pro, the JSON web UI)
and ``antminer-old`` (an S9, the form web UI).

The API is bmminer's (``GHS 5s``, boards only in STATS) and refuses every privileged
command with Code 45, as stock ``api-allow: A:0/0,W:*`` does. Control is the web UI
(:class:`AntminerWeb`, aiohttp on the member's ``control_port``), with HTTP Digest
(realm ``antMiner Configuration``, MD5, ``qop=auth``; the server side of RFC 7616,
written here) and three CGIs:

- ``GET /cgi-bin/get_miner_conf.cgi``: the saved configuration (JSON). The S19 one
  reports its mode as ``bitmain-work-mode`` and its level as ``bitmain-freq-level``;
  the S9 one has neither.
- ``POST /cgi-bin/set_miner_conf.cgi``: ``antminer`` reads a JSON body (``pools``,
  ``miner-mode``: 1 sleeps, 0 wakes; ``bitmain-work-mode`` is *not* read, as on the
  set side of the firmware) and answers ``{"stats": "success", "code": "M000", "msg":
  "OK!"}``; ``antminer-old`` reads the form fields *by position*, as the firmware's
  shell script does (a field out of place is taken whole, ``key=value``, as the value
  of the position it sits in) and answers ``ok``. Either saves the pools
  (:meth:`SimulatedMiner.set_pools`, which restarts the miner: the web UI goes away
  with the API for the restart, as the fleet models every restart).
- ``GET /cgi-bin/reboot.cgi``: :meth:`SimulatedMiner.reboot`, and the connection is
  dropped without an answer.

``get_system_info.cgi`` answers the model (``minertype``). For tests,
:func:`antminer_web` gives a member's :class:`AntminerWebState` (kept across reboots):
every request received (method, path, whether an Authorization header came and whether
it was valid, the body), the login (set ``password`` to something else to make the
configured one wrong) and the saved mode and pool passwords.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import unquote_plus

from cgwatchdog.simulator.core import (
    FLAVOURS,
    ControlServer,
    Fleet,
    FleetMember,
    HttpControlServer,
    add_flavour,
)

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "ANTMINER",
    "ANTMINER_OLD",
    "FORM_POSITIONS",
    "REALM",
    "REQUESTS_KEPT",
    "AntminerWeb",
    "AntminerWebState",
    "WebRequest",
    "antminer_web",
]

REALM: Final = "antMiner Configuration"
REQUESTS_KEPT: Final = 1000
"""The request log keeps this many (a long ``simulate`` run must not grow without end)."""
NONCES_KEPT: Final = 256
SHUTDOWN_S: Final = 0.5
"""How long stopping the web UI waits for requests in flight (a reboot cuts them)."""
FORM_POSITIONS: Final = (
    "_ant_pool1url", "_ant_pool1user", "_ant_pool1pw",
    "_ant_pool2url", "_ant_pool2user", "_ant_pool2pw",
    "_ant_pool3url", "_ant_pool3user", "_ant_pool3pw",
    "_ant_nobeeper", "_ant_notempoverctrl", "_ant_fan_customize_switch",
    "_ant_fan_customize_value", "_ant_freq", "_ant_voltage",
)  # fmt: skip
"""The S9 script's fields, in the order it reads them (a 16th, the S17's
``_ant_work_mode``, is ignored as the S9 ignores it)."""
_PARAM: Final = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')

Dialect = Literal["json", "form"]


@dataclass(frozen=True, slots=True)
class WebRequest:
    """One HTTP request the web UI received."""

    method: str
    path: str
    auth_header: bool
    """An Authorization header came with it."""
    authorized: bool
    """It was a valid Digest answer for the configured login."""
    body: bytes
    content_type: str

    def form(self) -> list[tuple[str, str]]:
        """The body as form fields, in order."""
        pairs = []
        for item in self.body.decode().split("&"):
            key, _, value = item.partition("=")
            pairs.append((unquote_plus(key), unquote_plus(value)))
        return pairs

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass
class AntminerWebState:
    """One simulated Antminer's web UI: its login, saved settings and request log."""

    user: str = "root"
    password: str = "root"
    work_mode: int = 0
    """The saved ``miner-mode`` (0 normal, 1 sleep)."""
    pool_passwords: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: deque[WebRequest] = field(default_factory=lambda: deque(maxlen=REQUESTS_KEPT))

    def authorized(self) -> list[WebRequest]:
        """The requests that carried a valid login, in order."""
        return [r for r in self.requests if r.authorized]


_STATES: dict[FleetMember, AntminerWebState] = {}


def antminer_web(member: FleetMember) -> AntminerWebState:
    """The web UI state and request log of ``member`` (kept across its reboots)."""
    state = _STATES.get(member)
    if state is None:
        state = _STATES[member] = AntminerWebState()
    return state


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class AntminerWeb(HttpControlServer):
    """The stock web UI: Digest login and the CGIs, in one ``dialect``."""

    def __init__(self, member: FleetMember, fleet: Fleet, dialect: Dialect) -> None:
        super().__init__(member, fleet)
        self.dialect = dialect
        self.state = antminer_web(member)
        self._nonces: deque[str] = deque(maxlen=NONCES_KEPT)

    # -- Digest (RFC 7616, MD5, qop=auth) ------------------------------------------------

    def _challenge(self) -> web.Response:
        from aiohttp import web

        nonce = secrets.token_hex(16)
        self._nonces.append(nonce)
        header = (
            f'Digest realm="{REALM}", charset="UTF-8", algorithm=MD5, nonce="{nonce}", qop="auth"'
        )
        return web.Response(
            status=401, text="401 Unauthorized", headers={"WWW-Authenticate": header}
        )

    def _valid(self, method: str, uri: str, header: str | None) -> bool:
        if header is None or not header.startswith("Digest "):
            return False
        params = {m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _PARAM.finditer(header[7:])}  # fmt: skip
        state = self.state
        if params.get("username") != state.user or params.get("realm") != REALM:
            return False
        if params.get("nonce") not in self._nonces or params.get("uri") != uri:
            return False
        ha1 = _md5(f"{state.user}:{REALM}:{state.password}")
        ha2 = _md5(f"{method}:{uri}")
        if params.get("qop") == "auth":
            parts = (params.get("nonce"), params.get("nc"), params.get("cnonce"), "auth")
            expected = _md5(":".join([ha1, *(p or "" for p in parts), ha2]))
        else:
            expected = _md5(f"{ha1}:{params.get('nonce')}:{ha2}")
        return hmac.compare_digest(expected, params.get("response") or "")

    # -- the CGIs ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        body = await request.read()
        header = request.headers.get("Authorization")
        valid = self._valid(request.method, request.raw_path, header)
        self.state.requests.append(
            WebRequest(
                request.method, request.path, header is not None, valid, body,
                request.content_type,
            )
        )  # fmt: skip
        if not valid:
            return self._challenge()
        path = request.path
        if path == "/cgi-bin/reboot.cgi":
            return await self._reboot(request)
        if path == "/cgi-bin/get_miner_conf.cgi":
            return web.Response(text=json.dumps(self._conf()), content_type="text/plain")
        if path == "/cgi-bin/set_miner_conf.cgi" and request.method == "POST":
            return await self._set_conf(request, body)
        if path == "/cgi-bin/get_system_info.cgi":
            info = {"minertype": self.miner.flavour.device_model, "nettype": "DHCP",
                    "hostname": self.member.name, "macaddr": "02:00:00:00:00:01"}  # fmt: skip
            return web.Response(text=json.dumps(info), content_type="text/plain")
        return web.Response(status=404, text="404 Not Found")

    def _conf(self) -> dict[str, Any]:
        state = self.state
        pools = [
            {"url": url, "user": user, "pass": state.pool_passwords.get((url, user), "x")}
            for url, user in self.miner.pool_list()[:3]
        ]
        pools += [{"url": "", "user": "", "pass": ""}] * (3 - len(pools))
        conf: dict[str, Any] = {
            "pools": pools,
            "api-listen": True,
            "api-network": True,
            "api-groups": "A:stats:pools:devs:summary:version",
            "api-allow": "A:0/0,W:*",
            "bitmain-fan-ctrl": False,
            "bitmain-fan-pwm": "100",
            "bitmain-use-vil": True,
        }
        if self.dialect == "json":
            conf.update({"bitmain-freq": "675", "bitmain-voltage": "1400",
                         "bitmain-ccdelay": "0", "bitmain-pwth": "0",
                         "bitmain-work-mode": str(state.work_mode),
                         "bitmain-freq-level": "100"})  # fmt: skip
        else:
            conf.update({"bitmain-freq": "550", "bitmain-voltage": "0706"})
        return conf

    async def _reboot(self, request: web.Request) -> web.StreamResponse:
        self.miner.reboot(self.now())
        self.changed()
        # The machine goes down: no answer, the connection drops.
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError

    async def _set_conf(self, request: web.Request, body: bytes) -> web.StreamResponse:
        from aiohttp import web

        pools = self._read_json(body) if self.dialect == "json" else self._read_form(body)
        if pools is None:
            reply: Any = {"stats": "error", "code": "M001", "msg": "invalid configuration"}
            return web.json_response(reply)
        saved = [(url, user) for url, user, _pw in pools if url]
        if not saved:
            return web.json_response({"stats": "error", "code": "M002", "msg": "no pool"})
        for url, user, pw in pools:
            self.state.pool_passwords[(url, user)] = pw
        now = self.now()
        self.miner.set_pools(saved, now)
        if self.dialect == "json":
            if self.state.work_mode == 1:
                self.miner.sleep(now)
            else:
                self.miner.wake(now)
            response: web.StreamResponse = web.json_response(
                {"stats": "success", "code": "M000", "msg": "OK!"}
            )
        else:
            response = web.Response(text="ok", content_type="text/html")
        # Send the answer before the restart takes the web UI away with the API.
        await response.prepare(request)
        await response.write_eof()
        self.changed()
        return response

    def _read_json(self, body: bytes) -> list[tuple[str, str, str]] | None:
        try:
            conf = json.loads(body)
        except ValueError:
            return None
        if not isinstance(conf, Mapping) or not isinstance(conf.get("pools"), list):
            return None
        if "miner-mode" in conf:
            try:
                self.state.work_mode = int(str(conf["miner-mode"]))
            except ValueError:
                return None
        return [
            (str(p.get("url", "")), str(p.get("user", "")), str(p.get("pass", "")))
            for p in conf["pools"]
            if isinstance(p, Mapping)
        ]

    def _read_form(self, body: bytes) -> list[tuple[str, str, str]]:
        # The firmware's script: split on '&', take the n-th item as the n-th field,
        # strip "<field>=" from its front if it is there.
        values = dict.fromkeys(FORM_POSITIONS, "")
        for name, item in zip(FORM_POSITIONS, body.decode().split("&"), strict=False):
            prefix = f"{name}="
            raw = item[len(prefix) :] if item.startswith(prefix) else item
            values[name] = unquote_plus(raw)
        return [
            (values[f"_ant_pool{n}url"], values[f"_ant_pool{n}user"], values[f"_ant_pool{n}pw"])
            for n in (1, 2, 3)
        ]


def _web(dialect: Dialect) -> Callable[[FleetMember, Fleet], ControlServer]:
    def factory(member: FleetMember, fleet: Fleet) -> ControlServer:
        return AntminerWeb(member, fleet, dialect)

    return factory


_BMMINER = FLAVOURS["bmminer"]
ANTMINER = add_flavour(
    replace(
        _BMMINER,
        name="antminer",
        firmware="antminer",
        api_write_access=False,
        version=(
            ("BMMiner", "1.0.0"),
            ("API", "3.1"),
            ("Miner", "49.0.1.3"),
            ("CompileTime", "Thu Jun 16 16:41:35 CST 2022"),
            ("Type", "Antminer S19j Pro"),
        ),
        device_model="Antminer S19j Pro",
        device_hs=34.7e12,
        device_temp_c=62.0,
        stats_brace_quirk=False,
        reboot_downtime_s=90.0,
        control=_web("json"),
    )
)
"""An S19j Pro on stock firmware: the JSON web UI, API writes refused."""
ANTMINER_OLD = add_flavour(
    replace(
        _BMMINER,
        name="antminer-old",
        firmware="antminer",
        api_write_access=False,
        reboot_downtime_s=90.0,
        control=_web("form"),
    )
)
"""An S9 on stock firmware (bmminer 2.0.0, the '}{' STATS quirk): the form web UI."""

# The core bmminer flavours answer as a stock S9 does, so they are recognised as this
# family: they get its web UI too (their API keeps W: access, as an owner who opened
# api-allow would have it; the family repairs through the web UI regardless).
for _name in ("bmminer", "bmminer-nomulti"):
    FLAVOURS[_name] = replace(FLAVOURS[_name], firmware="antminer", control=_web("form"))
