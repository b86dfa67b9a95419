"""The configuration's models: every section, validated and typed.

Units are normalized on the way in: durations are float seconds (fields ending ``_s``),
hashrates float H/s (``_hs``), percentages float fractions. Secrets are ``SecretStr``.
Rule types and receiver kinds declare their own models beside their code (they extend
:class:`RuleBase` and sit under :class:`ReceiverConfig`); ``loader.py`` reads the files.
"""

from __future__ import annotations

import re
import string
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from cgwatchdog.config.fields import (
    Duration,
    Hashrate,
    Host,
    LabelName,
    Labels,
    MinerName,
    Model,
    Name,
    OwnLabels,
    Port,
    PositiveDuration,
    Ratio,
    Regex,
    RuleLabels,
    SecretUrlText,
    Severity,
    Template,
    UtcDatetime,
    check_label_name,
    labels_match,
    listify,
    only_one,
)
from cgwatchdog.config.hosts import split_host_port
from cgwatchdog.config.secrets import Redactor, secret_values
from cgwatchdog.protocol import DEFAULT_PORT
from cgwatchdog.units import parse_duration

# A LAN connect takes milliseconds: a dead address should cost about a second.
DEFAULT_CONNECT_TIMEOUT_S = 1.0

__all__ = [
    "DEFAULT_GROUP_INTERVAL_S",
    "DEFAULT_GROUP_WAIT_S",
    "DEFAULT_REPEAT_INTERVAL_S",
    "ActionName",
    "ActionsConfig",
    "AuthConfig",
    "BasicAuth",
    "BearerAuth",
    "ClusterConfig",
    "Config",
    "Credentials",
    "HeartbeatConfig",
    "HttpConfig",
    "Loc",
    "MinerConfig",
    "MinerEntry",
    "PollConfig",
    "ReceiverConfig",
    "RouteConfig",
    "RouteSpec",
    "RuleAction",
    "RuleBase",
    "Shard",
    "SilenceConfig",
    "cluster_problems",
    "dotted",
    "name_template_fields",
    "parse_shard",
    "receiver_problems",
    "resolve_route",
    "route_problems",
]

Loc = tuple[str | int, ...]
"""A place in the config: keys and list indexes from the top (``("receivers", 1, "url")``)."""


@dataclass(frozen=True, slots=True)
class Shard:
    """This instance owns shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: str) -> Shard:
    """``"1/4"`` (or ``"1-of-4"``, the systemd instance form) -> Shard(1, 4)."""
    found = (
        re.fullmatch(r"\s*(\d+)\s*(?:/|-of-)\s*(\d+)\s*", value) if isinstance(value, str) else None
    )
    if found is None:
        raise ValueError(f"{value!r} is not a shard; write I/N such as 1/4")
    index, count = int(found[1]), int(found[2])
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard {value!r}: I must lie between 1 and N")
    return Shard(index, count)


# ----------------------------------------------------------------- poll, http, misc


_NAME_FIELDS = frozenset({"host", "port", "index"})


def name_template_fields(template: str) -> set[str]:
    """The ``{fields}`` a miner name template uses."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


class PollConfig(Model):
    """How the fleet is polled (``poll:``)."""

    interval_s: PositiveDuration = Field(default=30.0, validation_alias="interval")
    """How often every miner is polled."""
    timeout_s: PositiveDuration = Field(default=5.0, validation_alias="timeout")
    """How long one miner's answer may take (connect included)."""
    connect_timeout_s: PositiveDuration = Field(
        default=DEFAULT_CONNECT_TIMEOUT_S, validation_alias="connect_timeout"
    )
    """How long the connect may take (default 1s, or ``timeout`` if that is shorter): a
    dead address costs little, a slow miner still answers."""
    concurrency: Annotated[int, Field(ge=1, le=65_536)] = 512
    """How many miners are polled at once."""
    jitter: Ratio = 0.1
    """Each cycle starts up to this share of the interval early or late."""
    max_reply_bytes: Annotated[int, Field(ge=4096)] = 4 * 1024 * 1024
    """A reply larger than this is cut off and reported."""

    @model_validator(mode="before")
    @classmethod
    def _connect_follows_timeout(cls, data: Any) -> Any:
        # A default must follow what the operator set: `timeout: 900ms` alone must not
        # fail because the default connect timeout (1 s) exceeds it.
        if isinstance(data, dict) and "connect_timeout" not in data and "timeout" in data:
            try:
                timeout = parse_duration(data["timeout"])
            except ValueError:
                return data  # the timeout field reports it
            if timeout < DEFAULT_CONNECT_TIMEOUT_S:
                return {**data, "connect_timeout": timeout}
        return data

    @model_validator(mode="after")
    def _deadlines(self) -> Self:
        if self.connect_timeout_s > self.timeout_s:
            raise ValueError("connect_timeout must not exceed timeout")
        if self.timeout_s >= self.interval_s:
            raise ValueError("timeout must be shorter than interval, or cycles would overlap")
        return self


