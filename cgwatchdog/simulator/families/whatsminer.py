"""Whatsminer flavours: btminer's encrypted API v2 on the API port, and API v3 on its own port.

``whatsminer`` answers the cgminer reads as the field capture of an M20S does
(Description ``cgminer 4.9.2``, devices named ``SM``, SUMMARY with btminer's own keys:
``Firmware Version`` in quotes, ``Power Mode``, ``Chip Temp Max``, ``Fan Speed In``/
``Out``, ``Factory GHS``), refuses cgminer's privileged commands (Code 45), and answers
API v2 (MicroBT "Whatsminer API V2.0.5") through its ``api_hook``: plaintext
``get_token`` (Code 134; the salt is the miner's, fixed; ``newsalt`` and ``time`` per
token), ``get_version`` and ``status``; ``{"enc": 1, "data": ...}`` decrypted with the
real algorithm (md5-crypt, sha256 key, AES-256-ECB, zero padding), the token checked
against the live ones, the command (``cmd``, or ``command`` as asic-rs sends it) applied
to the :class:`SimulatedMiner` (``restart_btminer``, ``reboot``, ``update_pools``,
``power_off``, ``power_on``) and the reply sealed with the same key. ``reboot`` drops
the connection without an answer, as the real miners often do.

``whatsminer-v3`` is new firmware (20250321.14.Rel): its cgminer API port refuses
connections (the choice made here: hass-miner#405 reports the API moved to 4433; some
2025 firmware still answers a few reads on 4028, pyasic#396, which the v2 flavour's
reads cover), and API v3 (4-byte little-endian length + JSON) listens on
``member.control_port``: ``get.device.info`` (with the salt), ``get.miner.status``
``summary``/``edevs``/``pools`` in the field names of asic-rs's v3 test replies, and
``set.*`` with the token check (first 8 characters of base64(sha256(cmd + password +
salt + ts)), account ``super``): ``set.miner.service`` restart/stop/start,
``set.system.reboot`` (drops the connection), ``set.miner.pools`` (param AES-encrypted
under the token's digest; zero or PKCS#7 padding accepted). Refusals use ``code`` -1 with
a ``msg`` naming the cause ("invalid token", "permission denied: the API switch is
off"): the real codes are not documented anywhere found.

Per miner, :func:`state_of` holds the switches tests turn (``admin_password``,
``v3_password``, ``write_api``, ``token_quota``, ``reboot_answers``) and ``received``,
every request as the miner understood it (decrypted, token checked). The hook does not
see the client's address, so the token quota (32 per client address on real miners)
counts every client together.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import struct
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from cgwatchdog.errors import ProtocolError
from cgwatchdog.firmware.families._md5crypt import md5_crypt_hash
from cgwatchdog.firmware.families.whatsminer import aes_ecb_decrypt, aes_ecb_encrypt
from cgwatchdog.protocol import decode_request
from cgwatchdog.simulator.core import (
    FLAVOURS,
    ControlServer,
    Flavour,
    Fleet,
    FleetMember,
    MinerStates,
    SimulatedMiner,
    add_flavour,
)

__all__ = [
    "V2_FIRMWARE",
    "V3_FIRMWARE",
    "WHATSMINER",
    "WHATSMINER_V3",
    "ClosedApiPort",
    "Received",
    "WhatsminerState",
    "WhatsminerV3Server",
    "state_of",
]

V2_FIRMWARE: Final = "20230803.11.REL"
"""The firmware of asic-rs's v2 ``get_version`` test reply (before 2024-11: API v2)."""
V3_FIRMWARE: Final = "20250321.14.Rel"
"""The firmware of pyasic#396 and hass-miner#527 (after 2024-11: API v3)."""
_SALT_ALPHABET: Final = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_V2_READS: Final = frozenset({"get_version", "status"})
_V2_WRITES: Final = frozenset(
    {"restart_btminer", "reboot", "update_pools", "power_off", "power_on"}
)
_MAX_V3_FRAME: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Received:
    """One request a simulated Whatsminer took, as it understood it."""

    api: Literal["v2", "v3"]
    command: str
    encrypted: bool
    """v2: it came sealed in ``{"enc": 1}``; v3: its param was AES-encrypted."""
    authenticated: bool
    """Its token was checked and valid (False for plaintext requests and refusals)."""
    params: dict[str, Any]
    """The decrypted parameters, without ``cmd`` and ``token``."""
    refused: str | None = None
    """The miner's error message, None when it was carried out."""


