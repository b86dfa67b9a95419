"""Braiins OS+ (BOSminer) as the simulator serves it: the flavour ``braiins``.

The API answers as the BOSminer+ 0.2.0 capture does (Description ``BOSminer+
0.2.0-36c56a9363``, VERSION with only ``API`` and ``BOSminer+``), with BOSminer's own
``fans`` (Code 202) and ``temps`` (Code 201) commands; ``restart``, ``quit`` and
``ascdisable``/``ascenable`` are not in BOSminer's API and answer Code 14.

The control channel is the public gRPC API on ``member.control_port`` (a
``grpc.aio`` server with generic handlers, messages read with the hand-written wire
format): ``AuthenticationService/Login`` (root/root unless changed; the token in the
``authorization`` response header and in ``LoginResponse.token``), then every call
must carry ``authorization: <token>`` or is refused ``UNAUTHENTICATED``. Effects on
the :class:`SimulatedMiner`: ``ActionsService/Restart`` restarts it, ``Reboot`` reboots
it and never answers (the connection drops when the fleet closes the server),
``PauseMining``/``ResumeMining`` sleep and wake it, ``MinerService/GetHashboards``,
``DisableHashboards``/``EnableHashboards`` (applied with SAVE_AND_APPLY or
SAVE_AND_FORCE_APPLY only), ``PoolService/GetPoolGroups`` and ``SetPoolGroups`` (which
restarts the miner with the new list, as the API documents). Hashboard ids follow the
S9's connectors: device ``i`` is board ``6 + i`` (the simulated ``devs`` keeps its
generic ``ID`` ``i``, so tests see the family map ``ASC<n>`` by position).

Per miner, :func:`braiins_api` gives the switches (``password``, ``pool_groups``,
``reboot_answers``, ``unimplemented``, ``forget_sessions()``) and the log of every call
received (:class:`GrpcCall`). A reboot forgets the sessions, as the firmware's does.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from cgwatchdog.errors import ConfigError, ConfigProblem
from cgwatchdog.protocol import Request
from cgwatchdog.simulator.core import (
    FLAVOURS,
    ControlServer,
    ExtraCommand,
    Fleet,
    FleetMember,
    SimulatedMiner,
    add_flavour,
)

__all__ = ["BRAIINS", "BraiinsControl", "BraiinsSettings", "GrpcCall", "braiins_api"]

VERSION: Final = "0.2.0-36c56a9363"
DESCRIPTION: Final = f"BOSminer+ {VERSION}"
SESSION_S: Final = 3600
_STOP_GRACE_S: Final = 0.1  # answers already on their way still go out
_APPLY: Final = frozenset({2, 3})  # SAVE_ACTION_SAVE_AND_APPLY, SAVE_ACTION_SAVE_AND_FORCE_APPLY

Reply = dict[str, Any]
Handler = Callable[[bytes, Any], Awaitable[bytes]]


# -- the cgminer API side ------------------------------------------------------------------


def _status(code: int, msg: str, now: float, letter: str = "S") -> dict[str, Any]:
    return {
        "STATUS": letter,
        "When": int(now),
        "Code": code,
        "Msg": msg,
        "Description": DESCRIPTION,
    }


def _cmd_fans(miner: SimulatedMiner, _param: str | None, now: float) -> Reply:
    # An S9: two fans turning, two slots empty (0 RPM), as in the BOSminer+ capture.
    wobble = int(now // 10) % 7 * 10
    rpms = (3600 + wobble, 3660 - wobble, 0, 0)
    fans = [{"FAN": i, "ID": i, "RPM": rpm, "Speed": 40} for i, rpm in enumerate(rpms)]
    return {"STATUS": [_status(202, f"{len(fans)} Fan(s)", now)], "FANS": fans, "id": 1}


def _cmd_temps(miner: SimulatedMiner, _param: str | None, now: float) -> Reply:
    base = miner.flavour.device_temp_c
    temps = [
        # ID is the device's devs ID (the snapshot joins them); no chip sensor: 0.0.
        {"Board": 30.0 if status == "Dead" else base + 2.0 * i, "Chip": 0.0, "ID": i, "TEMP": i}
        for i, status in enumerate(miner.device_statuses(now))
    ]
    return {"STATUS": [_status(201, f"{len(temps)} Temp(s)", now)], "TEMPS": temps, "id": 1}


def _cmd_missing(_miner: SimulatedMiner, _param: str | None, now: float) -> Reply:
    return {"STATUS": [_status(14, "Invalid command", now, "E")], "id": 1}


# -- the gRPC side -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrpcCall:
    """One call the simulated gRPC API received."""

    method: str
    """``Service/Method``: ``ActionsService/Restart``."""
    authorization: str | None
    """The ``authorization`` metadata as sent (None: absent)."""
    authorized: bool
    """Login: the credentials matched; other calls: the token was a live session's."""
    body: dict[str, Any]
    """The request's fields as read (Login's password included: this is a test server)."""