_HOST_NAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
)


MIN_HTTP_TOKEN_CHARS = 16
"""A shorter write token could be guessed through the sign-in form."""


def _host_name(value: str) -> str:
    name = value.strip().lower()
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(
            f"{value!r} is not a host name: give a DNS name such as miners.example.org, "
            "without scheme or port"
        )
    return name.rstrip(".")


class HttpConfig(Model):
    """The local HTTP endpoint (``http:``): the status page, /metrics, /healthz, /api/alerts."""

    listen: str = "127.0.0.1:9841"
    """host:port to serve on; loopback by default (put a reverse proxy in front to share it)."""
    hosts: Annotated[
        tuple[Annotated[str, AfterValidator(_host_name)], ...], BeforeValidator(listify)
    ] = ()
    """Names besides the listen address that the endpoint answers to in the Host header (a
    reverse proxy's or the box's DNS name); IP addresses and ``localhost`` always work.
    Others get 421, so a web page elsewhere cannot reach the endpoint by DNS rebinding."""
    token: SecretStr | None = None
    """The token that allows writes (silences, acknowledgements) with ``Authorization:
    Bearer`` or a sign-in on the status page; give it as ``token_file``. None: the
    endpoint is read-only and writes get 403."""
    per_device_metrics: bool = False
    """Also export each device's hashrate and temperature and each fan's speed (about ten
    more series a miner; see docs/STATUS-PAGE.md for the budget)."""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_host_port(value, None)
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and 0 < len(value.get_secret_value()) < MIN_HTTP_TOKEN_CHARS:
            raise ValueError(
                f"the token is shorter than {MIN_HTTP_TOKEN_CHARS} characters: make a long "
                "random one (head -c 24 /dev/urandom | base64)"
            )
        return value

    @property
    def host(self) -> str:
        return split_host_port(self.listen, None)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.listen, None)[1]


class ActionsConfig(Model):
    """Safeguards around every remediation (``actions:``)."""

    dry_run: bool = True
    """On by default: repairs are planned and logged, nothing is sent to a miner, until
    the operator sets ``dry_run: false`` (a fresh config never acts on real miners)."""
    cooldown_s: Duration = Field(default=900.0, validation_alias="cooldown")
    """Per miner, between two actions."""
    max_per_miner_per_hour: Annotated[int, Field(ge=0)] = 3
    """Per miner, in any sliding hour (escalations count too)."""
    max_in_flight: Annotated[int, Field(ge=1)] = 5
    """Fleet-wide, actions planned or sent and not yet finished or verified."""
    fleet_incident_share: Annotated[Ratio, Field(gt=0)] = 0.3
    """The same alert on this share of the fleet is a fleet incident: notify once, act never."""
    restart_grace_s: Duration = Field(default=300.0, validation_alias="restart_grace")
    """After a restart (anyone's) a miner's alerts hold their state this long."""


def _shard(value: object) -> object:
    if isinstance(value, Shard):
        return value
    if isinstance(value, str):
        return parse_shard(value)
    raise ValueError("expected a shard I/N such as 1/4")


