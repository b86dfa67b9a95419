"""Braiins OS / OS+ (BOSminer): recognition, reads, and control over the public gRPC API.

**Recognised**: VERSION names ``BOSminer`` or ``BOSminer+`` (the Description says
``BOSminer+ 0.2.0``). BOSminer reports fans and temperatures in commands of its own
(``fans``, Code 202; ``temps``, Code 201), so those are polled too.

**Control channel**: the Braiins OS public API, gRPC over plaintext HTTP/2 on port
50051 (Braiins OS+ 23.03 and later; bos-plus-api ``README.md`` "Prerequisites"). It
needs ``grpcio``, the ``[braiins]`` extra (``pip install 'cgwatchdog[braiins]'``);
without it every action is "not supported" and says so. The messages are encoded by
hand from the public definitions (``_grpcwire.py``; no generated code). BOSminer's
cgminer API (port 4028) is no control channel: it has no ``restart`` or ``ascdisable``,
and its ``switchpool`` is "not fully implemented ... they do not activate the pools"
(Braiins' API documentation, quoted in the research notes).

- **Authentication**: ``braiins.bos.v1.AuthenticationService/Login`` with
  ``LoginRequest{username=1, password=2}`` (bos-plus-api ``proto/bos/v1/
  authentication.proto:30-34``, rpc ``:54``). The token comes back in the response
  header ``authorization`` (pyasic ``web/braiins_os/boser.py:139-156``; README
  "Authentication": the legacy way, still served) and, from API 1.1.0 (BOS 24.04), in
  ``LoginResponse.token=1`` with ``timeout_s=2`` (``authentication.proto:36-42``); the
  header is read first, the body's token is the fallback. Every call then carries the
  raw metadata ``authorization: <token>``, no "Bearer" (README; ``boser.py:107-112``).
  The session lasts 3600 s of inactivity (README); tokens are kept per miner until
  then, and a call refused with ``UNAUTHENTICATED`` logs in again once and is retried
  once (``boser.py:119-124``). Factory default: user ``root`` with password ``root``
  (pyasic ``web/braiins_os/boser.py:54-55``; asic-rs ``backends/v25_07/mod.rs:845-848``)
  or, on Braiins OS before 25.07, an empty password (asic-rs ``backends/v21_09/
  mod.rs:972-975``, ``v25_05/mod.rs:976-979``): with no password configured both are
  tried, at most two logins. A refused login is ``AuthFailed`` naming the miner and
  the fix (``credentials.password_file``), never the password.
- **restart**: ``ActionsService/Restart``, ``RestartRequest{}`` ->
  ``RestartResponse{already_running=1}`` (``actions.proto:39-46``, rpc ``:113``;
  pyasic ``boser.py:179-182``). Verified: ``Elapsed`` went down and the condition
  cleared.
- **reboot**: ``ActionsService/Reboot``, empty request and response
  (``actions.proto:48-51``, rpc ``:116``; pyasic takes ``{}`` as success,
  ``backends/braiins_os.py:834-838``). The miner may drop the connection instead of
  answering: that is ``Unconfirmed``, and the planner verifies the miner went away and
  came back with ``Elapsed`` reset.
- **disable/enable** a board: ``MinerService/DisableHashboards`` /
  ``EnableHashboards`` with ``{save_action=1: SAVE_AND_APPLY (2), hashboard_ids=2}``
  -> ``{hashboards=1: [{id=1, is_enabled=2}]}`` (``miner.proto:319-348``, rpcs
  ``:368-370``; ``common.proto:30-35``; pyasic ``boser.py:462-486``), API 1.0.0-beta.2
  (BOS 23.08) and later. The board's id comes from ``MinerService/GetHashboards``
  (``Hashboard{id=1, enabled=2}``, ``miner.proto:229-233``, rpc ``:360``), which
  lists disabled boards too. **Device mapping**: BOSminer's ``devs`` lists the boards
  as ``ASC`` 0, 1, 2 and puts the board's own number in ``ID`` (6, 7, 8 on an S9: the
  BOSminer+ capture; pyasic subtracts 6 for IDs 6-8 and 1 otherwise,
  ``backends/braiins_os.py:417, 430, 442``), and pyasic orders the gRPC boards by their
  numeric id (``backends/braiins_os.py:1026-1028``). So ``ASC<n>`` (the label an alert
  on BOSminer carries) is the n-th board in numeric id order (``ASC1`` -> ``"7"`` on
  an S9), and ``BOARD<n>`` is the board whose id is ``n`` (``BOARD7`` -> ``"7"``).
  Verified: the device's ``Enabled`` in ``devs`` and the condition.
- **switchpool**: ``PoolService/GetPoolGroups`` (``pool.proto:133-139``, rpc ``:203``)
  then ``PoolService/SetPoolGroups`` ``{save_action=1, pool_groups=2}``
  (``pool.proto:185-193``, rpc ``:211``; API 1.2.0, BOS 24.06): the miner's one pool
  group is written back with the target pool first and the others in their order
  (name, quota or share ratio as read; ``PoolGroupConfiguration``/``PoolConfiguration``
  ``pool.proto:45-77``; no ``uid``, as the method requires). "SAVE_AND_APPLY ... will
  trigger restart" (``pool.proto:187-188``). The API never returns pool passwords, so
  the configured ``credentials.pool_password`` is given to every pool; without it
  switchpool is refused. A miner with several pool groups mines on all of them at once
  (quota / share ratio), so there is no pool to switch to: not supported there. The
  pool is found by the polled pool's URL and user. Verified: the active pool changed
  (the rewrite renumbers the pools: the target is pool 0 afterwards).
- **sleep/wake**: ``ActionsService/PauseMining`` / ``ResumeMining`` ->
  ``{already_paused=1}`` / ``{already_mining=1}`` (``actions.proto:69-84``, rpcs
  ``:107-110``; pyasic ``boser.py:169-177``). Verified: the hashrate fell to almost
  nothing / the miner hashes again.
- **access check**: a login (``AuthenticationService/Login``), nothing else.

Errors: no connection (refused, timeout) is ``NotSent``; a call that was sent and
then lost (``UNAVAILABLE``, ``CANCELLED``, ``DEADLINE_EXCEEDED``) is ``Unconfirmed``;
``UNIMPLEMENTED`` (an older Braiins OS) is ``NotSupported``; ``PERMISSION_DENIED`` is
``ControlDenied``; any other status is an ``ActionError`` with its details.

Sources: bos-plus-api 1.11.0 (commit efa32c7, its CHANGELOG for the versions); pyasic
e2b9d357; asic-rs fdcd101. **Unverified against hardware**: every call above was
checked against the public definitions only, not a real miner; in particular whether
``devs`` ``ID`` always equals the gRPC hashboard id, whether a board disabled with
SAVE_AND_APPLY restarts bosminer, which status a wrong password gets (taken:
``UNAUTHENTICATED``, as pyasic#320 reports), whether Reboot answers before the
connection drops, and the pools' URL spelling in GetPoolGroups versus ``pools``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

from cgwatchdog.errors import (
    ActionError,
    AuthFailed,
    ControlDenied,
    NotSent,
    NotSupported,
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
from cgwatchdog.firmware.families import _grpcwire as wire
from cgwatchdog.snapshot import Pool, Snapshot

__all__ = [
    "GRPC_MISSING",
    "Braiins",
    "BraiinsChannel",
    "hashboard_id",
    "hashboards_request",
    "login_request",
    "set_pool_groups_request",
]

GRPC_MISSING: Final = (
    "the Braiins OS gRPC API needs grpcio: install the [braiins] extra: "
    "pip install 'cgwatchdog[braiins]'"
)

_PACKAGE: Final = "/braiins.bos.v1."
LOGIN: Final = _PACKAGE + "AuthenticationService/Login"
RESTART: Final = _PACKAGE + "ActionsService/Restart"
REBOOT: Final = _PACKAGE + "ActionsService/Reboot"
PAUSE_MINING: Final = _PACKAGE + "ActionsService/PauseMining"
RESUME_MINING: Final = _PACKAGE + "ActionsService/ResumeMining"
GET_HASHBOARDS: Final = _PACKAGE + "MinerService/GetHashboards"
ENABLE_HASHBOARDS: Final = _PACKAGE + "MinerService/EnableHashboards"
DISABLE_HASHBOARDS: Final = _PACKAGE + "MinerService/DisableHashboards"
GET_POOL_GROUPS: Final = _PACKAGE + "PoolService/GetPoolGroups"
SET_POOL_GROUPS: Final = _PACKAGE + "PoolService/SetPoolGroups"

SAVE_AND_APPLY: Final = 2
"""``braiins.bos.v1.SaveAction.SAVE_ACTION_SAVE_AND_APPLY`` (common.proto:33)."""
SESSION_S: Final = 3600.0
"""A session's life without requests (README), when the login does not say."""
SESSION_MARGIN_S: Final = 60.0
"""A kept token is dropped this long before the miner would forget it."""
_OLDER_DEFAULT_PASSWORD: Final = ""  # Braiins OS before 25.07: root with no password
# Sent and then lost: the miner may have done it (a reboot drops the connection).
_LOST: Final = frozenset({"UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED"})
_REFUSED_LOGIN: Final = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
_DEVICE_LABEL: Final = re.compile(r"([A-Za-z]+)(\d+)")


