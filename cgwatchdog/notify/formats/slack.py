"""Slack incoming webhooks (``format: slack``): Block Kit with a plain-text fallback.

Limits from Slack's documentation: ``text`` is cut by Slack past 40,000 characters; a
message holds at most 50 blocks; a header's plain text at most 150 characters; a
section's text at most 3,000. In mrkdwn only ``&``, ``<`` and ``>`` are escaped (as
HTML entities), which also keeps a label value from becoming a link or an
``<!channel>`` mention.
"""

from __future__ import annotations

from typing import Any, Final

from cgwatchdog.alerts import Notification
from cgwatchdog.notify.render import (
    AlertText,
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

__all__ = ["HEADER_MAX", "MAX_BLOCKS", "SECTION_MAX", "TEXT_MAX", "escape", "render"]

TEXT_MAX: Final = 40_000
MAX_BLOCKS: Final = 50
HEADER_MAX: Final = 150
SECTION_MAX: Final = 3_000
# Sections of alert lines per message: 10 x 3,000 characters is already a long scroll.
MAX_SECTIONS: Final = 10


def escape(text: str) -> str:
    """Escape text for Slack mrkdwn (the three characters Slack says to escape)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _line(alert: AlertText) -> str:
    mark = ":red_circle:" if alert.firing else ":large_green_circle:"
    return (
        f"{mark} *{escape(alert.where)}* {escape(alert.alertname)}: "
        f"{escape(alert.summary)} _({escape(alert.since)})_"
    )


@webhook_format("slack")
def render(notification: Notification, context: FormatContext) -> HttpBody:
    """The Slack message for one notification."""
    texts = [alert_text(a) for a in ordered(notification)]
    heading = title(notification)

    sections: list[str] = []
    chunk = ""
    shown = 0
    for alert in texts:
        line = _line(alert)
        if chunk and len(chunk) + 1 + len(line) <= SECTION_MAX:
            chunk += "\n" + line
        elif len(sections) + (1 if chunk else 0) < MAX_SECTIONS:
            if chunk:
                sections.append(chunk)
            chunk = line
        else:
            break
        shown += 1
    if chunk:
        sections.append(chunk)
    left_out = len(texts) - shown

    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(heading, HEADER_MAX)}}
    ]
    blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": s}} for s in sections]
    if left_out:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": more_note(left_out)}]}
        )

    head = escape(heading)
    lines, text_left_out = fit([escape(a.plain()) for a in texts], TEXT_MAX - len(head) - 1)
    text = "\n".join([head, *lines])
    if text_left_out:
        text += "\n" + more_note(text_left_out)
    return json_body({"text": text, "blocks": blocks[:MAX_BLOCKS]})