@dataclass
class BraiinsSettings:
    """One simulated miner's gRPC API: its login, its quirks, and what it received."""

    user: str = "root"
    password: str = "root"
    pool_groups: int = 1
    """More than one: GetPoolGroups lists extra groups (BOSminer mines on all at once)."""
    reboot_answers: bool = False
    """False: Reboot is never answered, the connection drops (the fleet closes the port)."""
    unimplemented: set[str] = field(default_factory=set)
    """``Service/Method`` names answered UNIMPLEMENTED, as an older Braiins OS does."""
    hashboard_base: int = 6
    calls: list[GrpcCall] = field(default_factory=list)
    pool_passwords: list[str | None] = field(default_factory=list)
    """The passwords the last SetPoolGroups gave each pool."""
    tokens: set[str] = field(default_factory=set)
    reboots_seen: int = 0

    def methods(self) -> list[str]:
        """The methods called, in order."""
        return [call.method for call in self.calls]

    def forget_sessions(self) -> None:
        """Drop every token (the next call with one is refused UNAUTHENTICATED)."""
        self.tokens.clear()


_SETTINGS: dict[FleetMember, BraiinsSettings] = {}


def braiins_api(member: FleetMember) -> BraiinsSettings:
    """The gRPC API switches and call log of ``member`` (kept across its reboots)."""
    settings = _SETTINGS.get(member)
    if settings is None:
        settings = _SETTINGS[member] = BraiinsSettings()
    return settings


def _read(method: str, data: bytes) -> dict[str, Any]:
    """The request's fields, named as bos-plus-api's proto/bos/v1 names them."""
    from cgwatchdog.firmware.families._grpcwire import decode

    fields = decode(data)
    if method == "AuthenticationService/Login":
        return {"username": fields.text(1), "password": fields.text(2)}
    if method in ("MinerService/DisableHashboards", "MinerService/EnableHashboards"):
        return {"save_action": fields.integer(1), "hashboard_ids": fields.texts(2)}
    if method == "PoolService/SetPoolGroups":
        groups = []
        for group in fields.messages(2):
            pools = [
                {
                    "uid": pool.text(1) if 1 in pool else None,
                    "url": pool.text(2),
                    "user": pool.text(3),
                    "password": pool.text(4) if 4 in pool else None,
                    "enabled": pool.flag(5) if 5 in pool else None,
                }
                for pool in group.messages(5)
            ]
            quota = group.messages(3)
            groups.append({
                "uid": group.text(1) if 1 in group else None,
                "name": group.text(2),
                "quota": quota[0].integer(1) if quota else None,
                "fixed_share_ratio": group.raw(4),
                "pools": pools,
            })  # fmt: skip
        return {"save_action": fields.integer(1), "pool_groups": groups}
    return {"raw": data.hex()} if data else {}


