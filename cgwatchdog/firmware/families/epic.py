"""ePIC (UMC / PowerPlay firmware: ePIC BlockMiners, ePIC-controlled Antminers): read and
repaired over its HTTP API on port 4028, which is not the cgminer protocol.

**Reading.** ePIC answers HTTP on the API port (pyasic ``web/epic.py:36``; the ePIC
dashboard talks to ``http://<ip>:4028``, ``src/app.jsx:989``). :class:`EpicReader` asks
``GET /summary`` once per poll (and ``GET /capabilities`` at first contact, for the
model) and hands back cgminer-shaped replies (documented shapes: epic-dashboard
``docs/APIv2.md`` "ePIC Miner v4.0.0" and ``docs/APIv3.md`` "PowerPlay", GET
``/summary`` and ``/capabilities``; a PowerPlay-BMS v1.5.13 ``/summary`` as asic-rs keeps
it in ``asic-rs-firmwares/epic/src/test/json/v1/summary.json``):

- ``version``/``stats``: ``{"ePIC": Software, "Type": Model, "OS Type": ...}``, STATUS
  Description ``ePIC <Software>`` (e.g. ``ePIC PowerPlay-BMS v1.5.13``): what the
  family recognises (score 60).
- ``summary``: ``Elapsed`` = ``Session.Uptime`` (the mining program's run time: it
  restarts with ``/softreboot``), ``MHS 5s`` = the sum of ``HBs[].Hashrate[0]`` (MH/s;
  pyasic ``backends/epic.py:230-251``; ePIC does not document its window, and it drops
  to 0 at once when mining stops), ``MHS av`` = ``Session["Average MHs"]``,
  ``Accepted``/``Rejected``, and ``Fan Num`` = the fan slots ``Fans Rpm`` reports.
- ``devs``: one ASC per hashboard, numbered by its ``Index`` (``Temperature``,
  ``Hashrate[0]``); a board ``HBStatus`` lists as detected but not enabled (the firmware's
  "Disable Board On Failure") is ``Enabled N``, ``Disabled``.
- ``pools``: ``StratumConfigs`` (up to 3, "precedence from top to bottom": dashboard
  README) with the one ``Stratum["Config Id"]`` names (else the one matching ``Current
  Pool``) as ``Stratum Active``, ``Alive`` if ``IsPoolConnected``, carrying the session's
  shares and ``Last Accepted Share Timer``. ePIC reports nothing of the other pools: they
  are ``Unknown`` (it fails over by itself). Pool ids stay with a pool (url, user) for as
  long as the reader lives, as cgminer's do, so a reordered list keeps them.
- ``fans``: ``Fans Rpm`` as BOSminer-shaped ``FANS`` (pyasic ``backends/epic.py:297-315``).

``probe()`` (the poller's, for ``firmware: auto`` when 4028 did not speak cgminer): one
``GET /summary`` that must answer JSON with ``Status["Operating State"]`` and a
``Session`` object, which nothing but ePIC does.

**Control** over the same port. Every POST carries ``{"param": ..., "password": ...}``
(``letmein`` by default: dashboard README "System Password"; pyasic ``web/epic.py:61-70``)
and is answered ``{"result": bool, "error": string|null}`` (APIv2/APIv3 "POST"; the
dashboard reads ``body.result``/``body.error``, ``app.jsx:997-1040``). pyasic's backend
reads a ``success`` key no reply has (``backends/epic.py:147-181``), so it reports every
success as a failure; here ``result`` decides.

- ``restart``: ``POST /softreboot`` ``{"param": 0}`` ("Soft reboot only restarts the
  mining program"; 0 = now). Verified: ``Elapsed`` went down.
- ``reboot``: ``POST /reboot`` ``{"param": 0}``. The connection may drop: ``Unconfirmed``;
  verified by the miner coming back with ``Elapsed`` reset. (pyasic omits ``param``,
  ``web/epic.py:105-109``; asic-rs sends ``"0"`` as a string, ``v1/mod.rs:1532-1537``.)
- ``switchpool``: ``GET /summary``, then ``POST /coin`` with ``{"coin": Mining.Coin,
  "stratum_configs": [...], "unique_id": ...}``, the target first and the others in their
  order (APIv3 ``/coin``; asic-rs ``v1/mod.rs:1234-1270``). The pool passwords come from
  ``/summary``'s ``StratumConfigs`` (both API documents and the capture list
  ``password`` there); ``credentials.pool_password``, when set, is given to every pool
  instead, and a miner whose ``/summary`` has none needs it. The unique-id setting is
  kept (``Stratum["Worker Unique Id"]``, else ``Misc["Append Unique Id To Worker"]``).
  Verified: the active pool changed.
- ``sleep``/``wake``: ``POST /miner`` ``"Stop"`` / ``"Autostart"`` (the values pyasic
  ``web/epic.py:129-139`` and asic-rs ``v1/mod.rs:1546-1566`` send; APIv3: "Autostart or
  stop the mining program"). The HTTP API keeps answering (``Operating State``
  ``Idling``, pyasic ``backends/epic.py:386-398``).
- ``disable``/``enable`` a board: not supported (no per-board command in the API).

``check_access``: ``GET /summary`` for the LED state (``Misc["Locate Miner State"]``),
then ``POST /identify`` with that same state (asic-rs sends the wanted state as a bool,
``v1/mod.rs:1146-1156``): it needs the password and changes nothing.

**A wrong password** is not documented ("Response should look like the following if the
provided password was accepted"): HTTP 401/403, or ``result: false`` with an error that
mentions the password, are ``AuthFailed``; any other ``result: false`` is a refusal
(``ActionError``) with ePIC's error text.

**Unverified against hardware**: the wrong-password answer, the window of
``Hashrate[0]``, that ``Session.Uptime`` restarts with the mining program, that
``/identify`` sets rather than toggles the LED, and how long restarts take.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from cgwatchdog.errors import (
    ActionError,
    AuthFailed,
    ConnectionRefused,
    ConnectionReset,
    ConnectTimeout,
    HostNotFound,
    MinerUnreachable,
    NotSent,
    NotSupported,
    ProtocolError,
    ReadTimeout,
    Unconfirmed,
)
from cgwatchdog.firmware.base import (
    ActionRequest,
    Channel,
    ChannelTarget,
    Family,
    Identity,
    Reader,
    firmware_family,
)
from cgwatchdog.snapshot import Snapshot

__all__ = ["Epic", "EpicChannel", "EpicReader", "epic_replies"]

MARK = "ePIC"
"""The VERSION key and Description prefix the reader gives an ePIC miner."""
EPIC_COMMANDS: tuple[str, ...] = ("summary", "devs", "pools", "fans")
_IDENTITY_COMMANDS = frozenset({"version", "stats"})
_MAX_BODY_BYTES = 4 << 20
_DETAIL_CHARS = 200
_NUMBER = re.compile(r"(\d+)\s*$")


@firmware_family
class Epic(Family):
    """ePIC UMC / PowerPlay firmware: HTTP on the API port, the password in each POST."""

    name = "epic"
    title = "ePIC (UMC / PowerPlay firmware)"
    channel_title = "HTTP API on the API port (4028)"
    auth_title = "the password in every POST body, letmein by default"
    control_port = None  # the API port: ePIC serves its HTTP API there
    default_password = "letmein"
    restart_window_s = 300.0
    reboot_window_s = 600.0
    unsupported: ClassVar[Mapping[str, str]] = {
        "disable": "ePIC's API has no per-board command",
        "enable": "ePIC's API has no per-board command",
    }
    verification = (
        "restart/reboot: Elapsed (the mining session's uptime) reset and the condition "
        "cleared; switchpool: the active pool changed; sleep: hashrate near 0; wake: hashing"
    )

    def recognise(self, identity: Identity) -> int:
        described = (identity.description or "").startswith(f"{MARK} ")
        return 60 if MARK in identity.version or described else 0

    def firmware_version(self, identity: Identity) -> str | None:
        software = identity.version.get(MARK)
        return software if isinstance(software, str) and software else identity.fork

    def poll_commands(self, snapshot: Snapshot, without_stats: Snapshot | None) -> tuple[str, ...]:
        return EPIC_COMMANDS

    def reader(self, target: ChannelTarget) -> Reader:
        return EpicReader(target)

    def channel(self, target: ChannelTarget) -> Channel:
        return EpicChannel(self, target)


# -- reading ------------------------------------------------------------------------------


class EpicReader(Reader):
    """ePIC's ``GET /summary`` as cgminer-shaped replies, on the miner's API port."""

    def __init__(self, target: ChannelTarget) -> None:
        self.target = target
        self._pool_ids: dict[tuple[str, str, int], int] = {}

    async def read(self, commands: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        summary = await self._get("/summary")
        if not is_summary(summary):
            raise ProtocolError("an HTTP JSON answer on /summary that is not ePIC's summary")
        capabilities: Mapping[str, Any] = {}
        if _IDENTITY_COMMANDS & set(commands):
            try:
                capabilities = await self._get("/capabilities")  # only for the model
            except (MinerUnreachable, ProtocolError):
                capabilities = {}
        ids = self._stable_pool_ids(summary)
        return epic_replies(summary, capabilities, commands, ids)

    async def probe(self) -> bool:
        try:
            return is_summary(await self._get("/summary"))
        except (MinerUnreachable, ProtocolError):
            return False

    def _stable_pool_ids(self, summary: Mapping[str, Any]) -> list[int]:
        """An id per StratumConfigs entry that stays with its (url, user) across reads."""
        keys = []
        seen: dict[tuple[str, str], int] = {}
        for config in _configs(summary):
            pair = (str(config.get("pool", "")), str(config.get("login", "")))
            seen[pair] = seen.get(pair, -1) + 1
            keys.append((*pair, seen[pair]))
        kept = {key: self._pool_ids[key] for key in keys if key in self._pool_ids}
        used = set(kept.values())
        for key in keys:
            if key not in kept:
                kept[key] = next(i for i in range(len(keys) + len(used) + 1) if i not in used)
                used.add(kept[key])
        self._pool_ids = kept
        return [kept[key] for key in keys]

    async def _get(self, path: str) -> Mapping[str, Any]:
        target = self.target
        status, body = await _http(target, target.api_port, "GET", path, None, read_errors=True)
        if status != 200:
            raise ProtocolError(f"HTTP {status} on GET {path}")
        try:
            value = json.loads(body)
        except ValueError:
            raise ProtocolError(f"GET {path} did not answer JSON") from None
        if not isinstance(value, dict):
            raise ProtocolError(f"GET {path} did not answer a JSON object")
        return value


def is_summary(value: object) -> bool:
    """Whether ``value`` is ePIC's ``/summary`` (Status with Operating State, Session)."""
    if not isinstance(value, Mapping):
        return False
    status = value.get("Status")
    return (
        isinstance(status, Mapping)
        and "Operating State" in status
        and isinstance(value.get("Session"), Mapping)
    )