@dataclass(slots=True)
class _Session:
    token: str
    expires_at: float  # time.monotonic()


# Tokens by (host, port, user): a miner keeps a session for an hour, so a second action
# (or the next cycle's) needs no new login. Never logged, never in a message.
_SESSIONS: dict[tuple[str, int, str], _Session] = {}


# -- the messages (field numbers from bos-plus-api proto/bos/v1, cited above) -------------


def login_request(username: str, password: str) -> bytes:
    """``LoginRequest{username=1, password=2}``."""
    return wire.field_string(1, username) + wire.field_string(2, password)


def hashboards_request(hashboard_ids: Sequence[str]) -> bytes:
    """``EnableHashboardsRequest`` / ``DisableHashboardsRequest``:
    ``{save_action=1: SAVE_AND_APPLY, hashboard_ids=2 (repeated)}``."""
    ids = b"".join(wire.field_string(2, board, keep_default=True) for board in hashboard_ids)
    return wire.field_varint(1, SAVE_AND_APPLY) + ids


def _pool_configuration(url: str, user: str, password: str, enabled: bool) -> bytes:
    # PoolConfiguration{uid=1 (left out: new), url=2, user=3, password=4 optional,
    # enabled=5 optional}
    return (
        wire.field_string(2, url)
        + wire.field_string(3, user)
        + wire.field_string(4, password, keep_default=True)
        + wire.field_bool(5, enabled, keep_default=True)
    )


