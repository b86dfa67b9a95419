"""Firmware families: what the product knows of each firmware, one module per family.

A family (``cgwatchdog/firmware/families/<name>.py``, registered with
:func:`firmware_family`) owns everything about its firmware:

- how to recognise it from a miner's first answers (:meth:`Family.recognise` scores an
  :class:`Identity`; the highest score wins, the generic cgminer family scores 1);
- which API commands describe it (:meth:`Family.poll_commands`), and its own read path
  where the cgminer API cannot read it (:meth:`Family.reader`: ePIC's HTTP on 4028,
  Whatsminer's API v3 on 4433), which hands back cgminer-shaped replies for
  :func:`~cgwatchdog.snapshot.build_snapshot`;
- its control channel (:meth:`Family.channel`): how ``restart``, ``reboot``,
  ``switchpool``, ``disable``/``enable`` a board and ``sleep``/``wake`` reach the miner,
  with the family's real authentication, and what it cannot do (:meth:`Family.why_not`);
- how long its restarts and reboots take (the verification windows).

Channels raise the typed errors of :mod:`cgwatchdog.errors` (``NotSent``,
``Unconfirmed``, ``AuthFailed``, ``WriteDisabled``, ``SessionBusy``, ``NotSupported``,
``ActionError``) with messages that name the miner and the fix and never a secret; the
planner learns from the type, not the words. Verification never trusts a reply to a
reboot: the planner watches the miner go away and come back with its uptime reset.

Credentials are sent only to a miner recognised as the family they are for.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from cgwatchdog.config import MinerConfig
from cgwatchdog.errors import NotSupported
from cgwatchdog.registry import Registry
from cgwatchdog.snapshot import Pool, Snapshot

__all__ = [
    "ACTIONS",
    "BASE_COMMANDS",
    "FAMILIES",
    "ActionRequest",
    "Channel",
    "ChannelTarget",
    "Family",
    "Identity",
    "Reader",
    "firmware_family",
    "recognise",
]

ACTIONS: tuple[str, ...] = ("restart", "reboot", "switchpool", "disable", "enable", "sleep", "wake")
"""The actions a family's channel may carry out (``exec`` is the operator's own)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What a miner's first answers say of it, for recognising its family."""

    description: str | None = None
    """STATUS ``Description`` as sent (``cgminer 4.11.1``, ``btminer``)."""
    fork: str | None = None
    """The program the snapshot named (``bmminer 2.0.0``, ``BOSminer+ 0.2.0``)."""
    model: str | None = None
    version: Mapping[str, Any] = field(default_factory=dict)
    """The raw VERSION entry (LuxOS spoofs Bitmain's keys but adds ``LUXminer``)."""
    stats: Mapping[str, Any] = field(default_factory=dict)
    """The STATS identity entry where the firmware sends one (bmminer: ``Type``)."""
    summary: Mapping[str, Any] = field(default_factory=dict)
    """The SUMMARY entry (Whatsminer's keys: ``Power``, ``Chip Temp Max``)."""
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, replies: Mapping[str, Any], snapshot: Snapshot | None) -> Identity:
        """The identity in one poll's decoded replies (command -> reply) and its snapshot."""
        return cls(
            description=None if snapshot is None else snapshot.description,
            fork=None if snapshot is None else snapshot.fork,
            model=None if snapshot is None else snapshot.model,
            version=_first_entry(replies.get("version"), "VERSION"),
            stats=_stats_identity(replies.get("stats")),
            summary=_first_entry(replies.get("summary"), "SUMMARY"),
        )

    def text(self) -> str:
        """Every identifying string, lower-cased and joined, for substring tests (made
        once: each family's ``recognise`` asks for it)."""
        if self._text is None:
            parts = [self.description, self.fork, self.model]
            for entry in (self.version, self.stats):
                parts += [f"{k}={v}" for k, v in entry.items() if isinstance(v, str | int | float)]
            object.__setattr__(self, "_text", " ".join(p for p in parts if p).lower())
        assert self._text is not None
        return self._text


def _entries(reply: object, section: str) -> list[Mapping[str, Any]]:
    if isinstance(reply, list):  # a multi-command reply's list
        reply = reply[0] if reply else None
    if not isinstance(reply, Mapping):
        return []
    body = reply.get(section)
    if isinstance(body, Mapping):
        return [body]
    if isinstance(body, list):
        return [entry for entry in body if isinstance(entry, Mapping)]
    return []