@dataclass
class WhatsminerState:
    """One simulated Whatsminer's credentials, switches and request log."""

    firmware: str
    salt: str
    v3_salt: str
    admin_password: str = "admin"
    """API v2's password (WhatsMinerTool's admin password)."""
    v3_account: str = "super"
    v3_password: str = "super"
    write_api: bool = True
    """False: writes answer "can't access write cmd" (v2) / permission denied (v3)."""
    token_quota: int = 32
    token_keepalive_s: float = 1800.0
    reboot_answers: bool = False
    """True: a reboot is answered before the miner goes (it usually is not)."""
    tokens: list[tuple[float, str, str]] = field(default_factory=list)
    """Live v2 tokens: (issued at, time, newsalt)."""
    received: list[Received] = field(default_factory=list)
    issued: int = 0

    def commands(self, api: str | None = None) -> list[str]:
        """The commands received, in order (of one API, or both)."""
        return [r.command for r in self.received if api is None or r.api == api]


def _salt(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(_SALT_ALPHABET[b % 64] for b in digest[:8])


def _new_state(miner: SimulatedMiner) -> WhatsminerState:
    firmware = V3_FIRMWARE if miner.flavour.control is WhatsminerV3Server else V2_FIRMWARE
    return WhatsminerState(
        firmware=firmware,
        salt=_salt(f"v2/{miner.name}/{miner.seed}"),
        v3_salt=_salt(f"v3/{miner.name}/{miner.seed}"),
    )


_STATES: MinerStates[WhatsminerState] = MinerStates(_new_state)


def state_of(miner: SimulatedMiner) -> WhatsminerState:
    """The Whatsminer state of ``miner`` (created on first use)."""
    return _STATES(miner)


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _flat(letter: str, code: int, msg: object, now: float) -> dict[str, Any]:
    return {"STATUS": letter, "When": int(now), "Code": code, "Msg": msg, "Description": ""}


def _cgminer(miner: SimulatedMiner, commands: str, now: float) -> dict[str, Any]:
    """The miner's own cgminer replies to ``a+b+c``, decoded (command -> reply)."""
    out = miner.handle(decode_request(_json({"command": commands})), now)
    if out is None:
        return {}
    try:
        reply = json.loads(out.split(b"\0", 1)[0])
    except ValueError:
        return {}
    names = commands.split("+")
    if len(names) == 1:
        return {names[0]: reply}
    return {name: reply[name][0] for name in names if isinstance(reply.get(name), list)}


def _entries(reply: object, section: str) -> list[dict[str, Any]]:
    body = reply.get(section) if isinstance(reply, dict) else None
    return [e for e in body if isinstance(e, dict)] if isinstance(body, list) else []


def _chip_temps(miner: SimulatedMiner, board_c: float, now: float) -> tuple[float, float, float]:
    """(max, min, avg) chip temperatures: some degrees over the board's when hashing."""
    if miner.hashrate_hs(now) <= 0:
        return board_c, board_c, board_c
    return board_c + 11.0, board_c - 3.0, board_c + 4.0


# -- API v2 -----------------------------------------------------------------------------


def _v2_hook(
    miner: SimulatedMiner, member: FleetMember | None, data: bytes, now: float
) -> bytes | None:
    state = state_of(miner)
    try:
        obj = json.loads(data.split(b"\0", 1)[0])
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if "enc" in obj:
        return _v2_sealed(miner, state, obj, now)
    command = obj.get("command", obj.get("cmd"))
    if not isinstance(command, str):
        return None
    if command == "get_token":
        return _v2_token(state, now)
    if command in _V2_READS:
        state.received.append(Received("v2", command, False, False, {}))
        return _json(_v2_read(miner, state, command, now))
    if command in _V2_WRITES:
        # "the writable API supports only ciphertext" (WMDOC V2.0.5 §2.1)
        msg = "permission denied"
        state.received.append(Received("v2", command, False, False, {}, msg))
        return _json(_flat("E", 45, msg, now))
    if "summary" in command.split("+"):
        return _with_btminer_summary(miner, state, data, now)
    return None


def _v2_token(state: WhatsminerState, now: float) -> bytes:
    state.tokens = [t for t in state.tokens if now - t[0] < state.token_keepalive_s]
    if len(state.tokens) >= state.token_quota:
        msg = "token over max times"
        state.received.append(Received("v2", "get_token", False, False, {}, msg))
        return _json(_flat("E", 136, msg, now))
    state.issued += 1
    time_text = str(int(now) % 10000)
    newsalt = _salt(f"newsalt/{state.salt}/{state.issued}")
    state.tokens.append((now, time_text, newsalt))
    state.received.append(Received("v2", "get_token", False, False, {}))
    token = {"time": time_text, "salt": state.salt, "newsalt": newsalt}
    return _json(_flat("S", 134, token, now))


def _v2_read(
    miner: SimulatedMiner, state: WhatsminerState, command: str, now: float
) -> dict[str, Any]:
    if command == "get_version":
        msg: dict[str, str] = {"api_ver": "2.0.5", "fw_ver": state.firmware, "platform": "H616"}
    else:
        msg = {
            "mineroff": "true" if miner.sleeping else "false",
            "mineroff_reason": "",
            "FirmwareVersion": state.firmware,
            "power_mode": "normal",
        }
    return _flat("S", 131, msg, now)


def _v2_sealed(
    miner: SimulatedMiner, state: WhatsminerState, obj: dict[str, Any], now: float
) -> bytes:
    host_passwd_md5 = md5_crypt_hash(state.admin_password, state.salt)
    key = hashlib.sha256(host_passwd_md5.encode()).digest()
    payload: Any = None
    with contextlib.suppress(ValueError, TypeError):
        payload = json.loads(aes_ecb_decrypt(key, str(obj.get("data"))))
    if not isinstance(payload, dict):
        # Another password's key decrypts to noise.
        state.received.append(Received("v2", "?", True, False, {}, "check token error"))
        return _json(_flat("E", 135, "check token error", now))
    command = str(payload.get("cmd", payload.get("command", "")))
    params = {k: v for k, v in payload.items() if k not in ("cmd", "command", "token")}
    state.tokens = [t for t in state.tokens if now - t[0] < state.token_keepalive_s]
    signs = {md5_crypt_hash(host_passwd_md5 + t, newsalt) for _, t, newsalt in state.tokens}
    if payload.get("token") not in signs:
        state.received.append(Received("v2", command, True, False, params, "check token error"))
        return _json(_flat("E", 135, "check token error", now))

    def sealed(reply: dict[str, Any]) -> bytes:
        return _json({"enc": aes_ecb_encrypt(key, _json(reply))})

    if command in _V2_READS:
        state.received.append(Received("v2", command, True, True, params))
        return sealed(_v2_read(miner, state, command, now))
    if command not in _V2_WRITES:
        msg = "invalid API command or data"
        state.received.append(Received("v2", command, True, True, params, msg))
        return sealed(_flat("E", 14, msg, now))
    if not state.write_api:
        msg = "can't access write cmd"
        state.received.append(Received("v2", command, True, True, params, msg))
        return _json(_flat("E", 45, msg, now))
    ok = sealed(_flat("S", 131, "API command OK", now))
    if command == "update_pools":
        pools = [
            (str(params[f"pool{i}"]), str(params.get(f"worker{i}") or ""))
            for i in (1, 2, 3)
            if params.get(f"pool{i}")
        ]
        if not pools:
            state.received.append(Received("v2", command, True, True, params, "command error"))
            return sealed(_flat("E", 132, "command error", now))
        miner.set_pools(pools, now)
    elif command == "restart_btminer":
        miner.restart(now)
    elif command == "reboot":
        miner.reboot(now)
        state.received.append(Received("v2", command, True, True, params))
        return ok if state.reboot_answers else b""  # b"": close without a byte
    elif command == "power_off":
        miner.sleep(now)
    elif command == "power_on":
        miner.wake(now)
    state.received.append(Received("v2", command, True, True, params))
    return ok


def _with_btminer_summary(
    miner: SimulatedMiner, state: WhatsminerState, data: bytes, now: float
) -> bytes:
    """The cgminer answer, with btminer's keys added to its SUMMARY."""
    try:
        request = decode_request(data)
    except ProtocolError:
        return b""
    out = miner.handle(request, now)
    if out is None:
        return b""
    try:
        reply = json.loads(out.split(b"\0", 1)[0])
    except ValueError:
        return out  # the garbage scenario's bytes, as they are
    summary = reply.get("summary")
    holder = summary[0] if isinstance(summary, list) and summary else reply
    for entry in _entries(holder, "SUMMARY"):
        board_c = miner.flavour.device_temp_c
        chip_max, chip_min, chip_avg = _chip_temps(miner, board_c, now)
        hashing = miner.hashrate_hs(now) > 0
        entry.update(
            {
                "Temperature": board_c,
                "Fan Speed In": 4950 if hashing else 0,
                "Fan Speed Out": 4920 if hashing else 0,
                "Power": 3491 if hashing else 12,
                "Power_RT": 3482 if hashing else 12,
                "Power Mode": "Normal",
                "Firmware Version": f"'{state.firmware}'",
                "CB Platform": "ALLWINNER_H3",
                "Factory GHS": round(miner.flavour.device_hs * 3 / 1e9),
                "Power Limit": 3500,
                "Env Temp": 28.5,
                "Chip Temp Min": chip_min,
                "Chip Temp Max": chip_max,
                "Chip Temp Avg": chip_avg,
            }
        )
    return _json(reply) + b"\0"


# -- API v3 -----------------------------------------------------------------------------


def _v3_reply(code: int, msg: object, desc: str, now: float) -> dict[str, Any]:
    return {"code": code, "when": int(now), "msg": msg, "desc": desc}


def _unpad(plain: bytes) -> bytes:
    """Zero padding is already gone (aes_ecb_decrypt); PKCS#7 padding goes here."""
    pad = plain[-1] if plain else 0
    if 1 <= pad <= 16 and plain.endswith(bytes([pad]) * pad):
        return plain[:-pad]
    return plain


class WhatsminerV3Server(ControlServer):
    """API v3: 4-byte little-endian length + JSON, ``get.*`` reads, signed ``set.*``."""

    def __init__(self, member: FleetMember, fleet: Fleet) -> None:
        super().__init__(member, fleet)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                (length,) = struct.unpack("<I", await reader.readexactly(4))
                if length > _MAX_V3_FRAME:
                    return
                body = await reader.readexactly(length)
                if not self.miner.available(self.now()):
                    return
                reply = self.handle(body)
                if reply is None:
                    return  # closed without an answer
                out = _json(reply)
                writer.write(struct.pack("<I", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def handle(self, body: bytes) -> dict[str, Any] | None:
        """The reply to one request (None: the connection drops)."""
        now = self.now()
        state = state_of(self.miner)
        try:
            obj = json.loads(body)
        except ValueError:
            return _v3_reply(-1, "invalid json", "", now)
        command = obj.get("cmd") if isinstance(obj, dict) else None
        if not isinstance(command, str):
            return _v3_reply(-1, "invalid command", "", now)
        param = obj.get("param")
        if command.startswith("get."):
            state.received.append(Received("v3", command, False, False, {"param": param}))
            return self._get(command, param, now)
        ts = obj.get("ts")
        expected = hashlib.sha256(
            f"{command}{state.v3_password}{state.v3_salt}{ts}".encode()
        ).digest()
        token = base64.b64encode(expected).decode("ascii")[:8]
        valid = (
            command.startswith("set.")
            and isinstance(ts, int)
            and obj.get("account") == state.v3_account
            and obj.get("token") == token
        )
        encrypted = command == "set.miner.pools"
        if not valid:
            msg = "invalid token"
            state.received.append(Received("v3", command, encrypted, False, {}, msg))
            return _v3_reply(-1, msg, command, now)
        if not state.write_api:
            msg = "permission denied: the API switch is off"
            state.received.append(Received("v3", command, encrypted, True, {}, msg))
            return _v3_reply(-1, msg, command, now)
        if encrypted:
            try:
                param = json.loads(_unpad(aes_ecb_decrypt(expected, str(param))))
            except (ValueError, TypeError):
                param = None
        refused = self._set(command, param, now)
        state.received.append(Received("v3", command, encrypted, True, {"param": param}, refused))
        if refused is not None:
            return _v3_reply(-1, refused, command, now)
        if command == "set.system.reboot" and not state.reboot_answers:
            return None
        return _v3_reply(0, "ok", command, now)

    def _set(self, command: str, param: Any, now: float) -> str | None:
        """Carry out a ``set.*`` command; why not (None: done)."""
        miner = self.miner
        if command == "set.miner.service":
            actions = {"restart": miner.restart, "stop": miner.sleep, "start": miner.wake}
            if param in ("enable", "disable"):
                return None
            action = actions.get(param) if isinstance(param, str) else None
            if action is None:
                return "invalid param"
            action(now)
        elif command == "set.system.reboot":
            miner.reboot(now)
        elif command == "set.miner.pools":
            pools = [
                (str(p["pool"]), str(p.get("worker") or ""))
                for p in (param if isinstance(param, list) else [])
                if isinstance(p, dict) and p.get("pool")
            ]
            if not pools:
                return "invalid param"
            miner.set_pools(pools[:3], now)
        else:
            return "invalid command"
        self.changed()
        return None

    def _get(self, command: str, param: Any, now: float) -> dict[str, Any]:
        miner, state = self.miner, state_of(self.miner)
        if command == "get.device.info":
            if param == "salt":
                return _v3_reply(0, {"salt": state.v3_salt}, command, now)
            return _v3_reply(0, self._device_info(state), command, now)
        if command != "get.miner.status" or param not in ("summary", "edevs", "pools"):
            return _v3_reply(-1, "invalid command", command, now)
        replies = _cgminer(miner, "summary+devs+pools", now)
        if param == "summary":
            return _v3_reply(0, {"summary": self._summary(replies, now)}, command, now)
        if param == "edevs":
            boards = [self._board(e, now) for e in _entries(replies.get("devs"), "DEVS")]
            return _v3_reply(0, {"edevs": boards}, command, now)
        pools = [
            {
                "id": e.get("POOL"),
                "url": e.get("URL"),
                "account": e.get("User"),
                "status": str(e.get("Status", "")).lower(),
                "pool-priority": e.get("Priority"),
                "stratum-active": e.get("Stratum Active") is True,
            }
            for e in _entries(replies.get("pools"), "POOLS")
        ]
        return _v3_reply(0, {"pools": pools}, command, now)

    def _device_info(self, state: WhatsminerState) -> dict[str, Any]:
        miner = self.miner
        boards = len(_entries(_cgminer(miner, "devs", self.now()).get("devs"), "DEVS"))
        return {
            "miner": {
                "type": "M60S_VK40",
                "working": "false" if miner.sleeping else "true",
                "board-num": str(boards),
                "miner-sn": f"SIM{miner.seed:030d}",
            },
            "network": {"hostname": "WhatsMiner", "ip": self.member.host},
            "power": {"fanspeed": 6344, "model": "P221B"},
            "salt": state.v3_salt,
            "system": {
                "api": "3.0.1",
                "apiswitch": "1" if state.write_api else "0",
                "fwversion": state.firmware,
                "ledstatus": "auto",
                "platform": "H616",
            },
        }

    def _summary(self, replies: dict[str, Any], now: float) -> dict[str, Any]:
        miner = self.miner
        entries = _entries(replies.get("summary"), "SUMMARY")
        s = entries[0] if entries else {}
        hashing = miner.hashrate_hs(now) > 0
        chip_max, chip_min, chip_avg = _chip_temps(miner, miner.flavour.device_temp_c, now)

        def th(key: str) -> float:
            value = s.get(key)
            return round(float(value) / 1e6, 3) if isinstance(value, int | float) else 0.0

        return {
            "elapsed": s.get("Elapsed", 0),
            "hash-realtime": th("MHS 5s"),
            "hash-1min": th("MHS 1m"),
            "hash-15min": th("MHS 15m"),
            "hash-average": th("MHS av"),
            "fan-speed-in": 5400 if hashing else 0,
            "fan-speed-out": 5280 if hashing else 0,
            "chip-temp-max": chip_max,
            "chip-temp-min": chip_min,
            "chip-temp-avg": chip_avg,
            "environment-temperature": 28.5,
            "power-realtime": 3156.0 if hashing else 15.0,
            "power-limit": 3600,
            "factory-hash": round(miner.flavour.device_hs * 3 / 1e12, 3),
            "freq-avg": 625,
        }

    def _board(self, entry: dict[str, Any], now: float) -> dict[str, Any]:
        board_c = float(entry.get("Temperature") or 0.0)
        chip_max, chip_min, chip_avg = _chip_temps(self.miner, board_c, now)

        def th(key: str) -> float:
            value = entry.get(key)
            return round(float(value) / 1e6, 3) if isinstance(value, int | float) else 0.0

        status = str(entry.get("Status", "")).lower()
        return {
            "id": entry.get("ASC", entry.get("ID")),
            "status": status,
            "hash-realtime": th("MHS 5s"),
            "hash-average": th("MHS av"),
            "chip-temp-max": chip_max,
            "chip-temp-min": chip_min,
            "chip-temp-avg": chip_avg,
            "effective-chips": 0 if status == "dead" else 75,
            "freq": 625.0,
            "factory-hash": round(self.miner.flavour.device_hs / 1e12, 3),
        }


class ClosedApiPort(ControlServer):
    """The cgminer API port of firmware that serves only API v3: bound, never listening,
    so connections are refused (the port number stays the member's)."""

    def __init__(self, member: FleetMember, fleet: Fleet) -> None:
        super().__init__(member, fleet)
        self._sock: socket.socket | None = None

    async def start(self, host: str, port: int) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self._sock = sock
        bound: int = sock.getsockname()[1]
        return bound

    async def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


WHATSMINER: Final[Flavour] = add_flavour(
    replace(
        FLAVOURS["cgminer"],
        name="whatsminer",
        firmware="whatsminer",
        description="cgminer 4.9.2",
        program="CGMiner",
        version=(("CGMiner", "4.9.2"), ("API", "3.7")),
        device_driver="SM",
        device_dname="bitmicro",
        device_model="Whatsminer M20S",
        device_hs=22.7e12,
        device_temp_c=70.0,
        pool_difficulty=65536.0,
        api_write_access=False,
        reboot_downtime_s=60.0,
        api_hook=_v2_hook,
    )
)
"""btminer with API v2 (firmware before 2024-11), like the M20S capture."""

WHATSMINER_V3: Final[Flavour] = add_flavour(
    replace(
        WHATSMINER,
        name="whatsminer-v3",
        device_model="Whatsminer M60S",
        device_hs=57e12,
        api_hook=None,
        api_server=ClosedApiPort,
        control=WhatsminerV3Server,
    )
)
"""btminer firmware after 2024-11: API v3 only, the cgminer API port refusing."""
