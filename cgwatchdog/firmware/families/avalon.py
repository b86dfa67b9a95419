"""Avalon (Canaan's firmware: a cgminer 4.11 fork on port 4028).

Recognised
    VERSION carries Canaan's keys (``PROD: AvalonMiner 15-194``, ``MODEL``) or any
    identifying string names Avalon (score 25, a vendor's stock firmware). A capture
    without VERSION (``avalon-1047-20051101``: summary, stats and pools only) is
    recognised weakly (score 5) by its summary: a ``cgminer`` Description and an
    ``MHS 30s`` window with no ``MHS 5s`` (cgminer names the window after its log
    interval, ``api.c`` ``"MHS %ds"``, and Canaan's firmware runs with 30 s; every other
    capture and flavour has a 5 s or 20 s window). The surer sign, the ``MM ID0``
    strings in STATS, is not in the :class:`~cgwatchdog.firmware.base.Identity` the
    framework builds. A plain cgminer taken for an Avalon this way loses little: the
    same API commands restart it and switch its pool, and the Avalon-only ones are
    refused harmlessly. Polled: ``summary``, ``devs``, ``pools`` and ``stats`` (boards,
    fans and temperatures are only in the ``MM ID<n>`` strings of STATS).

Control: the cgminer API itself, no credentials. Avalon firmware takes privileged
commands from the LAN in practice: pyasic and AvalonPS7 send them unauthenticated. That
is *inferred from those tools*; no shipped configuration showing ``--api-allow`` was
found. A miner that answers Code 45 is ``ControlDenied`` (add ``W:<this host>`` to its
``--api-allow``), and the planner holds actions on it.

``restart``
    ``restart``: cgminer re-executes itself and answers ``{"STATUS":"RESTART"}`` (or
    drops the connection: ``Unconfirmed``). Verified by ``Elapsed`` reset. (pyasic calls
    this its Avalon ``reboot``; it is only the mining process.)
``reboot``
    ``ascset|0,reboot,0``, answered ``ASC 0 set OK`` (cgminer message 119), then the
    controller reboots; the miner's return with ``Elapsed`` reset verifies it. That is
    the reboot-with-delay of current firmware (AvalonPS7 ``Restart-AvalonMiner.ps1``,
    ``MD/ASCSET.md``: "reboot: schedule reboot (delay)"). In the open-source drivers of
    older AUC/MM models (upstream ``driver-avalon8.c``, a Canaan developer's
    ``driver-avalon10.c``) the value is a hash module id 1..N instead and 0 is refused
    with ``invalid module_id``: that answer is ``NotSupported`` (a module reset would
    not restart the controller, so it could not be verified).
``switchpool``
    ``switchpool|N`` (cgminer message 27), N the pool's cgminer id. Verified by the
    active pool changing.
``sleep`` / ``wake``
    ``ascset|0,softoff,1:<unix time + 5 s>`` / ``ascset|0,softon,1:<unix time + 5 s>``
    (pyasic ``stop_mining``/``resume_mining``, which schedule 5 s ahead); success when
    the Msg says ``success`` (pyasic; AvalonPS7 shows ``ASC 0 set info: success
    softoff:...``) or ``ASC 0 set OK``. Only some models have these options (the Avalon
    Q lists them, the Nano 3S and the 1047-era drivers do not): ``Unknown option`` is
    ``NotSupported``. The time is the miner's wall clock, so this host's clock must be
    roughly right. Verified by the hashrate falling to near 0 / hashing again.
``disable`` / ``enable``
    Not supported: the firmware lists the whole machine as one ASC (its boards exist
    only in the ``MM ID`` strings), so ``ascdisable|0`` would stop every board, and no
    per-board command is known (pyasic, AvalonPS7).

Sources: pyasic ``pyasic/miners/backends/avalonminer.py`` (``restart``, ``ascset``
softoff/softon, ``ASC 0 set OK``); AvalonPS7 ``Restart-AvalonMiner.ps1``,
``MD/ASCSET.md``, ``DEBUG/Stop-AvalonMinerHashing.ps1``; cgminer ``api.c`` (messages
27, 45, 119 ``ASC %d set OK``, 120 ``ASC %d set failed: %s``; ``restart``, ``switchpool``
and ``ascset`` are privileged). Unverified against hardware: the exact Msg of
softoff/softon, how long a reboot takes, and the default ``--api-allow``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from cgwatchdog.errors import ActionError, NotSupported
from cgwatchdog.firmware.base import (
    BASE_COMMANDS,
    ActionRequest,
    Channel,
    ChannelTarget,
    Family,
    Identity,
    firmware_family,
)
from cgwatchdog.firmware.families.cgminer import api_reply_summary, send_api_command
from cgwatchdog.snapshot import Snapshot

__all__ = ["Avalon", "AvalonChannel"]

SOFT_SWITCH_AHEAD_S: Final = 5
"""softoff/softon take effect at a given unix time: pyasic schedules 5 s ahead."""
_SET_OK: Final = "ASC 0 set OK"
# ascset's refusals (message 120 with the driver's text) that mean "this model can't".
_NOT_THIS_MODEL: Final = ("Unknown option", "invalid module_id")


@firmware_family
class Avalon(Family):
    """Canaan Avalon miners on Canaan's cgminer firmware."""

    name = "avalon"
    title = "Avalon (Canaan firmware)"
    channel_title = "the cgminer API (port 4028): restart, switchpool, ascset"
    auth_title = "none: the miner's --api-allow must give this host W: access"
    restart_window_s = 120.0
    reboot_window_s = 600.0
    unsupported: ClassVar[Mapping[str, str]] = {
        "disable": "Avalon firmware lists the whole machine as one ASC; it has no "
        "per-board control",
        "enable": "Avalon firmware lists the whole machine as one ASC; it has no per-board control",
    }
    verification = (
        "restart/reboot: Elapsed reset and the condition cleared; switchpool: the active "
        "pool changed; sleep: hashrate near 0; wake: hashing again"
    )

    def recognise(self, identity: Identity) -> int:
        if "PROD" in identity.version or "avalon" in identity.text():
            return 25
        summary = identity.summary
        description = (identity.description or "").lower()
        if description.startswith("cgminer") and "MHS 30s" in summary and "MHS 5s" not in summary:
            return 5
        return 0

    def firmware_version(self, identity: Identity) -> str | None:
        version = identity.version.get("VERSION")
        if isinstance(version, str) and version.strip():
            return version.strip()
        return identity.fork

    def poll_commands(self, snapshot: Snapshot, without_stats: Snapshot | None) -> tuple[str, ...]:
        return (*BASE_COMMANDS, "stats")

    def channel(self, target: ChannelTarget) -> Channel:
        return AvalonChannel(self, target)