def set_pool_groups_request(
    name: str, strategy: tuple[int, bytes] | None, pools: Sequence[tuple[str, str, str, bool]]
) -> bytes:
    """``SetPoolGroupsRequest{save_action=1: SAVE_AND_APPLY, pool_groups=2}`` with one
    ``PoolGroupConfiguration{name=2, quota=3 | fixed_share_ratio=4, pools=5}``;
    ``strategy`` is (3 or 4, the strategy message as read), ``pools`` (url, user,
    password, enabled) in priority order."""
    group = wire.field_string(2, name)
    if strategy is not None:
        group += wire.field_bytes(strategy[0], strategy[1], keep_default=True)
    group += b"".join(
        wire.field_bytes(5, _pool_configuration(*pool), keep_default=True) for pool in pools
    )
    return wire.field_varint(1, SAVE_AND_APPLY) + wire.field_bytes(2, group, keep_default=True)


# -- device labels -------------------------------------------------------------------------


def _board_label(do: str, device: str | None) -> tuple[str, int]:
    if not device:
        raise NotSupported(
            f"{do} needs an alert about one device (label device), this one has none"
        )
    match = _DEVICE_LABEL.fullmatch(device)
    kind = match.group(1).upper() if match else ""
    if match is None or kind not in ("ASC", "BOARD"):
        raise NotSupported(
            f"device {device!r} is not a hashboard: Braiins OS boards are ASC<n> (as devs "
            f"lists them) or BOARD<id>"
        )
    return kind, int(match.group(2))


def _id_order(board: str) -> tuple[int, int, str]:
    return (0, int(board), "") if board.isdigit() else (1, 0, board)


def hashboard_id(device: str, boards: Sequence[str]) -> str | None:
    """The gRPC id of ``device`` among the miner's hashboard ids: ``ASC<n>`` is the n-th
    in numeric id order (as BOSminer's devs lists them), ``BOARD<n>`` the board whose
    id is n; None when there is no such board (NotSupported for other labels)."""
    kind, number = _board_label("disable", device)
    ordered = sorted(boards, key=_id_order)
    if kind == "ASC":
        return ordered[number] if number < len(ordered) else None
    return next((b for b in ordered if b.isdigit() and int(b) == number), None)


# -- the family ----------------------------------------------------------------------------