def _first_entry(reply: object, section: str) -> Mapping[str, Any]:
    entries = _entries(reply, section)
    return entries[0] if entries else {}


def _stats_identity(reply: object) -> Mapping[str, Any]:
    for entry in _entries(reply, "STATS"):
        if "ID" not in entry and "STATS" not in entry:
            return entry
    return {}


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    """One miner's control channel, as the configuration and recognition resolve it."""

    name: str
    host: str
    api_port: int
    control_port: int
    user: str | None
    password: str | None
    pool_password: str | None = None
    default_password: bool = False
    """Whether ``password`` is the family's factory default (none was configured)."""
    timeout_s: float = 10.0
    connect_timeout_s: float = 1.0


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """What to do, not how: the family's channel maps it to its own calls."""

    do: str
    pool: int | None = None
    """``switchpool``: the pool (its cgminer id, as polled) to mine on."""
    pools: tuple[Pool, ...] = ()
    """The miner's pools as polled (families that rewrite the whole list reorder it)."""
    device: str | None = None
    """``disable``/``enable``: the device as the alert names it (``ASC0``, ``BOARD6``)."""

    def describe(self) -> str:
        """One line: ``restart``, ``switchpool 1``, ``disable BOARD6``."""
        if self.pool is not None:
            return f"{self.do} {self.pool}"
        if self.device is not None:
            return f"{self.do} {self.device}"
        return self.do


class Channel(abc.ABC):
    """One miner's control channel. Each call opens what it needs and closes it."""

    def __init__(self, family: Family, target: ChannelTarget) -> None:
        self.family = family
        self.target = target

    @abc.abstractmethod
    async def perform(self, request: ActionRequest) -> str:
        """Carry out ``request``; a one-line receipt. Raises the typed ActionErrors."""

    async def check_access(self) -> str:
        """Prove the channel would take a command now, changing nothing (a login, a
        token, a harmless privileged call); raises like :meth:`perform`."""
        raise NotSupported(
            f"{self.target.name}: the {self.family.name} channel has no harmless access check"
        )

    def not_supported(self, request: ActionRequest) -> NotSupported:
        """The error for a request this family cannot carry out."""
        why = self.family.why_not(request.do, None, request.device) or "no way to do this"
        return NotSupported(f"not supported by {self.family.name}: {why}")