class ClusterConfig(Model):
    """Sharding and replicas (``cluster:``)."""

    name: Name | None = None
    """The fleet (e.g. a site) these shards split, when several share one Alertmanager
    cluster: it labels the heartbeats, so shard 1/2 of one site never elects with
    shard 1/2 of another."""
    shard: Annotated[Shard, BeforeValidator(_shard)] = Shard(1, 1)
    """``I/N``: this instance polls the miners whose name falls in shard I of N
    (rendezvous hashing; ``--shard`` overrides it)."""
    replica: Name | None = None
    """This instance's name among the replicas of its shard (``--replica``); the lowest
    live name leads: only it acts and sends direct notifications."""
    alertmanager: str | None = None
    """The name of an alertmanager receiver listing every peer of the cluster the
    replicas coordinate through (required with ``replica``)."""


class HeartbeatConfig(Model):
    """The dead man's switch ping after every good cycle (``heartbeat:``)."""

    url: SecretUrlText
    """The push monitor's URL (a secret: it holds its token), GET after good cycles."""
    interval_s: PositiveDuration = Field(default=60.0, validation_alias="interval")
    """At most one ping per interval."""
    timeout_s: PositiveDuration = Field(default=10.0, validation_alias="timeout")
    """How long one ping may take."""


class Credentials(Model):
    """The login of a miner's control channel (its web UI, token API or session).

    Left out, a family that needs one uses its factory default (and ``check`` says
    which miners do). Sent only to a miner recognised as the family they are for.
    """

    user: str | None = None
    """The user (``root`` on Antminer's web UI); None: the family's default."""
    password: SecretStr | None = None
    """The password (or ``password_file``); None: the family's factory default."""
    pool_password: SecretStr | None = None
    """The password to give every pool when a switchpool rewrites the pool list: needed by
    Whatsminer and Braiins OS (their replies never carry it; without it, pool changes
    are refused); ePIC uses the passwords its /summary lists unless this is set."""


class MinerConfig(Model):
    """One miner to poll, after ranges are expanded."""

    name: MinerName
    host: Host
    port: Port = DEFAULT_PORT
    labels: OwnLabels = Field(default_factory=dict)
    expected_hashrate_hs: Hashrate | None = Field(
        default=None, validation_alias="expected_hashrate"
    )
    firmware: str = "auto"
    """The firmware family (``auto``: recognised from the miner's replies)."""
    control_port: Port | None = None
    """The control channel's port where it is not the API port; None: the family's."""
    credentials: Credentials | None = None


class MinerEntry(Model):
    """One ``miners:`` item as written: a single host or a ``hosts:`` expansion."""

    name: MinerName | None = None
    """The miner's name in alerts (default: its host); with ``hosts:`` a template using
    ``{host}``, ``{port}`` or ``{index}`` (``rack1-{index:03d}``)."""
    host: Host | None = None
    """One miner's host name or IP address."""
    hosts: (
        Annotated[
            tuple[Annotated[str, Field(min_length=1)], ...],
            BeforeValidator(listify),
            Field(min_length=1),
        ]
        | None
    ) = None
    """Many miners: ranges (``10.0.1.1-254``, ``10.0.1.1-10.0.2.20``), networks
    (``10.0.2.0/24``) or hosts; each item expands to at most 65,536 miners."""
    port: Port = DEFAULT_PORT
    """The cgminer API port."""
    labels: OwnLabels = Field(default_factory=dict)
    """Labels every alert of these miners carries (``site``, ``rack``, ``model``)."""
    expected_hashrate: Hashrate | None = None
    """What the miner should do; hashrate_drop compares with it (else with the miner's own
    median)."""
    firmware: Annotated[str, Field(min_length=1)] = "auto"
    """The firmware family (``auto``: recognised from the miner's answers); see
    docs/FIRMWARE.md for the names."""
    control_port: Port | None = None
    """The control channel's port where it is not the API port (the web UI's 80, ...);
    None: the family's default."""
    credentials: Credentials | None = None
    """The control channel's login; None: the family's factory default."""

    @model_validator(mode="after")
    def _shape(self) -> Self:
        only_one(self, ("host", "hosts"), "a miner")
        if self.hosts is not None and self.name is not None:
            unknown = sorted(name_template_fields(self.name) - _NAME_FIELDS)
            if unknown:
                raise ValueError(
                    f"name template uses {{{unknown[0]}}}; it may use {{host}}, {{port}} and {{index}}"
                )
            # {index:>999999999} or {host:{port}} would build a huge name per miner, and
            # {index:03d{x}} fails with a KeyError: format specs stay plain and narrow.
            specs = [spec or "" for _, _, spec, _ in string.Formatter().parse(self.name)]
            if any("{" in spec or re.search(r"\d{4,}", spec) for spec in specs):
                raise ValueError(
                    f"name template {self.name!r}: a format spec may not hold a {{field}} "
                    "or a width past 999"
                )
            try:
                self.name.format(host="192.0.2.1", port=DEFAULT_PORT, index=1)
            except (ValueError, IndexError) as exc:
                raise ValueError(f"name template {self.name!r} is malformed: {exc}") from None
        return self


