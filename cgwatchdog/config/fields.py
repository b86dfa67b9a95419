"""Field types and validators shared by every config model.

A field's type says what the operator may write and what the program gets: ``Duration``
takes ``"30s"`` and gives float seconds, ``Labels`` takes ``{rack: 01}`` and gives text
values, ``Template`` takes Jinja text whose syntax is checked. Validators raise
ValueError with a message for the operator; the loader adds the file and line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from cgwatchdog.config.hosts import check_host
from cgwatchdog.units import parse_duration, parse_hashrate, parse_ratio

__all__ = [
    "ENGINE_LABELS",
    "Duration",
    "Hashrate",
    "Host",
    "LabelName",
    "Labels",
    "MinerName",
    "Model",
    "Name",
    "OwnLabels",
    "Port",
    "PositiveDuration",
    "Ratio",
    "Regex",
    "RuleLabels",
    "SecretUrlText",
    "Severity",
    "Template",
    "UrlText",
    "UtcDatetime",
    "check_label_name",
    "check_path_text",
    "check_plain_url",
    "labels_match",
    "listify",
    "only_one",
    "text_or_number",
    "usable_path",
]

# Labels the rule engine sets on every alert; a miner or rule may not override them.
ENGINE_LABELS = frozenset({"alertname", "miner", "device", "pool"})


def listify(value: object) -> object:
    """One item written where a list is expected becomes a list of one."""
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


def check_label_name(name: str) -> str:
    """A label name as Prometheus allows it; ValueError otherwise."""
    if not _LABEL_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid label name: use letters, digits and _, "
            "not starting with a digit"
        )
    return name


def _no_engine_labels(labels: dict[str, str]) -> dict[str, str]:
    taken = sorted(ENGINE_LABELS.intersection(labels))
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


def check_plain_url(value: str) -> str:
    """A URL without credentials in it (the URL is logged); ValueError otherwise."""
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        raise ValueError("put credentials under auth:, not in the URL (the URL is logged)")
    return value


def check_path_text(text: str) -> None:
    """ValueError for a path the operating system cannot take (open() would raise it)."""
    if "\0" in text:
        raise ValueError("the path holds a NUL byte")
    try:
        os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate, from a "\ud800" escape in YAML
        raise ValueError("the path is not valid text") from None


def usable_path(path: Path) -> Path:
    """``path`` if the operating system can take it; ValueError otherwise."""
    check_path_text(str(path))
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


def text_or_number(value: object) -> object:
    """A YAML integer where text is meant (a chat id, a name) becomes text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Ratio = Annotated[float, BeforeValidator(parse_ratio)]
Hashrate = Annotated[float, BeforeValidator(parse_hashrate), Field(gt=0)]
Port = Annotated[int, Field(ge=1, le=65535)]
Host = Annotated[str, AfterValidator(check_host)]
Name = Annotated[str, BeforeValidator(text_or_number), AfterValidator(_check_name)]
MinerName = Annotated[str, BeforeValidator(text_or_number), Field(min_length=1)]
LabelName = Annotated[str, AfterValidator(check_label_name)]
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


class Model(BaseModel):
    """Base of every config model: frozen, unknown keys refused, aliases accepted.

    Validators are built on first use (``defer_build``): a config uses a few of the
    models (no receivers, no silences: their validators are never needed), and every
    command pays for the import (``benchmarks/RESULTS.md``, start-up). For the same
    reason the docstring under a field is not its ``description``: pydantic would read
    and parse each model's source to find it (``use_attribute_docstrings``, ~35 ms of
    every command's start-up); ``docs/generate.py`` reads them for the reference.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        defer_build=True,
    )


def only_one(model: BaseModel, names: Sequence[str], what: str) -> None:
    """ValueError unless exactly one of the fields ``names`` of ``model`` is set."""
    given = [name for name in names if getattr(model, name) is not None]
    if len(given) != 1:
        listed = ", ".join(names)
        found = "none" if not given else " and ".join(given)
        raise ValueError(f"{what} takes exactly one of {listed} (found {found})")


def _check_severity(value: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", value):
        raise ValueError(
            f"{value!r} is not a severity; use a lower-case word such as warning or critical"
        )
    return value


def _rule_labels(labels: dict[str, str]) -> dict[str, str]:
    if "severity" in labels:
        raise ValueError("set severity with the rule's severity: key, not under labels")
    return labels


Severity = Annotated[str, AfterValidator(_check_severity)]
RuleLabels = Annotated[
    dict[LabelName, str],
    BeforeValidator(_label_map),
    AfterValidator(_no_engine_labels),
    AfterValidator(_rule_labels),
]


def labels_match(
    match: Mapping[str, str], match_re: Mapping[str, str], labels: Mapping[str, str]
) -> bool:
    """Whether ``labels`` satisfy every equality of ``match`` and every regex of
    ``match_re`` (anchored at both ends)."""
    # A missing label matches as "", as in Alertmanager; re caches the compiled patterns.
    for name, value in match.items():
        if labels.get(name, "") != value:
            return False
    return all(re.fullmatch(regex, labels.get(name, "")) for name, regex in match_re.items())