class Reader(abc.ABC):
    """A read path other than the cgminer API (ePIC's HTTP, Whatsminer API v3)."""

    @abc.abstractmethod
    async def read(self, commands: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """The miner's state as cgminer-shaped replies (command -> reply), for
        :func:`~cgwatchdog.snapshot.build_snapshot`; the client's typed errors on failure
        (MinerUnreachable, ProtocolError)."""

    async def probe(self) -> bool:
        """Whether this read path answers at all (for recognition and ``discover``)."""
        try:
            await self.read(("summary",))
        except Exception:  # any failure means: not this family here
            return False
        return True


class Family:
    """One firmware family. Subclass, set the class attributes, override what differs,
    and register an instance with :func:`firmware_family`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    """For people: ``Antminer (stock Bitmain firmware)``."""
    channel_title: ClassVar[str] = ""
    """The control channel, for the docs: ``web CGI on port 80``."""
    auth_title: ClassVar[str] = ""
    """Its authentication, for the docs: ``HTTP Digest, root/root by default``."""
    control_port: ClassVar[int | None] = None
    """The channel's default port; None: the miner's API port."""
    default_user: ClassVar[str | None] = None
    default_password: ClassVar[str | None] = None
    """The factory default, used when the config gives none (``check`` says so)."""
    restart_window_s: ClassVar[float] = 120.0
    """How long the mining process takes to come back after a restart."""
    reboot_window_s: ClassVar[float] = 600.0
    """How long the machine takes to come back after a reboot."""
    unsupported: ClassVar[Mapping[str, str]] = {}
    """Actions this family cannot do, and why (for the plan and ``poll --json``)."""
    verification: ClassVar[str] = "uptime reset (Elapsed) and the condition cleared"
    """How a repair is verified, for the docs."""
    extra: ClassVar[str | None] = None
    """The pip extra its control channel needs (``braiins``: grpcio), if any."""

    def recognise(self, identity: Identity) -> int:
        """How surely ``identity`` is this family (0: not at all; the highest wins)."""
        return 0

    def firmware_version(self, identity: Identity) -> str | None:
        """The firmware's version as people know it, if the replies say."""
        return identity.fork

    def poll_commands(self, snapshot: Snapshot, without_stats: Snapshot | None) -> tuple[str, ...]:
        """The API commands that describe this miner fully, judged from a first answer
        (``without_stats``: the same answer built without ``stats``, None if not asked)."""
        if (
            not snapshot.devices
            or snapshot.hashrate_hs is None
            or snapshot.temperature_max_c is None
            or not snapshot.fans_rpm
        ):
            if without_stats is not None and snapshot.devices and without_stats == snapshot:
                return BASE_COMMANDS
            return (*BASE_COMMANDS, "stats")
        return BASE_COMMANDS

    def why_not(
        self, do: str, miner: MinerConfig | None = None, device: str | None = None
    ) -> str | None:
        """Why this family cannot do ``do`` (to ``device``, for ``disable``/``enable``)
        on ``miner`` (None: it can): its extra missing, :attr:`unsupported`, a device
        :meth:`check_device` refuses, or a pool password it needs and the miner lacks."""
        missing = self.extra_missing()
        if missing is not None and do in ACTIONS:
            return missing
        if do in self.unsupported:
            return self.unsupported[do]
        if do in ("disable", "enable") and device is not None:
            try:
                self.check_device(do, device)
            except NotSupported as exc:
                return str(exc)
        if do == "switchpool" and self.needs_pool_password and miner is not None:
            credentials = miner.credentials
            if credentials is None or credentials.pool_password is None:
                return self.pool_password_missing(miner.name)
        return None

    needs_pool_password: ClassVar[bool] = False
    """Whether a switchpool rewrites the pool list with passwords the miner never tells
    (``credentials.pool_password`` must be configured)."""

    def pool_password_missing(self, miner: str) -> str:
        """Why a switchpool cannot be done on ``miner`` without its pool password."""
        return (
            "the miner's replies never carry pool passwords, which a switchpool must write "
            f"back: set credentials.pool_password_file for {miner}"
        )

    def check_device(self, do: str, device: str) -> None:
        """Raise NotSupported when ``device`` (an alert's device label) is not one this
        family's ``disable``/``enable`` can act on."""

    def extra_missing(self) -> str | None:
        """Why the channel cannot run on this host (its :attr:`extra` is not installed), or
        None; :meth:`why_not` then gives this for every action."""
        return None

    def why_not_pool(self, pool: Pool) -> str | None:
        """Why a switchpool must never pick ``pool`` (a firmware's own dev-fee pool), or
        None."""
        return None

    def reader(self, target: ChannelTarget) -> Reader | None:
        """This family's own read path, where the cgminer API cannot read it."""
        return None

    def channel(self, target: ChannelTarget) -> Channel:
        """The miner's control channel."""
        raise NotImplementedError(f"{self.name}: no control channel")

    def target(
        self, miner: MinerConfig, *, timeout_s: float = 10.0, connect_timeout_s: float = 1.0
    ) -> ChannelTarget:
        """The channel target of ``miner``: its credentials, else the family's defaults."""
        credentials = miner.credentials
        user = credentials.user if credentials is not None else None
        secret = credentials.password if credentials is not None else None
        pool_secret = credentials.pool_password if credentials is not None else None
        password = secret.get_secret_value() if secret is not None else self.default_password
        return ChannelTarget(
            name=miner.name,
            host=miner.host,
            api_port=miner.port,
            control_port=miner.control_port or self.control_port or miner.port,
            user=user or self.default_user,
            password=password,
            pool_password=None if pool_secret is None else pool_secret.get_secret_value(),
            default_password=secret is None and self.default_password is not None,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
        )

    def __repr__(self) -> str:
        return f"<firmware family {self.name}>"


BASE_COMMANDS: tuple[str, ...] = ("summary", "devs", "pools")

FAMILIES: Registry[Family] = Registry("firmware family")
"""Every firmware family, by the name ``firmware:`` takes."""

F = TypeVar("F", bound=type[Family])


def firmware_family(cls: F) -> F:
    """Register one instance of the decorated Family subclass under its ``name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a name")
    FAMILIES.add(cls.name, cls())
    return cls


def recognise(identity: Identity) -> Family:
    """The registered family that recognises ``identity`` most surely."""
    best: Family | None = None
    best_score = 0
    for family in FAMILIES.values():
        score = family.recognise(identity)
        if score > best_score:
            best, best_score = family, score
    if best is None:
        raise LookupError("no firmware family recognises this miner (is cgminer registered?)")
    return best
