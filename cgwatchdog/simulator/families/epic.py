"""The ``epic`` flavour: an S19 XP on ePIC's PowerPlay-BMS firmware, whose port 4028
serves ePIC's HTTP API instead of the cgminer protocol.

:class:`EpicApiServer` (aiohttp, the flavour's ``api_server``) answers on the API port:

- ``GET /summary`` in the shape of a PowerPlay-BMS v1.5.13 capture (asic-rs
  ``asic-rs-firmwares/epic/src/test/json/v1/summary.json``), drawn from the simulated
  miner: ``HBs`` per board (``Hashrate`` [MH/s, % of ideal, error %]; ``null`` while
  mining is stopped, ``Operating State`` then ``Idling``), ``HBStatus`` (a disabled
  board: detected, not enabled), ``Session`` (``Uptime`` counts from the mining
  program's start), ``Stratum`` (the active pool, ``Config Id``), ``StratumConfigs``
  (the pools in priority order, with their passwords), ``Fans Rpm``, ``Misc``;
- ``GET /capabilities`` (``Model`` and the board facts);
- the POST endpoints cgwatchdog uses, each ``{"param": ..., "password": ...}`` and
  answered ``{"result": bool, "error": str|null}`` (epic-dashboard ``docs/APIv3.md``):
  ``/softreboot`` (restarts the mining program, answering first), ``/reboot``,
  ``/miner`` ``"Stop"``/``"Autostart"``, ``/coin`` (saves the pools and restarts
  mining with them) and ``/identify`` (sets the LED).

A cgminer request on this port gets aiohttp's ``400 Bad Request``, as any HTTP server
would answer it. What ePIC answers a wrong password is not documented: by default HTTP
401 with ``{"result": false, "error": "Unauthorized"}``; ``wrong_password_reply =
"result"`` answers 200 with ``{"result": false, "error": "Incorrect password"}``.

Per miner, :func:`epic_state` holds the switches (``password``, ``wrong_password_reply``,
``drop_reboot``, ``summary_has_pool_passwords``) and ``received``: every request with its body (password included: the
tests assert it was sent).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from cgwatchdog.protocol import Request
from cgwatchdog.simulator.core import (
    FLAVOURS,
    HttpControlServer,
    MinerStates,
    SimulatedMiner,
    add_flavour,
)

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["EPIC", "SOFTWARE", "EpicApiServer", "EpicState", "Received", "epic_state"]

SOFTWARE = "PowerPlay-BMS v1.5.13"
MODEL = "AntMiner S19 XP"
DEFAULT_POOL_PASSWORD = "x"


@dataclass(frozen=True, slots=True)
class Received:
    """One request the API received."""

    method: str
    path: str
    body: Any


@dataclass(eq=False)
class EpicState:
    """One simulated ePIC miner's HTTP side: its switches, settings and request log."""

    miner: SimulatedMiner
    password: str = "letmein"
    wrong_password_reply: Literal["http401", "result"] = "http401"
    drop_reboot: bool = False
    led: bool = False
    coin: str = "BTC"
    unique_id: bool = False
    pool_passwords: dict[str, str] = field(default_factory=dict)
    """By pool URL; pools not in it have ``x``."""
    summary_has_pool_passwords: bool = True
    """False: ``StratumConfigs`` without ``password`` (as an older firmware might)."""
    received: list[Received] = field(default_factory=list)

    def posts(self) -> list[tuple[str, Any]]:
        """(path, body) of every POST received, in order."""
        return [(r.path, r.body) for r in self.received if r.method == "POST"]


_STATES: MinerStates[EpicState] = MinerStates(EpicState)


def epic_state(miner: SimulatedMiner) -> EpicState:
    """``miner``'s ePIC state (made on first use; it outlives a reboot)."""
    return _STATES(miner)


