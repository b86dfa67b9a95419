"""What webhook formats share: the format registry, the body type, and text helpers.

A format is one module in ``cgwatchdog/notify/formats/`` with a ``render(notification,
context) -> HttpBody`` registered by :func:`webhook_format`, shaped the way that service
documents its incoming webhook, within its size limits. When alerts do not fit, a
format shows what fits (firing alerts first) and says how many it left out, so a
3,000-alert fleet incident is still one readable, accepted message. The webhook
receiver's ``format:`` choices, its checks and the generated docs read
:data:`WEBHOOK_FORMATS`.

The helpers here do no I/O and never read the clock: times come from the alerts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cgwatchdog.alerts import AlertView, Notification
from cgwatchdog.registry import Registry
from cgwatchdog.units import short_time

__all__ = [
    "ELLIPSIS",
    "NAME_MAX",
    "SUMMARY_MAX",
    "WEBHOOK_FORMATS",
    "AlertText",
    "FormatContext",
    "Formatter",
    "HttpBody",
    "WebhookFormat",
    "alert_text",
    "color",
    "fit",
    "json_body",
    "more_note",
    "ordered",
    "severity",
    "title",
    "truncate",
    "utf8_len",
    "utf16_len",
    "webhook_format",
]

ELLIPSIS: Final = "…"
# The labels that say which miner part an alert is about; shown in every alert line.
_WHERE_LABELS: Final = ("miner", "device", "pool")
_TITLE_SKIP: Final = frozenset({"alertname", "miner", "fleet_incident"})
_TITLE_MAX_ALERTNAMES: Final = 3
# Caps on the pieces of one alert line, applied before any markup or escaping, so a
# cut never splits a tag or an entity and a line stays far below every service limit.
SUMMARY_MAX: Final = 400
NAME_MAX: Final = 200
_RED: Final = 0xD0021B
_ORANGE: Final = 0xF5A623
_GREEN: Final = 0x2EB67D


@dataclass(frozen=True, slots=True)
class HttpBody:
    """What to POST: the bytes, their media type, and where if not to the configured URL."""

    content: bytes
    content_type: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class FormatContext:
    """What a format may use besides the notification (built once per receiver).

    ``url`` is the configured webhook URL: a secret, never to be put in a message.
    ``settings`` is the receiver's webhook settings (``chat_id``, ``template``, ...),
    ``prepared`` what the format's ``prepare`` made of them once (a compiled template).
    """

    receiver: str
    url: str
    external_url: str = ""
    settings: Any = None
    prepared: Any = None


Formatter = Callable[[Notification, FormatContext], HttpBody]


@dataclass(frozen=True, slots=True)
class WebhookFormat:
    """One ``format:`` of the webhook receiver."""

    name: str
    render: Formatter
    needs: tuple[str, ...] = ()
    """Webhook settings this format requires (``chat_id``, ``template``); they are
    refused on a format that does not need them."""
    prepare: Callable[[Any], Any] | None = None
    """Run once per receiver on its settings (e.g. compile a template); a NotifyError
    from it fails every notification of the receiver with its message."""


WEBHOOK_FORMATS: Registry[WebhookFormat] = Registry(
    "webhook format", builtins="cgwatchdog.notify.formats"
)
"""Every webhook format, by its ``format:`` name."""


def webhook_format(
    name: str, *, needs: tuple[str, ...] = (), prepare: Callable[[Any], Any] | None = None
) -> Callable[[Formatter], Formatter]:
    """Register the decorated ``render`` as the webhook format ``name``."""

    def register(render: Formatter) -> Formatter:
        WEBHOOK_FORMATS.add(name, WebhookFormat(name, render, needs, prepare))
        return render

    return register


def json_body(data: Any, *, url: str | None = None) -> HttpBody:
    """A JSON body, UTF-8, non-ASCII kept as is (services count characters, not escapes)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return HttpBody(text.encode(), "application/json", url)


# --- measuring and cutting -------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, as Telegram and JavaScript-based services count."""
    return len(text.encode("utf-16-le")) // 2


def utf8_len(text: str) -> int:
    """Length in UTF-8 bytes."""
    return len(text.encode())


def truncate(text: str, limit: int, measure: Callable[[str], int] = len) -> str:
    """``text`` cut to ``limit`` (by ``measure``), ending in an ellipsis when cut."""
    if measure(text) <= limit:
        return text
    room = limit - measure(ELLIPSIS)
    if room < 0:
        return ""
    # The longest prefix that fits, by bisection: measures are monotonic in the prefix.
    low, high = 0, min(len(text), limit)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low] + ELLIPSIS


def more_note(left_out: int) -> str:
    """The line that says how many alerts a message leaves out."""
    return f"{ELLIPSIS} and {left_out} more alert{'s' if left_out != 1 else ''} not shown"


