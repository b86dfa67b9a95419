"""Telegram as a receiver of its own: the Bot API's ``sendMessage`` to chats, and commands.

::

    receivers:
      - name: oncall
        telegram:
          token_file: telegram-bot-token    # from @BotFather; a secret file
          chat_ids: [-1001234567890]
          listen: true                      # take /status, /ack, /silence, /unsilence
          allowed_user_ids: [123456789]     # from these people, in those chats

Each alert line carries the alert's id (its fingerprint, ``<code>`` so a tap copies it),
so a reply can name it: ``/ack`` in reply to a notification acknowledges the alerts it
lists. The commands are read by :mod:`cgwatchdog.notify.telegram_listener` (long
polling ``getUpdates``: outbound connections only, nothing on the farm is exposed).
``api_url`` points elsewhere than ``https://api.telegram.org`` for a local Bot API
server (or a test's fake). The ``webhook`` receiver's ``format: telegram`` (the token in
the URL) keeps working; this kind keeps the token out of URLs in the config.

Text uses ``parse_mode: HTML`` (three entities to escape) and holds at most 4,096
characters, measured in UTF-16 code units as Telegram counts. A notification goes to
every chat in turn; when one fails the outbox tries the notification again, so the chats
that took it may see it twice (at least once).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Final, Self

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator

from cgwatchdog.alerts import Notification
from cgwatchdog.config.fields import (
    Model,
    PositiveDuration,
    UrlText,
    check_plain_url,
    text_or_number,
)
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify.base import Integration, IntegrationContext, receiver_kind
from cgwatchdog.notify.formats.telegram import TEXT_MAX, escape
from cgwatchdog.notify.http import check_response, new_session, request_failure, target_of
from cgwatchdog.notify.render import alert_text, fit, more_note, ordered, title, truncate, utf16_len

__all__ = [
    "DEFAULT_API_URL",
    "TelegramConfig",
    "TelegramIntegration",
    "bot_url",
    "chat_value",
    "notification_text",
]

DEFAULT_API_URL: Final = "https://api.telegram.org"
_TITLE_MAX: Final = 300
_CHAT_ID: Final = re.compile(r"-?\d+|@[A-Za-z][A-Za-z0-9_]{3,}")
_REPLY_HINT: Final = (
    "Reply /ack to acknowledge these, or /silence &lt;miner&gt; 2h &lt;why&gt; to silence one."
)


def _chat_id(value: str) -> str:
    if not _CHAT_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a chat id: a number (-1001234567890) or a channel's @name"
        )
    return value


ChatId = Annotated[str, BeforeValidator(text_or_number), AfterValidator(_chat_id)]


class TelegramConfig(Model):
    """A Telegram bot posting to chats, and optionally taking commands from them."""

    token: SecretStr
    """The bot's token from @BotFather (or ``token_file``: keep it in a secret file)."""
    chat_ids: Annotated[tuple[ChatId, ...], Field(min_length=1)]
    """The chats to post to: numbers (a group's is negative) or a channel's ``@name``."""
    api_url: Annotated[UrlText, AfterValidator(check_plain_url)] = DEFAULT_API_URL
    """The Bot API's base URL (a local Bot API server; tests use a fake)."""
    timeout_s: PositiveDuration = Field(default=10.0, validation_alias="timeout")
    """How long one request may take (a long poll waits ``poll_timeout`` more)."""
    listen: bool = False
    """Also take commands from the numeric ``chat_ids``: /status, /ack, /silence,
    /maintenance, /unsilence (only the leader replica listens)."""
    allowed_user_ids: tuple[int, ...] = ()
    """Who may command the bot (Telegram user ids); needed with ``listen``."""
    poll_timeout_s: PositiveDuration = Field(default=30.0, validation_alias="poll_timeout")
    """How long one ``getUpdates`` long poll waits for a command."""

    @model_validator(mode="after")
    def _listening(self) -> Self:
        if self.listen and not self.allowed_user_ids:
            raise ValueError(
                "listen: true needs allowed_user_ids (the Telegram user ids that may "
                "command the bot)"
            )
        if self.listen and not self.command_chats:
            raise ValueError("listen: true needs a numeric chat id in chat_ids to listen in")
        return self

    @property
    def command_chats(self) -> frozenset[int]:
        """The chats commands are taken from (the numeric ``chat_ids``)."""
        return frozenset(int(c) for c in self.chat_ids if not c.startswith("@"))


