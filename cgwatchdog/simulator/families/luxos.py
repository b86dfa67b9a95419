"""LuxOS in the simulator: flavour ``luxos`` (an Antminer S9 running LUXminer).

The API is bmminer's (``GHS 5s``, STATS with fans and ``temp_max``, pools with
``Diff``), except that ``devs`` lists the hashboards as ``ASC<n>`` (n the board id, from
0) as LuxOS does, and ``version`` spoofs Bitmain's keys (``BMMiner 1.0.0``,
``Miner uart_trans.1.3``) beside the real ``LUXminer`` one; every STATUS Description
reads ``LUXminer <version>``.

LuxOS's session commands, with the reply shapes of the Luxor docs
(docs.luxor.tech ``/firmware/api/sessions`` and ``/luxminer/{logon,session,reboot,
curtail}``) and luxos-tooling (``src/luxos/asyncops.py``):

- ``logon``: S, Code 316 "Session created", ``SESSION[0].SessionID`` (8 characters); while
  a session is active: E, Code 402 "Another session is active", no ``SESSION``. One
  session at a time; it expires after :data:`SESSION_IDLE_S` unused (the fleet's clock)
  and every command that uses it refreshes it.
- ``session``: S, Code 319 "Session information", the active id or ``""``.
- ``logoff|<sid>``; ``resetminer|<sid>`` (:meth:`SimulatedMiner.restart`);
  ``rebootdevice|<sid>`` (:meth:`SimulatedMiner.reboot`, and the connection closes
  without a reply, as a machine going down does); ``reboot|<sid>,<board>[,<delay>]`` (one
  board: REBOOT ``{"Board", "IsShutdown"}``, Code 305 "Reboot Scheduled"; refused while
  the miner sleeps; a delay <= 0 leaves the board off, otherwise it is back at once);
  ``disableboard|<sid>,<board>`` / ``enableboard|<sid>,<board>``
  (:meth:`SimulatedMiner.set_device_enabled`); ``curtail|<sid>,sleep`` / ``,wakeup``
  (CURTAIL ``{"Action": "sleep mode" | "wake up"}``, Code 335 "Curtailment command
  sent"; :meth:`SimulatedMiner.sleep` / ``wake``, which persists across restarts as on
  LuxOS). A restart or reboot ends the session (it lives in the LUXminer process).
- Without a valid session these answer STATUS E, Code 402 (the one session error code
  the sources show), Msg "Invalid session id".

Codes the sources do not show are this simulator's own: ``logoff`` 317, ``resetminer``
306, ``rebootdevice`` 307, ``disableboard``/``enableboard`` 310/311, an invalid board
308, a board reboot while asleep 336, an unknown curtail action 337.

For tests, :func:`luxos_state` gives a miner's :class:`LuxosState`: the control requests
its API received (command and parameter), the session, and the switch "another tool holds the
session" (:meth:`LuxosState.other_tool_logon`). Requests are recorded by the flavour's
API hook, which also counts them in ``FleetMember.commands`` (the hooked path does not)
and does not apply the ``slow`` scenario's delay.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Final

from cgwatchdog.errors import ProtocolError
from cgwatchdog.protocol import Request, decode_request
from cgwatchdog.simulator.core import (
    FLAVOURS,
    ExtraCommand,
    FleetMember,
    MinerStates,
    SimulatedMiner,
    add_flavour,
)

__all__ = [
    "CONTROL_COMMANDS",
    "LUXMINER_VERSION",
    "LUXOS",
    "RECEIVED_KEPT",
    "SESSION_IDLE_S",
    "LuxosState",
    "Received",
    "luxos_state",
]

SESSION_IDLE_S: Final = 60.0
"""LuxOS: "Sessions expire automatically after one minute. This period is refreshed
every time you use the session." (docs.luxor.tech /firmware/api/sessions)"""
LUXMINER_VERSION: Final = "2024.6.3.120000-5e0a7c1d"