def epic_replies(
    summary: Mapping[str, Any],
    capabilities: Mapping[str, Any],
    commands: Sequence[str],
    pool_ids: Sequence[int] | None = None,
) -> dict[str, dict[str, Any]]:
    """cgminer-shaped replies (command -> reply) from ePIC's ``/summary`` and
    ``/capabilities``; commands ePIC has nothing for answer Code 14."""
    software = _text(summary.get("Software"))
    description = f"{MARK} {software}" if software else MARK
    replies: dict[str, dict[str, Any]] = {}
    for command in commands:
        if command in _IDENTITY_COMMANDS:
            entry = _identity_entry(summary, capabilities, software)
            section, code, msg = ("VERSION", 22, "ePIC versions") if command == "version" else (
                "STATS", 70, "ePIC stats"
            )  # fmt: skip
            replies[command] = _reply(description, code, msg, section, [entry])
        elif command == "summary":
            replies[command] = _reply(description, 11, "Summary", "SUMMARY", [_summary(summary)])
        elif command == "devs":
            boards = _boards(summary)
            replies[command] = (
                _reply(description, 9, f"{len(boards)} ASC(s)", "DEVS", boards)
                if boards
                else _error(description, 10, "No ASCs")
            )
        elif command == "pools":
            pools = _pools(summary, pool_ids)
            replies[command] = (
                _reply(description, 7, f"{len(pools)} Pool(s)", "POOLS", pools)
                if pools
                else _error(description, 8, "No pools")
            )
        elif command == "fans":
            fans = [{"FAN": i, "ID": i, "RPM": rpm} for i, rpm in enumerate(_fan_rpms(summary))]
            replies[command] = _reply(description, 202, f"{len(fans)} Fan(s)", "FANS", fans)
        else:
            replies[command] = _error(description, 14, "Invalid command")
    return replies


