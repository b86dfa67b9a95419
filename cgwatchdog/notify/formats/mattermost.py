"""Mattermost incoming webhooks (``format: mattermost``): one markdown ``text``.

Mattermost stores at most 16,383 characters in a post (servers since 5.0; a webhook
``text`` past that is split into several posts, which would scatter one notification).
Values are backslash-escaped, as CommonMark allows for any ASCII punctuation.
"""

from __future__ import annotations

import re
from typing import Final

from cgwatchdog.alerts import Notification
from cgwatchdog.notify.render import (
    FormatContext,
    HttpBody,
    alert_text,
    fit,
    json_body,
    more_note,
    ordered,
    title,
    truncate,
    webhook_format,
)

__all__ = ["TEXT_MAX", "escape", "render"]

TEXT_MAX: Final = 16_383
_TITLE_MAX: Final = 300
_MARKDOWN: Final = re.compile(r"([\\`*_~\[\]()<>|#!])")


def escape(text: str) -> str:
    """Backslash-escape markdown in a value."""
    return _MARKDOWN.sub(r"\\\1", text)


@webhook_format("mattermost")
def render(notification: Notification, context: FormatContext) -> HttpBody:
    """The Mattermost post for one notification."""
    head = f"#### {escape(truncate(title(notification), _TITLE_MAX))}"
    lines = [
        f"- {':fire:' if a.firing else ':white_check_mark:'} **{escape(a.where)}** "
        f"{escape(a.alertname)}: {escape(a.summary)} _({escape(a.since)})_"
        for a in map(alert_text, ordered(notification))
    ]
    kept, left_out = fit(lines, TEXT_MAX - len(head) - 1)
    text = "\n".join([head, *kept])
    if left_out:
        text += "\n" + more_note(left_out)
    return json_body({"text": text})
