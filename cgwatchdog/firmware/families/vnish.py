"""VNish (Anthill's third-party Antminer firmware): recognised on the API, repaired over
its REST API on the web port.

**Recognition.** VNish keeps a cgminer 4.11.1 fork on port 4028 that answers like stock
Antminer firmware, but it names itself in the model string: STATS[0] (and VERSION)
``Type`` reads ``Antminer S19 XP (Vnish 1.2.0-rc1)`` (a VNish 1.2.0-rc1 S19 XP capture:
``kbnchk/minerinfo`` ``miner_test.go``, "S19 XP stats"; pyasic reads the model from the
same field and cuts it at `` (``: ``pyasic/miners/factory.py:1387-1404``). Both peers
recognise VNish from the API text: pyasic by ``VNISH`` in the ``version``/``devdetails``
answer (``factory.py:1031-1032``; its open PR #423 adds ``stats`` because VNish
1.3.0-alpha no longer answers ``version``, and tests VNISH before ANTMINER), asic-rs by
``VNISH`` in the upper-cased ``version`` answer, with third-party firmware tried before
stock (``asic-rs-firmwares/vnish/src/firmware.rs:66-68``, ``src/factory.rs:136``). So
``vnish`` anywhere in the identity scores 60, above stock Antminer. Its Description is
``cgminer 4.11.1``, not ``bmminer``. Boards, fans and temperatures are in STATS, which is
polled. :func:`web_fingerprint` also recognises the web UI (``AnthillOS`` in the page:
``factory.py:926-927``, ``firmware.rs:70-72``) for ``discover``.

**Authentication.** ``POST /api/v1/unlock`` with ``{"pw": password}`` (factory default
``admin``) answers ``{"token": ...}``; every later call sends ``Authorization: Bearer
<token>`` (VNish's own OpenAPI document, ``bearerAuth``, as asic-rs ships it in
``meta/vnish/v1.2.6|v1.2.7|v1.3.4/api-doc.json``; asic-rs ``v1_2_0/web.rs:136-163,
196-198``; pyasic ``web/vnish.py:36-53`` sends the token raw except for ``system/*``,
``:70-76``). A wrong password is HTTP 403 on unlock (the OpenAPI document: "Wrong
password"; 401 is treated the same): ``AuthFailed``, one request, no retry. HTTP 429
("Too many requests") is ``SessionBusy``. A fresh token is taken for every action, and a
401 on the action itself is ``AuthFailed`` too (no second unlock).

**Actions** (each: unlock, then one request; verified by the planner, never by the reply):

- ``restart``: ``POST /api/v1/mining/restart`` (pyasic ``web/vnish.py:128-129``, asic-rs
  ``web.rs:230-233``); 200, empty body. Verified: ``Elapsed`` went down.
- ``reboot``: ``POST /api/v1/system/reboot``; VNish answers ``{"after": 3}`` and reboots
  that many seconds later (OpenAPI ``RebootAfter``: "By default, is 3 seconds"). A dropped
  connection is ``Unconfirmed``. Verified: the miner comes back with ``Elapsed`` reset.
- ``switchpool``: ``POST /api/v1/mining/switch-pool`` with ``{"pool_id": N}``, N the
  cgminer pool id as polled (OpenAPI ``SwitchPoolQuery``, in all three documents). This
  is VNish's own "switch pool" and keeps the configured pools and their ids, the way
  cgminer's ``switchpool`` does, so the planner's check (the active pool id changed)
  holds. Rewriting ``POST /api/v1/settings`` with the pools reordered (what pyasic's and
  asic-rs's pool *configuration* does: ``config/pools.py:389-390``, ``v1_2_0/mod.rs:865-886``)
  would renumber the pools, answers only ``restart_required``/``reboot_required``, and
  is not used. VNish lists its dev-fee pool among the cgminer pools (URL and User
  ``DevFee``, in the capture above); cgwatchdog never switches to it.
- ``sleep``/``wake``: ``POST /api/v1/mining/pause`` / ``/mining/resume``. Pause is the
  firmware's curtail mode (its settings have "automatic_pause_on_boot": "the miner
  automatically switches to pause mode after boot"); ``stop`` would end the mining
  process, and with it (inferred) the cgminer API the planner verifies a sleep through
  (hashrate near 0, the miner still answering). pyasic pairs ``stop`` with ``resume``
  (``backends/vnish.py:125-141``), asic-rs uses ``stop``/``start``.
- ``disable``/``enable`` a board: not supported. VNish 1.3.4's settings can mark a chain
  disabled (``overclock.chains[].disabled``), which needs a settings rewrite and a
  mining restart inside the tuning profile; neither peer does it, and cgwatchdog does
  not rewrite tuning settings.

``check_access``: the unlock alone (a token, nothing changed).

**Unverified against hardware**: the 403 body, the exact ``pool_id`` numbering (taken to
be the cgminer ``POOL`` number, as the dev-fee pool's place in both lists suggests),
whether the API keeps answering while paused, and how long restarts take (the windows
below are estimates).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from cgwatchdog.errors import (
    ActionError,
    AuthFailed,
    NotSent,
    SessionBusy,
    Unconfirmed,
)
from cgwatchdog.firmware.base import (
    BASE_COMMANDS,
    ActionRequest,
    Channel,
    ChannelTarget,
    Family,
    Identity,
    firmware_family,
)
from cgwatchdog.snapshot import Pool, Snapshot

__all__ = ["VNish", "VNishChannel", "web_fingerprint"]

API = "/api/v1"
DEV_FEE_MARK = "devfee"
"""VNish's dev-fee pool, as the cgminer API lists it (URL and User ``DevFee``)."""
FINGERPRINT_MARK = "AnthillOS"
"""What VNish's web page carries (pyasic and asic-rs look for it)."""
_VERSION_IN_TYPE = re.compile(r"\(\s*vnish\s+([^)]+?)\s*\)", re.IGNORECASE)
_MAX_BODY_BYTES = 1 << 20
_DETAIL_CHARS = 200