# Every field of a MinerConfig is given, so every one has the same fields set, which
# one set serves: nothing pydantic adds to a fields set could change it (the model is
# frozen, refuses extra keys, and model_copy copies the set first).
_MINER_FIELDS = tuple(MinerConfig.model_fields)
_MINER_FIELDS_SET = set(_MINER_FIELDS)
# CPython 3.11 and 3.12 share one table of keys among the objects of a class whose
# attributes are set one by one: each miner then holds only its values, about half the
# memory of a dict of its own (tests/test_loader_fast.py prints both). 3.13 no longer
# does for a class with __dict__ in its __slots__, as pydantic's models have: there each
# miner keeps the dict it is given.
_SHARED_KEYS = sys.version_info < (3, 13)
if _SHARED_KEYS:
    # The table takes new keys only while the class has room for them, and CPython
    # lowers that room with every object of the class made (validation makes them with a
    # dict of their own): the keys go in now, before any is made.
    _made = MinerConfig.__new__(MinerConfig)
    for _field in _MINER_FIELDS:
        object.__setattr__(_made, _field, None)
    del _made, _field


def miner_config(
    name: str, host: str, entry: MinerEntry, labels: dict[str, str] | None = None
) -> MinerConfig:
    """What ``MinerConfig.model_construct`` makes of an entry's validated values, without
    its walk over every field for every miner and in less memory; tests/test_loader_fast.py
    holds the two equal. ``labels``: the entry's labels, or an equal dict that other
    miners share (never changed: the model is frozen and nothing writes to its labels)."""
    values = (
        name, host, entry.port, entry.labels if labels is None else labels,
        entry.expected_hashrate, entry.firmware, entry.control_port, entry.credentials,
    )  # in MinerConfig's field order  # fmt: skip
    miner = MinerConfig.__new__(MinerConfig)
    set_field = object.__setattr__  # past the frozen model's own __setattr__
    if _SHARED_KEYS:
        for field, value in zip(_MINER_FIELDS, values, strict=True):
            set_field(miner, field, value)
    else:
        set_field(miner, "__dict__", dict(zip(_MINER_FIELDS, values, strict=True)))
    set_field(miner, "__pydantic_fields_set__", _MINER_FIELDS_SET)
    set_field(miner, "__pydantic_extra__", None)
    set_field(miner, "__pydantic_private__", None)
    return miner


# ---------------------------------------------------------------- rules


ActionName = Literal[
    "restart", "reboot", "switchpool", "disable", "enable", "sleep", "wake", "exec"
]
"""What a step does, not how: each firmware family maps it to its own control channel
(``restart`` the mining process, ``reboot`` the machine, ``disable``/``enable`` a board,
``sleep``/``wake`` the whole miner); ``exec`` runs a program of the operator's."""