class AvalonChannel(Channel):
    """Avalon's privileged API commands, one per connection."""

    async def perform(self, request: ActionRequest) -> str:
        do = request.do
        if do == "restart":
            return api_reply_summary(await send_api_command(self.target, "restart"))
        if do == "switchpool":
            if request.pool is None:
                raise ActionError("switchpool needs the pool to switch to")
            reply = await send_api_command(self.target, "switchpool", str(request.pool))
            return api_reply_summary(reply)
        if do == "reboot":
            return await self._ascset(do, "reboot,0")
        if do in ("sleep", "wake"):
            option = "softoff" if do == "sleep" else "softon"
            at = int(time.time()) + SOFT_SWITCH_AHEAD_S
            return await self._ascset(do, f"{option},1:{at}")
        raise self.not_supported(request)

    async def check_access(self) -> str:
        return api_reply_summary(await send_api_command(self.target, "privileged"))

    async def _ascset(self, do: str, setting: str) -> str:
        """``ascset|0,<setting>``; NotSupported where this model lacks the option."""
        try:
            reply = await send_api_command(self.target, "ascset", f"0,{setting}")
        except ActionError as exc:
            # Only a plain refusal (STATUS E): not NotSent, Unconfirmed or ControlDenied.
            if type(exc) is ActionError and any(m in str(exc) for m in _NOT_THIS_MODEL):
                raise NotSupported(
                    f"not supported by avalon: {do} on {self.target.name}: this model's "
                    f"firmware has no such ascset option ({exc})"
                ) from None
            raise
        message = _message(reply)
        if message.startswith(_SET_OK) or "success" in message.lower():
            return api_reply_summary(reply)
        raise ActionError(
            f"{self.target.name}: ascset|0,{setting} answered {message!r}, not {_SET_OK!r}"
        )


def _message(reply: Mapping[str, Any]) -> str:
    status = reply.get("STATUS")
    if isinstance(status, list) and status and isinstance(status[0], Mapping):
        return str(status[0].get("Msg", ""))
    return str(status or "")