def _reply(
    description: str, code: int, msg: str, section: str, entries: list[Any]
) -> dict[str, Any]:
    status = {"STATUS": "S", "Code": code, "Msg": msg, "Description": description}
    return {"STATUS": [status], section: entries, "id": 1}


def _error(description: str, code: int, msg: str) -> dict[str, Any]:
    return {
        "STATUS": [{"STATUS": "E", "Code": code, "Msg": msg, "Description": description}],
        "id": 1,
    }


def _identity_entry(
    summary: Mapping[str, Any], capabilities: Mapping[str, Any], software: str | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {MARK: software or ""}
    for key, value in (
        ("Type", capabilities.get("Model")),
        ("Model Subtype", capabilities.get("Model Subtype")),
        ("OS Type", summary.get("OS Type")),
        ("Hostname", summary.get("Hostname")),
    ):
        if _text(value):
            entry[key] = value
    return entry


def _summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    session = _map(summary.get("Session"))
    entry: dict[str, Any] = {}
    uptime = _number(session.get("Uptime"))
    if uptime is not None:
        entry["Elapsed"] = int(uptime)
    hbs = summary.get("HBs", ())
    if isinstance(hbs, list) or hbs is None:  # null while mining is stopped
        rates = [_board_rate(hb) for hb in hbs or () if isinstance(hb, Mapping)]
        entry["MHS 5s"] = sum(rate or 0.0 for rate in rates)
    average = _number(session.get("Average MHs"))
    if average is not None:
        entry["MHS av"] = average
    for key in ("Accepted", "Rejected"):
        value = _number(session.get(key))
        if value is not None:
            entry[key] = int(value)
    rpms = _fan_slots(summary)
    if rpms is not None:
        entry["Fan Num"] = len(rpms)
    return entry


def _board_rate(hb: Mapping[str, Any]) -> float | None:
    rate = hb.get("Hashrate")
    if isinstance(rate, list) and rate:
        return _number(rate[0])
    return _number(rate)


def _boards(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    state = _map(summary.get("Status")).get("Operating State")
    boards: dict[int, dict[str, Any]] = {}
    for hb in summary.get("HBs") or ():
        if not isinstance(hb, Mapping):
            continue
        index = _number(hb.get("Index"))
        if index is None:
            continue
        rate = _board_rate(hb)
        if rate is not None and rate > 0:
            status = "Alive"
        else:
            status = "Sick" if state == "Mining" else "Initialising"
        entry: dict[str, Any] = {"ASC": int(index), "Name": "HB", "ID": int(index)}
        entry.update({"Enabled": "Y", "Status": status})
        temperature = _number(hb.get("Temperature"))
        if temperature is not None:
            entry["Temperature"] = temperature
        if rate is not None:
            entry["MHS 5s"] = rate
        boards[int(index)] = entry
    for hb in summary.get("HBStatus") or ():
        if not isinstance(hb, Mapping):
            continue
        index = _number(hb.get("Index"))
        if index is None or int(index) in boards or hb.get("Detected") is not True:
            continue
        if hb.get("Enabled") is False:
            boards[int(index)] = {
                "ASC": int(index), "Name": "HB", "ID": int(index), "Enabled": "N",
                "Status": "Disabled", "MHS 5s": 0.0,
            }  # fmt: skip
    return [boards[index] for index in sorted(boards)]


def _configs(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    configs = summary.get("StratumConfigs")
    if not isinstance(configs, list):
        return []
    return [c for c in configs if isinstance(c, Mapping) and _text(c.get("pool"))]


def _without_scheme(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def _active_config(summary: Mapping[str, Any], configs: Sequence[Mapping[str, Any]]) -> int | None:
    stratum = _map(summary.get("Stratum"))
    config_id = stratum.get("Config Id")
    if isinstance(config_id, int) and not isinstance(config_id, bool):
        return config_id if 0 <= config_id < len(configs) else None
    current = _text(stratum.get("Current Pool"))
    if current:
        for i, config in enumerate(configs):
            if _without_scheme(str(config.get("pool"))) == _without_scheme(current):
                return i
    return None


def _pools(summary: Mapping[str, Any], pool_ids: Sequence[int] | None) -> list[dict[str, Any]]:
    stratum = _map(summary.get("Stratum"))
    session = _map(summary.get("Session"))
    configs = _configs(summary)
    if not configs and _text(stratum.get("Current Pool")):  # older firmware: only Stratum
        configs = [{"pool": stratum["Current Pool"], "login": stratum.get("Current User", "")}]
    active = _active_config(summary, configs)
    if active is None and len(configs) == 1 and _text(stratum.get("Current Pool")):
        active = 0
    ids = list(pool_ids) if pool_ids is not None and len(pool_ids) == len(configs) else None
    pools = []
    for i, config in enumerate(configs):
        entry: dict[str, Any] = {
            "POOL": ids[i] if ids is not None else i,
            "URL": str(config.get("pool")),
            "User": str(config.get("login", "")),
            "Priority": i,
        }
        if i == active:
            entry["Status"] = "Alive" if stratum.get("IsPoolConnected") is True else "Dead"
            entry["Stratum Active"] = True
            for key in ("Accepted", "Rejected"):
                value = _number(session.get(key))
                if value is not None:
                    entry[key] = int(value)
            entry["Last Share Time"] = _last_share(session)
        else:
            entry["Status"] = "Unknown"
            entry["Stratum Active"] = False
        pools.append(entry)
    return pools


def _last_share(session: Mapping[str, Any]) -> str | int:
    """The age as ``H:MM:SS`` (the Timer ePIC counts), else the epoch of the share."""
    timer = _number(session.get("Last Accepted Share Timer"))
    if timer is not None and timer >= 0:
        seconds = int(timer)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    stamp = _number(session.get("Last Accepted Share Timestamp"))
    return int(stamp) if stamp is not None and stamp > 0 else 0


def _fan_slots(summary: Mapping[str, Any]) -> list[float | None] | None:
    """``Fans Rpm`` in slot order, the slots the firmware reports (null: no fan there)."""
    rpms = summary.get("Fans Rpm")
    if not isinstance(rpms, Mapping):
        return None
    slots = []
    for key, value in rpms.items():
        number = _NUMBER.search(str(key))
        if value is not None and number is not None:
            slots.append((int(number.group(1)), _number(value)))
    return [rpm for _, rpm in sorted(slots)]


def _fan_rpms(summary: Mapping[str, Any]) -> list[int]:
    return [int(rpm) for rpm in _fan_slots(summary) or () if rpm is not None and rpm > 0]


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


# -- control ------------------------------------------------------------------------------


class EpicChannel(Channel):
    """ePIC's POST endpoints on the API port, the password in each body."""

    async def perform(self, request: ActionRequest) -> str:
        do = request.do
        if do == "restart":
            return await self._post("/softreboot", 0)
        if do == "reboot":
            return await self._post("/reboot", 0)
        if do == "sleep":
            return await self._post("/miner", "Stop")
        if do == "wake":
            return await self._post("/miner", "Autostart")
        if do == "switchpool":
            return await self._switchpool(request)
        raise self.not_supported(request)

    async def check_access(self) -> str:
        summary = await self._summary()
        led = _map(summary.get("Misc")).get("Locate Miner State")
        if not isinstance(led, bool):
            raise NotSupported(
                f"{self.target.name}: ePIC's summary gives no LED state, and its API has no "
                "other call that checks the password without changing something"
            )
        receipt = await self._post("/identify", led)
        return f"{receipt} (the LED left {'on' if led else 'off'})"

    async def _switchpool(self, request: ActionRequest) -> str:
        name = self.target.name
        if request.pool is None:
            raise ActionError("switchpool needs the pool to switch to")
        summary = await self._summary()
        configs = _configs(summary)
        if not configs:
            raise ActionError(f"{name}: ePIC's /summary lists no StratumConfigs to reorder")
        index = _target_index(request, configs)
        if index is None:
            raise ActionError(
                f"{name}: pool {request.pool} is not among the pools ePIC reports now; nothing sent"
            )
        coin = _text(_map(summary.get("Mining")).get("Coin"))
        if coin is None:
            raise ActionError(f"{name}: ePIC's /summary names no coin (Mining.Coin); nothing sent")
        ordered = [configs[index], *(c for i, c in enumerate(configs) if i != index)]
        stratum_configs = []
        for config in ordered:
            secret = self.target.pool_password
            if secret is None:
                given = config.get("password")
                if not isinstance(given, str):
                    raise NotSupported(
                        f"{name}: ePIC's /summary gives no pool password to write back; set "
                        f"credentials.pool_password for {name}"
                    )
                secret = given
            stratum_configs.append(
                {
                    "pool": str(config["pool"]),
                    "login": str(config.get("login", "")),
                    "password": secret,
                }
            )
        unique = _map(summary.get("Stratum")).get("Worker Unique Id")
        if not isinstance(unique, bool):
            unique = _map(summary.get("Misc")).get("Append Unique Id To Worker")
        param = {
            "coin": coin,
            "stratum_configs": stratum_configs,
            "unique_id": unique if isinstance(unique, bool) else False,
        }
        receipt = await self._post("/coin", param)
        return f"{receipt} ({stratum_configs[0]['pool']} first of {len(stratum_configs)})"

    async def _summary(self) -> Mapping[str, Any]:
        """``GET /summary`` before a write: any failure means nothing was sent."""
        target = self.target
        try:
            status, body = await _http(target, target.control_port, "GET", "/summary", None)
        except Unconfirmed as exc:
            raise NotSent(f"{exc}; nothing was written") from None
        try:
            value = json.loads(body) if status == 200 else None
        except ValueError:
            value = None
        if not is_summary(value):
            raise NotSent(f"{target.name}: GET /summary answered HTTP {status}, not ePIC's summary")
        assert isinstance(value, Mapping)
        return value

    async def _post(self, path: str, param: object) -> str:
        target = self.target
        if target.password is None:
            raise AuthFailed(
                f"{target.name}: no ePIC password to send; set credentials.password_file "
                f"for {target.name}"
            )
        body = {"param": param, "password": target.password}
        status, raw = await _http(target, target.control_port, "POST", path, body)
        fix = f"set credentials.password_file for {target.name} to its ePIC password"
        default = " (none is configured: the factory default was tried)"
        if target.default_password:
            fix += default
        if status in (401, 403):
            raise AuthFailed(
                f"{target.name}: ePIC refused the password (HTTP {status} on {path}); {fix}"
            )
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or not isinstance(reply.get("result"), bool):
            raise ActionError(
                f"{target.name}: POST {path} answered HTTP {status} without a result"
                f"{_detail(raw.decode('utf-8', 'replace'), target)}"
            )
        if reply["result"]:
            return f"POST {path}: result true"
        error = _detail(str(reply.get("error") or "no reason given"), target)
        if "password" in error.lower() or "unauthori" in error.lower():
            raise AuthFailed(f"{target.name}: ePIC refused the password on {path}{error}; {fix}")
        raise ActionError(f"{target.name}: ePIC refused POST {path}{error}")


def _target_index(request: ActionRequest, configs: Sequence[Mapping[str, Any]]) -> int | None:
    """The StratumConfigs entry of the polled pool ``request.pool`` (by url and user;
    by position when no polled pools came with the request)."""
    if not request.pools:
        pool = request.pool
        return pool if pool is not None and 0 <= pool < len(configs) else None
    wanted = next((p for p in request.pools if p.id == request.pool), None)
    if wanted is None:
        return None
    for i, config in enumerate(configs):
        if str(config.get("pool")) == wanted.url and str(config.get("login", "")) == wanted.user:
            return i
    return None


def _detail(text: str, target: ChannelTarget) -> str:
    """``: <ePIC's words>`` for a message, never echoing a password."""
    for secret in (target.password, target.pool_password):
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())[:_DETAIL_CHARS]
    return f": {text}" if text else ""


# -- HTTP ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Failure:
    """How one HTTP failure reads, for the reader's and the channel's typed errors."""

    sent: bool
    reason: str
    kind: type[MinerUnreachable]


async def _http(
    target: ChannelTarget,
    port: int,
    method: str,
    path: str,
    body: Mapping[str, Any] | None,
    *,
    read_errors: bool = False,
) -> tuple[int, bytes]:
    """(status, body) of one HTTP request. Failures raise the reader's errors
    (``read_errors``: MinerUnreachable subclasses, ProtocolError) or the channel's
    (NotSent, Unconfirmed, ActionError)."""
    import aiohttp  # only a miner read or controlled this way pays for the import
    from yarl import URL

    url = URL.build(scheme="http", host=target.host, port=port, path=path)
    timeout = aiohttp.ClientTimeout(
        total=target.timeout_s, sock_connect=min(target.connect_timeout_s, target.timeout_s)
    )
    failure: _Failure
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, json=body) as response,
        ):
            return response.status, await response.content.read(_MAX_BODY_BYTES)
    except aiohttp.ClientConnectorDNSError:
        failure = _Failure(False, "the host name does not resolve", HostNotFound)
    except aiohttp.ClientConnectorError as exc:
        failure = _Failure(False, f"cannot connect ({exc.strerror or exc})", ConnectionRefused)
    except aiohttp.ConnectionTimeoutError:
        failure = _Failure(False, "connect timed out", ConnectTimeout)
    except TimeoutError:
        failure = _Failure(True, "no answer in time", ReadTimeout)
    except aiohttp.ClientResponseError as exc:  # not HTTP: a cgminer API, say
        if read_errors:
            raise ProtocolError(f"GET {path}: not an HTTP answer ({exc.message})") from None
        raise ActionError(f"{target.name}: {method} {path}: not an HTTP answer") from None
    except (aiohttp.ClientError, OSError) as exc:
        failure = _Failure(
            True, f"the connection dropped before an answer ({type(exc).__name__})", ConnectionReset
        )
    if read_errors:
        raise failure.kind(target.host, port, failure.reason)
    where = f"{target.name} ({target.host}:{port})"
    if failure.sent:
        raise Unconfirmed(f"{where}: {method} {path} sent, {failure.reason}")
    raise NotSent(f"{where}: {failure.reason}; {path} not sent")
