"""cgminer, bfgminer, sgminer and the forks that keep their API (the generic family).

Recognised: anything that answers the cgminer API (the fallback, score 1).

Control: the API's own privileged commands, each sent alone (cgminer refuses a
privileged command inside a multi-command): ``restart`` (cgminer answers
``{"STATUS":"RESTART"}`` and re-execs; bfgminer S, Code 257), ``switchpool|N``,
``ascdisable|N``/``pgadisable|N``/``gpudisable|N`` and the ``enable`` twins. Access is
the miner's ``--api-allow``: this host needs ``W:`` (Code 45 "Access denied"
otherwise, which the planner treats as a read-only miner and probes with the harmless
``privileged`` command). There is no reboot, sleep or wake in the API, and boards that
only STATS describes (bmminer chains, Avalon MM) have no per-board command.

Sources: cgminer's ``API-README`` and ``api.c`` (messages 27, 45, 110, 111; the
``RESTART``/``BYE`` replies); bfgminer 5.5 observed.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import Any, ClassVar

from cgwatchdog.client import AsyncCgminerAPI
from cgwatchdog.errors import (
    AccessDenied,
    ActionError,
    CommandError,
    ControlDenied,
    MinerUnreachable,
    NotSent,
    NotSupported,
    ProtocolError,
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
from cgwatchdog.snapshot import Snapshot

__all__ = [
    "Cgminer",
    "CgminerChannel",
    "api_reply_summary",
    "device_command",
    "local_address",
    "send_api_command",
]

_DEVICE_LABEL = re.compile(r"([A-Za-z]+)(\d+)")
_DEVICE_COMMANDS: Mapping[str, str] = {"ASC": "asc", "PGA": "pga", "GPU": "gpu"}
# Firmware whose boards, fans or temperatures only STATS describes.
_STATS_FORKS = ("bmminer", "avalon", "hammer")


def api_reply_summary(reply: Mapping[str, Any]) -> str:
    """``STATUS S, Code 27: Switching to pool 1`` (or ``STATUS RESTART``)."""
    status = reply.get("STATUS")
    if isinstance(status, list) and status and isinstance(status[0], Mapping):
        entry = status[0]
        return f"STATUS {entry.get('STATUS', '?')}, Code {entry.get('Code', '?')}: {entry.get('Msg', '')}"
    return f"STATUS {status}"


def local_address(host: str, port: int) -> str | None:
    """This host's address as the miner sees it (a UDP connect sends no packet)."""
    try:
        with socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
        ) as s:
            s.connect((host, port))
            address: str = s.getsockname()[0]
            return address
    except OSError:
        return None


async def send_api_command(
    target: ChannelTarget, command: str, parameter: str | None = None
) -> dict[str, Any]:
    """One privileged API command, alone, with the typed errors channels raise:
    NotSent (it never left), Unconfirmed (sent, the connection dropped), ControlDenied
    (Code 45: this host lacks W: access), ActionError (any other refusal)."""
    api = AsyncCgminerAPI(
        target.host,
        target.api_port,
        timeout=target.timeout_s,
        connect_timeout=target.connect_timeout_s,
    )
    shown = command if parameter is None else f"{command}|{parameter}"
    try:
        return await api.command(command, parameter)
    except AccessDenied as exc:
        here = local_address(target.host, target.api_port)
        fix = f"; add W:{here} to its --api-allow" if here else ""
        raise ControlDenied(f"{exc}{fix}") from None
    except CommandError as exc:
        raise ActionError(str(exc)) from None
    except MinerUnreachable as exc:
        if exc.sent:
            raise Unconfirmed(f"{shown} sent, no answer: {exc}") from None
        raise NotSent(str(exc)) from None
    except ProtocolError as exc:
        raise Unconfirmed(f"{shown} sent, unreadable answer: {exc}") from None


@firmware_family
class Cgminer(Family):
    """cgminer, bfgminer, sgminer and API-compatible forks."""

    name = "cgminer"
    title = "cgminer, bfgminer and API-compatible forks"
    channel_title = "the cgminer API (port 4028), privileged commands"
    auth_title = "none: the miner's --api-allow must give this host W: access"
    restart_window_s = 120.0
    unsupported: ClassVar[Mapping[str, str]] = {
        "reboot": "the cgminer API has no reboot; use a do: exec step (a PDU, SSH)",
        "sleep": "the cgminer API has no sleep mode",
        "wake": "the cgminer API has no sleep mode",
    }
    verification = "restart: Elapsed went down; switchpool: the active pool changed; disable/enable: the device's Enabled"

    def recognise(self, identity: Identity) -> int:
        return 1

    def poll_commands(self, snapshot: Snapshot, without_stats: Snapshot | None) -> tuple[str, ...]:
        fork = (snapshot.fork or snapshot.description or "").lower()
        if any(name in fork for name in _STATS_FORKS):
            return (*BASE_COMMANDS, "stats")
        return super().poll_commands(snapshot, without_stats)

    def check_device(self, do: str, device: str) -> None:
        device_command(do, device)

    def channel(self, target: ChannelTarget) -> Channel:
        return CgminerChannel(self, target)


class CgminerChannel(Channel):
    """The cgminer API's privileged commands, one per connection."""

    async def perform(self, request: ActionRequest) -> str:
        do = request.do
        if do == "restart":
            return api_reply_summary(await send_api_command(self.target, "restart"))
        if do == "switchpool":
            if request.pool is None:
                raise ActionError("switchpool needs the pool to switch to")
            return api_reply_summary(
                await send_api_command(self.target, "switchpool", str(request.pool))
            )
        if do in ("disable", "enable"):
            command, parameter = device_command(do, request.device)
            return api_reply_summary(await send_api_command(self.target, command, parameter))
        raise self.not_supported(request)

    async def check_access(self) -> str:
        return api_reply_summary(await send_api_command(self.target, "privileged"))


def device_command(do: str, device: str | None) -> tuple[str, str]:
    """``("ascdisable", "1")`` for ``disable`` of ``ASC1``; NotSupported for a device
    the API cannot address (a board only STATS describes)."""
    if not device:
        raise NotSupported(
            f"{do} needs an alert about one device (label device), this one has none"
        )
    match = _DEVICE_LABEL.fullmatch(device)
    if match is None:
        raise NotSupported(f"device {device!r} is not KIND<number> (ASC0, PGA1, ...)")
    kind = match.group(1).upper()
    prefix = _DEVICE_COMMANDS.get(kind)
    if prefix is None:
        if kind == "BOARD":
            raise NotSupported(
                f"{device} is a board only STATS describes (bmminer chain, Avalon MM): "
                f"boards cannot be {do}d through the cgminer API"
            )
        raise NotSupported(
            f"{kind} devices cannot be {do}d through the API (only ASC, PGA and GPU)"
        )
    return f"{prefix}{do}", str(int(match.group(2)))