@firmware_family
class VNish(Family):
    """VNish: a cgminer 4.11.1 fork on the API, a token REST API on the web port."""

    name = "vnish"
    title = "VNish (third-party Antminer firmware by Anthill)"
    channel_title = "REST API on the web port (80), /api/v1"
    auth_title = "password unlock for a bearer token (POST /api/v1/unlock), admin by default"
    control_port = 80
    default_password = "admin"
    restart_window_s = 300.0
    reboot_window_s = 600.0
    unsupported: ClassVar[Mapping[str, str]] = {
        "disable": "VNish has no board command; a chain is disabled only in its tuning "
        "settings, which cgwatchdog does not rewrite",
        "enable": "VNish has no board command; a chain is enabled only in its tuning "
        "settings, which cgwatchdog does not rewrite",
    }
    verification = (
        "restart/reboot: Elapsed reset and the condition cleared; switchpool: the active "
        "pool changed; sleep: hashrate near 0; wake: hashing again"
    )

    def recognise(self, identity: Identity) -> int:
        return 60 if "vnish" in identity.text() else 0

    def firmware_version(self, identity: Identity) -> str | None:
        for entry in (identity.version, identity.stats):
            found = _VERSION_IN_TYPE.search(str(entry.get("Type", "")))
            if found:
                return f"VNish {found.group(1)}"
        return identity.fork

    def poll_commands(self, snapshot: Snapshot, without_stats: Snapshot | None) -> tuple[str, ...]:
        return (*BASE_COMMANDS, "stats")  # boards, fans and temperatures are in STATS

    def why_not_pool(self, pool: Pool) -> str | None:
        if DEV_FEE_MARK in (pool.url.lower(), pool.user.lower()):
            return f"pool {pool.id} is VNish's dev-fee pool; cgwatchdog never switches to it"
        return None

    def channel(self, target: ChannelTarget) -> Channel:
        return VNishChannel(self, target)


