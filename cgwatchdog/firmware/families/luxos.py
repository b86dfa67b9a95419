"""LuxOS (Luxor's firmware for Antminers; its mining program is LUXminer).

Recognised: LuxOS answers ``version`` with Bitmain's keys spoofed (``BMMiner 1.0.0``,
``Miner uart_trans.1.3``) so that tools without LuxOS support take it for stock
firmware, but it adds a ``LUXminer`` key holding its real version, and every STATUS
``Description`` reads ``LUXminer <version>`` (LUXDOC ``/firmware/api/cgminer/version``;
the same shape in asic-rs ``asic-rs-firmwares/luxminer/src/test/json/v1/version.json``).
Either scores 60, above the stock Antminer family (which goes by ``bmminer``); a plain
bmminer reply has neither. The firmware version is the ``LUXminer`` value
(``2024.2.19.131822-ef17c0c4``); pyasic reads ``Miner`` instead
(``pyasic/miners/backends/luxminer.py:398-410``), which older LuxOS spoofs.

Polled: ``summary``, ``devs``, ``pools`` and ``stats``. LuxOS lists each hashboard in
``devs`` as ``ASC<n>`` (``n`` is the board id, from 0, with Temperature and its hash
rates: LUXDOC ``/cgminer/asc``; asic-rs ``.../v1/devs.json``), and its ``stats`` entry
carries the fans (``fan1``.., ``fan_num``) and ``temp_max`` the way bmminer's does
(asic-rs ``.../v1/stats.json``; pyasic reads boards from ``stats``,
``backends/luxminer.py:263-311``). Nothing else is needed for boards, fans and
temperatures.

Control: the cgminer API on the API port (4028; ``control_port`` overrides it), one
command per connection. Commands that change the miner need a *session*; there is no
password ("LUXminer sessions are not a security feature", LUXDOC
``/firmware/api/sessions``), so ``credentials`` are not used and never sent.

- Session: ``logon`` answers ``SESSION[0].SessionID`` (STATUS S, Code 316 "Session
  created", LUXDOC ``/api/sessions``, ``/luxminer/logon``). The id goes *first* among the
  comma-separated parameters of each command that needs it (LUXDOC ``/api/sessions``;
  luxos-tooling ``src/luxos/asyncops.py:398-418``). Only one session exists at a time;
  it expires after a minute unused. A ``logon`` while another is active answers Code 402
  "Another session is active" with no ``SESSION`` (``asyncops.py:282-302``): that is
  :class:`~cgwatchdog.errors.SessionBusy`, nothing was done and the planner tries the
  step again later. cgwatchdog never borrows a session another tool holds (pyasic takes
  the id the ``session`` command reveals, ``pyasic/rpc/luxminer.py:60-75``; the real
  owner could be half-way through its own changes) and never uses ``kill`` (forced
  session kill, ``rpc/luxminer.py:522-531``). It always ends with ``logoff|<sid>``
  (``asyncops.py:305-312``, ``:432-444``), after a failure too and after an action that
  dropped the connection; a ``logoff`` that gets no answer is let go, since the session
  expires within a minute anyway. A Code 402 to the action itself (another tool took
  the session meanwhile) is SessionBusy too.
- ``restart``: ``resetminer|<sid>`` restarts the mining process (pyasic
  ``rpc/luxminer.py:689-698``, ``backends/luxminer.py:108-117``). Verified by Elapsed
  going down and the condition clearing.
- ``reboot``: ``rebootdevice|<sid>`` reboots the machine (``rpc/luxminer.py:664-673``,
  ``backends/luxminer.py:135-141``). LuxOS's own ``reboot`` is **not** used: it reboots
  one hashboard (``reboot|<sid>,<board_id>[,<delay_s>]``, LUXDOC ``/luxminer/reboot``).
  The reply is often lost to the reboot (Unconfirmed); verified by the miner going away
  and coming back with Elapsed reset.
- ``switchpool``: plain ``switchpool|<N>``, no session (luxos-tooling ``api.json:188``
  marks it ``logon_required: false``; ``rpc/luxminer.py:772-784``), N the pool id as
  polled. Verified by the active pool.
- ``disable``/``enable`` a board: ``disableboard|<sid>,<board_id>`` /
  ``enableboard|<sid>,<board_id>``. Both need a session (``api.json:44``, ``:53``), but
  no public source shows their parameters: ``<sid>,<board_id>`` is chosen because every
  LuxOS board command documented takes the session first and then the board id from 0
  (``reboot``, ``frequencyset``, ``healthchipget``: LUXDOC ``/luxminer/reboot``,
  ``rpc/luxminer.py:385-492``). **Unverified against hardware.** The alert's device label
  maps to the board id so: ``ASC<n>`` (a ``devs`` entry, how LuxOS lists boards) is board
  ``n``; ``BOARD<n>`` (a bmminer-style STATS chain, ``chain_rate<n>``) is board ``n-1``,
  since LuxOS numbers STATS chains from 1 and boards from 0 (in asic-rs's capture
  ``chain_rate1`` is ASC 0's hash rate, ``chain_rate2`` ASC 1's). Verified by the
  device's Enabled in ``devs``.
- ``sleep``/``wake``: ``curtail|<sid>,sleep`` / ``curtail|<sid>,wakeup`` (STATUS S, Code
  335 "Curtailment command sent", ``CURTAIL[0].Action`` "sleep mode" / "wake up": LUXDOC
  ``/luxminer/curtail``). Sleep turns the hashboards and power supply off and *persists
  across restarts* until ``wakeup``, which is why a ladder that sleeps must wake.
  Verified by the hash rate (near 0, then back).

Unverified against hardware: the ``disableboard``/``enableboard`` parameters and replies,
the STATUS codes of ``logoff``, ``resetminer``, ``rebootdevice`` and of a command sent
with an expired or wrong session (only Code 402 is in the sources), and how long
``resetminer`` and ``rebootdevice`` keep the API away (the windows below are estimates).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from cgwatchdog.client import AsyncCgminerAPI
from cgwatchdog.errors import (
    AccessDenied,
    ActionError,
    CgwatchdogError,
    CommandError,
    ControlDenied,
    MinerUnreachable,
    NotSent,
    NotSupported,
    ProtocolError,
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
from cgwatchdog.firmware.families.cgminer import api_reply_summary
from cgwatchdog.snapshot import Snapshot

__all__ = ["SESSION_ACTIVE_CODE", "Luxos", "LuxosChannel", "board_id"]

log = logging.getLogger(__name__)

SESSION_ACTIVE_CODE = 402
"""``logon`` while another session is active (luxos-tooling ``asyncops.py:289-290``)."""

_LUXMINER = "luxminer"
_DEVICE_LABEL = re.compile(r"([A-Za-z]+)(\d+)")
# The actions that need a session, and the LuxOS command each one sends.
_SESSION_COMMANDS: Mapping[str, str] = {
    "restart": "resetminer",
    "reboot": "rebootdevice",
    "disable": "disableboard",
    "enable": "enableboard",
    "sleep": "curtail",
    "wake": "curtail",
}
_CURTAIL: Mapping[str, str] = {"sleep": "sleep", "wake": "wakeup"}


def _luxminer_version(identity: Identity) -> str | None:
    for key, value in identity.version.items():
        if isinstance(key, str) and key.lower() == _LUXMINER:
            text = str(value).strip()
            return text or None
    return None


def board_id(do: str, device: str | None) -> int:
    """LuxOS's board id (from 0) for the device an alert names: ``ASC<n>`` (``devs``)
    is board ``n``, ``BOARD<n>`` (a STATS chain, numbered from 1) is board ``n-1``;
    NotSupported for anything else."""
    if not device:
        raise NotSupported(f"{do} needs an alert about one board (label device), this one has none")
    match = _DEVICE_LABEL.fullmatch(device)
    kind = match.group(1).upper() if match else ""
    if match is None or kind not in ("ASC", "BOARD"):
        raise NotSupported(
            f"device {device!r} is not a LuxOS hashboard (ASC<n> from devs, BOARD<n> from stats)"
        )
    number = int(match.group(2))
    if kind == "ASC":
        return number
    if number < 1:
        raise NotSupported(f"{device}: LuxOS numbers its STATS chains from 1, there is no BOARD0")
    return number - 1


@firmware_family
class Luxos(Family):
    """LuxOS (LUXminer) on Antminers."""

    name = "luxos"
    title = "LuxOS (Luxor firmware, LUXminer)"
    channel_title = "the cgminer API (port 4028) inside a LuxOS session (logon/logoff)"
    auth_title = "none: one session at a time from logon (not a security feature), no password"
    # Estimates (no public figure): resetminer re-initialises and ramps every board.
    restart_window_s = 300.0
    reboot_window_s = 600.0
    unsupported: ClassVar[Mapping[str, str]] = {}
    verification = (
        "restart/reboot: Elapsed reset and the condition cleared; switchpool: the active "
        "pool; disable/enable: the board's Enabled in devs; sleep: hash rate near 0; "
        "wake: hashing again"
    )

    def recognise(self, identity: Identity) -> int:
        if _luxminer_version(identity) is not None:
            return 60
        if (identity.description or "").strip().lower().startswith(_LUXMINER):
            return 60
        return 0

    def firmware_version(self, identity: Identity) -> str | None:
        version = _luxminer_version(identity)
        if version is not None:
            return version
        description = (identity.description or "").strip()
        if description.lower().startswith(_LUXMINER + " "):
            return description[len(_LUXMINER) + 1 :].strip() or None
        return identity.fork

    def poll_commands(self, snapshot: Snapshot, without_stats: Snapshot | None) -> tuple[str, ...]:
        return (*BASE_COMMANDS, "stats")

    def check_device(self, do: str, device: str) -> None:
        board_id(do, device)

    def channel(self, target: ChannelTarget) -> Channel:
        return LuxosChannel(self, target)


class LuxosChannel(Channel):
    """One LuxOS miner's API: logon, the command with the session id first, logoff."""

    async def perform(self, request: ActionRequest) -> str:
        do = request.do
        if do == "switchpool":
            if request.pool is None:
                raise ActionError("switchpool needs the pool to switch to")
            pool = str(request.pool)
            reply = await self._command("switchpool", pool, f"switchpool|{pool}")
            return api_reply_summary(reply)
        command = _SESSION_COMMANDS.get(do)
        if command is None:
            raise self.not_supported(request)
        if do in ("disable", "enable"):
            argument: str | None = str(board_id(do, request.device))
        else:
            argument = _CURTAIL.get(do)
        shown = f"{command}|<session>" + ("" if argument is None else f",{argument}")
        session = await self._logon()
        try:
            parameter = session if argument is None else f"{session},{argument}"
            reply = await self._command(
                command, parameter, shown, going_down=do in ("restart", "reboot")
            )
        finally:
            await self._logoff(session)
        return f"{shown}: {api_reply_summary(reply)}"

    async def check_access(self) -> str:
        session = await self._logon()
        await self._logoff(session, quiet=False)
        return "logon and logoff accepted (a LuxOS session is free)"

    # -- the session --------------------------------------------------------------------

    def _busy(self, detail: str) -> SessionBusy:
        return SessionBusy(
            f"another tool holds the LuxOS session of {self.target.name}; cgwatchdog tries "
            f"again ({detail})"
        )

    async def _logon(self) -> str:
        """A session of our own; SessionBusy while another tool holds one."""
        try:
            reply = await self._command("logon", None, "logon")
        except Unconfirmed as exc:
            # Nothing was done; a session the lost reply may have opened expires by itself.
            raise NotSent(
                f"{exc}; nothing done (a session it may have opened expires within a minute)"
            ) from None
        sessions = reply.get("SESSION")
        entry = sessions[0] if isinstance(sessions, list) and sessions else None
        session = entry.get("SessionID") if isinstance(entry, Mapping) else None
        if isinstance(session, str | int) and str(session):
            return str(session)
        if _status_code(reply) == SESSION_ACTIVE_CODE:
            raise self._busy(f"logon: {api_reply_summary(reply)}")
        raise ActionError(
            f"{self.target.name}: logon answered without a SessionID ({api_reply_summary(reply)})"
        )

    async def _logoff(self, session: str, *, quiet: bool = True) -> None:
        """End our session. After an action a failure is let go (the miner restarting,
        rebooting, or the session gone): it expires within a minute by itself."""
        try:
            await self._command("logoff", session, "logoff|<session>")
        except CgwatchdogError as exc:
            if not quiet:
                raise
            log.debug(
                "%s: logoff failed (the session expires by itself): %s", self.target.name, exc
            )

    # -- one command --------------------------------------------------------------------

    async def _command(
        self, command: str, parameter: str | None, shown: str, *, going_down: bool = False
    ) -> dict[str, Any]:
        """One command on its own connection, with the typed errors channels raise
        (``shown`` names it in messages without the session id; ``going_down``: the
        command restarts or reboots the miner, which may drop the connection)."""
        target = self.target
        api = AsyncCgminerAPI(
            target.host,
            target.control_port,
            timeout=target.timeout_s,
            connect_timeout=target.connect_timeout_s,
        )
        try:
            return await api.command(command, parameter)
        except AccessDenied as exc:
            raise ControlDenied(
                f"{target.name}: {shown} refused: Code {exc.code}: {exc.msg}; allow this host "
                "to write on the miner's API"
            ) from None
        except CommandError as exc:
            if exc.code == SESSION_ACTIVE_CODE:
                raise self._busy(f"{shown}: Code {exc.code}: {exc.msg}") from None
            raise ActionError(
                f"{target.name}: {shown} refused: STATUS {exc.status}, Code {exc.code}: {exc.msg}"
            ) from None
        except MinerUnreachable as exc:
            if exc.sent and going_down:
                raise Unconfirmed(
                    f"{target.name}: {shown} sent; no answer ({exc.kind.value}), as when the "
                    "miner goes down at once: verification decides"
                ) from None
            if exc.sent:
                raise Unconfirmed(f"{target.name}: {shown} sent, no answer: {exc}") from None
            raise NotSent(f"{target.name}: {shown} not sent: {exc}") from None
        except ProtocolError as exc:
            raise Unconfirmed(f"{target.name}: {shown} sent, unreadable answer: {exc}") from None


def _status_code(reply: Mapping[str, Any]) -> int | None:
    status = reply.get("STATUS")
    entry = status[0] if isinstance(status, list) and status else None
    code = entry.get("Code") if isinstance(entry, Mapping) else None
    return code if isinstance(code, int) else None
