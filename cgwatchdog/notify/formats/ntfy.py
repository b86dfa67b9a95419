"""ntfy (``format: ntfy``): JSON publishing, with title, priority and tags.

ntfy reads a JSON body as a message only when it is posted to the server's root URL
with the topic inside (posted to the topic URL, the JSON would be the message text),
so the configured ``https://ntfy.sh/mytopic`` is split into the root and the topic.
A message above 4,096 bytes becomes an attachment on ntfy's default settings, so the
message is kept under that. Priority: 5 (urgent) for firing critical alerts, 4 for
warnings, 3 otherwise, 2 for resolutions; tags are emoji short codes ntfy shows.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from cgwatchdog.alerts import Notification
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify.render import (
    FormatContext,
    HttpBody,
    alert_text,
    fit,
    json_body,
    more_note,
    ordered,
    severity,
    title,
    truncate,
    utf8_len,
    webhook_format,
)

__all__ = ["MESSAGE_MAX_BYTES", "priority", "render", "split_topic"]

MESSAGE_MAX_BYTES: Final = 4_096
_TITLE_MAX: Final = 250
_PRIORITY: Final = {"critical": 5, "error": 5, "warning": 4}


def split_topic(url: str) -> tuple[str, str]:
    """``https://ntfy.example/sub/topic`` -> (``https://ntfy.example/sub/``, ``topic``)."""
    parts = urlsplit(url)
    base, _, topic = parts.path.rstrip("/").rpartition("/")
    if not topic:
        raise NotifyError(
            "ntfy webhook URL names no topic: write it as https://ntfy.sh/<topic>",
            recoverable=False,
        )
    # The query stays: ntfy takes credentials there too (?auth=...).
    return urlunsplit(parts._replace(path=base + "/", fragment="")), topic


def priority(notification: Notification) -> int:
    """ntfy priority 1..5 for a notification."""
    if notification.status != "firing":
        return 2
    return _PRIORITY.get(severity(notification), 3)


@webhook_format("ntfy")
def render(notification: Notification, context: FormatContext) -> HttpBody:
    """The ntfy publish request for one notification."""
    root, topic = split_topic(context.url)
    lines = [a.plain() for a in map(alert_text, ordered(notification))]
    kept, left_out = fit(lines, MESSAGE_MAX_BYTES, measure=utf8_len)
    message = "\n".join(kept)
    if left_out:
        message += "\n" + more_note(left_out)
    firing = notification.status == "firing"
    tags = (
        ["rotating_light" if priority(notification) >= 4 else "warning"]
        if firing
        else ["white_check_mark"]
    )
    data: dict[str, Any] = {
        "topic": topic,
        "title": truncate(title(notification), _TITLE_MAX),
        "message": message,
        "priority": priority(notification),
        "tags": tags,
    }
    if context.external_url:
        data["click"] = context.external_url
    return json_body(data, url=root)