CODE_REBOOT_SCHEDULED: Final = 305
CODE_SESSION_CREATED: Final = 316
CODE_SESSION_INFO: Final = 319
CODE_CURTAIL_SENT: Final = 335
CODE_SESSION_ERROR: Final = 402
# The simulator's own (no public example shows these replies).
CODE_RESETMINER: Final = 306
CODE_REBOOTDEVICE: Final = 307
CODE_INVALID_BOARD: Final = 308
CODE_BOARD_DISABLED: Final = 310
CODE_BOARD_ENABLED: Final = 311
CODE_LOGOFF: Final = 317
CODE_ASLEEP: Final = 336
CODE_BAD_CURTAIL: Final = 337

CONTROL_COMMANDS: Final = frozenset(
    {
        "logon", "logoff", "session", "kill", "resetminer", "rebootdevice", "reboot",
        "disableboard", "enableboard", "curtail", "switchpool", "restart", "quit",
        "ascdisable", "ascenable",
    }
)  # fmt: skip
"""The commands that change the miner or its session: the ones recorded."""
RECEIVED_KEPT: Final = 1000
"""Control requests kept per miner (the oldest go first: ``simulate`` runs for days)."""

_ID_CHARS: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass(frozen=True, slots=True)
class Received:
    """One request the miner's API received."""

    command: str
    parameter: str | None
    at: float


class LuxosState:
    """One simulated LuxOS miner's session and the requests its API received."""

    __slots__ = ("_serial", "last_used_at", "logons", "miner", "received", "session_id")

    def __init__(self, miner: SimulatedMiner) -> None:
        self.miner = miner
        self.session_id: str | None = None
        self.last_used_at = 0.0
        self.logons = 0
        """Sessions opened (by ``logon`` or :meth:`other_tool_logon`)."""
        self.received: deque[Received] = deque(maxlen=RECEIVED_KEPT)
        """The control requests received (:data:`CONTROL_COMMANDS`), oldest first."""
        self._serial = 0

    def active_session(self, now: float) -> str | None:
        """The session id in force at ``now`` (None: none, or it expired unused)."""
        if self.session_id is not None and now - self.last_used_at >= SESSION_IDLE_S:
            self.session_id = None
        return self.session_id

    def open_session(self, now: float) -> str:
        """Create the one session (the caller checked that none is active)."""
        self._serial += 1
        digest = hashlib.sha256(f"{self.miner.name}/{self.miner.seed}/{self._serial}".encode())
        self.session_id = "".join(_ID_CHARS[b % len(_ID_CHARS)] for b in digest.digest()[:8])
        self.last_used_at = now
        self.logons += 1
        return self.session_id

    def end_session(self) -> None:
        """Whoever holds the session is logged off."""
        self.session_id = None

    def other_tool_logon(self, now: float) -> str:
        """Test switch: another tool logs on, or refreshes the session in force; the
        session expires :data:`SESSION_IDLE_S` after the last call (or use)."""
        active = self.active_session(now)
        if active is not None:
            self.last_used_at = now
            return active
        return self.open_session(now)

    def use(self, session: str, now: float) -> bool:
        """Whether ``session`` is the one in force; using it refreshes it."""
        if not session or self.active_session(now) != session:
            return False
        self.last_used_at = now
        return True

    def control_requests(self) -> list[tuple[str, str | None]]:
        """(command, parameter) of the control requests received, oldest first."""
        return [(r.command, r.parameter) for r in self.received]


_STATES: MinerStates[LuxosState] = MinerStates(LuxosState)


def luxos_state(miner: SimulatedMiner) -> LuxosState:
    """``miner``'s LuxOS state (made on first use)."""
    return _STATES(miner)


# -- replies --------------------------------------------------------------------------------


