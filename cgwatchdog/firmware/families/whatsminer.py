"""Whatsminer (MicroBT btminer): encrypted API v2 on the API port, API v3 on port 4433.

**Recognised** by the SUMMARY keys only btminer sends (``Factory GHS``, ``Power Mode``,
``Firmware Version``, ``Chip Temp Max``, ``Power_RT``, ...: three or more of them; the
field capture of an M20S on 20200917.22.REL describes itself as ``cgminer 4.9.2``), or by
``btminer``/``bitmicro``/``whatsminer`` in its identity (the API v3 reader below names it
``btminer``). Score 20, a vendor's stock firmware. The firmware version is the SUMMARY's
``Firmware Version`` (btminer quotes it: ``'20200917.22.REL'``).

**Which API.** Firmware dated after 2024-11 (the ``YYYYMMDD`` that starts its version)
speaks API v3 on port 4433 and its v2 is broken (pyasic
``pyasic/miners/backends/btminer.py:33-58``, threshold at ``:49``; maintainer in
pyasic#363; port 4433 in hass-miner#405). The channel asks the API port's plaintext
``get_version`` (``Msg.fw_ver``) and uses v3 for a date from 2024-11-01 on, or when the
API port refuses or answers nothing readable; v2 otherwise (an old firmware without
``get_version`` included). The answer is remembered per miner for ten minutes (the
reader below also keeps it current from the SUMMARY's ``Firmware Version``).
``control_port`` (default 4433) is API v3's port; API v2 always uses the API port.

**Reads.** A miner configured ``firmware: whatsminer`` is read through this family's
reader: the cgminer API (``summary+devs+pools``) while it answers, else API v3 ``get.*``
commands (4-byte little-endian length, then JSON, both ways: pyasic
``pyasic/rpc/btminer.py:1210-1211, 1268-1279``; asic-rs ``v3/rpc.rs:306-316``), turned
into cgminer-shaped replies: ``get.miner.status`` ``summary`` -> SUMMARY (``elapsed`` ->
``Elapsed``; ``hash-realtime``/``hash-1min``/``hash-15min``/``hash-average`` in TH/s ->
``MHS 5s``/``MHS 1m``/``MHS 15m``/``MHS av``; ``fan-speed-in``/``-out`` -> ``Fan Speed
In``/``Out``; ``chip-temp-max``/``-min``/``-avg`` -> ``Chip Temp Max``/...;
``environment-temperature`` -> ``Env Temp``; ``power-realtime`` -> ``Power``;
``power-limit`` -> ``Power Limit``; ``factory-hash`` -> ``Factory GHS``), ``edevs`` ->
DEVS (``id``, ``status``, ``hash-realtime``/``hash-average``, chip temperatures,
``freq``, ``effective-chips``), ``pools`` -> POOLS (``url``, ``account``, ``status``,
``pool-priority``, ``stratum-active``; ``accepted``/``rejected``/``stale`` if present),
``get.device.info`` -> VERSION (``system.fwversion`` as ``BTMiner``, ``system.api``,
``miner.type``). Field names are those of asic-rs's v3 test replies
(``asic-rs-firmwares/whatsminer/src/test/json/v3/``) and the fields pyasic and asic-rs
read (``backends/btminer.py`` ``BTMinerV3``; ``v3/mod.rs`` data locations); the units
(TH/s) are theirs. **Unverified against hardware here**: that ``hash-realtime`` is a
short window, whether pools carry share counters, and that ``get.miner.status`` answers
while mining is stopped. A miner whose API port refuses is found only when configured
``firmware: whatsminer`` (the poller looks for other read paths only where the API port
answers something that is not the API).

**Control, API v2** (WMDOC = MicroBT "Whatsminer API V2.0.5", §1-2; pyasic
``pyasic/rpc/btminer.py``; asic-rs ``v2/rpc.rs``): writes need the write API enabled in
WhatsMinerTool (change the admin password from its default, then enable the API), else
the miner answers "can't access write cmd" (``rpc/btminer.py:297``): WriteDisabled.
Authentication: ``get_token`` (Code 134) gives ``time``, ``salt``, ``newsalt``;
``host_passwd_md5`` = hash part of md5-crypt(password, salt) (``openssl passwd -1``),
``host_sign`` = hash part of md5-crypt(host_passwd_md5 + time, newsalt), AES key =
sha256(host_passwd_md5) (the 32-byte digest) (``rpc/btminer.py:99-207, 354-398``). The
command is JSON with ``"cmd"`` and ``"token": host_sign``, zero-padded to 16 bytes,
AES-256-ECB, base64, sent as ``{"enc": 1, "data": ...}``; the reply is ``{"enc": ...}``
(decrypted with the same key) or a plaintext error. One client address gets 32 tokens,
each kept 30 minutes (WMDOC "Protocol"): the token is kept per miner for 25 minutes in
this process (never logged) and renewed once when the miner answers Code 135 "check
token error" to a kept one; a fresh token refused means a wrong password: AuthFailed.
Code 136 "token over max times": SessionBusy. Success is STATUS S, Code 131 "API command
OK".

- restart: ``restart_btminer`` (``rpc/btminer.py:483-494``).
- reboot: ``reboot`` (``:638-653``); the miner usually drops the connection first
  (asic-rs PR #68): Unconfirmed, and verification watches it come back.
- switchpool: ``update_pools`` with ``pool1..3``/``worker1..3``/``passwd1..3``
  (``:435-480``): the polled pools, the target first and the rest by priority. The pools
  reply never carries passwords: without ``credentials.pool_password`` this is refused.
- sleep / wake: ``power_off`` (``respbefore`` ``"true"``) / ``power_on``: hashing stops,
  the control board stays up (WMDOC V2.0.4 §2.3-2.4; ``rpc/btminer.py:496-526``).
- disable / enable one board: not in the API (none found in the doc, pyasic or asic-rs).
- access check: a token plus an encrypted ``get_version`` (readable commands may be sent
  encrypted, WMDOC §2.1): proves the password; whether the write API is on shows only
  at the first write.

**Control, API v3** (pyasic ``rpc/btminer.py:1177-1211``; asic-rs ``v3/rpc.rs``; matroskin
crate docs): ``set.*`` commands carry ``ts`` (unix seconds), ``account`` (``super``) and
``token`` = the first 8 characters of base64(sha256(cmd + password + salt + ts)), the
salt from ``get.device.info`` ``msg.salt`` (kept 25 minutes, fetched again once when a
kept one is refused). Factory default ``super``/``super``. Success: ``code`` 0, ``msg``
"ok" (matroskin ``set.system.reboot.md``).

- restart: ``set.miner.service`` ``restart``; sleep / wake: ``set.miner.service``
  ``stop`` / ``start`` (pyasic ``backends/btminer.py:988-1016``, asic-rs ``v3/mod.rs``
  pause/resume; matroskin lists restart/start/stop/enable/disable). No v3 power-off of
  the boards alone was found.
- reboot: ``set.system.reboot`` (matroskin: hardware-verified); often no answer
  (asic-rs ``v3/mod.rs:720-724``): Unconfirmed.
- switchpool: ``set.miner.pools`` with the param AES-256-ECB encrypted under the
  token's raw sha256 digest, zero-padded, base64 (asic-rs ``v3/rpc.rs:31-43, 280-283``;
  a third-party client pads PKCS#7 instead: which one the firmware takes is unverified),
  ``[{"pool", "worker", "passwd"}, ...]`` (asic-rs ``v3/mod.rs:695-710``).
- access check: the salt fetch only (v3 has no harmless authenticated command).
- **Unverified against hardware**: which ``code``/``msg`` a wrong token or a disabled
  API gives (a ``msg`` naming the token, password or account is taken for AuthFailed; one
  naming permission or the API switch for WriteDisabled), and everything of v3 but
  ``set.system.reboot``.

**Verification**: restart and reboot by ``Elapsed`` going down and the condition
clearing; switchpool by the active pool; sleep by the hashrate near 0, wake by hashing
again. Replies to reboots are never trusted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, NoReturn

from cgwatchdog.client import AsyncCgminerAPI
from cgwatchdog.errors import (
    ActionError,
    AuthFailed,
    CommandError,
    ConnectionRefused,
    ConnectionReset,
    ConnectTimeout,
    FailureKind,
    HostNotFound,
    MinerUnreachable,
    NotSent,
    NotSupported,
    ProtocolError,
    ReadTimeout,
    SessionBusy,
    Unconfirmed,
    WriteDisabled,
)
from cgwatchdog.firmware.base import (
    BASE_COMMANDS,
    ActionRequest,
    Channel,
    ChannelTarget,
    Family,
    Identity,
    Reader,
    firmware_family,
)
from cgwatchdog.firmware.families._md5crypt import md5_crypt_hash
from cgwatchdog.protocol import MAX_REPLY_BYTES, decode_reply, encode_request
from cgwatchdog.snapshot import Pool, Snapshot

__all__ = [
    "V3_FIRMWARE_SINCE",
    "Whatsminer",
    "WhatsminerChannel",
    "WhatsminerReader",
    "aes_ecb_decrypt",
    "aes_ecb_encrypt",
    "firmware_date",
    "forget_sessions",
    "speaks_v3",
    "v3_request",
]

V3_FIRMWARE_SINCE: Final = (2024, 11, 1)
"""The first firmware date read as API v3 (pyasic: a version after 2024-11-00)."""
V3_PORT: Final = 4433
V2_DEFAULT_PASSWORD: Final = "admin"
V3_DEFAULT_ACCOUNT: Final = "super"
V3_DEFAULT_PASSWORD: Final = "super"
TOKEN_LIFETIME_S: Final = 25 * 60.0
"""The miner keeps a v2 token 30 minutes (WMDOC): renew it before it lapses."""
API_CHOICE_LIFETIME_S: Final = 600.0
"""How long the v2/v3 choice for a miner is kept (a firmware upgrade changes it)."""
MAX_V3_REPLY_BYTES: Final = MAX_REPLY_BYTES

CODE_CHECK_TOKEN: Final = 135
CODE_TOKEN_QUOTA: Final = 136
CODE_PERMISSION: Final = 45
CODE_INVALID_JSON: Final = 23

# Keys only btminer's SUMMARY carries (the M20S field capture; asic-rs's v2 test replies).
_SUMMARY_KEYS: Final = frozenset(
    {
        "Factory GHS", "Power Mode", "Firmware Version", "CB Platform", "CB Version",
        "Chip Temp Max", "Chip Data", "Power_RT", "Security Mode", "Hash Stable",
        "Power Fanspeed", "Liquid Cooling", "Target MHS", "Env Temp", "HS RT",
        "Power Limit", "Error Code Count",
    }
)  # fmt: skip
_NAMES: Final = ("btminer", "bitmicro", "whatsminer")
_DATE_RE: Final = re.compile(r"[\s'\"]*(\d{4})(\d{2})(\d{2})")
_V3_DESCRIPTION: Final = "btminer (API v3)"
_WRITE_DISABLED_MSG: Final = "can't access write cmd"
_V2_FIX: Final = (
    "enable the write API in WhatsMinerTool: change the admin password from its default, "
    "then enable the API"
)
_V3_FIX: Final = "enable the API (API switch) for the account in WhatsMinerTool"
_TH_TO_MH: Final = 1e6
_TH_TO_GH: Final = 1e3

WHY_POOL_PASSWORD: Final = (
    "the miner's replies never carry pool passwords; set credentials.pool_password"
)
WHY_NO_BOARD: Final = (
    "the Whatsminer API has no per-board command (power_off/power_on act on the whole "
    "miner: use sleep/wake)"
)


# -- firmware dates --------------------------------------------------------------------


def firmware_date(version: str | None) -> tuple[int, int, int] | None:
    """(2025, 3, 21) from ``20250321.14.Rel`` (btminer's quotes are ignored); None if
    the version does not start with a date."""
    if not version:
        return None
    match = _DATE_RE.match(version)
    if match is None:
        return None
    year, month, day = (int(part) for part in match.groups())
    if not (2000 <= year <= 2100 and 1 <= month <= 12 and 1 <= day <= 31):
        return None
    return year, month, day


def speaks_v3(version: str | None) -> bool:
    """Whether firmware ``version`` is new enough to be controlled through API v3."""
    date = firmware_date(version)
    return date is not None and date >= V3_FIRMWARE_SINCE


def _clean_version(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip().strip("'\"").strip()
    return text or None


# -- crypto -----------------------------------------------------------------------------


def aes_ecb_encrypt(key: bytes, plaintext: bytes) -> str:
    """AES-256-ECB of ``plaintext`` zero-padded to 16 bytes, as base64 (no newlines):
    Whatsminer's envelope (v2 commands, the v3 pools param)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    padded = plaintext + b"\0" * (-len(plaintext) % 16)
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def aes_ecb_decrypt(key: bytes, text: str) -> bytes:
    """The plaintext of :func:`aes_ecb_encrypt` without its zero padding; ValueError
    when ``text`` is not base64 of whole blocks."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    raw = base64.b64decode(text, validate=False)
    if not raw or len(raw) % 16:
        raise ValueError("not whole AES blocks")
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return (decryptor.update(raw) + decryptor.finalize()).rstrip(b"\0")


def _v2_session(password: str, time_text: str, salt: str, newsalt: str) -> tuple[str, bytes]:
    """(host_sign, AES key) for one v2 token."""
    host_passwd_md5 = md5_crypt_hash(password, salt)
    host_sign = md5_crypt_hash(host_passwd_md5 + time_text, newsalt)
    return host_sign, hashlib.sha256(host_passwd_md5.encode("ascii")).digest()


def _v3_token(command: str, password: str, salt: str, ts: int) -> tuple[str, bytes]:
    """(token, raw sha256 digest) of one v3 ``set.*`` command."""
    digest = hashlib.sha256(f"{command}{password}{salt}{ts}".encode()).digest()
    return base64.b64encode(digest).decode("ascii")[:8], digest


# -- what this process keeps per miner --------------------------------------------------


@dataclass(frozen=True, slots=True)
class _V2Token:
    sign: str = field(repr=False)
    key: bytes = field(repr=False)
    obtained_at: float


@dataclass(frozen=True, slots=True)
class _Kept:
    value: str = field(repr=False)
    at: float


_V2_TOKENS: dict[tuple[str, int, str], _V2Token] = {}
_V3_SALTS: dict[tuple[str, int], _Kept] = {}
_API_CHOICE: dict[tuple[str, int], tuple[int, float]] = {}


def forget_sessions() -> None:
    """Drop every kept token, salt and v2/v3 choice (tests; a changed fleet)."""
    _V2_TOKENS.clear()
    _V3_SALTS.clear()
    _API_CHOICE.clear()


def _known_api(host: str, port: int) -> int | None:
    known = _API_CHOICE.get((host, port))
    if known is None or time.monotonic() - known[1] >= API_CHOICE_LIFETIME_S:
        return None
    return known[0]


def _remember_api(host: str, port: int, api: int) -> None:
    _API_CHOICE[(host, port)] = (api, time.monotonic())


# -- API v3 framing ---------------------------------------------------------------------


async def v3_request(
    host: str,
    port: int,
    payload: Mapping[str, Any],
    *,
    timeout_s: float,
    connect_timeout_s: float,
    max_bytes: int = MAX_V3_REPLY_BYTES,
) -> dict[str, Any]:
    """One API v3 exchange (4-byte little-endian length + JSON, both ways) on its own
    connection; the client's typed errors (MinerUnreachable's kinds, ProtocolError)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    try:
        async with asyncio.timeout(connect_timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        raise ConnectTimeout(host, port, f"no connection within {connect_timeout_s:g}s") from None
    except ConnectionRefusedError:
        raise ConnectionRefused(
            host, port, "connection refused: no Whatsminer API v3 here (is the port right?)"
        ) from None
    except socket.gaierror as exc:
        raise HostNotFound(host, port, f"cannot resolve host: {exc.strerror}") from None
    except OSError as exc:
        raise MinerUnreachable(host, port, exc.strerror or str(exc)) from None
    got_header = False
    try:
        async with asyncio.timeout(timeout_s):
            writer.write(struct.pack("<I", len(body)) + body)
            await writer.drain()
            header = await reader.readexactly(4)
            got_header = True
            (length,) = struct.unpack("<I", header)
            if length > max_bytes:
                # e.g. b"Sock": btminer's plain "Socket connect failed" text on 4433.
                raise ProtocolError(f"not an API v3 reply (it starts {header!r})")
            data = await reader.readexactly(length)
    except TimeoutError:
        raise ReadTimeout(host, port, f"no complete API v3 reply within {timeout_s:g}s") from None
    except asyncio.IncompleteReadError:
        reason = "closed mid-reply" if got_header else "closed without answering"
        raise ConnectionReset(host, port, reason) from None
    except (ConnectionResetError, BrokenPipeError):
        raise ConnectionReset(host, port, "connection reset") from None
    except OSError as exc:
        raise ConnectionReset(host, port, exc.strerror or str(exc)) from None
    finally:
        writer.close()
    try:
        reply = json.loads(data)
    except ValueError:
        raise ProtocolError("API v3 reply is not JSON") from None
    if not isinstance(reply, dict):
        raise ProtocolError("API v3 reply is not a JSON object")
    return reply


def _v3_status(
    command: str, code: int, msg: str, when: object, section: str, entries: list[dict[str, Any]]
) -> dict[str, Any]:
    status = {
        "STATUS": "S",
        "When": when if isinstance(when, int) else 0,
        "Code": code,
        "Msg": msg,
        "Description": _V3_DESCRIPTION,
    }
    return {"STATUS": [status], section: entries, "id": 1}


def _put(out: dict[str, Any], key: str, value: object, scale: float = 1.0) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    out[key] = value * scale if scale != 1.0 else value


def _status_word(value: object) -> str:
    return value.strip().capitalize() if isinstance(value, str) and value.strip() else "Unknown"


def v3_summary_reply(
    summary: Mapping[str, Any], device: Mapping[str, Any] | None, when: object
) -> dict[str, Any]:
    """``get.miner.status`` ``summary`` (and ``get.device.info``) as a cgminer SUMMARY."""
    entry: dict[str, Any] = {}
    _put(entry, "Elapsed", summary.get("elapsed"))
    for v3_key, key in (
        ("hash-realtime", "MHS 5s"), ("hash-1min", "MHS 1m"), ("hash-15min", "MHS 15m"),
        ("hash-average", "MHS av"),
    ):  # fmt: skip
        _put(entry, key, summary.get(v3_key), _TH_TO_MH)
    for v3_key, key in (
        ("fan-speed-in", "Fan Speed In"), ("fan-speed-out", "Fan Speed Out"),
        ("chip-temp-max", "Chip Temp Max"), ("chip-temp-min", "Chip Temp Min"),
        ("chip-temp-avg", "Chip Temp Avg"), ("environment-temperature", "Env Temp"),
        ("power-realtime", "Power"), ("power-limit", "Power Limit"), ("freq-avg", "freq_avg"),
    ):  # fmt: skip
        _put(entry, key, summary.get(v3_key))
    _put(entry, "Factory GHS", summary.get("factory-hash"), _TH_TO_GH)
    system = device.get("system") if device is not None else None
    if isinstance(system, Mapping):
        version = _clean_version(system.get("fwversion"))
        if version is not None:
            entry["Firmware Version"] = version
    return _v3_status("summary", 11, "Summary", when, "SUMMARY", [entry])


def v3_devs_reply(edevs: Sequence[Any], when: object) -> dict[str, Any]:
    """``get.miner.status`` ``edevs`` as cgminer DEVS (one ASC per hashboard)."""
    entries: list[dict[str, Any]] = []
    for position, board in enumerate(edevs):
        if not isinstance(board, Mapping):
            continue
        raw_id = board.get("id")
        board_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else position
        entry: dict[str, Any] = {
            "ASC": board_id, "ID": board_id, "Enabled": "Y",
            "Status": _status_word(board.get("status")),
        }  # fmt: skip
        _put(entry, "MHS 5s", board.get("hash-realtime"), _TH_TO_MH)
        _put(entry, "MHS av", board.get("hash-average"), _TH_TO_MH)
        for v3_key, key in (
            ("chip-temp-max", "Chip Temp Max"), ("chip-temp-min", "Chip Temp Min"),
            ("chip-temp-avg", "Chip Temp Avg"), ("freq", "Chip Frequency"),
            ("effective-chips", "Effective Chips"),
        ):  # fmt: skip
            _put(entry, key, board.get(v3_key))
        entries.append(entry)
    return _v3_status("devs", 9, f"{len(entries)} ASC(s)", when, "DEVS", entries)


def v3_pools_reply(pools: Sequence[Any], when: object) -> dict[str, Any]:
    """``get.miner.status`` ``pools`` as cgminer POOLS."""
    entries: list[dict[str, Any]] = []
    for position, pool in enumerate(pools):
        if not isinstance(pool, Mapping):
            continue
        entry: dict[str, Any] = {
            "POOL": position,
            "URL": pool.get("url") if isinstance(pool.get("url"), str) else "",
            "User": pool.get("account") if isinstance(pool.get("account"), str) else "",
            "Status": _status_word(pool.get("status")),
            "Stratum Active": pool.get("stratum-active") is True,
        }
        _put(entry, "Priority", pool.get("pool-priority"))
        for v3_key, key in (("accepted", "Accepted"), ("rejected", "Rejected"), ("stale", "Stale")):
            _put(entry, key, pool.get(v3_key))
        entries.append(entry)
    return _v3_status("pools", 7, f"{len(entries)} Pool(s)", when, "POOLS", entries)


def v3_version_reply(device: Mapping[str, Any], when: object) -> dict[str, Any]:
    """``get.device.info`` as a cgminer VERSION (firmware as ``BTMiner``, API, model)."""
    entry: dict[str, Any] = {}
    system = device.get("system")
    miner = device.get("miner")
    if isinstance(system, Mapping):
        version = _clean_version(system.get("fwversion"))
        if version is not None:
            entry["BTMiner"] = version
        if isinstance(system.get("api"), str):
            entry["API"] = system["api"]
        if isinstance(system.get("platform"), str):
            entry["Platform"] = system["platform"]
    if isinstance(miner, Mapping) and isinstance(miner.get("type"), str):
        entry["Type"] = miner["type"]
    return _v3_status("version", 22, "BTMiner versions", when, "VERSION", [entry])


# -- the family -------------------------------------------------------------------------


@firmware_family
class Whatsminer(Family):
    """Whatsminer stock firmware (MicroBT btminer), API v2 and v3."""

    name = "whatsminer"
    title = "Whatsminer (MicroBT btminer)"
    channel_title = (
        "Whatsminer API v2 (encrypted commands on the API port); API v3 on port 4433 for "
        "firmware from 2024-11"
    )
    auth_title = (
        "v2: the admin password (md5-crypt token, AES-256-ECB; write API enabled in "
        "WhatsMinerTool); v3: account and password (sha256 token); factory defaults "
        "admin / super:super"
    )
    control_port = V3_PORT
    default_user = V3_DEFAULT_ACCOUNT
    default_password = V2_DEFAULT_PASSWORD
    restart_window_s = 180.0
    reboot_window_s = 600.0
    unsupported: ClassVar[Mapping[str, str]] = {"disable": WHY_NO_BOARD, "enable": WHY_NO_BOARD}
    verification = (
        "restart/reboot: Elapsed went down and the condition cleared; switchpool: the "
        "active pool changed; sleep: hashrate near 0; wake: hashing again"
    )

    def recognise(self, identity: Identity) -> int:
        text = identity.text()
        if any(name in text for name in _NAMES):
            return 20
        return 20 if len(_SUMMARY_KEYS.intersection(identity.summary)) >= 3 else 0

    def firmware_version(self, identity: Identity) -> str | None:
        for entry, key in (
            (identity.summary, "Firmware Version"), (identity.version, "BTMiner"),
            (identity.version, "fw_ver"), (identity.version, "Firmware Version"),
        ):  # fmt: skip
            version = _clean_version(entry.get(key))
            if version is not None:
                return version
        return identity.fork

    def poll_commands(self, snapshot: Snapshot, without_stats: Snapshot | None) -> tuple[str, ...]:
        # Fans and temperatures are in btminer's SUMMARY and DEVS: no stats needed.
        return BASE_COMMANDS

    needs_pool_password = True

    def pool_password_missing(self, miner: str) -> str:
        return WHY_POOL_PASSWORD

    def reader(self, target: ChannelTarget) -> Reader | None:
        return WhatsminerReader(target)

    def channel(self, target: ChannelTarget) -> Channel:
        return WhatsminerChannel(self, target)


# -- reads ------------------------------------------------------------------------------


class WhatsminerReader(Reader):
    """The cgminer API while it answers, else API v3 ``get.*`` as cgminer-shaped replies."""

    def __init__(self, target: ChannelTarget) -> None:
        self.target = target
        self.api = AsyncCgminerAPI(
            target.host,
            target.api_port,
            timeout=target.timeout_s,
            connect_timeout=target.connect_timeout_s,
        )
        self._device: Mapping[str, Any] | None = None
        self._v3_only = False
        """The API port refused and API v3 answered: read through v3 until it fails."""

    async def read(self, commands: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        t = self.target
        if self._v3_only:
            try:
                return await self._read_v3(commands)
            except (MinerUnreachable, ProtocolError, CommandError):
                self._v3_only = False  # next time the API port is tried first again
                raise
        try:
            replies = await self.api.multi(commands)
        except (ConnectionRefused, ConnectionReset, ProtocolError) as exc:
            v2_error = exc  # the API port of new firmware: refused, or not the API
        else:
            self._note_firmware(replies)
            return replies
        try:
            replies = await self._read_v3(commands)
        except (MinerUnreachable, ProtocolError, CommandError):
            raise v2_error from None
        self._v3_only = True
        _remember_api(t.host, t.api_port, 3)
        return replies

    def _note_firmware(self, replies: Mapping[str, Any]) -> None:
        summary = replies.get("summary")
        entries = summary.get("SUMMARY") if isinstance(summary, Mapping) else None
        if isinstance(entries, list) and entries and isinstance(entries[0], Mapping):
            version = _clean_version(entries[0].get("Firmware Version"))
            if firmware_date(version) is not None:
                _remember_api(
                    self.target.host, self.target.api_port, 3 if speaks_v3(version) else 2
                )

    async def _get(self, command: str, param: str | None = None) -> tuple[Any, object]:
        t = self.target
        payload: dict[str, Any] = {"cmd": command}
        if param is not None:
            payload["param"] = param
        reply = await v3_request(
            t.host, t.control_port, payload,
            timeout_s=t.timeout_s, connect_timeout_s=t.connect_timeout_s,
        )  # fmt: skip
        code = reply.get("code")
        if code != 0:
            msg = reply.get("msg")
            raise CommandError(
                command if param is None else f"{command} {param}",
                code if isinstance(code, int) else None,
                msg if isinstance(msg, str) else json.dumps(msg),
            )
        return reply.get("msg"), reply.get("when")

    async def _read_v3(self, commands: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if "version" in commands or self._device is None:
            device, when = await self._get("get.device.info")
            if not isinstance(device, Mapping):
                raise ProtocolError("get.device.info answered without its msg object")
            self._device = device
            if "version" in commands:
                out["version"] = v3_version_reply(device, when)
        for command, param, section in (
            ("summary", "summary", "summary"), ("devs", "edevs", "edevs"),
            ("pools", "pools", "pools"),
        ):  # fmt: skip
            if command not in commands:
                continue
            msg, when = await self._get("get.miner.status", param)
            body = msg.get(section) if isinstance(msg, Mapping) else None
            if command == "summary":
                if not isinstance(body, Mapping):
                    raise ProtocolError("get.miner.status summary answered without a summary")
                out[command] = v3_summary_reply(body, self._device, when)
            elif command == "devs":
                out[command] = v3_devs_reply(body if isinstance(body, list) else [], when)
            else:
                out[command] = v3_pools_reply(body if isinstance(body, list) else [], when)
        return out


# -- control ----------------------------------------------------------------------------


class _TokenRefused(Exception):
    """The miner refused the token or could not read the command (internal)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Flat:
    letter: str
    code: int | None
    msg: str


def _flat_status(reply: Mapping[str, Any]) -> _Flat:
    """btminer's flat STATUS (``{"STATUS":"S","Code":131,"Msg":...}``), or cgminer's list."""
    status: Any = reply.get("STATUS")
    code: Any = reply.get("Code")
    msg: Any = reply.get("Msg")
    if isinstance(status, list) and status and isinstance(status[0], Mapping):
        entry = status[0]
        status, code, msg = entry.get("STATUS"), entry.get("Code"), entry.get("Msg")
    return _Flat(
        status if isinstance(status, str) else "?",
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        msg if isinstance(msg, str) else "" if msg is None else json.dumps(msg),
    )


class WhatsminerChannel(Channel):
    """API v2's encrypted commands, or API v3's signed ``set.*`` commands."""

    # -- the protocol choice ------------------------------------------------------------

    async def api_version(self) -> int:
        """2 or 3: which API this miner is controlled through (see the module's doc)."""
        t = self.target
        known = _known_api(t.host, t.api_port)
        if known is not None:
            return known
        api = AsyncCgminerAPI(
            t.host, t.api_port, timeout=t.timeout_s, connect_timeout=t.connect_timeout_s
        )
        try:
            decoder = await api.exchange(encode_request("get_version"))
            reply = decoder.reply() if decoder.size else None
        except (ConnectionRefused, ConnectionReset, ReadTimeout, ProtocolError):
            return 3  # the API port of new firmware; not kept: a rebooting miner refuses too
        except MinerUnreachable as exc:
            raise NotSent(f"{t.name}: {exc}; nothing was sent") from None
        if reply is None:
            return 3
        msg = reply.get("Msg")
        version = _clean_version(msg.get("fw_ver")) if isinstance(msg, Mapping) else None
        choice = 3 if speaks_v3(version) else 2  # no get_version: old firmware, v2
        _remember_api(t.host, t.api_port, choice)
        return choice

    # -- actions ------------------------------------------------------------------------

    async def perform(self, request: ActionRequest) -> str:
        do = request.do
        if do in ("disable", "enable") or do not in _V2_COMMANDS:
            raise self.not_supported(request)
        pools = self._pools_for(request) if do == "switchpool" else []
        if await self.api_version() == 3:
            return await self._perform_v3(do, pools, request.pool)
        return await self._perform_v2(do, pools, request.pool)

    async def check_access(self) -> str:
        if await self.api_version() == 3:
            await self._v3_salt(fresh=True)
            return (
                "API v3 answers (salt fetched); the password is proven only by a command: "
                "API v3 has no harmless authenticated call"
            )
        receipt = await self._v2_command("get_version", {}, "get_version")
        return f"API v2 token and key accepted: encrypted {receipt}"

    def _pools_for(self, request: ActionRequest) -> list[Pool]:
        """The polled pools, ``request.pool`` first and the rest by priority (at most 3)."""
        if self.target.pool_password is None:
            raise NotSupported(f"not supported by whatsminer: {WHY_POOL_PASSWORD}")
        if request.pool is None:
            raise ActionError("switchpool needs the pool to switch to")
        wanted = [pool for pool in request.pools if pool.id == request.pool]
        if not wanted:
            raise ActionError(
                f"{self.target.name}: pool {request.pool} is not among the pools as polled; "
                "nothing sent"
            )
        rest = sorted(
            (pool for pool in request.pools if pool is not wanted[0]),
            key=lambda pool: pool.priority,
        )
        return [wanted[0], *rest][:3]

    # -- API v2 -------------------------------------------------------------------------

    def _v2_password(self) -> str:
        t = self.target
        if t.default_password or t.password is None:
            return V2_DEFAULT_PASSWORD
        return t.password

    def _token_key(self) -> tuple[str, int, str]:
        return self.target.host, self.target.api_port, "admin"

    async def _perform_v2(self, do: str, pools: Sequence[Pool], target_pool: int | None) -> str:
        command = _V2_COMMANDS[do]
        params: dict[str, str] = {}
        what = command
        if do == "sleep":
            params["respbefore"] = "true"
        elif do == "switchpool":
            password = self.target.pool_password or ""
            for slot in range(1, 4):
                pool = pools[slot - 1] if slot <= len(pools) else None
                params[f"pool{slot}"] = pool.url if pool is not None else ""
                params[f"worker{slot}"] = pool.user if pool is not None else ""
                params[f"passwd{slot}"] = password if pool is not None else ""
            what = f"{command} (pool {target_pool} first: {pools[0].url})"
        return await self._v2_command(command, params, what)

    async def _v2_command(self, command: str, params: Mapping[str, str], what: str) -> str:
        """One encrypted command; a kept token the miner refuses is renewed once."""
        token, fresh = await self._v2_token(fresh=False)
        try:
            return await self._v2_encrypted(token, command, params, what)
        except _TokenRefused as refused:
            _V2_TOKENS.pop(self._token_key(), None)
            if fresh:
                raise self._v2_auth_failed(refused.detail) from None
        token, _ = await self._v2_token(fresh=True)
        try:
            return await self._v2_encrypted(token, command, params, what)
        except _TokenRefused as refused:
            _V2_TOKENS.pop(self._token_key(), None)
            raise self._v2_auth_failed(refused.detail) from None

    async def _v2_token(self, *, fresh: bool) -> tuple[_V2Token, bool]:
        """A token: the one kept for this miner, or a new one (then True)."""
        t = self.target
        key = self._token_key()
        kept = _V2_TOKENS.get(key)
        if (
            not fresh
            and kept is not None
            and time.monotonic() - kept.obtained_at < TOKEN_LIFETIME_S
        ):
            return kept, False
        reply = await self._v2_exchange({"command": "get_token"}, "get_token", changes=False)
        status = _flat_status(reply)
        if status.letter != "S":
            self._v2_refusal(status, "get_token")
        msg = reply.get("Msg")
        parts = (
            [msg.get(name) for name in ("time", "salt", "newsalt")]
            if isinstance(msg, Mapping)
            else []
        )
        if len(parts) != 3 or not all(isinstance(part, str) and part for part in parts):
            raise ActionError(f"{t.name}: get_token answered without time, salt and newsalt")
        sign, aes_key = _v2_session(
            self._v2_password(), str(parts[0]), str(parts[1]), str(parts[2])
        )
        token = _V2Token(sign, aes_key, time.monotonic())
        _V2_TOKENS[key] = token
        return token, True

    async def _v2_encrypted(
        self, token: _V2Token, command: str, params: Mapping[str, str], what: str
    ) -> str:
        plaintext = json.dumps(
            {"cmd": command, **params, "token": token.sign}, separators=(",", ":")
        ).encode()
        envelope = {"enc": 1, "data": aes_ecb_encrypt(token.key, plaintext)}
        reply = await self._v2_exchange(envelope, what, changes=command != "get_version")
        sealed = reply.get("enc")
        if isinstance(sealed, str):
            try:
                reply = decode_reply(aes_ecb_decrypt(token.key, sealed))
            except (ValueError, ProtocolError):
                raise _TokenRefused("its reply is sealed with another key") from None
        status = _flat_status(reply)
        if status.letter in ("S", "I"):
            return f"{what}: Code {status.code}, {status.msg or 'OK'}"
        if status.code in (CODE_CHECK_TOKEN, CODE_INVALID_JSON):
            raise _TokenRefused(f"Code {status.code}, {status.msg}")
        self._v2_refusal(status, what)

    def _v2_refusal(self, status: _Flat, what: str) -> NoReturn:
        """Raise the typed error for a v2 STATUS E."""
        name = self.target.name
        if _WRITE_DISABLED_MSG in status.msg.lower() or status.code == CODE_PERMISSION:
            raise WriteDisabled(
                f"{name}: the Whatsminer refused {what} (Code {status.code}, {status.msg!r}): "
                f"its write API is off; {_V2_FIX}"
            )
        if status.code == CODE_TOKEN_QUOTA:
            raise SessionBusy(
                f"{name}: the Whatsminer gives no more API tokens (Code 136, token over max "
                "times: 32 per client address per 30 minutes); retry later"
            )
        if status.code == CODE_CHECK_TOKEN:
            raise self._v2_auth_failed(f"Code {status.code}, {status.msg}")
        raise ActionError(f"{name}: {what} refused: Code {status.code}, {status.msg}")

    def _v2_auth_failed(self, detail: str) -> AuthFailed:
        name = self.target.name
        which = (
            "no password is configured and the factory default was refused"
            if self.target.default_password
            else "the configured admin password was refused"
        )
        return AuthFailed(
            f"{name}: the Whatsminer API v2 token check failed ({detail}): {which}; set "
            f"credentials.password_file for {name} to the miner's admin password"
        )

    async def _v2_exchange(
        self, payload: Mapping[str, Any], what: str, *, changes: bool
    ) -> dict[str, Any]:
        """Send one v2 request on the API port; the reply, decoded but unchecked."""
        t = self.target
        api = AsyncCgminerAPI(
            t.host, t.api_port, timeout=t.timeout_s, connect_timeout=t.connect_timeout_s
        )
        request = json.dumps(payload, separators=(",", ":")).encode()
        try:
            decoder = await api.exchange(request)
            if decoder.size == 0:
                raise ConnectionReset(t.host, t.api_port, "closed without answering")
            return decoder.reply()
        except MinerUnreachable as exc:
            if exc.sent and changes:
                raise Unconfirmed(
                    f"{t.name}: {what} sent, then {exc.reason} (Whatsminers often close the "
                    "connection as they reboot or restart): verification will tell"
                ) from None
            raise NotSent(f"{t.name}: {what}: {exc}; nothing was done") from None
        except ProtocolError as exc:
            if changes:
                raise Unconfirmed(f"{t.name}: {what} sent, unreadable answer: {exc}") from None
            raise NotSent(f"{t.name}: {what}: unreadable answer: {exc}; nothing was done") from None

    # -- API v3 -------------------------------------------------------------------------

    def _v3_credentials(self) -> tuple[str, str]:
        t = self.target
        account = t.user or V3_DEFAULT_ACCOUNT
        if t.default_password or t.password is None:
            return account, V3_DEFAULT_PASSWORD
        return account, t.password

    async def _perform_v3(self, do: str, pools: Sequence[Pool], target_pool: int | None) -> str:
        command, param = _V3_COMMANDS[do]
        if do != "switchpool":
            what = command if param is None else f"{command} {param}"
            return await self._v3_command(command, param, None, what)
        password = self.target.pool_password or ""
        secret = [{"pool": pool.url, "worker": pool.user, "passwd": password} for pool in pools]
        what = f"{command} (pool {target_pool} first: {pools[0].url})"
        return await self._v3_command(command, None, secret, what)

    async def _v3_salt(self, *, fresh: bool) -> tuple[str, bool]:
        t = self.target
        key = (t.host, t.control_port)
        kept = _V3_SALTS.get(key)
        if not fresh and kept is not None and time.monotonic() - kept.at < TOKEN_LIFETIME_S:
            return kept.value, False
        reply = await self._v3_exchange(
            {"cmd": "get.device.info", "param": "salt"}, "get.device.info", changes=False
        )
        msg = reply.get("msg")
        salt = msg.get("salt") if isinstance(msg, Mapping) else None
        if reply.get("code") != 0 or not isinstance(salt, str) or not salt:
            raise ActionError(
                f"{t.name}: get.device.info answered without a salt ({reply.get('msg')!r})"
            )
        _V3_SALTS[key] = _Kept(salt, time.monotonic())
        return salt, True

    async def _v3_command(
        self, command: str, param: str | None, secret: list[dict[str, str]] | None, what: str
    ) -> str:
        """One signed ``set.*`` command; a kept salt the miner refuses is fetched again once."""
        key = (self.target.host, self.target.control_port)
        salt, fresh = await self._v3_salt(fresh=False)
        try:
            return await self._v3_signed(command, param, secret, salt, what)
        except _TokenRefused as refused:
            _V3_SALTS.pop(key, None)
            if fresh:
                raise self._v3_auth_failed(refused.detail) from None
        salt, _ = await self._v3_salt(fresh=True)
        try:
            return await self._v3_signed(command, param, secret, salt, what)
        except _TokenRefused as refused:
            _V3_SALTS.pop(key, None)
            raise self._v3_auth_failed(refused.detail) from None

    async def _v3_signed(
        self,
        command: str,
        param: str | None,
        secret: list[dict[str, str]] | None,
        salt: str,
        what: str,
    ) -> str:
        account, password = self._v3_credentials()
        ts = int(time.time())
        token, digest = _v3_token(command, password, salt, ts)
        request: dict[str, Any] = {"cmd": command, "ts": ts, "token": token, "account": account}
        if secret is not None:
            plain = json.dumps(secret, separators=(",", ":")).encode()
            request["param"] = aes_ecb_encrypt(digest, plain)
        elif param is not None:
            request["param"] = param
        reply = await self._v3_exchange(request, what, changes=True)
        code = reply.get("code")
        msg = reply.get("msg")
        text = msg if isinstance(msg, str) else json.dumps(msg)
        if code == 0:
            return f"{what}: code 0, {text}"
        lowered = text.lower()
        if any(word in lowered for word in ("token", "password", "passwd", "account", "auth")):
            raise _TokenRefused(f"code {code}, {text}")
        if any(word in lowered for word in ("permission", "apiswitch", "api switch", "disabled")):
            raise WriteDisabled(
                f"{self.target.name}: the Whatsminer refused {what} (code {code}, {text!r}); "
                f"{_V3_FIX}"
            )
        raise ActionError(f"{self.target.name}: {what} refused: code {code}, {text}")

    def _v3_auth_failed(self, detail: str) -> AuthFailed:
        name = self.target.name
        which = (
            "no password is configured and the factory default (super) was refused"
            if self.target.default_password
            else "the configured account and password were refused"
        )
        return AuthFailed(
            f"{name}: the Whatsminer API v3 token check failed ({detail}): {which}; set "
            f"credentials.user and credentials.password_file for {name} (API v3 account, "
            "super by default)"
        )

    async def _v3_exchange(
        self, payload: Mapping[str, Any], what: str, *, changes: bool
    ) -> dict[str, Any]:
        t = self.target
        try:
            return await v3_request(
                t.host, t.control_port, payload,
                timeout_s=t.timeout_s, connect_timeout_s=t.connect_timeout_s,
            )  # fmt: skip
        except MinerUnreachable as exc:
            if exc.sent and changes:
                raise Unconfirmed(
                    f"{t.name}: {what} sent, then {exc.reason} (Whatsminers often close the "
                    "connection as they reboot or restart): verification will tell"
                ) from None
            if exc.kind is FailureKind.REFUSED:
                raise NotSent(
                    f"{t.name}: {what}: {exc} (API v3 listens on 4433 unless control_port "
                    "says otherwise); nothing was done"
                ) from None
            raise NotSent(f"{t.name}: {what}: {exc}; nothing was done") from None
        except ProtocolError as exc:
            if changes:
                raise Unconfirmed(f"{t.name}: {what} sent, unreadable answer: {exc}") from None
            raise NotSent(f"{t.name}: {what}: {exc}; nothing was done") from None


_V2_COMMANDS: Final[Mapping[str, str]] = {
    "restart": "restart_btminer",
    "reboot": "reboot",
    "switchpool": "update_pools",
    "sleep": "power_off",
    "wake": "power_on",
}
_V3_COMMANDS: Final[Mapping[str, tuple[str, str | None]]] = {
    "restart": ("set.miner.service", "restart"),
    "reboot": ("set.system.reboot", None),
    "switchpool": ("set.miner.pools", None),
    "sleep": ("set.miner.service", "stop"),
    "wake": ("set.miner.service", "start"),
}
