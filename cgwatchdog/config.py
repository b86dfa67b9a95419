"""Configuration: YAML files in, validated and typed settings out.

``load_config(path)`` reads the operator's config file (DESIGN.md §4, §5, §6, §11) and the
rule files it names, and returns a frozen :class:`Config`. Everything wrong in them is
collected first and raised once as a :class:`~cgwatchdog.errors.ConfigError` whose
``problems`` each carry ``file:line``; nothing here prints a traceback or a secret.

How a file is read:

    text ──yaml.compose (SafeLoader)──> node tree (every node knows its line)
         ──_TreeBuilder──> plain dicts/lists + {path: line}, ${ENV} and *_file resolved
         ──pydantic, one section or list item at a time──> typed models
         ──cross checks (host ranges, duplicate names, route receivers)──> Config

Units are normalized on the way in: durations are float seconds (fields ending ``_s``),
hashrates float H/s (``_hs``), percentages float fractions. Secrets (webhook URLs,
passwords, tokens, header values, Apprise URLs, heartbeat URLs) are ``SecretStr``;
:func:`redact` scrubs them from any text before it is logged.

Reading the config does no network I/O and never reads the clock.
"""

from __future__ import annotations

import difflib
import glob
import ipaddress
import os
import re
import stat
import string
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parseaddr
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import yaml
from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from cgwatchdog.errors import ConfigError, ConfigProblem
from cgwatchdog.protocol import DEFAULT_PORT
from cgwatchdog.units import parse_duration, parse_hashrate, parse_ratio, value_kind

__all__ = [
    "DEFAULT_PORT",
    "MAX_HOSTS_PER_RANGE",
    "REDACTED",
    "ActionsConfig",
    "AlertmanagerConfig",
    "AppriseConfig",
    "AuthConfig",
    "BasicAuth",
    "BearerAuth",
    "ClusterConfig",
    "Config",
    "DeviceStatusRule",
    "EmailConfig",
    "HardwareErrorsRule",
    "HashrateDropRule",
    "HeartbeatConfig",
    "HttpConfig",
    "MinerConfig",
    "PollConfig",
    "PoolStaleRule",
    "ReceiverConfig",
    "RouteConfig",
    "RuleAction",
    "RuleConfig",
    "Shard",
    "SilenceConfig",
    "ThresholdRule",
    "UnreachableRule",
    "WebhookConfig",
    "default_rules_path",
    "expand_hosts",
    "load_config",
    "load_rule_file",
    "parse_duration",
    "parse_hashrate",
    "parse_ratio",
    "parse_shard",
    "redact",
]

# A /16 is the largest block a farm plausibly lists in one line; a typo such as /8
# would otherwise quietly create millions of miners.
MAX_HOSTS_PER_RANGE = 65_536
REDACTED = "<redacted>"
# An alias bomb ("billion laughs") expands past this; no real config comes near it.
_MAX_YAML_NODES = 2_000_000
# Shorter values are not worth hiding and replacing them would shred every message.
_MIN_SECRET_LEN = 4
_SECRET_FILE_KEYS = frozenset({"password_file", "token_file", "url_file"})
# Labels the rule engine sets on every alert; a miner or rule may not override them.
_ENGINE_LABELS = frozenset({"alertname", "miner", "device", "pool"})

Loc = tuple[str | int, ...]


# --------------------------------------------------------------------------- units

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