def _reply(
    miner: SimulatedMiner,
    now: float,
    letter: str,
    code: int,
    msg: str,
    section: str | None = None,
    entries: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    reply: dict[str, Any] = {}
    if section is not None:
        reply[section] = entries or []
    reply["STATUS"] = [
        {
            "Code": code,
            "Description": miner.flavour.description,
            "Msg": msg,
            "STATUS": letter,
            "When": int(now),
        }
    ]
    reply["id"] = 1
    return reply


def _session_args(
    miner: SimulatedMiner, param: str | None, now: float
) -> list[str] | dict[str, Any]:
    """The parameters after a valid session id, or the refusal."""
    parts = [part.strip() for part in (param or "").split(",")]
    if not luxos_state(miner).use(parts[0], now):
        return _reply(miner, now, "E", CODE_SESSION_ERROR, "Invalid session id")
    return parts[1:]


def _board(miner: SimulatedMiner, args: list[str], now: float) -> int | dict[str, Any]:
    count = len(miner.device_statuses(now))
    try:
        board = int(args[0]) if args else -1
    except ValueError:
        board = -1
    if not 0 <= board < count:
        shown = args[0] if args else ""
        return _reply(
            miner, now, "E", CODE_INVALID_BOARD,
            f"Invalid board id '{shown}' - range is 0 - {count - 1}",
        )  # fmt: skip
    return board


# -- commands -------------------------------------------------------------------------------


def _logon(miner: SimulatedMiner, _param: str | None, now: float) -> dict[str, Any]:
    state = luxos_state(miner)
    if state.active_session(now) is not None:
        return _reply(miner, now, "E", CODE_SESSION_ERROR, "Another session is active")
    session = state.open_session(now)
    return _reply(
        miner, now, "S", CODE_SESSION_CREATED, "Session created", "SESSION",
        [{"SessionID": session}],
    )  # fmt: skip


def _session(miner: SimulatedMiner, _param: str | None, now: float) -> dict[str, Any]:
    active = luxos_state(miner).active_session(now) or ""
    return _reply(
        miner, now, "S", CODE_SESSION_INFO, "Session information", "SESSION",
        [{"SessionID": active}],
    )  # fmt: skip


def _logoff(miner: SimulatedMiner, param: str | None, now: float) -> dict[str, Any]:
    args = _session_args(miner, param, now)
    if isinstance(args, dict):
        return args
    luxos_state(miner).end_session()
    return _reply(miner, now, "S", CODE_LOGOFF, "Session terminated")


def _resetminer(miner: SimulatedMiner, param: str | None, now: float) -> dict[str, Any]:
    args = _session_args(miner, param, now)
    if isinstance(args, dict):
        return args
    miner.restart(now)
    luxos_state(miner).end_session()
    return _reply(miner, now, "S", CODE_RESETMINER, "Resetting miner")


def _rebootdevice(miner: SimulatedMiner, param: str | None, now: float) -> dict[str, Any]:
    args = _session_args(miner, param, now)
    if isinstance(args, dict):
        return args
    miner.reboot(now)
    luxos_state(miner).end_session()
    # Sent only when answered without the API hook: the hook drops the connection.
    return _reply(miner, now, "S", CODE_REBOOTDEVICE, "Rebooting device")


def _reboot_board(miner: SimulatedMiner, param: str | None, now: float) -> dict[str, Any]:
    args = _session_args(miner, param, now)
    if isinstance(args, dict):
        return args
    if miner.sleeping:
        return _reply(
            miner, now, "E", CODE_ASLEEP, "Board reboot refused: curtailment mode is sleep"
        )
    board = _board(miner, args, now)
    if isinstance(board, dict):
        return board
    try:
        delay = int(args[1]) if len(args) > 1 and args[1] else None
    except ValueError:
        delay = None
    shutdown = delay is not None and delay <= 0
    miner.set_device_enabled(board, False, now)
    if not shutdown:
        miner.set_device_enabled(board, True, now)  # back at once: re-initialised
    return _reply(
        miner, now, "S", CODE_REBOOT_SCHEDULED, "Reboot Scheduled", "REBOOT",
        [{"Board": board, "IsShutdown": shutdown}],
    )  # fmt: skip


def _set_board(
    miner: SimulatedMiner, param: str | None, now: float, enable: bool
) -> dict[str, Any]:
    args = _session_args(miner, param, now)
    if isinstance(args, dict):
        return args
    board = _board(miner, args, now)
    if isinstance(board, dict):
        return board
    miner.set_device_enabled(board, enable, now)
    if enable:
        return _reply(miner, now, "S", CODE_BOARD_ENABLED, f"Board {board} enabled")
    return _reply(miner, now, "S", CODE_BOARD_DISABLED, f"Board {board} disabled")


def _disableboard(miner: SimulatedMiner, param: str | None, now: float) -> dict[str, Any]:
    return _set_board(miner, param, now, False)


def _enableboard(miner: SimulatedMiner, param: str | None, now: float) -> dict[str, Any]:
    return _set_board(miner, param, now, True)


def _curtail(miner: SimulatedMiner, param: str | None, now: float) -> dict[str, Any]:
    args = _session_args(miner, param, now)
    if isinstance(args, dict):
        return args
    action = args[0] if args else ""
    if action == "sleep":
        miner.sleep(now)
        done = "sleep mode"
    elif action == "wakeup":
        miner.wake(now)
        done = "wake up"
    else:
        return _reply(miner, now, "E", CODE_BAD_CURTAIL, f"Invalid curtail action '{action}'")
    return _reply(
        miner, now, "S", CODE_CURTAIL_SENT, "Curtailment command sent", "CURTAIL",
        [{"Action": done}],
    )  # fmt: skip


# -- the API hook: records requests, drops the connection of a device reboot ---------------


def _commands_of(request: Request) -> tuple[str, ...]:
    if len(request.commands) == 1 and "+" in request.commands[0]:
        return tuple(request.commands[0].split("+"))
    return request.commands


def _api_hook(
    miner: SimulatedMiner, member: FleetMember | None, data: bytes, now: float
) -> bytes | None:
    try:
        request = decode_request(data)
    except ProtocolError:
        return None  # cgminer's own answers to malformed requests
    state = luxos_state(miner)
    commands = _commands_of(request)
    for command in commands:
        if command in CONTROL_COMMANDS:
            state.received.append(Received(command, request.parameter, now))
        if member is not None:
            member.commands[command] = member.commands.get(command, 0) + 1
    if commands != ("rebootdevice",):
        return None
    reboots = miner.reboots
    out = miner.handle(request, now)
    # The machine went down before it answered: the connection closes with no reply.
    return b"" if miner.reboots > reboots else out


LUXOS: Final = add_flavour(
    replace(
        FLAVOURS["bmminer"],
        name="luxos",
        firmware="luxos",
        description=f"LUXminer {LUXMINER_VERSION}",
        program="LUXminer",
        version=(
            ("API", "3.7"),
            ("BMMiner", "1.0.0"),
            ("CompileTime", "Mon Jun  3 12:00:00 UTC 2024"),
            ("LUXminer", LUXMINER_VERSION),
            ("Miner", "uart_trans.1.3"),
            ("Type", "Antminer S9"),
        ),
        lists_devices=True,
        stats_brace_quirk=False,
        restart_downtime_s=10.0,
        reboot_downtime_s=90.0,
        commands=(
            ExtraCommand("logon", _logon),
            ExtraCommand("session", _session, joinable=True),
            ExtraCommand("logoff", _logoff),
            ExtraCommand("resetminer", _resetminer),
            ExtraCommand("rebootdevice", _rebootdevice),
            ExtraCommand("reboot", _reboot_board),
            ExtraCommand("disableboard", _disableboard),
            ExtraCommand("enableboard", _enableboard),
            ExtraCommand("curtail", _curtail),
        ),
        api_hook=_api_hook,
    )
)
"""LuxOS on an Antminer S9: LUXminer's sessions and control commands."""
