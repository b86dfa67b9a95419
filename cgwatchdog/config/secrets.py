"""Secrets: finding them in the config, and scrubbing them from any text.

Webhook URLs, passwords, tokens, header values, Apprise URLs and heartbeat URLs are
pydantic ``SecretStr`` in the models. A :class:`Redactor` built from them replaces each
one, and the parts of a secret URL that leak on their own in error messages (its path,
its query, its password, an Apprise key), with ``<redacted>``. The daemon's log filter,
``check``, ``test-notify`` and every receiver's error messages pass through one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

__all__ = [
    "MIN_SECRET_LEN",
    "REDACTED",
    "Redactor",
    "secret_fragments",
    "secret_values",
    "secrets_in",
    "url_token_segments",
]

REDACTED = "<redacted>"
# Shorter values are not worth hiding and replacing them would shred every message.
MIN_SECRET_LEN = 4
# Shorter path segments ("hook", "api", "v1") are words, not tokens.
_MIN_TOKEN_LEN = 8


def secrets_in(value: object) -> Iterator[SecretStr]:
    """Every SecretStr inside ``value`` (models, lists, tuples, dicts), in order."""
    if isinstance(value, SecretStr):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secrets_in(getattr(value, name))
    elif isinstance(value, tuple | list):
        for item in value:
            yield from secrets_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from secrets_in(item)


def secret_values(*values: object) -> Iterator[str]:
    """The text of every secret inside ``values`` long enough to be worth hiding."""
    for secret in secrets_in(values):
        text = secret.get_secret_value()
        if len(text) >= MIN_SECRET_LEN:
            yield text


def secret_fragments(secret: str) -> Iterator[str]:
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
    if password and len(password) >= MIN_SECRET_LEN:
        yield password
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    for piece in (tail, parts.path, parts.query):
        if len(piece) >= _MIN_TOKEN_LEN:
            yield piece
    if parts.scheme not in ("http", "https"):
        # Apprise puts user keys and tokens where a user and host would be (kept in
        # their case: .hostname would lower it).
        userinfo, _, host = parts.netloc.rpartition("@")
        for extra in (parts.netloc, host, userinfo, *userinfo.split(":")):
            if len(extra) >= MIN_SECRET_LEN:
                yield extra


def url_token_segments(secret: str) -> Iterator[str]:
    """Path segments of a secret URL that look like tokens on their own (a service may
    echo just ``T0KEN`` of ``/hook/T0KEN``; Telegram's sits after ``bot``)."""
    if "://" not in secret:
        return
    try:
        path = urlsplit(secret).path
    except ValueError:
        return
    for segment in path.split("/"):
        for piece in (segment, segment.removeprefix("bot")):
            if len(piece) >= _MIN_TOKEN_LEN:
                yield piece


class Redactor:
    """Replaces secrets in text with ``<redacted>``; longest first, so a whole URL goes
    before the path inside it. With ``segments``, token-like path segments of secret
    URLs too (for one receiver's own messages: too eager for the whole log)."""

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str] = (), *, segments: bool = False) -> None:
        pieces: set[str] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET_LEN:
                continue
            pieces.update(secret_fragments(secret))
            if segments:
                pieces.update(url_token_segments(secret))
        ordered = sorted(pieces, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced."""
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)

    def __bool__(self) -> bool:
        return self._pattern is not None