def _split_host_port(text: str, default_port: int | None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or (with a default) a bare host."""
    found = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not host:port")
    host = found[1] or found[3]
    port_text = found[2] or found[4]
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r} lacks a port; write host:port")
        return _check_host(host), default_port
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port must lie between 1 and 65535")
    return _check_host(host), port


# --------------------------------------------------------------------------- hosts

_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")


def _check_host(value: str) -> str:
    """One host name or IP address (no ranges)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if "/" in value or _ip_range(value) is not None:
        raise ValueError(f"{value!r} is a range: list it under hosts:, host: takes one address")
    if re.fullmatch(r"[\d.]+", value) or not _HOSTNAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a host name or IP address")
    return value


def _ip_range(spec: str) -> tuple[int, int, int] | None:
    """``a.b.c.d-a.b.c.e`` or ``a.b.c.d-e`` -> (first, last, version); None if not a range."""
    left, dash, right = spec.partition("-")
    if not dash:
        return None
    try:
        first = ipaddress.ip_address(left.strip())
    except ValueError:
        return None  # a host name with a hyphen
    right = right.strip()
    try:
        if right.isdigit() and first.version == 4:
            last_octet = int(right)
            if last_octet > 255:
                raise ValueError
            last = ipaddress.ip_address((int(first) & ~0xFF) | last_octet)
        else:
            last = ipaddress.ip_address(right)
    except ValueError:
        raise ValueError(
            f"{spec!r} is not a range; write 10.0.1.1-10.0.1.254 or 10.0.1.1-254"
        ) from None
    if last.version != first.version:
        raise ValueError(f"{spec!r} mixes IPv4 and IPv6")
    if int(last) < int(first):
        raise ValueError(f"{spec!r} ends before it starts")
    return int(first), int(last), first.version


def _too_many(spec: str, count: int) -> ValueError:
    return ValueError(
        f"{spec!r} expands to {count:,} hosts; one entry may expand to at most "
        f"{MAX_HOSTS_PER_RANGE:,}: split it"
    )


def _ip_strings(first: int, last: int, version: int) -> list[str]:
    if version == 4:  # string building beats ipaddress objects 10x for a /16
        return [
            f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
            for n in range(first, last + 1)
        ]
    return [str(ipaddress.IPv6Address(n)) for n in range(first, last + 1)]


def expand_hosts(spec: str) -> list[str]:
    """One ``hosts:`` item -> the hosts it names, in order.

    ``10.0.1.1-10.0.1.254`` and ``10.0.1.1-254`` are inclusive ranges; ``10.0.2.0/24`` a
    network's usable hosts (no network or broadcast address); anything else one host.
    Raises ValueError past MAX_HOSTS_PER_RANGE hosts or for malformed input.
    """
    spec = spec.strip()
    if "/" in spec:
        try:
            net = ipaddress.ip_network(spec)
        except ValueError:
            try:
                loose = ipaddress.ip_network(spec, strict=False)
            except ValueError:
                raise ValueError(f"{spec!r} is not a network such as 10.0.2.0/24") from None
            raise ValueError(f"{spec!r} has host bits set; did you mean {loose}?") from None
        usable = net.num_addresses - (2 if net.version == 4 else 1)
        if usable > MAX_HOSTS_PER_RANGE:
            raise _too_many(spec, usable)
        if net.version == 4 and net.prefixlen <= 30:
            base = int(net.network_address)
            return _ip_strings(base + 1, base + net.num_addresses - 2, 4)
        return [str(host) for host in net.hosts()]
    found = _ip_range(spec)
    if found is None:
        return [_check_host(spec)]
    first, last, version = found
    if last - first + 1 > MAX_HOSTS_PER_RANGE:
        raise _too_many(spec, last - first + 1)
    return _ip_strings(first, last, version)


def _default_miner_name(host: str, port: int) -> str:
    if port == DEFAULT_PORT:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_NAME_FIELDS = frozenset({"host", "port", "index"})


def _name_template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


# ------------------------------------------------------------------ field types


def _listify(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _label_text(value: object) -> object:
    # YAML turns `rack: 01` into 1 and `on: yes` into True; labels are text.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _label_map(value: object) -> object:
    if isinstance(value, dict):
        return {key: _label_text(item) for key, item in value.items()}
    return value


_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_label_name(name: str) -> str:
    if not _LABEL_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid label name: use letters, digits and _, "
            "not starting with a digit"
        )
    return name


def _no_engine_labels(labels: dict[str, str]) -> dict[str, str]:
    taken = sorted(_ENGINE_LABELS.intersection(labels))
    if taken:
        raise ValueError(
            f"label {taken[0]!r} is set by cgwatchdog on every alert; pick another name"
        )
    return labels


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a valid regular expression: {exc.msg}") from None
    return value


@cache
def _jinja() -> SandboxedEnvironment:
    return SandboxedEnvironment()


def _check_template(text: str) -> str:
    if "{{" in text or "{%" in text or "{#" in text:
        try:
            _jinja().parse(text)
        except TemplateSyntaxError as exc:
            raise ValueError(
                f"template syntax error: {exc.message} (template line {exc.lineno})"
            ) from None
        except RecursionError:
            raise ValueError("template nested too deeply") from None
    return text


def _check_http_url(value: object) -> object:
    if isinstance(value, str):
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value.strip()
    return value


def _check_plain_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        raise ValueError("put credentials under auth:, not in the URL (the URL is logged)")
    return value


def _check_apprise_url(value: object) -> object:
    if isinstance(value, str) and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://.", value.strip()):
        raise ValueError("must be an Apprise URL such as pover://user@token")
    return value.strip() if isinstance(value, str) else value


def _check_path_text(text: str) -> None:
    """ValueError for a path the operating system cannot take (open() would raise it)."""
    if "\0" in text:
        raise ValueError("the path holds a NUL byte")
    try:
        os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate, from a "\ud800" escape in YAML
        raise ValueError("the path is not valid text") from None


def _usable_path(path: Path) -> Path:
    _check_path_text(str(path))
    return path


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _date_to_datetime(value: object) -> object:
    if type(value) is date:
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


def _check_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*", value):
        raise ValueError(f"{value!r} is not a valid name: use letters, digits and _ . : -")
    return value


def _check_severity(value: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", value):
        raise ValueError(
            f"{value!r} is not a severity; use a lower-case word such as warning or critical"
        )
    return value


def _text_or_number(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Ratio = Annotated[float, BeforeValidator(parse_ratio)]
Hashrate = Annotated[float, BeforeValidator(parse_hashrate), Field(gt=0)]
Port = Annotated[int, Field(ge=1, le=65535)]
Host = Annotated[str, AfterValidator(_check_host)]
Name = Annotated[str, BeforeValidator(_text_or_number), AfterValidator(_check_name)]
MinerName = Annotated[str, BeforeValidator(_text_or_number), Field(min_length=1)]
LabelName = Annotated[str, AfterValidator(_check_label_name)]
Labels = Annotated[dict[LabelName, str], BeforeValidator(_label_map)]
OwnLabels = Annotated[
    dict[LabelName, str], BeforeValidator(_label_map), AfterValidator(_no_engine_labels)
]
# Kept as written; matched with re.fullmatch, anchored at both ends as in Alertmanager.
Regex = Annotated[str, AfterValidator(_check_regex)]
Template = Annotated[str, AfterValidator(_check_template)]
UrlText = Annotated[str, BeforeValidator(_check_http_url)]
SecretUrlText = Annotated[SecretStr, BeforeValidator(_check_http_url)]
UtcDatetime = Annotated[datetime, BeforeValidator(_date_to_datetime), AfterValidator(_utc)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _only_one(model: BaseModel, names: Sequence[str], what: str) -> None:
    given = [name for name in names if getattr(model, name) is not None]
    if len(given) != 1:
        listed = ", ".join(names)
        found = "none" if not given else " and ".join(given)
        raise ValueError(f"{what} takes exactly one of {listed} (found {found})")


# ----------------------------------------------------------------- poll, http, misc


class PollConfig(_Model):
    """How the fleet is polled (``poll:``)."""

    interval_s: PositiveDuration = Field(default=30.0, validation_alias="interval")
    timeout_s: PositiveDuration = Field(default=5.0, validation_alias="timeout")
    connect_timeout_s: PositiveDuration = Field(default=1.0, validation_alias="connect_timeout")
    concurrency: Annotated[int, Field(ge=1, le=65_536)] = 512
    jitter: Ratio = 0.1
    max_reply_bytes: Annotated[int, Field(ge=4096)] = 4 * 1024 * 1024

    @model_validator(mode="after")
    def _deadlines(self) -> Self:
        if self.connect_timeout_s > self.timeout_s:
            raise ValueError("connect_timeout must not exceed timeout")
        if self.timeout_s >= self.interval_s:
            raise ValueError("timeout must be shorter than interval, or cycles would overlap")
        return self


class HttpConfig(_Model):
    """The local HTTP endpoint (``http:``): /metrics, /healthz, /api/alerts."""

    listen: str = "127.0.0.1:9841"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _split_host_port(value, None)
        return value

    @property
    def host(self) -> str:
        return _split_host_port(self.listen, None)[0]

    @property
    def port(self) -> int:
        return _split_host_port(self.listen, None)[1]


class ActionsConfig(_Model):
    """Safeguards around every remediation (``actions:``, DESIGN §6)."""

    dry_run: bool = False
    cooldown_s: Duration = Field(default=900.0, validation_alias="cooldown")
    max_per_miner_per_hour: Annotated[int, Field(ge=0)] = 3
    max_in_flight: Annotated[int, Field(ge=1)] = 5
    fleet_incident_share: Annotated[Ratio, Field(gt=0)] = 0.3
    restart_grace_s: Duration = Field(default=300.0, validation_alias="restart_grace")


def _shard(value: object) -> object:
    if isinstance(value, Shard):
        return value
    if isinstance(value, str):
        return parse_shard(value)
    raise ValueError("expected a shard I/N such as 1/4")


class ClusterConfig(_Model):
    """Sharding and replicas (``cluster:``, DESIGN §11)."""

    name: Name | None = None
    """The fleet (e.g. a site) these shards split, when several share one Alertmanager
    cluster: it labels the heartbeats, so shard 1/2 of one site never elects with
    shard 1/2 of another."""
    shard: Annotated[Shard, BeforeValidator(_shard)] = Shard(1, 1)
    replica: Name | None = None
    alertmanager: str | None = None


class HeartbeatConfig(_Model):
    """The dead man's switch ping after every good cycle (``heartbeat:``)."""

    url: SecretUrlText
    interval_s: PositiveDuration = Field(default=60.0, validation_alias="interval")
    timeout_s: PositiveDuration = Field(default=10.0, validation_alias="timeout")


class MinerConfig(_Model):
    """One miner to poll, after ranges are expanded."""

    name: MinerName
    host: Host
    port: Port = DEFAULT_PORT
    labels: OwnLabels = Field(default_factory=dict)
    expected_hashrate_hs: Hashrate | None = Field(
        default=None, validation_alias="expected_hashrate"
    )


class _MinerEntry(_Model):
    """One ``miners:`` item as written: a single host or a ``hosts:`` expansion."""

    name: MinerName | None = None
    host: Host | None = None
    hosts: (
        Annotated[
            tuple[Annotated[str, Field(min_length=1)], ...],
            BeforeValidator(_listify),
            Field(min_length=1),
        ]
        | None
    ) = None
    port: Port = DEFAULT_PORT
    labels: OwnLabels = Field(default_factory=dict)
    expected_hashrate: Hashrate | None = None

    @model_validator(mode="after")
    def _shape(self) -> Self:
        _only_one(self, ("host", "hosts"), "a miner")
        if self.hosts is not None and self.name is not None:
            unknown = sorted(_name_template_fields(self.name) - _NAME_FIELDS)
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


# -------------------------------------------------------------------------- rules

DeviceStatus = Literal[
    "Alive", "Sick", "Dead", "NoStart", "Initialising", "Disabled", "Rejecting", "Unknown"
]
_DEVICE_STATUSES: tuple[str, ...] = typing.get_args(DeviceStatus)


def _device_status(value: object) -> object:
    # cgminer spells them Alive/Sick/Dead/NoStart...; forgive the case.
    if isinstance(value, str):
        for known in _DEVICE_STATUSES:
            if known.lower() == value.strip().lower():
                return known
    return value


class RuleAction(_Model):
    """One step of a rule's remediation ladder, tried in order until verified."""

    do: Literal["restart", "switchpool", "disable", "enable", "exec"]
    after_s: Duration = Field(default=0.0, validation_alias="after")
    verify_within_s: PositiveDuration | None = Field(default=None, validation_alias="verify_within")
    argv: Annotated[tuple[Template, ...], Field(min_length=1)] | None = None
    timeout_s: PositiveDuration = Field(default=30.0, validation_alias="timeout")
    pool: Annotated[int, Field(ge=0)] | None = None  # switchpool target; None: next Alive pool
    dry_run: bool | None = None  # None: the global actions.dry_run

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.do == "exec" and self.argv is None:
            raise ValueError("do: exec needs argv (the program and its arguments, no shell)")
        if self.do != "exec" and self.argv is not None:
            raise ValueError(f"argv is only for do: exec, not do: {self.do}")
        if self.do != "switchpool" and self.pool is not None:
            raise ValueError(f"pool is only for do: switchpool, not do: {self.do}")
        return self


RuleLabels = Annotated[
    dict[LabelName, str], BeforeValidator(_label_map), AfterValidator(_no_engine_labels)
]


def _rule_labels(labels: dict[str, str]) -> dict[str, str]:
    if "severity" in labels:
        raise ValueError("set severity with the rule's severity: key, not under labels")
    return labels


class _RuleBase(_Model):
    name: Name
    for_s: Duration = Field(default=0.0, validation_alias="for")
    keep_firing_for_s: Duration = Field(default=0.0, validation_alias="keep_firing_for")
    severity: Annotated[str, AfterValidator(_check_severity)] = "warning"
    labels: Annotated[RuleLabels, AfterValidator(_rule_labels)] = Field(default_factory=dict)
    annotations: dict[str, Template] = Field(default_factory=dict)
    match: Labels = Field(default_factory=dict)
    match_re: dict[LabelName, Regex] = Field(default_factory=dict)
    actions: tuple[RuleAction, ...] = ()

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether a miner with these labels is covered by ``match``/``match_re``."""
        return _matches(self.match, self.match_re, labels)


class HashrateDropRule(_RuleBase):
    """Hashrate below a share of expected_hashrate, else of the miner's own median."""

    type: Literal["hashrate_drop"]
    below: Annotated[Ratio, Field(gt=0)] = 0.8
    baseline_s: PositiveDuration = Field(default=3600.0, validation_alias="baseline")
    startup_grace_s: Duration = Field(default=600.0, validation_alias="startup_grace")


class DeviceStatusRule(_RuleBase):
    """A device (ASC/PGA/GPU/board) reports one of the listed statuses."""

    type: Literal["device_status"]
    status: Annotated[
        tuple[Annotated[DeviceStatus, BeforeValidator(_device_status)], ...], Field(min_length=1)
    ] = ("Dead", "Sick", "NoStart")


class HardwareErrorsRule(_RuleBase):
    """Hardware errors above a share of the work done over a window."""

    type: Literal["hardware_errors"]
    above: Ratio = 0.01
    window_s: PositiveDuration = Field(default=900.0, validation_alias="window")


class PoolStaleRule(_RuleBase):
    """No accepted share for a while, the active pool not Alive, or too many stales."""

    type: Literal["pool_stale"]
    no_accepted_share_for_s: PositiveDuration = Field(
        default=600.0, validation_alias="no_accepted_share_for"
    )
    stale_above: Ratio | None = 0.05


class UnreachableRule(_RuleBase):
    """The miner did not answer; ``for`` defaults to 3m so one lost poll does not page."""

    type: Literal["unreachable"]
    for_s: Duration = Field(default=180.0, validation_alias="for")


def _threshold_number(value: object) -> object:
    """A bound in the field's unit: a number, a percentage, a hashrate or a duration."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    for parse in (parse_ratio,) if text.endswith("%") else (parse_hashrate, parse_duration):
        try:
            return parse(text)
        except ValueError:
            continue
    raise ValueError(f"{value!r} is not a number, a percentage, a hashrate or a duration")


_FIELD_PATH = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*")


class ThresholdRule(_RuleBase):
    """A normalized snapshot field (e.g. ``temperature.max``) above and/or below bounds."""

    type: Literal["threshold"]
    field: str
    above: Annotated[float, BeforeValidator(_threshold_number)] | None = None
    below: Annotated[float, BeforeValidator(_threshold_number)] | None = None

    @field_validator("field")
    @classmethod
    def _field_path(cls, value: str) -> str:
        if not _FIELD_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not a field path such as temperature.max")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.above is None and self.below is None:
            raise ValueError("a threshold rule needs above, below or both")
        if self.above is not None and self.below is not None and self.below >= self.above:
            raise ValueError("below must be less than above (the rule fires outside below..above)")
        return self


RuleConfig = Annotated[
    HashrateDropRule
    | DeviceStatusRule
    | HardwareErrorsRule
    | PoolStaleRule
    | UnreachableRule
    | ThresholdRule,
    Field(discriminator="type"),
]
"""One rule, of the class its ``type:`` names."""


# ---------------------------------------------------------------------- receivers


class BasicAuth(_Model):
    """HTTP basic authentication."""

    user: str
    password: SecretStr


class BearerAuth(_Model):
    """HTTP bearer token."""

    token: SecretStr


class AuthConfig(_Model):
    """``auth: {basic: {user, password}}`` or ``auth: {bearer: {token}}``."""

    basic: BasicAuth | None = None
    bearer: BearerAuth | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        _only_one(self, ("basic", "bearer"), "auth")
        return self


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class WebhookConfig(_Model):
    """An HTTP POST per notification, in Alertmanager's JSON or a chat preset."""

    url: SecretUrlText
    format: Literal[
        "alertmanager", "slack", "discord", "telegram", "mattermost", "teams", "ntfy", "custom"
    ] = "alertmanager"
    template: Template | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    auth: AuthConfig | None = None
    verify_tls: bool = True
    timeout_s: PositiveDuration = Field(default=10.0, validation_alias="timeout")
    chat_id: Annotated[str, BeforeValidator(_text_or_number)] | None = None

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if any(ch in secret.get_secret_value() for ch in "\r\n\0"):
                raise ValueError(f"header {name!r}: value holds a line break")
        return value

    @model_validator(mode="after")
    def _format_needs(self) -> Self:
        if self.format == "custom" and self.template is None:
            raise ValueError("format: custom needs a template")
        if self.format == "telegram" and self.chat_id is None:
            raise ValueError("format: telegram needs chat_id")
        if self.format != "telegram" and self.chat_id is not None:
            raise ValueError("chat_id is only for format: telegram")
        if self.auth is not None and any(name.lower() == "authorization" for name in self.headers):
            raise ValueError("give auth or an Authorization header, not both")
        return self


def _address(value: str) -> str:
    _, addr = parseaddr(value)
    if "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise ValueError(f"{value!r} is not an email address")
    return value


EmailAddress = Annotated[str, AfterValidator(_address)]


class EmailConfig(_Model):
    """SMTP delivery with STARTTLS (default, port 587) or implicit TLS (port 465)."""

    smtp: str
    starttls: bool = True
    tls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    from_: EmailAddress = Field(validation_alias="from")
    to: Annotated[tuple[EmailAddress, ...], BeforeValidator(_listify), Field(min_length=1)]
    subject: Template | None = None
    verify_tls: bool = True
    timeout_s: PositiveDuration = Field(default=10.0, validation_alias="timeout")

    @model_validator(mode="before")
    @classmethod
    def _implicit_tls(cls, data: Any) -> Any:
        # `tls: true` alone means port 465 without STARTTLS; both spelled out is a mistake.
        if isinstance(data, dict) and data.get("tls") is True and "starttls" not in data:
            return {**data, "starttls": False}
        return data

    @field_validator("smtp")
    @classmethod
    def _smtp(cls, value: str) -> str:
        _split_host_port(value, 25)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.tls and self.starttls:
            raise ValueError("choose starttls (port 587) or tls (port 465), not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password (or password_file), or neither")
        return self

    @property
    def smtp_host(self) -> str:
        return _split_host_port(self.smtp, 25)[0]

    @property
    def smtp_port(self) -> int:
        default = 465 if self.tls else 587 if self.starttls else 25
        return _split_host_port(self.smtp, default)[1]


def _one_url(data: Any) -> Any:
    if isinstance(data, dict) and "url" in data:
        if "urls" in data:
            raise ValueError("give url or urls, not both")
        rest = {key: value for key, value in data.items() if key != "url"}
        return {**rest, "urls": [data["url"]]}
    return data


class AlertmanagerConfig(_Model):
    """Push to Alertmanager's /api/v2/alerts; ``url:`` or every peer under ``urls:``."""

    urls: Annotated[
        tuple[Annotated[UrlText, AfterValidator(_check_plain_url)], ...], Field(min_length=1)
    ]
    auth: AuthConfig | None = None
    verify_tls: bool = True
    timeout_s: PositiveDuration = Field(default=10.0, validation_alias="timeout")

    @model_validator(mode="before")
    @classmethod
    def _url(cls, data: Any) -> Any:
        return _one_url(data)


class AppriseConfig(_Model):
    """Hand the rendered title and body to Apprise (the optional ``[apprise]`` extra)."""

    urls: Annotated[
        tuple[Annotated[SecretStr, BeforeValidator(_check_apprise_url)], ...],
        BeforeValidator(_listify),
        Field(min_length=1),
    ]


ReceiverKind = Literal["webhook", "email", "alertmanager", "apprise"]
_RECEIVER_KINDS: tuple[ReceiverKind, ...] = typing.get_args(ReceiverKind)


class ReceiverConfig(_Model):
    """A named notification target with exactly one integration."""

    name: Name
    send_resolved: bool = True
    webhook: WebhookConfig | None = None
    email: EmailConfig | None = None
    alertmanager: AlertmanagerConfig | None = None
    apprise: AppriseConfig | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        _only_one(self, _RECEIVER_KINDS, "a receiver")
        return self

    @property
    def kind(self) -> ReceiverKind:
        """Which integration this receiver uses."""
        for kind in _RECEIVER_KINDS:
            if getattr(self, kind) is not None:
                return kind
        raise AssertionError("validated receivers have exactly one integration")


# -------------------------------------------------------------------------- route


def _matches(
    match: Mapping[str, str], match_re: Mapping[str, str], labels: Mapping[str, str]
) -> bool:
    # A missing label matches as "", as in Alertmanager; re caches the compiled patterns.
    for name, value in match.items():
        if labels.get(name, "") != value:
            return False
    return all(re.fullmatch(regex, labels.get(name, "")) for name, regex in match_re.items())


def _check_group_by(value: str) -> str:
    return value if value == "..." else _check_label_name(value)


GroupBy = tuple[Annotated[str, AfterValidator(_check_group_by)], ...]

# Alertmanager's defaults for the root route (dispatch/route.go DefaultRouteOpts); every
# route is filled in completely here (children inherit from their parent).
DEFAULT_GROUP_WAIT_S = 30.0
DEFAULT_GROUP_INTERVAL_S = 300.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0


class RouteConfig(_Model):
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
        return _matches(self.match, self.match_re, labels)


class _RouteSpec(_Model):
    """A route node as written, before inheritance."""

    receiver: str | None = None
    group_by: GroupBy | None = None
    group_wait: Duration | None = None
    group_interval: PositiveDuration | None = None
    repeat_interval: PositiveDuration | None = None
    match: Labels = Field(default_factory=dict)
    match_re: dict[LabelName, Regex] = Field(default_factory=dict)
    continue_: bool = Field(default=False, validation_alias="continue")
    routes: tuple[_RouteSpec, ...] = ()


_INHERITED = ("receiver", "group_by", "group_wait", "group_interval", "repeat_interval")


def _resolve_route(
    spec: _RouteSpec, parent: dict[str, Any] | None, loc: Loc, found: list[tuple[Loc, str]]
) -> RouteConfig:
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
        _resolve_route(child, values, (*loc, "routes", index), found)
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


class SilenceConfig(_Model):
    """Mute alerts whose labels match, from ``starts`` (default: always) ``until``."""

    match: Labels = Field(default_factory=dict)
    match_re: dict[LabelName, Regex] = Field(default_factory=dict)
    starts: UtcDatetime | None = None
    until: UtcDatetime
    comment: str = ""

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if not self.match and not self.match_re:
            raise ValueError("a silence needs match or match_re (it would mute every alert)")
        if self.starts is not None and self.starts >= self.until:
            raise ValueError("starts must come before until")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the labels fall under this silence (time is the caller's to check)."""
        return _matches(self.match, self.match_re, labels)


# ------------------------------------------------------------------------- config


def _receiver_problems(receivers: Sequence[tuple[str, str | None]]) -> list[tuple[Loc, str]]:
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


def _route_problems(
    route: RouteConfig,
    kinds: Mapping[str, str | None],
    loc: Loc = ("route",),
    parent: str | None = None,
) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    if route.receiver != parent and route.receiver and route.receiver not in kinds:
        known = ", ".join(sorted(kinds)) or "none"
        found.append(
            ((*loc, "receiver"), f"unknown receiver {route.receiver!r} (defined: {known})")
        )
    for index, child in enumerate(route.routes):
        found += _route_problems(child, kinds, (*loc, "routes", index), route.receiver)
    return found


def _cluster_problems(
    cluster: ClusterConfig, kinds: Mapping[str, str | None]
) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    name = cluster.alertmanager
    if name is not None:
        if name not in kinds:
            found.append((("cluster", "alertmanager"), f"unknown receiver {name!r}"))
        elif kinds[name] != "alertmanager":
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


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "top level"


class Config(_Model):
    """The whole validated configuration. Build it with :func:`load_config`."""

    poll: PollConfig = Field(default_factory=PollConfig)
    state_dir: Path = Path("/var/lib/cgwatchdog")
    http: HttpConfig = Field(default_factory=HttpConfig)
    miners: tuple[MinerConfig, ...] = ()
    rule_files: tuple[Path, ...] = ()  # the files the rule_files: globs matched
    rules: tuple[RuleConfig, ...] = ()
    receivers: tuple[ReceiverConfig, ...] = ()
    route: RouteConfig | None = None
    actions: ActionsConfig = Field(default_factory=ActionsConfig)
    silences: tuple[SilenceConfig, ...] = ()
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    heartbeat: HeartbeatConfig | None = None

    _warnings: tuple[str, ...] = PrivateAttr(default=())
    _redactor: re.Pattern[str] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _references(self) -> Self:
        kinds = {receiver.name: receiver.kind for receiver in self.receivers}
        found = _receiver_problems([(r.name, r.kind) for r in self.receivers])
        if self.route is not None:
            found += _route_problems(self.route, kinds)
        elif self.receivers:
            found.append((("route",), "a route is needed when receivers are defined"))
        found += _cluster_problems(self.cluster, kinds)
        duplicate = _first_duplicate(miner.name for miner in self.miners)
        if duplicate is not None:
            found.append((("miners",), f"miner name {duplicate!r} is used twice"))
        duplicate = _first_duplicate(rule.name for rule in self.rules)
        if duplicate is not None:
            found.append((("rules",), f"rule name {duplicate!r} is used twice"))
        if found:
            raise ValueError("; ".join(f"{_dotted(loc)}: {message}" for loc, message in found))
        return self

    def model_post_init(self, context: Any, /) -> None:
        fragments = {f for secret in _secret_values(self) for f in _secret_fragments(secret)}
        if fragments:
            # Longest first, so a whole URL goes before the path inside it.
            ordered = sorted(fragments, key=len, reverse=True)
            self._redactor = re.compile("|".join(re.escape(f) for f in ordered))

    @property
    def warnings(self) -> tuple[str, ...]:
        """Things that work but deserve a look (loose file modes, unused receivers)."""
        return self._warnings

    def receiver(self, name: str) -> ReceiverConfig:
        """The receiver called ``name``; KeyError if there is none."""
        for receiver in self.receivers:
            if receiver.name == name:
                return receiver
        raise KeyError(name)


def _secrets_in(value: object) -> Iterator[SecretStr]:
    if isinstance(value, SecretStr):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets_in(getattr(value, name))
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _secrets_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets_in(item)


def _secret_values(cfg: Config) -> Iterator[str]:
    # Only these sections hold secrets; walking 10,000 miners for none would be waste.
    for secret in _secrets_in((cfg.receivers, cfg.heartbeat)):
        text = secret.get_secret_value()
        if len(text) >= _MIN_SECRET_LEN:
            yield text


def _secret_fragments(secret: str) -> Iterator[str]:
    """The secret, and for a URL the parts that leak on their own in error messages
    (requests names the path without the host; Telegram's token sits in the path)."""
    yield secret
    if "://" not in secret:
        return
    try:
        parts = urlsplit(secret)
        password = parts.password
    except ValueError:
        return
    if password and len(password) >= _MIN_SECRET_LEN:
        yield password
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    for piece in (tail, parts.path, parts.query):
        if len(piece) >= 8:
            yield piece
    if parts.scheme not in ("http", "https"):
        # Apprise puts user keys and tokens where a user and host would be (kept in
        # their case: .hostname would lower it).
        userinfo, _, host = parts.netloc.rpartition("@")
        for extra in (parts.netloc, host, userinfo, *userinfo.split(":")):
            if len(extra) >= _MIN_SECRET_LEN:
                yield extra


def redact(text: str, cfg: Config) -> str:
    """``text`` with every secret value of ``cfg`` replaced by ``<redacted>``."""
    pattern = cfg._redactor
    return text if pattern is None else pattern.sub(REDACTED, text)


def default_rules_path() -> Path:
    """The shipped ``rules/default.yaml``: in the wheel (``cgwatchdog/_rules``) or the
    source checkout (``rules/`` beside the package)."""
    here = Path(__file__).resolve().parent
    candidates = (here / "_rules" / "default.yaml", here.parent / "rules" / "default.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        [
            ConfigProblem(
                str(candidates[0]), None, "shipped default rules not found; reinstall cgwatchdog"
            )
        ]
    )


# ------------------------------------------------------------------ YAML reading


@dataclass(slots=True)
class _Doc:
    """A parsed file: plain data and the line of every key and list item."""

    file: str
    data: dict[str, Any]
    lines: dict[Loc, int]

    def locate(self, loc: Loc) -> tuple[int | None, Loc, object]:
        """Line, path and value of the deepest node of ``loc`` present in the file.
        Parts not in the document (pydantic's union tags, "[key]") are skipped."""
        node: object = self.data
        found: list[str | int] = []
        for part in loc:
            in_mapping = isinstance(node, dict) and isinstance(part, str) and part in node
            in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            if in_mapping or in_list:
                node = node[part]  # type: ignore[index]
                found.append(part)
        path = tuple(found)
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        return self.lines.get(probe), path, node


class _TooLarge(Exception):
    pass


_ENV_REF = re.compile(r"\$(\$?)\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"


class _TreeBuilder:
    """Node tree -> plain data, recording lines, substituting ${ENV}, reading *_file."""

    def __init__(
        self, session: _Loader, loader: yaml.SafeLoader, file: str, base_dir: Path
    ) -> None:
        self.session = session
        self.loader = loader
        self.file = file
        self.base_dir = base_dir
        self.lines: dict[Loc, int] = {}
        self.count = 0
        self.active: set[int] = set()
        self.own_keys: dict[int, frozenset[int]] = {}

    def problem(
        self, line: int | None, message: str, loc: Loc | None = None, shown: Loc | None = None
    ) -> None:
        if shown or loc:
            message = f"{_dotted(shown or loc or ())}: {message}"
        self.session.reader_problem(self.file, line, message, loc)

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.count += 1
        if self.count > _MAX_YAML_NODES:
            raise _TooLarge
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, line, loc)
        if id(node) in self.active:
            self.problem(line, "an alias refers to a node that contains it", loc)
            return None
        self.active.add(id(node))
        try:
            if node.tag not in (_SEQ_TAG, _MAP_TAG):
                self.problem(line, f"unsupported YAML tag {node.tag!r}", loc)
                return None
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*loc, index)] = item.start_mark.line + 1
                    items.append(self.build(item, (*loc, index)))
                return items
            assert isinstance(node, yaml.MappingNode)
            return self.mapping(node, loc)
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, line: int, loc: Loc) -> Any:
        try:
            value = self.loader.construct_object(node)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "unsupported"
            self.problem(line, f"cannot read this value: {problem}", loc)
            return None
        except Exception as exc:
            # PyYAML's constructors also fail with plain exceptions: 2026-13-45 and an
            # integer past Python's 4300 digits (ValueError), `!!bool word` (KeyError),
            # `!!timestamp word` (AttributeError). This is where they enter.
            kind = node.tag.rpartition(":")[2]
            reason = str(exc).split(":")[0] if isinstance(exc, ValueError) else "not valid"
            self.problem(line, f"cannot read this value as {kind}: {reason}", loc)
            return None
        if isinstance(value, str) and "$" in value:
            value = self.substitute(value, line, loc)
        return value

    def substitute(self, text: str, line: int, loc: Loc) -> str:
        used = False

        def replace(ref: re.Match[str]) -> str:
            nonlocal used
            if ref[1]:
                return "${" + ref[2] + "}"
            used = True
            name = ref[2]
            if not _ENV_NAME.fullmatch(name):
                self.problem(
                    line,
                    f"${{{name}}} is not an environment variable reference; "
                    "write $${...} for a literal ${...}",
                    loc,
                )
                return ""
            value = self.session.environ.get(name)
            if value is None:
                self.problem(line, f"environment variable {name} is not set", loc)
                return ""
            self.session.derived.add(value)
            return value

        result = _ENV_REF.sub(replace, text)
        if used:
            self.session.derived.add(result)
        return result

    def mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        own = self.own_keys.get(id(node))
        if own is None:
            own = frozenset(id(key) for key, _ in node.value)
            self.own_keys[id(node)] = own
            try:
                self.loader.flatten_mapping(node)  # `<<: *defaults` merges
            except yaml.YAMLError as exc:
                self.problem(
                    node.start_mark.line + 1,
                    f"cannot merge: {getattr(exc, 'problem', None) or exc}",
                )
        written = {
            key.value
            for key, _ in node.value
            if id(key) in own and isinstance(key, yaml.ScalarNode)
        }
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(line, "a key must be a plain word, not a list or mapping")
                continue
            key = str(key_node.value)
            is_own = id(key_node) in own
            # Keys merged in with `<<` (-1 here) may be overridden by the mapping's own.
            if is_own and first_line.get(key, -1) != -1:
                self.problem(line, f"duplicate key {key!r} (first at line {first_line[key]})")
                continue
            first_line[key] = line if is_own else -1
            value = self.build(value_node, (*loc, key))
            if key in _SECRET_FILE_KEYS:
                target = key.removesuffix("_file")
                if target in written:
                    self.problem(line, f"give {target} or {key}, not both")
                    continue
                key = target
                value = self.read_secret(value, line, (*loc, key))
            self.lines[(*loc, key)] = line
            out[key] = value
        return out

    def read_secret(self, value: object, line: int, loc: Loc) -> str:
        """The stripped content of the file a ``*_file`` key names; ``loc`` is the key it
        stands for (``password`` for ``password_file``)."""
        shown = (*loc[:-1], f"{loc[-1]}_file")
        if not isinstance(value, str) or not value.strip():
            self.problem(line, "must be the path of a file", loc, shown)
            return ""
        try:
            path = _local_path(value, self.base_dir)
        except ValueError as exc:
            self.problem(line, str(exc), loc, shown)
            return ""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            self.problem(line, f"cannot read {path}: {reason}", loc, shown)
            return ""
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.problem(line, f"{path} is not UTF-8 text", loc, shown)
            return ""
        if not text:
            self.problem(line, f"{path} is empty", loc, shown)
            return ""
        self.session.derived.add(text)
        self.session.secret_files.append((path, f"{self.file}:{line}", str(shown[-1])))
        return text


# ----------------------------------------------------------------------- loading

_TYPE_MESSAGES = {
    "dict_type": "expected a mapping (key: value)",
    "model_type": "expected a mapping (key: value)",
    "model_attributes_type": "expected a mapping (key: value)",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "string_type": "expected text",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "path_type": "expected a file system path",
    "datetime_type": "expected a date and time such as 2026-12-01T00:00:00Z",
    "datetime_parsing": "expected a date and time such as 2026-12-01T00:00:00Z",
    "datetime_from_date_parsing": "expected a date and time such as 2026-12-01T00:00:00Z",
}


_CONSTRAINT_MESSAGES = {
    "literal_error": "must be one of {expected}",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "too_short": "needs at least {min_length} item(s)",
    "string_too_short": "must not be empty",
}


def _has_fields(template: str, values: Mapping[str, Any]) -> bool:
    return _name_template_fields(template) <= values.keys()


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(tp) if arg is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _field_key(name: str, info: Any) -> str:
    alias = info.validation_alias
    return alias if isinstance(alias, str) else name


def _step(tp: Any, part: str | int) -> Any:
    tp = _unwrap(tp)
    if _is_model(tp):
        for name, info in tp.model_fields.items():
            if part in (name, _field_key(name, info)):
                return info.annotation
        return None
    origin = typing.get_origin(tp)
    if origin in (tuple, list) and isinstance(part, int):
        return typing.get_args(tp)[0]
    if origin is dict:
        return typing.get_args(tp)[1]
    if origin in (typing.Union, types.UnionType):  # a discriminated union: the tag picks
        for member in typing.get_args(tp):
            member = _unwrap(member)
            tag = member.model_fields.get("type") if _is_model(member) else None
            if tag is not None and part in typing.get_args(tag.annotation):
                return member
    return None


def _keys_of(root: Any, loc: Loc) -> list[str]:
    """The keys the model at ``loc`` (below ``root``) accepts, for "did you mean"."""
    tp = root
    for part in loc:
        nxt = _step(tp, part)
        if nxt is not None:
            tp = nxt
    tp = _unwrap(tp)
    if not _is_model(tp):
        return []
    keys = [_field_key(name, info) for name, info in tp.model_fields.items()]
    return keys + [f"{key}_file" for key in keys if f"{key}_file" in _SECRET_FILE_KEYS]


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    return f"unknown key {key!r}; expected one of: {', '.join(sorted(allowed))}"


_RULE_TYPES = (
    "hashrate_drop",
    "device_status",
    "hardware_errors",
    "pool_stale",
    "unreachable",
    "threshold",
)
_LIST_SECTIONS: dict[str, Any] = {
    "miners": _MinerEntry,
    "rules": RuleConfig,
    "receivers": ReceiverConfig,
    "silences": SilenceConfig,
}
_SECTIONS: dict[str, Any] = {
    "poll": PollConfig,
    "state_dir": Annotated[Path, AfterValidator(_usable_path)],
    "http": HttpConfig,
    "rule_files": Annotated[tuple[str, ...], BeforeValidator(_listify)],
    "route": _RouteSpec,
    "actions": ActionsConfig,
    "cluster": ClusterConfig,
    "heartbeat": HeartbeatConfig,
}
_TOP_LEVEL = tuple(_SECTIONS) + tuple(_LIST_SECTIONS)
_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(id(tp))
    if adapter is None:
        adapter = _ADAPTERS[id(tp)] = TypeAdapter(tp)
    return adapter


_RuleEntry = tuple[Any, _Doc, Loc]  # (RuleConfig, where it was read, its path there)


class _Loader:
    """One load: every problem, warning and secret seen along the way."""

    def __init__(self, environ: Mapping[str, str] | None) -> None:
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.problems: list[ConfigProblem] = []
        self.warnings: list[str] = []
        self.derived: set[str] = set()  # strings that came from ${ENV} or a *_file
        self.secret_files: list[tuple[Path, str, str]] = []  # (file, where named, key)
        self.reader_locs: set[tuple[str, Loc]] = set()
        self.file_order: dict[str, int] = {}

    # problems ------------------------------------------------------------------

    def reader_problem(
        self, file: str, line: int | None, message: str, loc: Loc | None = None
    ) -> None:
        """A problem found while reading the file (an unset ${VAR}, a missing *_file).
        Validation then sees an empty value there; complaints about it are echoes."""
        if loc is not None:
            self.reader_locs.add((file, loc))
        self.problems.append(ConfigProblem(file, line, message))

    def problem(self, file: str, line: int | None, message: str, path: Loc | None = None) -> None:
        if path is not None and (file, path) in self.reader_locs:
            return
        self.problems.append(ConfigProblem(file, line, message))

    def problem_at(self, doc: _Doc, loc: Loc, message: str) -> None:
        line, path, _ = doc.locate(loc)
        self.problem(doc.file, line, f"{_dotted(path)}: {message}", path)

    def validation_problems(self, doc: _Doc, loc: Loc, root: Any, exc: ValidationError) -> None:
        errors = exc.errors(include_url=False, include_input=False, include_context=True)
        locs = [tuple(error["loc"]) for error in errors]
        for error in errors:
            own = tuple(error["loc"])
            # A list that fails its length check because an item failed repeats the item.
            if any(len(other) > len(own) and other[: len(own)] == own for other in locs):
                continue
            err_loc = loc + own
            kind = error["type"]
            ctx = error.get("ctx") or {}
            if kind == "union_tag_invalid":
                line, path, _ = doc.locate((*err_loc, "type"))
                message = f"unknown rule type {ctx.get('tag')!r}; expected one of: {', '.join(_RULE_TYPES)}"
            elif kind == "union_tag_not_found":
                line, path, _ = doc.locate(err_loc)
                message = f"missing required key 'type' (one of: {', '.join(_RULE_TYPES)})"
            elif kind == "extra_forbidden":
                line, path, _ = doc.locate(err_loc)
                path = path[:-1] if path and path[-1] == err_loc[-1] else path
                message = _unknown_key(str(err_loc[-1]), _keys_of(root, tuple(error["loc"])[:-1]))
            elif kind == "missing":
                line, path, _ = doc.locate(err_loc[:-1])
                message = f"missing required key {err_loc[-1]!r}"
            else:
                line, path, value = doc.locate(err_loc)
                if kind in _TYPE_MESSAGES:
                    message = f"{_TYPE_MESSAGES[kind]}, found {value_kind(value)}"
                elif kind == "value_error":
                    message = str(ctx.get("error", error["msg"]))
                elif kind in _CONSTRAINT_MESSAGES and _has_fields(_CONSTRAINT_MESSAGES[kind], ctx):
                    message = _CONSTRAINT_MESSAGES[kind].format(**ctx)
                else:
                    message = error["msg"][:1].lower() + error["msg"][1:]
            self.problem(doc.file, line, f"{_dotted(path)}: {message}", path)

    def error(self) -> ConfigError:
        order = self.file_order
        problems = sorted(
            dict.fromkeys(self.problems),
            key=lambda p: (order.get(p.file, len(order)), p.line or 0),
        )
        # A URL's path leaks on its own (url_file: ${URL} shows it as a file name).
        secrets = sorted(
            {f for s in self.derived if len(s) >= _MIN_SECRET_LEN for f in _secret_fragments(s)},
            key=len,
            reverse=True,
        )
        scrubbed = []
        for problem in problems:
            message = problem.message
            for secret in secrets:
                message = message.replace(secret, REDACTED)
            scrubbed.append(ConfigProblem(problem.file, problem.line, message))
        return ConfigError(scrubbed)

    # reading -------------------------------------------------------------------

    def read(self, path: Path, what: str) -> _Doc | None:
        file = str(path)
        self.file_order.setdefault(file, len(self.file_order))
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except OSError as exc:
            self.reader_problem(
                file, None, f"cannot read {what}: {exc.strerror or type(exc).__name__}"
            )
            return None
        except UnicodeDecodeError as exc:
            self.reader_problem(file, _text_line(exc), f"{what} is not UTF-8 text")
            return None
        try:
            loader = yaml.SafeLoader(text)
        except yaml.reader.ReaderError as exc:  # a control character, checked up front
            char = exc.character if isinstance(exc.character, int) else ord(exc.character)
            where = text[: exc.position].count("\n") + 1
            self.reader_problem(
                file, where, f"{what} holds a control character YAML does not allow (#x{char:04x})"
            )
            return None
        try:
            root = loader.get_single_node()
            if root is None:
                self.reader_problem(file, None, f"{what} is empty")
                return None
            if not isinstance(root, yaml.MappingNode):
                found = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
                self.reader_problem(
                    file,
                    root.start_mark.line + 1,
                    f"the top level must be a mapping of keys (key: value), found {found}",
                )
                return None
            builder = _TreeBuilder(self, loader, file, path.parent)
            data = builder.build(root, ())
        except yaml.MarkedYAMLError as exc:
            # Only problem and context: str(exc) quotes the source, which may hold a secret.
            mark = exc.problem_mark or exc.context_mark
            problem = (exc.problem or exc.context or "unreadable").removeprefix("but ")
            message = f"YAML syntax error: {problem}"
            if exc.problem and exc.context and exc.context_mark and exc.problem_mark:
                where = exc.context_mark.line + 1
                if where != exc.problem_mark.line + 1:
                    message += f" ({exc.context} at line {where})"
                else:
                    message += f" ({exc.context})"
            self.reader_problem(file, mark.line + 1 if mark else None, message)
            return None
        except yaml.YAMLError:
            self.reader_problem(file, None, "YAML syntax error")
            return None
        except _TooLarge:
            self.reader_problem(
                file, None, f"more than {_MAX_YAML_NODES:,} values after expanding aliases"
            )
            return None
        except RecursionError:
            self.reader_problem(file, None, "nested too deeply")
            return None
        except ValueError as exc:  # PyYAML's scanner passes "\U1e999fff" to chr() unchecked
            line = loader.get_mark().line + 1
            self.reader_problem(file, line, f"YAML syntax error: {exc}")
            return None
        finally:
            loader.dispose()
        if not isinstance(data, dict):
            return None  # the root mapping had an unsupported tag: a problem says so
        builder.lines[()] = root.start_mark.line + 1
        return _Doc(file, data, builder.lines)

    def validate(self, doc: _Doc, loc: Loc, tp: Any, value: object) -> Any | None:
        try:
            return _adapter(tp).validate_python(value)
        except ValidationError as exc:
            self.validation_problems(doc, loc, tp, exc)
            return None

    def items(self, doc: _Doc, key: str) -> list[tuple[int, Any]]:
        value = doc.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem_at(doc, (key,), f"expected a list ('- ' items), found {value_kind(value)}")
            return []
        out = []
        for index, item in enumerate(value):
            model = self.validate(doc, (key, index), _LIST_SECTIONS[key], item)
            if model is not None:
                out.append((index, model))
        return out

    def unknown_keys(self, doc: _Doc, allowed: Sequence[str]) -> None:
        for key in doc.data:
            if key not in allowed:
                line, _, _ = doc.locate((key,))
                self.problem(doc.file, line, _unknown_key(key, allowed))

    # miners --------------------------------------------------------------------

    def miners(self, doc: _Doc, entries: list[tuple[int, _MinerEntry]]) -> list[MinerConfig]:
        miners: list[MinerConfig] = []
        names: dict[str, int | None] = {}
        endpoints: dict[tuple[str, int], str] = {}
        for index, entry in entries:
            loc: Loc = ("miners", index)
            line, _, _ = doc.locate(loc)
            hosts: list[str] = []
            if entry.host is not None:
                hosts = [entry.host]
            else:
                for number, spec in enumerate(entry.hosts or ()):
                    try:
                        hosts += expand_hosts(spec)
                    except ValueError as exc:
                        self.problem_at(doc, (*loc, "hosts", number), str(exc))
            template = entry.name if entry.hosts is not None else None
            if template is not None and len(hosts) > 1 and not _name_template_fields(template):
                self.problem_at(
                    doc,
                    (*loc, "name"),
                    f"{template!r} would name {len(hosts):,} miners alike; add {{host}} or {{index}}",
                )
                continue
            clashes: list[str] = []
            for number, host in enumerate(hosts, 1):
                if template is not None:
                    name = template.format(host=host, port=entry.port, index=number)
                else:
                    name = entry.name or _default_miner_name(host, entry.port)
                if name in names:
                    clashes.append(f"miner name {name!r} is already used (line {names[name]})")
                    continue
                if (host, entry.port) in endpoints:
                    clashes.append(
                        f"{host}:{entry.port} is already listed as miner {endpoints[host, entry.port]!r}"
                    )
                    continue
                names[name] = line
                endpoints[host, entry.port] = name
                miners.append(
                    MinerConfig.model_construct(
                        name=name,
                        host=host,
                        port=entry.port,
                        labels=entry.labels,  # shared across a range: one dict, not 10,000
                        expected_hashrate_hs=entry.expected_hashrate,
                    )
                )
            if clashes:
                more = f" (and {len(clashes) - 1:,} more in this entry)" if len(clashes) > 1 else ""
                named = "name" if entry.name is not None else "host" if entry.host else "hosts"
                self.problem_at(doc, (*loc, named), clashes[0] + more)
        return miners

    # rules ---------------------------------------------------------------------

    def rule_file(self, path: Path) -> list[_RuleEntry]:
        doc = self.read(path, "rule file")
        if doc is None:
            return []
        self.unknown_keys(doc, ("rules",))
        if "rules" not in doc.data:
            self.problem(doc.file, doc.lines[()], "missing required key 'rules' (a list of rules)")
        return [(rule, doc, ("rules", index)) for index, rule in self.items(doc, "rules")]

    def rule_files(
        self, doc: _Doc, patterns: Sequence[str], base_dir: Path, config_path: Path
    ) -> list[Path]:
        seen = {config_path.resolve()}
        found: list[Path] = []
        for index, pattern in enumerate(patterns):
            try:
                full = _local_path(pattern, base_dir)
            except ValueError as exc:
                self.problem_at(doc, ("rule_files", index), str(exc))
                continue
            matches = [Path(m) for m in sorted(glob.glob(str(full))) if Path(m).is_file()]
            if not matches:
                where = "" if str(full) == pattern else f" (looked for {full})"
                self.problem_at(doc, ("rule_files", index), f"{pattern!r} matches no file{where}")
            for match in matches:
                key = match.resolve()
                if key not in seen:
                    seen.add(key)
                    found.append(match)
        return found

    def check_rule_names(self, entries: Sequence[_RuleEntry]) -> None:
        first: dict[str, str] = {}
        for rule, doc, loc in entries:
            line, _, _ = doc.locate((*loc, "name"))
            where = doc.file if line is None else f"{doc.file}:{line}"
            if rule.name in first:
                self.problem(
                    doc.file, line, f"rule name {rule.name!r} is already used at {first[rule.name]}"
                )
            else:
                first[rule.name] = where

    # the whole config ----------------------------------------------------------

    def config(self, path: Path) -> Config:
        doc = self.read(path, "config file")
        if doc is None:
            raise self.error()
        base_dir = path.parent
        self.unknown_keys(doc, _TOP_LEVEL)
        parts: dict[str, Any] = {}
        for key, tp in _SECTIONS.items():
            if doc.data.get(key) is not None:
                parts[key] = self.validate(doc, (key,), tp, doc.data[key])

        miners = self.miners(doc, self.items(doc, "miners"))
        rules: list[_RuleEntry] = [
            (rule, doc, ("rules", i)) for i, rule in self.items(doc, "rules")
        ]
        files = self.rule_files(doc, parts.get("rule_files") or (), base_dir, path)
        for file in files:
            rules += self.rule_file(file)
        self.check_rule_names(rules)
        receivers = [model for _, model in self.items(doc, "receivers")]
        silences = [model for _, model in self.items(doc, "silences")]

        # Names and kinds from the raw entries, so one invalid receiver does not make
        # every route that names it an error too.
        raw_receivers = (
            [
                (
                    str(item["name"]),
                    next((k for k in _RECEIVER_KINDS if item.get(k) is not None), None),
                )
                for item in doc.data.get("receivers") or ()
                if isinstance(item, dict) and isinstance(item.get("name"), str)
            ]
            if isinstance(doc.data.get("receivers"), list)
            else []
        )
        kinds = dict(raw_receivers)
        found = _receiver_problems(raw_receivers)
        route: RouteConfig | None = None
        if isinstance(parts.get("route"), _RouteSpec):
            route = _resolve_route(parts["route"], None, ("route",), found)
            found += _route_problems(route, kinds)
        elif doc.data.get("route") is None and len(raw_receivers) == 1:
            route = RouteConfig(receiver=raw_receivers[0][0])
        elif doc.data.get("route") is None and raw_receivers:
            found.append((("receivers",), "a route: is needed to choose among several receivers"))
        if isinstance(parts.get("cluster"), ClusterConfig):
            found += _cluster_problems(parts["cluster"], kinds)
        for loc, message in found:
            self.problem_at(doc, loc, message)

        if self.problems:
            raise self.error()
        state_dir = parts.get("state_dir")
        if state_dir is not None and not state_dir.is_absolute():
            parts["state_dir"] = base_dir / state_dir
        parts.pop("route", None)
        parts["rule_files"] = tuple(files)
        try:
            cfg = Config(
                **parts,
                miners=tuple(miners),
                rules=tuple(rule for rule, _, _ in rules),
                receivers=tuple(receivers),
                silences=tuple(silences),
                route=route,
            )
        except ValidationError as exc:  # a check above should have caught it first
            for error in exc.errors(include_url=False, include_input=False):
                self.problem(doc.file, None, str(error["msg"]))
            raise self.error() from None
        self.add_warnings(cfg, path, rules)
        cfg._warnings = tuple(self.warnings)
        return cfg

    def add_warnings(self, cfg: Config, path: Path, rules: Sequence[_RuleEntry]) -> None:
        inline = [
            secret
            for secret in _secret_values(cfg)
            if secret not in self.derived and not _loopback_url(secret)
        ]
        if inline:
            mode = _loose_mode(path)
            if mode is not None:
                self.warnings.append(
                    f"{path}: holds secrets inline and is readable by group or others "
                    f"(mode {mode:04o}); chmod 600 it, or move the secrets to *_file or ${{ENV}}"
                )
        for secret_file, where, key in self.secret_files:
            mode = _loose_mode(secret_file)
            if mode is not None:
                self.warnings.append(
                    f"{secret_file} ({key} at {where}) is readable by group or others "
                    f"(mode {mode:04o}); chmod 600 it"
                )
        used = {cfg.cluster.alertmanager}
        pending = [cfg.route] if cfg.route is not None else []
        while pending:
            node = pending.pop()
            used.add(node.receiver)
            pending.extend(node.routes)
        for receiver in cfg.receivers:
            if receiver.name not in used:
                self.warnings.append(f"receiver {receiver.name!r} is not used by any route")
        if not rules:
            self.warnings.append("no rules are configured: nothing will alert (add rule_files:)")


def _text_line(exc: UnicodeDecodeError) -> int:
    """The 1-based line of the first byte that is not UTF-8."""
    return exc.object[: exc.start].count(b"\n") + 1


def _local_path(text: str, base_dir: Path) -> Path:
    """A path from the config, ``~`` expanded, relative to ``base_dir``; ValueError if the
    operating system could not use it."""
    _check_path_text(text)
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # ~name of a user that does not exist
        raise ValueError(f"cannot expand ~ in {text!r}: no such user") from None
    return path if path.is_absolute() else base_dir / path


def _loose_mode(path: Path) -> int | None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & 0o044 else None


def _loopback_url(value: str) -> bool:
    # A webhook on loopback is the operator's own relay, not a bearer of credentials.
    try:
        parts = urlsplit(value)
        host = parts.hostname
        if parts.password or host is None:
            return False
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and cross-check the config file and its rule files.

    ``environ`` (default ``os.environ``) supplies ``${VAR}`` values. Raises ConfigError
    listing every problem with its ``file:line``; warnings are on ``Config.warnings``.
    """
    return _Loader(environ).config(Path(path))


def load_rule_file(
    path: str | Path, *, environ: Mapping[str, str] | None = None
) -> list[RuleConfig]:
    """Read and validate one rule file (``rules: [...]``). Raises ConfigError."""
    loader = _Loader(environ)
    entries = loader.rule_file(Path(path))
    loader.check_rule_names(entries)
    if loader.problems:
        raise loader.error()
    return [rule for rule, _, _ in entries]