class VNishChannel(Channel):
    """VNish's REST API: unlock for a token, then one call."""

    family: VNish

    async def perform(self, request: ActionRequest) -> str:
        do = request.do
        if do in self.family.unsupported:
            raise self.not_supported(request)
        if do == "restart":
            return await self._call("/mining/restart")
        if do == "reboot":
            return await self._call("/system/reboot")
        if do == "switchpool":
            pool_id = self._pool_id(request)
            return await self._call("/mining/switch-pool", {"pool_id": pool_id})
        if do == "sleep":
            return await self._call("/mining/pause")
        if do == "wake":
            return await self._call("/mining/resume")
        raise self.not_supported(request)

    async def check_access(self) -> str:
        await self._unlock()
        return f"POST {API}/unlock: the password was accepted"

    def _pool_id(self, request: ActionRequest) -> int:
        if request.pool is None:
            raise ActionError("switchpool needs the pool to switch to")
        for pool in request.pools:
            why = self.family.why_not_pool(pool) if pool.id == request.pool else None
            if why is not None:
                raise ActionError(f"{self.target.name}: {why}")
        return request.pool

    async def _unlock(self) -> str:
        target = self.target
        if target.password is None:
            raise AuthFailed(
                f"{target.name}: no VNish password to unlock with; set "
                f"credentials.password_file for {target.name}"
            )
        reply = await _request(target, "POST", f"{API}/unlock", {"pw": target.password})
        if reply.status in (401, 403):
            default = " (the factory default was tried: none is configured)"
            raise AuthFailed(
                f"{target.name}: VNish refused the password (HTTP {reply.status} on "
                f"{API}/unlock); set credentials.password_file for {target.name} to its web "
                f"password{default if target.default_password else ''}"
            )
        if reply.status == 429:
            raise SessionBusy(
                f"{target.name}: VNish rate-limits its unlock (HTTP 429); trying again later"
            )
        token = reply.json_object().get("token") if reply.status == 200 else None
        if not isinstance(token, str) or not token:
            raise ActionError(
                f"{target.name}: POST {API}/unlock answered HTTP {reply.status} "
                f"without a token{reply.detail(target)}"
            )
        return token

    async def _call(self, path: str, body: Mapping[str, Any] | None = None) -> str:
        token = await self._unlock()
        target = self.target
        reply = await _request(
            target, "POST", API + path, body, headers={"Authorization": f"Bearer {token}"}
        )
        if reply.status in (401, 403):
            raise AuthFailed(
                f"{target.name}: VNish refused its own fresh token on {API}{path} (HTTP "
                f"{reply.status}); check credentials.password_file for {target.name}"
            )
        if reply.status != 200:
            raise ActionError(
                f"{target.name}: POST {API}{path} answered HTTP {reply.status}"
                f"{reply.detail(target)}"
            )
        after = reply.json_object().get("after")
        if isinstance(after, int) and not isinstance(after, bool):
            return f"POST {API}{path}: HTTP 200, the miner reboots in {after} s"
        return f"POST {API}{path}: HTTP 200"


async def web_fingerprint(host: str, port: int, timeout_s: float) -> bool:
    """Whether ``host:port`` serves VNish's web UI (``AnthillOS`` in the page); one GET,
    no credentials. False for anything else, including no answer."""
    target = ChannelTarget(
        name=host, host=host, api_port=port, control_port=port, user=None, password=None,
        timeout_s=timeout_s, connect_timeout_s=timeout_s,
    )  # fmt: skip
    try:
        reply = await _request(target, "GET", "/", None)
    except ActionError:
        return False
    return reply.status == 200 and FINGERPRINT_MARK.encode() in reply.body


# -- HTTP ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes

    def json_object(self) -> Mapping[str, Any]:
        """The body as a JSON object ({} if it is empty or not one)."""
        try:
            value = json.loads(self.body) if self.body.strip() else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def detail(self, target: ChannelTarget) -> str:
        """``: <the firmware's err text>`` for a message, never echoing a password."""
        err = self.json_object().get("err")
        text = str(err) if err is not None else self.body.decode("utf-8", "replace").strip()
        if target.password:
            text = text.replace(target.password, "***")
        text = " ".join(text.split())[:_DETAIL_CHARS]
        return f": {text}" if text else ""


async def _request(
    target: ChannelTarget,
    method: str,
    path: str,
    body: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None = None,
) -> _Reply:
    """One HTTP request to the control port; NotSent if it never reached the miner,
    Unconfirmed if it was sent and no answer came."""
    import aiohttp  # only a miner being controlled pays for the import
    from yarl import URL

    url = URL.build(scheme="http", host=target.host, port=target.control_port, path=path)
    where = f"{target.name} ({target.host}:{target.control_port})"
    timeout = aiohttp.ClientTimeout(
        total=target.timeout_s, sock_connect=min(target.connect_timeout_s, target.timeout_s)
    )
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, json=body, headers=headers) as response,
        ):
            data = await response.content.read(_MAX_BODY_BYTES)
            return _Reply(response.status, data)
    except aiohttp.ClientConnectorDNSError:
        raise NotSent(f"{where}: the host name does not resolve; {path} not sent") from None
    except aiohttp.ClientConnectorError as exc:
        raise NotSent(f"{where}: cannot connect ({exc.strerror or exc}); {path} not sent") from None
    except aiohttp.ConnectionTimeoutError:
        raise NotSent(f"{where}: connect timed out; {path} not sent") from None
    except TimeoutError:
        raise Unconfirmed(f"{where}: {method} {path} sent, no answer in time") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise Unconfirmed(
            f"{where}: {method} {path} sent, the connection dropped before an answer "
            f"({type(exc).__name__})"
        ) from None