def bot_url(config: TelegramConfig, method: str) -> str:
    """``<api_url>/bot<token>/<method>``: a secret (it holds the token), never logged."""
    return f"{config.api_url.rstrip('/')}/bot{config.token.get_secret_value()}/{method}"


def chat_value(chat: str | int) -> str | int:
    """A chat id as the Bot API takes it: a number, or a channel's @name."""
    text = str(chat)
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def notification_text(notification: Notification) -> str:
    """The HTML message for one notification, every alert line with its id."""
    head = f"<b>{escape(truncate(title(notification), _TITLE_MAX))}</b>"
    lines = []
    for view in ordered(notification):
        words = alert_text(view)
        lines.append(
            f"{'🔥' if words.firing else '✅'} <b>{escape(words.where)}</b> "
            f"{escape(words.alertname)}: {escape(words.summary)} <i>({escape(words.since)})</i> "
            f"<code>{escape(view.fingerprint)}</code>"
        )
    foot = f"\n\n<i>{_REPLY_HINT}</i>" if notification.firing else ""
    budget = TEXT_MAX - utf16_len(head) - utf16_len(foot) - 2
    kept, left_out = fit(lines, budget, measure=utf16_len)
    text = head + "\n\n" + "\n".join(kept)
    if left_out:
        text += "\n" + escape(more_note(left_out))
    return text + foot


@receiver_kind("telegram", TelegramConfig)
class TelegramIntegration(Integration):
    """Sends each notification to every configured chat through the Bot API."""

    def __init__(self, name: str, config: TelegramConfig, context: IntegrationContext) -> None:
        super().__init__(name, redactor=context.redactor)
        self.config = config
        self._target = target_of(config.api_url)
        session = context.session
        self._own_session = session is None
        self._session = session if session is not None else new_session()

    def send_message(self, chat: str | int, text: str, *, reply_to: int | None = None) -> str:
        """One ``sendMessage`` (HTML); ``HTTP 200`` or NotifyError (never the token)."""
        import requests  # only to send (see cgwatchdog.notify.http)

        body: dict[str, Any] = {
            "chat_id": chat_value(chat),
            "text": text,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        if reply_to is not None:
            body["reply_parameters"] = {"message_id": reply_to, "allow_sending_without_reply": True}
        try:
            response = self._session.post(
                bot_url(self.config, "sendMessage"),
                json=body,
                timeout=self.config.timeout_s,
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as exc:
            raise request_failure(exc, self._target, self.config.timeout_s) from None
        try:
            return check_response(response, self._target)
        except NotifyError as exc:
            raise NotifyError(
                self.redact(str(exc)), recoverable=exc.recoverable, retry_after_s=exc.retry_after_s
            ) from None

    def notify(self, notification: Notification) -> str:
        """Send the notification to every chat; NotifyError naming the chats that failed."""
        text = notification_text(notification)
        return _receipt(
            self.config.chat_ids, [self._try(chat, text) for chat in self.config.chat_ids]
        )

    def _try(self, chat: str, text: str) -> NotifyError | None:
        try:
            self.send_message(chat, text)
        except NotifyError as exc:
            return exc
        return None

    def close(self) -> None:
        """Close the pooled connections if the Session is this integration's own."""
        if self._own_session:
            self._session.close()


def _receipt(chats: Sequence[str], outcomes: Sequence[NotifyError | None]) -> str:
    failed = [(chat, error) for chat, error in zip(chats, outcomes, strict=True) if error]
    if not failed:
        return f"HTTP 200 from {len(chats)} chat{'s' if len(chats) != 1 else ''}"
    raise NotifyError(
        "; ".join(f"chat {chat}: {error}" for chat, error in failed),
        recoverable=any(error.recoverable for _, error in failed),
        retry_after_s=max((e.retry_after_s or 0.0 for _, e in failed), default=0.0) or None,
    )
