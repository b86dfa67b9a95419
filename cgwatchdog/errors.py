"""Every error cgwatchdog raises, in one tree.

Third-party and OS exceptions (``OSError``, ``TimeoutError``, ``json.JSONDecodeError``,
``requests``/``smtplib`` errors, pydantic's ``ValidationError``) are converted into these
where they enter the program, and nowhere else. Messages are written for a farm operator:
they say what happened, where, and what to do about it.

    CgwatchdogError
    ├── ProtocolError            a reply that cannot be read as the cgminer API    not_api
    │   └── ReplyTooLarge        a reply past the size cap
    ├── CommandError             the miner answered with STATUS E or F     refused_command
    │   ├── InvalidCommand       code 14: the command (or multi-command) is unknown
    │   └── AccessDenied         code 45: privileged command, host lacks W: access
    ├── MinerUnreachable         no usable answer from the address                 network
    │   ├── ConnectionRefused    nothing listens on the port                       refused
    │   ├── HostNotFound         the host name does not resolve                        dns
    │   ├── ConnectionReset      closed or reset before the reply was complete       reset
    │   └── MinerTimeout         a deadline passed
    │       ├── ConnectTimeout   no connection within the connect deadline  connect_timeout
    │       └── ReadTimeout      connected, but no complete reply in time      read_timeout
    ├── ConfigError              invalid configuration; carries every problem found
    ├── NotifyError              a notification could not be delivered
    ├── ActionError              a remediation could not be carried out
    │   ├── NotSent              the request never reached the miner (refused, DNS, ...)
    │   ├── Unconfirmed          sent, but no answer came (a reboot drops the connection)
    │   ├── NotSupported         the firmware family has no way to do this action
    │   ├── SessionBusy          another tool holds the control session: try later
    │   └── ControlDenied        the miner refused the control channel: fix on its side
    │       ├── AuthFailed       wrong credentials (HTTP 401, token or session refused)
    │       └── WriteDisabled    the firmware's write API is switched off
    └── StoreError               the state file cannot be read or written

The right-hand column is each polling failure's :class:`FailureKind`, which ``poll
--json`` reports as ``error_kind`` (the way httpx tells ``ConnectTimeout`` from
``ReadTimeout``): scripts may rely on those names. ``sent`` says whether a request can
have reached the miner (False for refused, dns and connect_timeout), which the action
log needs to tell "not sent" from "sent, no answer".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "AccessDenied",
    "ActionError",
    "AuthFailed",
    "CgwatchdogError",
    "CommandError",
    "ConfigError",
    "ConfigProblem",
    "ConnectTimeout",
    "ConnectionRefused",
    "ConnectionReset",
    "ControlDenied",
    "FailureKind",
    "HostNotFound",
    "InvalidCommand",
    "MinerTimeout",
    "MinerUnreachable",
    "NotSent",
    "NotSupported",
    "NotifyError",
    "ProtocolError",
    "ReadTimeout",
    "ReplyTooLarge",
    "SessionBusy",
    "StoreError",
    "Unconfirmed",
    "WriteDisabled",
]

EXIT_OK = 0
"""Exit status: done, all well."""
EXIT_FAILURE = 1
"""Exit status: a runtime failure (a miner refused, the port is taken, ...)."""
EXIT_USAGE = 2
"""Exit status: a usage or configuration error; nothing was started."""

ACCESS_DENIED_CODE = 45
INVALID_COMMAND_CODE = 14


class FailureKind(enum.Enum):
    """Why polling a miner failed, in the words ``poll --json`` uses (``error_kind``)."""

    REFUSED = "refused"
    """Connection refused: nothing listens on the port (API disabled, wrong port)."""
    CONNECT_TIMEOUT = "connect_timeout"
    """No connection within the connect deadline (host down, firewall dropping)."""
    READ_TIMEOUT = "read_timeout"
    """Connected, but the reply did not complete within the deadline."""
    RESET = "reset"
    """Closed or reset before a complete reply (often: not in the miner's --api-allow)."""
    DNS = "dns"
    """The host name does not resolve."""
    NETWORK = "network"
    """Another socket error: no route to the host, network unreachable."""
    NOT_API = "not_api"
    """Something answered, but not a readable cgminer API reply."""
    REFUSED_COMMAND = "refused_command"
    """The miner answered the poll's command with STATUS E or F."""


class CgwatchdogError(Exception):
    """Base of every error cgwatchdog raises on purpose."""


class ProtocolError(CgwatchdogError):
    """The bytes a miner sent cannot be read as a cgminer API reply."""

    kind: ClassVar[FailureKind] = FailureKind.NOT_API


class ReplyTooLarge(ProtocolError):
    """The reply grew past the configured size cap before it ended."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        super().__init__(
            f"reply larger than {limit_bytes} bytes; raise the size cap if this miner "
            "really sends that much"
        )


class CommandError(CgwatchdogError):
    """The miner refused or failed the command (STATUS E or F)."""

    kind: ClassVar[FailureKind] = FailureKind.REFUSED_COMMAND

    def __init__(
        self,
        command: str,
        code: int | None,
        msg: str,
        status: str = "E",
        description: str | None = None,
    ) -> None:
        self.command = command
        self.code = code
        self.msg = msg
        self.status = status
        self.description = description
        super().__init__(self._message())

    def _message(self) -> str:
        code = "?" if self.code is None else str(self.code)
        return f"{self.command!r} failed: STATUS {self.status}, Code {code}: {self.msg}"


class InvalidCommand(CommandError):
    """Code 14: the miner does not know the command (old API, or no multi-command)."""


class AccessDenied(CommandError):
    """Code 45: a privileged command from a host without write access."""

    def _message(self) -> str:
        return (
            f"{self.command!r} refused: Code {self.code}: {self.msg}. The miner's "
            "--api-allow lacks W: for this host (e.g. --api-allow W:10.0.0.5); "
            "privileged commands need it"
        )


class MinerUnreachable(CgwatchdogError):
    """Nothing usable came back from the miner's address."""

    kind: ClassVar[FailureKind] = FailureKind.NETWORK
    sent: ClassVar[bool] = False
    """Whether the request may have reached the miner before the failure."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(f"{host}:{port}: {reason}")


class ConnectionRefused(MinerUnreachable):
    """The address answered the connect with a refusal: nothing listens on the port."""

    kind = FailureKind.REFUSED


class HostNotFound(MinerUnreachable):
    """The miner's host name does not resolve."""

    kind = FailureKind.DNS


class ConnectionReset(MinerUnreachable):
    """The connection was closed or reset before the reply was complete."""

    kind = FailureKind.RESET
    sent = True


class MinerTimeout(MinerUnreachable):
    """The connect or the reply did not complete within its deadline."""

    kind = FailureKind.READ_TIMEOUT
    sent = True


class ConnectTimeout(MinerTimeout):
    """No connection within the connect deadline."""

    kind = FailureKind.CONNECT_TIMEOUT
    sent = False


class ReadTimeout(MinerTimeout):
    """Connected and sent, but the reply did not complete within the deadline."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong in a configuration or rule file, with where it is."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


class ConfigError(CgwatchdogError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class NotifyError(CgwatchdogError):
    """A notification was not delivered; ``recoverable`` says whether to retry."""

    def __init__(
        self, message: str, *, recoverable: bool, retry_after_s: float | None = None
    ) -> None:
        self.recoverable = recoverable
        self.retry_after_s = retry_after_s
        super().__init__(message)


class ActionError(CgwatchdogError):
    """A remediation step failed to run (not: ran but did not help)."""


class NotSent(ActionError):
    """The request never reached the miner: nothing was done there."""


class Unconfirmed(ActionError):
    """The request was sent but no answer came back (many firmwares drop the connection
    when they restart or reboot): it may have been carried out; verification decides."""


class NotSupported(ActionError):
    """The miner's firmware family has no way to carry out this action."""


class SessionBusy(ActionError):
    """Another tool holds the miner's one control session (LuxOS): nothing was done,
    and trying again later may work."""


class ControlDenied(ActionError):
    """The miner refused the control channel itself; only a change on the miner or in
    the configuration helps (the planner holds actions on it until then)."""


class AuthFailed(ControlDenied):
    """The credentials were refused (HTTP 401, a rejected token, a refused session)."""


class WriteDisabled(ControlDenied):
    """The firmware's write API is switched off (Whatsminer until WhatsMinerTool
    enables it)."""


class StoreError(CgwatchdogError):
    """The sqlite state file failed (disk full, read-only, locked, corrupt)."""