class RuleAction(Model):
    """One step of a rule's remediation ladder, tried in order until verified."""

    do: ActionName
    """What the step does (the miner's firmware family says how)."""
    after_s: Duration = Field(default=0.0, validation_alias="after")
    """Due this long after the alert fired (an escalation is due when the step before
    it failed)."""
    verify_within_s: PositiveDuration | None = Field(default=None, validation_alias="verify_within")
    """How long its effect may take to show before the next step is tried (default per
    action; at least the family's restart or reboot time)."""
    argv: Annotated[tuple[Template, ...], Field(min_length=1)] | None = None
    """``exec`` only: the program and its arguments, no shell; each item may use
    ``{{ labels.miner }}``, ``{{ host }}``, ``{{ port }}``."""
    timeout_s: PositiveDuration = Field(default=30.0, validation_alias="timeout")
    """How long the step may run."""
    pool: Annotated[int, Field(ge=0)] | None = None
    """``switchpool`` only: the pool to switch to; None: the best other Alive pool."""
    dry_run: bool | None = None
    """``true``: plan and log this step, never send it; None: ``actions.dry_run``."""

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.do == "exec" and self.argv is None:
            raise ValueError("do: exec needs argv (the program and its arguments, no shell)")
        if self.do != "exec" and self.argv is not None:
            raise ValueError(f"argv is only for do: exec, not do: {self.do}")
        if self.do != "switchpool" and self.pool is not None:
            raise ValueError(f"pool is only for do: switchpool, not do: {self.do}")
        return self


class RuleBase(Model):
    """What every rule has, whatever its ``type``: name, timing, labels, selection and
    its remediation ladder. Each rule type subclasses it (``cgwatchdog/rules/types/``)
    with ``type: Literal["<its name>"]`` and its own keys."""

    type: str
    """The rule type (docs/RULES.md)."""
    name: Name
    """The alert's ``alertname``; unique among the rules."""
    for_s: Duration = Field(default=0.0, validation_alias="for")
    """How long the condition must hold before the alert fires (pending until then)."""
    keep_firing_for_s: Duration = Field(default=0.0, validation_alias="keep_firing_for")
    """How long a firing alert stays firing after the condition clears (damps flapping)."""
    severity: Severity = "warning"
    """The ``severity`` label, for routes (``critical``, ``warning``, ``info``)."""
    labels: RuleLabels = Field(default_factory=dict)
    """More labels for the rule's alerts."""
    annotations: dict[str, Template] = Field(default_factory=dict)
    """``summary``, ``description``, ...: Jinja templates over ``labels``, ``value``,
    ``miner``, ``host``."""
    match: Labels = Field(default_factory=dict)
    """Only miners whose labels equal these (``miner`` is the miner's name)."""
    match_re: dict[LabelName, Regex] = Field(default_factory=dict)
    """Only miners whose labels match these regular expressions (whole value)."""
    actions: tuple[RuleAction, ...] = ()
    """The repair ladder: steps tried in order until one is verified."""

    @field_validator("actions")
    @classmethod
    def _wakes_after_sleep(cls, steps: tuple[RuleAction, ...]) -> tuple[RuleAction, ...]:
        # Sleep persists across restarts on some firmware (LuxOS curtail): a ladder that
        # puts a miner to sleep must also wake it.
        for index, step in enumerate(steps):
            if step.do == "sleep" and not any(s.do == "wake" for s in steps[index + 1 :]):
                raise ValueError(
                    f"step {index + 1} puts the miner to sleep and no later step wakes it "
                    "(add a do: wake step after it)"
                )
        return steps

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether a miner with these labels is covered by ``match``/``match_re``."""
        return labels_match(self.match, self.match_re, labels)


# ---------------------------------------------------------------------- receivers


class BasicAuth(Model):
    """HTTP basic authentication."""

    user: str
    """The user name."""
    password: SecretStr
    """The password (or ``password_file``)."""


class BearerAuth(Model):
    """HTTP bearer token."""

    token: SecretStr
    """The token (or ``token_file``)."""


class AuthConfig(Model):
    """``auth: {basic: {user, password}}`` or ``auth: {bearer: {token}}``."""

    basic: BasicAuth | None = None
    """HTTP basic authentication."""
    bearer: BearerAuth | None = None
    """An ``Authorization: Bearer`` token."""

    @model_validator(mode="after")
    def _one(self) -> Self:
        only_one(self, ("basic", "bearer"), "auth")
        return self


class ReceiverConfig(Model):
    """A named notification target with exactly one integration.

    This base holds what every receiver has; the model the loader validates with adds
    one optional key per registered receiver kind (``webhook:``, ``email:``, ...), built
    from the registry by :func:`cgwatchdog.notify.receiver_model`.
    """

    name: Name
    """The name routes use."""
    send_resolved: bool = True
    """Also tell this receiver when alerts resolve."""

    state_kinds: ClassVar[frozenset[str]] = frozenset()
    """The kinds, among this model's keys, that get alert state pushed (Alertmanager)."""

    @classmethod
    def kind_keys(cls) -> tuple[str, ...]:
        """The receiver kinds this model knows, one key each."""
        return tuple(key for key in cls.model_fields if key not in ReceiverConfig.model_fields)

    @model_validator(mode="after")
    def _one(self) -> Self:
        keys = self.kind_keys()
        if keys:
            only_one(self, keys, "a receiver")
        return self

    @property
    def kind(self) -> str:
        """Which integration this receiver uses (its one kind key)."""
        for key in self.kind_keys():
            if getattr(self, key) is not None:
                return key
        raise AssertionError("validated receivers have exactly one integration")

    @property
    def settings(self) -> BaseModel:
        """The settings under its kind key (a WebhookConfig for ``webhook:``, ...)."""
        settings = getattr(self, self.kind)
        assert isinstance(settings, BaseModel)
        return settings

    @property
    def pushes_state(self) -> bool:
        """Whether this receiver gets the alert state pushed each cycle (Alertmanager)."""
        return self.kind in self.state_kinds


