"""Discord webhooks (``format: discord``): a short ``content`` and one embed.

Limits from Discord's documentation: ``content`` at most 2,000 characters; an embed's
title 256, description 4,096, footer 2,048, and all embeds together 6,000. Markdown
characters in label and annotation values are escaped with a backslash, and
``allowed_mentions`` is empty so no value can ping ``@everyone`` or a role.
"""

from __future__ import annotations

import re
from typing import Any, Final

from cgwatchdog.alerts import Notification
from cgwatchdog.notify.render import (
    FormatContext,
    HttpBody,
    alert_text,
    color,
    fit,
    json_body,
    more_note,
    ordered,
    title,
    truncate,
    webhook_format,
)

__all__ = [
    "CONTENT_MAX",
    "DESCRIPTION_MAX",
    "EMBEDS_TOTAL_MAX",
    "FOOTER_MAX",
    "TITLE_MAX",
    "escape",
    "render",
]

CONTENT_MAX: Final = 2_000
TITLE_MAX: Final = 256
DESCRIPTION_MAX: Final = 4_096
FOOTER_MAX: Final = 2_048
EMBEDS_TOTAL_MAX: Final = 6_000
# Inline markdown, links and mention syntax. Block syntax (#, >, -) only counts at a
# line start, where a value never stands (alert_text makes every summary one line).
_MARKDOWN: Final = re.compile(r"([\\*_~`|\[\]<])")


def escape(text: str) -> str:
    """Backslash-escape Discord markdown (and mention syntax) in a value."""
    return _MARKDOWN.sub(r"\\\1", text)


@webhook_format("discord")
def render(notification: Notification, context: FormatContext) -> HttpBody:
    """The Discord message for one notification."""
    heading = title(notification)
    lines = [
        f"{'🔥' if a.firing else '✅'} **{escape(a.where)}** {escape(a.alertname)}: "
        f"{escape(a.summary)} *({escape(a.since)})*"
        for a in map(alert_text, ordered(notification))
    ]
    kept, left_out = fit(lines, DESCRIPTION_MAX)
    description = "\n".join(kept)
    if left_out:
        description += "\n" + more_note(left_out)
    embed: dict[str, Any] = {
        "title": truncate(heading, TITLE_MAX),
        "description": description,
        "color": color(notification),
        "footer": {"text": f"cgwatchdog · {notification.receiver}"[:FOOTER_MAX]},
    }
    if context.external_url:
        embed["url"] = context.external_url
    return json_body(
        {
            "content": truncate(escape(heading), CONTENT_MAX),
            "embeds": [embed],
            "allowed_mentions": {"parse": []},
        }
    )
