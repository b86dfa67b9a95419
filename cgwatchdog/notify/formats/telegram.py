"""Telegram Bot API ``sendMessage`` (``format: telegram``, with ``chat_id``).

The webhook URL is ``https://api.telegram.org/bot<token>/sendMessage`` (``/sendMessage``
is added when the URL stops at the token). Text uses ``parse_mode: HTML``, whose
escaping is three entities (``&lt; &gt; &amp;``) against MarkdownV2's eighteen
backslashed characters, so a label value cannot break the markup. A message holds at
most 4,096 characters after entity parsing; the raw HTML is measured in UTF-16 code
units (as Telegram counts), which is stricter than the parsed text.
"""

from __future__ import annotations

import html
import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

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
    utf16_len,
    webhook_format,
)

__all__ = ["TEXT_MAX", "escape", "render", "send_message_url"]

TEXT_MAX: Final = 4_096
_TITLE_MAX: Final = 300
_NUMERIC_CHAT: Final = re.compile(r"-?\d+")


def escape(text: str) -> str:
    """Escape text for Telegram's HTML parse mode."""
    return html.escape(text, quote=False)


def send_message_url(url: str) -> str:
    """The bot URL with the ``sendMessage`` method (added when the URL ends at the token)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path.rsplit("/", 1)[-1].lower() == "sendmessage":
        return url
    return urlunsplit(parts._replace(path=path + "/sendMessage"))


@webhook_format("telegram", needs=("chat_id",))
def render(notification: Notification, context: FormatContext) -> HttpBody:
    """The ``sendMessage`` request for one notification."""
    head = f"<b>{escape(truncate(title(notification), _TITLE_MAX))}</b>"
    lines = [
        f"{'🔥' if a.firing else '✅'} <b>{escape(a.where)}</b> {escape(a.alertname)}: "
        f"{escape(a.summary)} <i>({escape(a.since)})</i>"
        for a in map(alert_text, ordered(notification))
    ]
    kept, left_out = fit(lines, TEXT_MAX - utf16_len(head) - 2, measure=utf16_len)
    text = head + "\n\n" + "\n".join(kept)
    if left_out:
        text += "\n" + escape(more_note(left_out))
    chat = str(getattr(context.settings, "chat_id", None) or "")
    return json_body(
        {
            "chat_id": int(chat) if _NUMERIC_CHAT.fullmatch(chat) else chat,
            "text": text,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        },
        url=send_message_url(context.url),
    )