@firmware_family
class Braiins(Family):
    """Braiins OS and OS+ (BOSminer)."""

    name = "braiins"
    title = "Braiins OS / OS+ (BOSminer)"
    channel_title = "the Braiins OS public gRPC API (port 50051, plaintext)"
    auth_title = (
        "AuthenticationService/Login (root/root by default, root with no password before "
        "25.07); the token in the authorization metadata"
    )
    control_port = 50051
    extra = "braiins"
    default_user = "root"
    default_password = "root"
    restart_window_s = 180.0
    reboot_window_s = 600.0
    verification = (
        "restart/reboot: Elapsed reset and the condition cleared; disable/enable: the "
        "board's Enabled in devs; switchpool: the active pool changed; sleep: hashrate "
        "near 0; wake: hashing again"
    )

    def recognise(self, identity: Identity) -> int:
        return 50 if "bosminer" in identity.text() else 0

    def poll_commands(self, snapshot: Snapshot, without_stats: Snapshot | None) -> tuple[str, ...]:
        return (*BASE_COMMANDS, "fans", "temps")

    def extra_missing(self) -> str | None:
        """Why the channel cannot run on this host (grpcio absent), or None."""
        try:
            spec = importlib.util.find_spec("grpc")
        except (ImportError, ValueError):
            spec = None
        return GRPC_MISSING if spec is None else None

    needs_pool_password = True

    def pool_password_missing(self, miner: str) -> str:
        return _pool_password_missing(miner)

    def check_device(self, do: str, device: str) -> None:
        _board_label(do, device)

    def channel(self, target: ChannelTarget) -> Channel:
        return BraiinsChannel(self, target)


def _pool_password_missing(name: str) -> str:
    return (
        "switchpool rewrites the miner's pool group (PoolService/SetPoolGroups) and Braiins "
        f"OS never returns pool passwords: set credentials.pool_password_file for {name}"
    )


class BraiinsChannel(Channel):
    """The Braiins OS public gRPC API: a login (or a kept token), then the action's calls,
    over one plaintext channel opened for the action."""

    family: Braiins

    async def perform(self, request: ActionRequest) -> str:
        grpc = self._grpc()
        do = request.do
        if do in ("disable", "enable"):
            _board_label(do, request.device)
        elif do == "switchpool":
            if request.pool is None:
                raise ActionError("switchpool needs the pool to switch to")
            if self.target.pool_password is None:
                raise NotSupported(
                    f"not supported by braiins: {_pool_password_missing(self.target.name)}"
                )
        elif do not in ("restart", "reboot", "sleep", "wake"):
            raise self.not_supported(request)
        async with _Call(self.target, grpc) as call:
            if do == "restart":
                reply = await call.invoke(RESTART)
                note = "" if reply.flag(1) else " (bosminer was not running: started)"
                return f"ActionsService/Restart: bosminer restarted{note}"
            if do == "reboot":
                await call.invoke(REBOOT)
                return "ActionsService/Reboot accepted: the miner reboots"
            if do == "sleep":
                reply = await call.invoke(PAUSE_MINING)
                note = " (it was already paused)" if reply.flag(1) else ""
                return f"ActionsService/PauseMining: mining paused{note}"
            if do == "wake":
                reply = await call.invoke(RESUME_MINING)
                note = " (it was already mining)" if reply.flag(1) else ""
                return f"ActionsService/ResumeMining: mining resumed{note}"
            if do == "switchpool":
                return await self._switchpool(call, request)
            return await self._set_board(call, do, request.device or "")

    async def check_access(self) -> str:
        grpc = self._grpc()
        async with _Call(self.target, grpc) as call:
            await call.login()
        return f"AuthenticationService/Login as {self.target.user or 'root'}: accepted"

    def _grpc(self) -> ModuleType:
        missing = self.family.extra_missing()
        if missing is None:
            try:
                import grpc
                import grpc.aio
            except ImportError:
                missing = GRPC_MISSING
            else:
                module: ModuleType = grpc
                return module
        raise NotSupported(f"{self.target.name}: not supported by braiins: {missing}")

    async def _set_board(self, call: _Call, do: str, device: str) -> str:
        listed = await call.invoke(GET_HASHBOARDS, changes=False)
        boards = [board.text(1) for board in listed.messages(1)]
        board = hashboard_id(device, boards)
        if board is None:
            have = ", ".join(sorted(boards, key=_id_order)) or "none"
            raise ActionError(
                f"{self.target.name}: no hashboard for {device} (the miner lists {have}): "
                "nothing changed"
            )
        path = DISABLE_HASHBOARDS if do == "disable" else ENABLE_HASHBOARDS
        reply = await call.invoke(path, hashboards_request([board]))
        states = {state.text(1): state.flag(2) for state in reply.messages(1)}
        method = path.rsplit("/", 1)[1]
        state = (
            "" if board not in states else (" now enabled" if states[board] else " now disabled")
        )
        return f"MinerService/{method} {board} ({device}), save and apply: board {board}{state}"

    async def _switchpool(self, call: _Call, request: ActionRequest) -> str:
        assert request.pool is not None and self.target.pool_password is not None
        name = self.target.name
        groups = (await call.invoke(GET_POOL_GROUPS, changes=False)).messages(1)
        if len(groups) != 1:
            raise NotSupported(
                f"{name}: not supported by braiins: the miner has {len(groups)} pool groups "
                "and mines on all of them at once (quota / share ratio): there is no single "
                "pool to switch to; nothing changed"
            )
        (group,) = groups
        pools = group.messages(4)  # PoolGroup.pools: Pool{uid=1, url=2, user=3, enabled=4}
        index = _pool_position(request, [(p.text(2), p.text(3)) for p in pools])
        if index is None:
            raise ActionError(
                f"{name}: pool {request.pool} is not in the miner's pool group "
                f"{group.text(1)!r}: nothing changed"
            )
        order = [index, *(i for i in range(len(pools)) if i != index)]
        strategy: tuple[int, bytes] | None = None
        for read_as, write_as in ((2, 3), (3, 4)):  # quota, fixed_share_ratio
            raw = group.raw(read_as)
            if raw is not None:
                strategy = (write_as, raw)
        body = set_pool_groups_request(
            group.text(1),
            strategy,
            [
                (
                    pools[i].text(2),
                    pools[i].text(3),
                    self.target.pool_password,
                    i == index or pools[i].flag(4),
                )
                for i in order
            ],
        )
        await call.invoke(SET_POOL_GROUPS, body)
        return (
            f"PoolService/SetPoolGroups: {pools[index].text(2)} first in pool group "
            f"{group.text(1)!r}, save and apply (bosminer restarts with it)"
        )