class EpicApiServer(HttpControlServer):
    """ePIC's HTTP API on the miner's API port (aiohttp)."""

    @property
    def state(self) -> EpicState:
        """The miner's switches, settings and request log."""
        return epic_state(self.miner)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        state = self.state
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        state.received.append(Received(request.method, request.path, body))
        if request.method == "GET":
            if request.path == "/summary":
                summary = self.summary()
                if summary is None:
                    return web.json_response({"result": False, "error": "busy"}, status=500)
                return web.json_response(summary)
            if request.path == "/capabilities":
                return web.json_response(self.capabilities())
            return web.json_response({"result": False, "error": "Invalid URL"}, status=404)
        if request.method != "POST":
            return web.Response(status=405)
        if not isinstance(body, dict) or body.get("password") != state.password:
            if state.wrong_password_reply == "result":
                return _result(False, "Incorrect password")
            return _result(False, "Unauthorized", status=401)
        return await self._post(request, body.get("param"))

    async def _post(self, request: web.Request, param: Any) -> web.StreamResponse:
        state, miner, now = self.state, self.miner, self.now()
        path = request.path
        if path == "/softreboot":
            if not _uint(param):
                return _result(False, "param must be an unsigned integer")
            return await self._then(request, lambda: miner.restart(now))
        if path == "/reboot":
            if not _uint(param):
                return _result(False, "param must be an unsigned integer")
            if state.drop_reboot:
                return self._drop(request, lambda: miner.reboot(now))
            return await self._then(request, lambda: miner.reboot(now))
        if path == "/miner":
            if param == "Stop":
                miner.sleep(now)
            elif param == "Autostart":
                miner.wake(now)
            else:
                return _result(False, f"unknown miner command {param!r}")
            return _result(True)
        if path == "/identify":
            if not isinstance(param, bool):
                return _result(False, "param must be a bool")
            state.led = param
            return _result(True)
        if path == "/coin":
            pools = _stratum_configs(param)
            if pools is None:
                return _result(False, "invalid coin config")
            assert isinstance(param, dict)
            state.coin, state.unique_id = str(param["coin"]), bool(param.get("unique_id"))
            state.pool_passwords = {url: secret for url, _, secret in pools}
            return await self._then(
                request, lambda: miner.set_pools([(url, user) for url, user, _ in pools], now)
            )
        return _result(False, "Invalid URL", status=404)

    async def _then(self, request: web.Request, effect: Callable[[], None]) -> web.StreamResponse:
        """Answer ``result: true`` whole, then take the mining program or the machine away."""
        response = _result(True)
        await response.prepare(request)
        await response.write_eof()
        effect()
        self.changed()
        return response

    def _drop(self, request: web.Request, effect: Callable[[], None]) -> web.StreamResponse:
        """Take the machine away and drop the connection without an answer."""
        from aiohttp import web

        effect()
        self.changed()
        transport = request.transport
        if transport is not None:
            transport.abort()
        return web.Response()  # never written: the connection is gone

    # -- the documents ------------------------------------------------------------------

    def summary(self) -> dict[str, Any] | None:
        """``GET /summary`` now, drawn from the simulated miner's cgminer view."""
        now = self.now()
        raw = self.miner.handle(Request(("summary", "devs", "pools")), now)
        try:
            replies = json.loads(raw.rstrip(b"\0")) if raw else None
        except ValueError:
            return None  # the garbage scenario
        if not isinstance(replies, dict):
            return None
        summary = replies["summary"][0]["SUMMARY"][0]
        devs = replies["devs"][0].get("DEVS", [])
        pools = replies["pools"][0].get("POOLS", [])
        state, miner = self.state, self.miner
        mining = not miner.sleeping
        active: dict[str, Any] = next((p for p in pools if p.get("Stratum Active")), {})
        order = [url for url, _ in miner.pool_list()]
        last_share = int(active.get("Last Share Time") or 0)
        elapsed = int(summary.get("Elapsed", 0))
        hbs = [
            {
                "Index": dev["ASC"],
                "Hashrate": [float(dev.get("MHS 5s", 0.0)), 100.0, 0.8],
                "Temperature": float(dev.get("Temperature", 0.0)),
                "Input Voltage": 12.6,
                "Output Voltage": 0.0,
                "Input Power": 0.0,
                "Core Clock": [],
                "Core Clock Avg": 487.5,
            }
            for dev in devs
            if dev.get("Enabled") == "Y"
        ]
        return {
            "Software": SOFTWARE,
            "OS Type": "umcOS",
            "Hostname": f"epic-{self.member.name}",
            "Status": {
                "Operating State": "Mining" if mining else "Idling",
                "Last Command": None,
                "Last Command Result": None,
                "Last Error": None,
            },
            "Mining": {"Coin": state.coin, "Algorithm": "SHA-256"},
            "PresetInfo": {"Target Power": 3000},
            "Power Supply Stats": {"Input Power": 3000.0 if mining else 120.0},
            "Session": {
                "Startup Timestamp": int(now) - elapsed,
                "Uptime": elapsed,
                "Average MHs": float(summary.get("MHS av", 0.0)),
                "Accepted": int(summary.get("Accepted", 0)),
                "Rejected": int(summary.get("Rejected", 0)),
                "Submitted": int(summary.get("Accepted", 0)) + int(summary.get("Rejected", 0)),
                "Active HBs": len(hbs),
                "Last Accepted Share Timestamp": last_share,
                "Last Accepted Share Timer": int(now) - last_share if last_share else None,
            },
            "Stratum": {
                "Current Pool": str(active.get("URL", "")).split("://", 1)[-1],
                "Current User": active.get("User", ""),
                "IsPoolConnected": active.get("Status") == "Alive",
                "Config Id": order.index(active["URL"]) if active.get("URL") in order else None,
                "Worker Unique Id": state.unique_id,
            },
            "StratumConfigs": [self._stratum_config(url, user) for url, user in miner.pool_list()],
            "HBs": hbs if mining else None,
            "HBStatus": [
                {"Index": dev["ASC"], "Detected": True, "Enabled": dev.get("Enabled") == "Y"}
                for dev in devs
            ],
            "Fans Rpm": {
                "Fans Speed 1": 5970,
                "Fans Speed 2": 5940,
                "Fans Speed 3": 5745,
                "Fans Speed 4": 5890,
                "Fans Speed 5": None,
            },
            "Fans": {"Fans Speed": 100},
            "Misc": {"Locate Miner State": state.led, "Shutdown Temp": 85.0},
        }

    def _stratum_config(self, url: str, user: str) -> dict[str, str]:
        config = {"pool": url, "login": user}
        if self.state.summary_has_pool_passwords:
            config["password"] = self.state.pool_passwords.get(url, DEFAULT_POOL_PASSWORD)
        return config

    def capabilities(self) -> dict[str, Any]:
        """``GET /capabilities``: the model and its boards."""
        return {
            "Model": MODEL,
            "Model Subtype": "BHB56801",
            "Max HBs": 3,
            "Coins": ["BTC"],
            "Performance Estimator": {"Chip Count": 110, "Hashes Per Second Per Chip": 894.0},
        }