def _metadata(context: Any, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return str(value)
    return None


class BraiinsControl(ControlServer):
    """The Braiins OS public gRPC API of one simulated miner."""

    def __init__(self, member: FleetMember, fleet: Fleet) -> None:
        super().__init__(member, fleet)
        self.settings = braiins_api(member)
        self._server: Any = None
        self._grpc: Any = None

    async def start(self, host: str, port: int) -> int:
        try:
            import grpc
        except ImportError:
            raise ConfigError([ConfigProblem(
                "simulate", None,
                "the braiins flavour serves gRPC: pip install 'cgwatchdog[braiins]'",
            )]) from None  # fmt: skip
        self._grpc = grpc
        settings = self.settings
        if settings.reboots_seen != self.miner.reboots:
            settings.reboots_seen = self.miner.reboots
            settings.forget_sessions()  # a rebooted miner has no sessions
        services: dict[str, dict[str, tuple[Handler, bool]]] = {
            "AuthenticationService": {"Login": (self._login, False)},
            "ActionsService": {
                "Restart": (self._restart, True),
                "Reboot": (self._reboot, True),
                "PauseMining": (self._pause, True),
                "ResumeMining": (self._resume, True),
            },
            "MinerService": {
                "GetHashboards": (self._get_hashboards, True),
                "DisableHashboards": (self._disable_hashboards, True),
                "EnableHashboards": (self._enable_hashboards, True),
            },
            "PoolService": {
                "GetPoolGroups": (self._get_pool_groups, True),
                "SetPoolGroups": (self._set_pool_groups, True),
            },
        }
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        for service, methods in services.items():
            handlers = {
                name: grpc.unary_unary_rpc_method_handler(
                    self._guarded(f"{service}/{name}", handler, needs_token)
                )
                for name, (handler, needs_token) in methods.items()
            }
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(f"braiins.bos.v1.{service}", handlers),)
            )
        try:
            bound = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            bound = 0
        if not bound:
            raise ConfigError(
                [ConfigProblem("simulate", None, f"cannot listen on {host}:{port} (gRPC)")]
            )
        await server.start()
        self._server = server
        return int(bound)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(_STOP_GRACE_S)

    def _guarded(self, method: str, handler: Handler, needs_token: bool) -> Handler:
        async def handle(request: bytes, context: Any) -> bytes:
            settings, codes = self.settings, self._grpc.StatusCode
            authorization = _metadata(context, "authorization")
            body = _read(method, request)
            if needs_token:
                authorized = authorization is not None and authorization in settings.tokens
            else:
                authorized = (body.get("username"), body.get("password")) == (
                    settings.user,
                    settings.password,
                )
            settings.calls.append(GrpcCall(method, authorization, authorized, body))
            if method in settings.unimplemented:
                await context.abort(codes.UNIMPLEMENTED, f"Method not found: {method}")
            if not authorized:
                await context.abort(
                    codes.UNAUTHENTICATED,
                    "Unauthenticated" if needs_token else "Invalid username or password",
                )
            return await handler(request, context)

        return handle

    # -- the methods ---------------------------------------------------------------------

    async def _login(self, _request: bytes, context: Any) -> bytes:
        from cgwatchdog.firmware.families._grpcwire import field_string, field_varint

        token = secrets.token_urlsafe(12)
        self.settings.tokens.add(token)
        await context.send_initial_metadata((("authorization", token),))
        return field_string(1, token) + field_varint(2, SESSION_S)

    async def _restart(self, _request: bytes, _context: Any) -> bytes:
        from cgwatchdog.firmware.families._grpcwire import field_bool

        self.miner.restart(self.now())
        self.changed()
        return field_bool(1, True)  # RestartResponse.already_running

    async def _reboot(self, _request: bytes, _context: Any) -> bytes:
        self.miner.reboot(self.now())
        self.changed()
        if not self.settings.reboot_answers:
            await asyncio.Event().wait()  # cancelled when the fleet closes the server
        return b""

    async def _pause(self, _request: bytes, _context: Any) -> bytes:
        from cgwatchdog.firmware.families._grpcwire import field_bool

        already = self.miner.sleeping
        self.miner.sleep(self.now())
        return field_bool(1, already)  # PauseMiningResponse.already_paused

    async def _resume(self, _request: bytes, _context: Any) -> bytes:
        from cgwatchdog.firmware.families._grpcwire import field_bool

        already = not self.miner.sleeping
        self.miner.wake(self.now())
        return field_bool(1, already)  # ResumeMiningResponse.already_mining

    def _enabled(self) -> list[bool]:
        """Each device's Enabled, as the miner's devs reports it."""
        raw = self.miner.handle(Request(("devs",)), self.now())
        try:
            reply = json.loads((raw or b"{}").rstrip(b"\0"))
        except ValueError:
            return []
        return [entry.get("Enabled") == "Y" for entry in reply.get("DEVS", [])]

    def _board_states(self, ids: list[str] | None = None) -> bytes:
        from cgwatchdog.firmware.families._grpcwire import field_bool, field_bytes, field_string

        base = self.settings.hashboard_base
        out = b""
        for i, enabled in enumerate(self._enabled()):
            board = str(base + i)
            if ids is None or board in ids:
                state = field_string(1, board) + field_bool(2, enabled)
                out += field_bytes(1, state, keep_default=True)
        return out

    async def _get_hashboards(self, _request: bytes, _context: Any) -> bytes:
        return self._board_states()  # GetHashboardsResponse{hashboards=1: Hashboard{id, enabled}}

    async def _set_boards(self, request: bytes, context: Any, enable: bool) -> bytes:
        body = _read("MinerService/EnableHashboards", request)
        ids: list[str] = body["hashboard_ids"]
        base, count = self.settings.hashboard_base, len(self._enabled())
        indexes = []
        for board in ids:
            index = int(board) - base if board.isdigit() else -1
            if not 0 <= index < count:
                await context.abort(
                    self._grpc.StatusCode.INVALID_ARGUMENT, f"Hashboard '{board}' not found"
                )
            indexes.append(index)
        if body["save_action"] in _APPLY:
            for index in indexes:
                self.miner.set_device_enabled(index, enable, self.now())
        return self._board_states(ids)  # {hashboards=1: HashboardEnableState{id, is_enabled}}

    async def _disable_hashboards(self, request: bytes, context: Any) -> bytes:
        return await self._set_boards(request, context, enable=False)

    async def _enable_hashboards(self, request: bytes, context: Any) -> bytes:
        return await self._set_boards(request, context, enable=True)

    async def _get_pool_groups(self, _request: bytes, _context: Any) -> bytes:
        from cgwatchdog.firmware.families._grpcwire import (
            field_bool,
            field_bytes,
            field_string,
            field_varint,
        )

        active = self.miner.active_pool(self.now())
        quota = field_bytes(2, field_varint(1, 1), keep_default=True)  # Quota{value=1}
        pools = b""
        for i, (url, user) in enumerate(self.miner.pool_list()):
            pool = (
                field_string(1, f"pool-{i}") + field_string(2, url) + field_string(3, user)
                + field_bool(4, True) + field_bool(5, True) + field_bool(6, i == active)
            )  # fmt: skip
            pools += field_bytes(4, pool, keep_default=True)
        groups = field_bytes(1, field_string(1, "Default") + quota + pools + field_string(5, "g0"))
        for extra in range(1, self.settings.pool_groups):
            pool = field_string(2, f"stratum+tcp://group{extra}.example.org:3333")
            group = field_string(1, f"Group {extra}") + quota + field_bytes(4, pool)
            groups += field_bytes(1, group + field_string(5, f"g{extra}"))
        return groups

    async def _set_pool_groups(self, request: bytes, context: Any) -> bytes:
        body = _read("PoolService/SetPoolGroups", request)
        groups: list[dict[str, Any]] = body["pool_groups"]
        pools = [pool for group in groups for pool in group["pools"]]
        if any(group["uid"] is not None for group in groups) or any(
            pool["uid"] is not None for pool in pools
        ):
            await context.abort(self._grpc.StatusCode.INVALID_ARGUMENT, "uid must not be specified")
        enabled = [(p["url"], p["user"]) for p in pools if p["enabled"] is not False]
        if not enabled:
            await context.abort(self._grpc.StatusCode.INVALID_ARGUMENT, "no enabled pool")
        self.settings.pool_passwords = [pool["password"] for pool in pools]
        if body["save_action"] in _APPLY:
            self.miner.set_pools(enabled, self.now())  # "changes will be applied that will
            self.changed()  # trigger restart" (pool.proto)
        return b""  # the echo of the configured groups is left out: clients ignore it


BRAIINS: Final = add_flavour(
    replace(
        FLAVOURS["cgminer"],
        name="braiins",
        firmware="braiins",
        description=DESCRIPTION,
        program="BOSminer+",
        version=(("API", "3.7"), ("BOSminer+", VERSION)),
        device_driver="",
        device_dname="",
        device_model="Antminer S9",
        device_hs=4.67e12,
        device_temp_c=66.0,
        pool_difficulty=65536.0,
        restart_downtime_s=10.0,
        reboot_downtime_s=90.0,
        commands=(
            ExtraCommand("fans", _cmd_fans, joinable=True),
            ExtraCommand("temps", _cmd_temps, joinable=True),
            *(
                ExtraCommand(name, _cmd_missing)
                for name in ("restart", "quit", "ascdisable", "ascenable")
            ),
        ),
        control=BraiinsControl,
    )
)
"""Braiins OS+ on an Antminer S9 (BOSminer+ 0.2.0), with its gRPC control channel."""
