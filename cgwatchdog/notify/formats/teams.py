"""Microsoft Teams (``format: teams``): an Adaptive Card in a ``message``.

The shape Teams Workflows ("Post to a channel when a webhook request is received")
documents, which the retiring Office 365 connectors accept too: ``type: message`` with
one attachment of content type ``application/vnd.microsoft.card.adaptive``, card
version 1.4. Teams refuses messages over about 28 KB, so the card's text blocks are
kept within ``CARD_BUDGET`` bytes of JSON. Values are backslash-escaped against the
markdown subset TextBlocks render (bold, italic, links).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

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

__all__ = ["CARD_BUDGET", "CARD_CONTENT_TYPE", "escape", "render"]

CARD_CONTENT_TYPE: Final = "application/vnd.microsoft.card.adaptive"
MESSAGE_MAX_BYTES: Final = 28_000
# The alert blocks' share of the message; the envelope and title take well under 2 KB.
CARD_BUDGET: Final = 24_000
_TITLE_MAX: Final = 300
_MARKDOWN: Final = re.compile(r"([\\*_~`]|(?<=\])\()")


def escape(text: str) -> str:
    """Backslash-escape the markdown Adaptive Card TextBlocks render in Teams (emphasis,
    code, and the ``(`` that would make ``[text](url)`` a link)."""
    return _MARKDOWN.sub(r"\\\1", text)


def _block(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **extra}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _size(text: str) -> int:
    return len(text.encode())


@webhook_format("teams")
def render(notification: Notification, context: FormatContext) -> HttpBody:
    """The Teams message for one notification."""
    firing = notification.status == "firing"
    pieces = [
        _json(
            _block(
                f"{'🔥' if a.firing else '✅'} **{escape(a.where)}** {escape(a.alertname)}: "
                f"{escape(a.summary)} _({escape(a.since)})_",
                spacing="Small",
            )
        )
        for a in map(alert_text, ordered(notification))
    ]
    kept, left_out = fit(
        pieces,
        CARD_BUDGET,
        sep=",",
        measure=_size,
        note=lambda n: _json(_block(more_note(n), isSubtle=True)),
    )
    body: list[Any] = [
        _block(
            escape(truncate(title(notification), _TITLE_MAX)),
            weight="Bolder",
            size="Medium",
            style="heading",
            color="Attention" if firing else "Good",
        ),
        *(json.loads(piece) for piece in kept),
    ]
    if left_out:
        body.append(_block(more_note(left_out), isSubtle=True))
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
    }
    if context.external_url:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open cgwatchdog", "url": context.external_url}
        ]
    return json_body(
        {
            "type": "message",
            "attachments": [
                {"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}
            ],
        }
    )