def fit(
    pieces: Sequence[str],
    budget: int,
    *,
    sep: str = "\n",
    measure: Callable[[str], int] = len,
    note: Callable[[int], str] = more_note,
) -> tuple[list[str], int]:
    """As many leading ``pieces`` as fit in ``budget`` joined by ``sep``, with room for
    the note about the rest; returns (pieces kept, number left out).

    The caller joins them and appends ``note(left_out)`` when left_out > 0. A single
    piece larger than the whole budget is cut rather than dropped.
    """
    sep_len = measure(sep)
    total = sum(measure(p) for p in pieces) + sep_len * max(len(pieces) - 1, 0)
    if total <= budget:
        return list(pieces), 0
    kept: list[str] = []
    used = 0
    for index, piece in enumerate(pieces):
        left_after = len(pieces) - index - 1
        room_for_note = (sep_len + measure(note(left_after))) if left_after else 0
        size = measure(piece) + (sep_len if kept else 0)
        if used + size + room_for_note > budget:
            break
        kept.append(piece)
        used += size
    if not kept and pieces:
        room = budget - sep_len - measure(note(len(pieces) - 1))
        if room > 0:
            kept.append(truncate(pieces[0], room, measure))
    return kept, len(pieces) - len(kept)


# --- what the messages say ---------------------------------------------------------------


def ordered(notification: Notification) -> tuple[AlertView, ...]:
    """Firing alerts first, then resolved: what to keep when a message must be cut."""
    return notification.firing + notification.resolved


def severity(notification: Notification) -> str:
    """The gravest severity among the firing alerts ("" when none says)."""
    found = {a.labels.get("severity", "") for a in notification.firing}
    for level in ("critical", "error", "warning", "info"):
        if level in found:
            return level
    return next(iter(sorted(found - {""})), "")


def color(notification: Notification) -> int:
    """An RGB colour for the message: red firing, orange for warnings, green resolved."""
    if notification.status != "firing":
        return _GREEN
    return _RED if severity(notification) in ("critical", "error", "") else _ORANGE


def title(notification: Notification) -> str:
    """What and where in one line, e.g. ``[FIRING:3] DeviceDead rack1-s9-01 (site=north)``."""
    firing = notification.status == "firing"
    count = len(notification.firing if firing else notification.resolved)
    labels: dict[str, str] = {**notification.common_labels, **notification.group_labels}
    words: list[str] = []
    if labels.get("alertname"):
        words.append(labels["alertname"])
    else:
        names = sorted({a.labels.get("alertname", "") for a in notification.alerts} - {""})
        if len(names) > _TITLE_MAX_ALERTNAMES:
            words.append(f"{len(names)} kinds of alert")
        elif names:
            words.append(", ".join(names))
    if labels.get("miner"):
        words.append(labels["miner"])
    extras = [
        f"{name}={value}"
        for name, value in sorted(notification.group_labels.items())
        if name not in _TITLE_SKIP and value
    ]
    if notification.group_labels.get("fleet_incident") == "true":
        extras.insert(0, "fleet incident")
    text = f"[{'FIRING' if firing else 'RESOLVED'}:{count}]"
    if words:
        text += " " + " ".join(words)
    if extras:
        text += f" ({', '.join(extras)})"
    return text


@dataclass(frozen=True, slots=True)
class AlertText:
    """One alert in words, in pieces each format marks up its own way."""

    firing: bool
    alertname: str
    where: str  # "rack1-s9-01 device 2"
    summary: str  # the summary annotation, else description, else the value
    since: str  # "since 2026-11-25 21:00 UTC" or "resolved 2026-11-25 21:30 UTC"

    def plain(self) -> str:
        """``rack1-s9-01 device 2 — DeviceDead: summary (since …)`` without markup."""
        return f"{self.where} — {self.alertname}: {self.summary} ({self.since})"


def alert_text(alert: AlertView) -> AlertText:
    """The words for one alert."""
    labels = alert.labels
    parts = []
    for name in _WHERE_LABELS:
        value = labels.get(name)
        if value:
            parts.append(value if name == "miner" else f"{name} {value}")
    where = " ".join(parts) or "fleet"
    annotations: Mapping[str, str] = alert.annotations
    summary = (
        annotations.get("summary")
        or annotations.get("description")
        or (f"value {alert.value}" if alert.value else "")
    )
    # One line per alert: a multi-line description must not start markdown blocks
    # (headings, quotes, lists) in the formats that render markdown.
    summary = truncate(" ".join(summary.split()), SUMMARY_MAX)
    firing = alert.status == "firing"
    if firing or alert.ends_at is None:
        since = f"since {short_time(alert.starts_at)}"
    else:
        since = f"resolved {short_time(alert.ends_at)}"
    alertname = truncate(labels.get("alertname", ""), NAME_MAX)
    return AlertText(firing, alertname, truncate(where, NAME_MAX), summary, since)