def _pool_position(request: ActionRequest, pools: Sequence[tuple[str, str]]) -> int | None:
    """Where the polled pool ``request.pool`` is in the group's (url, user) list."""
    assert request.pool is not None
    polled: Pool | None = next((p for p in request.pools if p.id == request.pool), None)
    if polled is not None:
        for i, pool in enumerate(pools):
            if pool == (polled.url, polled.user):
                return i
        for i, (url, _user) in enumerate(pools):
            if url == polled.url:
                return i
        if len(request.pools) != len(pools):
            return None
    # One group: BOSminer's cgminer API lists its pools in the group's order.
    return request.pool if 0 <= request.pool < len(pools) else None


class _Call:
    """One action's gRPC channel: connect, log in (or reuse a kept token), invoke."""

    def __init__(self, target: ChannelTarget, grpc: ModuleType) -> None:
        self.target = target
        self.grpc = grpc
        self.where = f"{target.host}:{target.control_port}"
        self._key = (target.host, target.control_port, target.user or "")
        self._channel: Any = None

    async def __aenter__(self) -> _Call:
        self._channel = self.grpc.aio.insecure_channel(self.where)
        try:
            await self._connect()
        except BaseException:
            await self._channel.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def _connect(self) -> None:
        connectivity = self.grpc.ChannelConnectivity
        channel = self._channel
        name, timeout_s = self.target.name, self.target.connect_timeout_s
        state = channel.get_state(try_to_connect=True)
        try:
            async with asyncio.timeout(timeout_s):
                while state is not connectivity.READY:
                    if state is connectivity.TRANSIENT_FAILURE:
                        raise NotSent(
                            f"{name}: no gRPC API at {self.where} (connection refused or "
                            "unreachable; Braiins OS before 23.03 has none, or set "
                            "control_port): nothing sent"
                        )
                    await channel.wait_for_state_change(state)
                    state = channel.get_state(try_to_connect=True)
        except TimeoutError:
            raise NotSent(
                f"{name}: no gRPC connection to {self.where} within {timeout_s:g} s: nothing sent"
            ) from None

    def _stub(self, path: str) -> Any:
        return self._channel.unary_unary(
            path, request_serializer=bytes, response_deserializer=bytes
        )

    async def login(self) -> str:
        """A fresh token (kept for the next calls); AuthFailed when refused."""
        target = self.target
        user = target.user or "root"
        passwords = [target.password or ""]
        if target.default_password and _OLDER_DEFAULT_PASSWORD not in passwords:
            passwords.append(_OLDER_DEFAULT_PASSWORD)
        stub = self._stub(LOGIN)
        for password in passwords:
            call = stub(login_request(user, password), timeout=target.timeout_s)
            try:
                reply = await call
                metadata = await call.initial_metadata()
            except self.grpc.aio.AioRpcError as exc:
                code = exc.code().name
                if code in _REFUSED_LOGIN:
                    continue
                raise NotSent(
                    f"{target.name}: the login at {self.where} failed ({code}: "
                    f"{exc.details() or 'no details'}): nothing sent"
                ) from None
            body = wire.decode(reply)
            token = _header(metadata, "authorization") or body.text(1)
            if not token:
                raise ActionError(
                    f"{target.name}: the login at {self.where} was accepted but gave no token"
                )
            lifetime = float(body.integer(2) or SESSION_S)
            expires = time.monotonic() + max(0.0, lifetime - SESSION_MARGIN_S)
            _SESSIONS[self._key] = _Session(token, expires)
            return token
        _SESSIONS.pop(self._key, None)
        if target.default_password:
            fix = f"set credentials.password_file for {target.name}"
            who = f"the factory-default logins of {user!r}"
        else:
            fix = f"check credentials.user and credentials.password_file for {target.name}"
            who = f"the login of {user!r}"
        raise AuthFailed(
            f"{target.name}: Braiins OS at {self.where} refused {who} (UNAUTHENTICATED): {fix}"
        )

    def _kept_token(self) -> str | None:
        session = _SESSIONS.get(self._key)
        if session is None or time.monotonic() >= session.expires_at:
            return None
        return session.token

    async def invoke(self, path: str, body: bytes = b"", *, changes: bool = True) -> wire.Fields:
        """Call ``path`` with the session's token, logging in again once if the miner
        forgot it; the reply decoded. ``changes``: whether the call changes the miner
        (a lost call is then Unconfirmed, not NotSent)."""
        target = self.target
        method = path.removeprefix(_PACKAGE)
        token = self._kept_token() or await self.login()
        stub = self._stub(path)
        for attempt in (1, 2):
            try:
                reply = await stub(
                    body, metadata=(("authorization", token),), timeout=target.timeout_s
                )
            except self.grpc.aio.AioRpcError as exc:
                code = exc.code().name
                details = exc.details() or "no details"
                if code == "UNAUTHENTICATED" and attempt == 1:
                    _SESSIONS.pop(self._key, None)
                    token = await self.login()
                    continue
                raise _call_error(target.name, method, code, details, changes=changes) from None
            try:
                return wire.decode(reply)
            except wire.WireError as exc:
                raise ActionError(f"{target.name}: {method} answered unreadably: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover


def _header(metadata: Any, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key and isinstance(value, str) and value:
            return value
    return None


def _call_error(name: str, method: str, code: str, details: str, *, changes: bool) -> Exception:
    if code in _LOST:
        if changes:
            return Unconfirmed(
                f"{name}: {method} sent, no answer ({code}: {details}); a reboot or restart "
                "drops the connection: verification decides"
            )
        return NotSent(f"{name}: {method} got no answer ({code}: {details}): nothing changed")
    if code == "UNAUTHENTICATED":
        return AuthFailed(
            f"{name}: Braiins OS refused a fresh token for {method} (UNAUTHENTICATED): check "
            f"credentials.user and credentials.password_file for {name}"
        )
    if code == "PERMISSION_DENIED":
        return ControlDenied(
            f"{name}: Braiins OS denied {method} ({code}: {details}): the configured user may "
            "not do this; use the root login"
        )
    if code == "UNIMPLEMENTED":
        return NotSupported(
            f"{name}: not supported by braiins: this Braiins OS has no {method} (UNIMPLEMENTED); "
            "hashboards need Braiins OS 23.08 and SetPoolGroups 24.06 or later"
        )
    return ActionError(f"{name}: {method} refused ({code}: {details})")