# -------------------------------------------------------------------------- route


def _check_group_by(value: str) -> str:
    return value if value == "..." else check_label_name(value)


GroupBy = tuple[Annotated[str, AfterValidator(_check_group_by)], ...]

# Alertmanager's defaults for the root route (dispatch/route.go DefaultRouteOpts); every
# route is filled in completely here (children inherit from their parent).
DEFAULT_GROUP_WAIT_S = 30.0
DEFAULT_GROUP_INTERVAL_S = 300.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0


class RouteConfig(Model):
    """A node of the routing tree with inherited values filled in.

    Children inherit receiver, group_by and the three timers from their parent when
    they do not set them, as in Alertmanager. ``group_by: ["..."]`` groups by all labels.
    """

    receiver: str
    group_by: GroupBy = ()
    group_wait_s: Duration = Field(default=DEFAULT_GROUP_WAIT_S, validation_alias="group_wait")
    group_interval_s: PositiveDuration = Field(
        default=DEFAULT_GROUP_INTERVAL_S, validation_alias="group_interval"
    )
    repeat_interval_s: PositiveDuration = Field(
        default=DEFAULT_REPEAT_INTERVAL_S, validation_alias="repeat_interval"
    )
    match: Labels = Field(default_factory=dict)
    match_re: dict[LabelName, Regex] = Field(default_factory=dict)
    continue_: bool = Field(default=False, validation_alias="continue")
    routes: tuple[RouteConfig, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether this node's own matchers accept the labels."""
        return labels_match(self.match, self.match_re, labels)


class RouteSpec(Model):
    """A route node as written, before inheritance."""

    receiver: str | None = None
    """The receiver of the alerts this node takes (inherited from the parent)."""
    group_by: GroupBy | None = None
    """Labels alerts are grouped by into one notification (``...``: every label)."""
    group_wait: Duration | None = None
    """How long a new group waits for more alerts before its first notification (30s)."""
    group_interval: PositiveDuration | None = None
    """How long a group waits before notifying of changes (5m)."""
    repeat_interval: PositiveDuration | None = None
    """How long before a firing group is notified again unchanged (4h)."""
    match: Labels = Field(default_factory=dict)
    """Alerts whose labels equal these (not on the root route)."""
    match_re: dict[LabelName, Regex] = Field(default_factory=dict)
    """Alerts whose labels match these regular expressions (whole value)."""
    continue_: bool = Field(default=False, validation_alias="continue")
    """Go on to the next sibling route after this one matched."""
    routes: tuple[RouteSpec, ...] = ()
    """Child routes, tried in order; the first that matches takes the alert."""


_INHERITED = ("receiver", "group_by", "group_wait", "group_interval", "repeat_interval")


def resolve_route(
    spec: RouteSpec, parent: dict[str, Any] | None, loc: Loc, found: list[tuple[Loc, str]]
) -> RouteConfig:
    """The route tree as written, with every value its node inherits filled in; problems
    are appended to ``found``."""
    if parent is None:
        if spec.receiver is None:
            found.append((loc, "the root route needs a receiver"))
        if spec.match or spec.match_re:
            found.append(
                ((*loc, "match"), "the root route takes every alert; put matchers on its routes")
            )
        parent = {
            "receiver": "",
            "group_by": (),
            "group_wait": DEFAULT_GROUP_WAIT_S,
            "group_interval": DEFAULT_GROUP_INTERVAL_S,
            "repeat_interval": DEFAULT_REPEAT_INTERVAL_S,
        }
    values = {
        name: parent[name] if getattr(spec, name) is None else getattr(spec, name)
        for name in _INHERITED
    }
    children = tuple(
        resolve_route(child, values, (*loc, "routes", index), found)
        for index, child in enumerate(spec.routes)
    )
    return RouteConfig(
        receiver=values["receiver"],
        group_by=values["group_by"],
        group_wait_s=values["group_wait"],
        group_interval_s=values["group_interval"],
        repeat_interval_s=values["repeat_interval"],
        match=spec.match,
        match_re=spec.match_re,
        continue_=spec.continue_,
        routes=children,
    )


# ----------------------------------------------------------------------- silences


class SilenceConfig(Model):
    """Mute alerts whose labels match, from ``starts`` (default: always) ``until``."""

    match: Labels = Field(default_factory=dict)
    """Alerts whose labels equal these."""
    match_re: dict[LabelName, Regex] = Field(default_factory=dict)
    """Alerts whose labels match these regular expressions (whole value)."""
    starts: UtcDatetime | None = None
    """From when (default: always)."""
    until: UtcDatetime
    """Until when."""
    comment: str = ""
    """Why, for the people reading the alerts."""
    maintenance: bool = False
    """Also hold back remediation actions on the alerts (and miners) it matches."""

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if not self.match and not self.match_re:
            raise ValueError("a silence needs match or match_re (it would mute every alert)")
        if self.starts is not None and self.starts >= self.until:
            raise ValueError("starts must come before until")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the labels fall under this silence (time is the caller's to check)."""
        return labels_match(self.match, self.match_re, labels)


# ------------------------------------------------------------------------- config


def receiver_problems(receivers: Sequence[tuple[str, str | None]]) -> list[tuple[Loc, str]]:
    """Receiver names used twice, from (name, kind) pairs."""
    found: list[tuple[Loc, str]] = []
    first: dict[str, int] = {}
    for index, (name, _) in enumerate(receivers):
        if name in first:
            found.append(
                (
                    ("receivers", index, "name"),
                    f"receiver name {name!r} is already used by receivers[{first[name]}]",
                )
            )
        else:
            first[name] = index
    return found


def route_problems(
    route: RouteConfig,
    kinds: Mapping[str, str | None],
    loc: Loc = ("route",),
    parent: str | None = None,
) -> list[tuple[Loc, str]]:
    """Routes naming a receiver that is not defined."""
    found: list[tuple[Loc, str]] = []
    if route.receiver != parent and route.receiver and route.receiver not in kinds:
        known = ", ".join(sorted(kinds)) or "none"
        found.append(
            ((*loc, "receiver"), f"unknown receiver {route.receiver!r} (defined: {known})")
        )
    for index, child in enumerate(route.routes):
        found += route_problems(child, kinds, (*loc, "routes", index), route.receiver)
    return found


def cluster_problems(
    cluster: ClusterConfig, kinds: Mapping[str, str | None], state_kinds: Collection[str]
) -> list[tuple[Loc, str]]:
    """What is wrong with ``cluster:`` given the receivers (name -> kind) and the kinds
    that get alert state pushed."""
    found: list[tuple[Loc, str]] = []
    name = cluster.alertmanager
    if name is not None:
        if name not in kinds:
            found.append((("cluster", "alertmanager"), f"unknown receiver {name!r}"))
        elif kinds[name] not in state_kinds:
            found.append(
                (("cluster", "alertmanager"), f"receiver {name!r} is not an alertmanager receiver")
            )
    if cluster.replica is not None and name is None:
        found.append(
            (
                ("cluster", "replica"),
                "replicas coordinate through Alertmanager: set cluster.alertmanager too",
            )
        )
    return found


def _first_duplicate(names: Iterable[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def dotted(loc: Loc) -> str:
    """A config path as the operator reads it: ``receivers[1].webhook.url``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "top level"


class Config(Model):
    """The whole validated configuration; :func:`cgwatchdog.config.loader.load_config`
    builds it from the files, checking what this model cannot (file:line, registries)."""

    poll: PollConfig = Field(default_factory=PollConfig)
    state_dir: Path = Path("/var/lib/cgwatchdog")
    http: HttpConfig = Field(default_factory=HttpConfig)
    miners: tuple[MinerConfig, ...] = ()
    rule_files: tuple[Path, ...] = ()  # the files the rule_files: globs matched
    rules: tuple[RuleBase, ...] = ()  # each of the class its type: names
    receivers: tuple[ReceiverConfig, ...] = ()
    route: RouteConfig | None = None
    actions: ActionsConfig = Field(default_factory=ActionsConfig)
    silences: tuple[SilenceConfig, ...] = ()
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    heartbeat: HeartbeatConfig | None = None
    severities: tuple[Severity, ...] | None = None
    """The severities rules may use (``check`` refuses any other); None: any word."""

    _warnings: tuple[str, ...] = PrivateAttr(default=())
    _notes: tuple[str, ...] = PrivateAttr(default=())
    _redactor: Redactor = PrivateAttr(default_factory=Redactor)

    @model_validator(mode="after")
    def _references(self) -> Self:
        kinds: dict[str, str | None] = {r.name: r.kind for r in self.receivers}
        found = receiver_problems([(r.name, r.kind) for r in self.receivers])
        if self.route is not None:
            found += route_problems(self.route, kinds)
        elif self.receivers:
            found.append((("route",), "a route is needed when receivers are defined"))
        state_kinds = {r.kind for r in self.receivers if r.pushes_state}
        found += cluster_problems(self.cluster, kinds, state_kinds)
        duplicate = _first_duplicate(miner.name for miner in self.miners)
        if duplicate is not None:
            found.append((("miners",), f"miner name {duplicate!r} is used twice"))
        duplicate = _first_duplicate(rule.name for rule in self.rules)
        if duplicate is not None:
            found.append((("rules",), f"rule name {duplicate!r} is used twice"))
        if found:
            raise ValueError("; ".join(f"{dotted(loc)}: {message}" for loc, message in found))
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._redactor = Redactor(
            secret_values(self.receivers, self.heartbeat, self.http, self.credentials())
        )

    def credentials(self) -> list[Credentials]:
        """The miners' distinct credentials (a host range shares one object)."""
        # By identity: walking 10,000 miners' models for the same few would be waste.
        unique = {id(m.credentials): m.credentials for m in self.miners if m.credentials}
        return list(unique.values())

    def redact(self, text: str) -> str:
        """``text`` with every secret of this configuration replaced by ``<redacted>``."""
        return self._redactor(text)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Things that work but deserve a look (loose file modes, unused receivers)."""
        return self._warnings

    @property
    def notes(self) -> tuple[str, ...]:
        """What the loader chose for the operator (e.g. the packaged rules)."""
        return self._notes

    def actions_summary(self) -> str:
        """One line saying whether repairs reach the miners, for ``check`` and ``run``."""
        with_steps = [rule.name for rule in self.rules if rule.actions]
        if not with_steps:
            return "actions: no rule has repair steps"
        if self.actions.dry_run:
            return (
                f"actions: DRY RUN: {len(with_steps)} rule(s) plan repairs, which are logged "
                "and never sent to a miner (set actions.dry_run: false to act)"
            )
        live = [
            rule.name
            for rule in self.rules
            if any(step.dry_run is not True for step in rule.actions)
        ]
        return (
            f"actions: LIVE: {len(live)} rule(s) repair miners for real "
            f"({', '.join(live[:5])}{', ...' if len(live) > 5 else ''})"
        )

    def receiver(self, name: str) -> ReceiverConfig:
        """The receiver called ``name``; KeyError if there is none."""
        for receiver in self.receivers:
            if receiver.name == name:
                return receiver
        raise KeyError(name)