def _result(ok: bool, error: str | None = None, *, status: int = 200) -> web.Response:
    from aiohttp import web

    return web.json_response({"result": ok, "error": error}, status=status)


def _uint(value: object) -> bool:
    if isinstance(value, str):  # asic-rs sends "0"
        return value.isdigit()
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _stratum_configs(param: object) -> list[tuple[str, str, str]] | None:
    """(pool, login, password) of a ``/coin`` param; None if it is malformed."""
    if not isinstance(param, dict) or not isinstance(param.get("coin"), str):
        return None
    configs = param.get("stratum_configs")
    if not isinstance(configs, list) or not 1 <= len(configs) <= 3:
        return None
    pools = []
    for config in configs:
        if not isinstance(config, dict):
            return None
        values = (config.get("pool"), config.get("login"), config.get("password"))
        if not all(isinstance(v, str) for v in values) or not values[0]:
            return None
        pools.append((str(values[0]), str(values[1]), str(values[2])))
    return pools


EPIC = add_flavour(
    replace(
        FLAVOURS["cgminer"],
        name="epic",
        firmware="epic",
        description=f"ePIC {SOFTWARE}",
        program="ePIC",
        version=(("ePIC", SOFTWARE), ("Type", MODEL)),
        device_driver="HB",
        device_dname="hashboard",
        device_model=MODEL,
        device_hs=47e12,
        device_temp_c=65.0,
        pool_difficulty=262144.0,
        restart_downtime_s=20.0,
        reboot_downtime_s=90.0,
        api_server=EpicApiServer,
    )
)
"""ePIC PowerPlay-BMS v1.5.13 on an S19 XP: HTTP on port 4028, as the API documents say."""
