"""Webhooks: one HTTP POST per notification, in Alertmanager's JSON or a chat preset.

``format:`` picks the body (``cgwatchdog/notify/formats/<name>.py``); the default is
Alertmanager's webhook JSON version 4, so receivers built for Alertmanager work
unchanged. Custom ``headers:``, ``auth:`` (basic or bearer), ``verify_tls:`` and
``timeout:`` apply to every format. Connections are pooled in one requests Session.

Outcomes: 2xx delivered; 429, 5xx, timeouts and connection errors recoverable (with the
service's Retry-After); any other answer not recoverable, with the first line of the
answer in the message. Redirects are not followed: a POST turned into a GET by a 302
would be lost, so a moved endpoint is reported instead.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

import cgwatchdog.notify.formats  # noqa: F401 - registers the built-in formats
from cgwatchdog.alerts import Notification
from cgwatchdog.config.fields import (
    Model,
    PositiveDuration,
    SecretUrlText,
    Template,
    text_or_number,
)
from cgwatchdog.config.models import AuthConfig
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify.base import Integration, IntegrationContext, receiver_kind
from cgwatchdog.notify.http import check_response, new_session, request_failure, target_of
from cgwatchdog.notify.render import WEBHOOK_FORMATS, FormatContext, HttpBody

__all__ = ["WebhookConfig", "WebhookIntegration"]

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _known_format(value: str) -> str:
    if value not in WEBHOOK_FORMATS:
        names = [repr(name) for name in WEBHOOK_FORMATS.names()]
        listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        raise ValueError(f"must be one of {listed}")
    return value


class WebhookConfig(Model):
    """An HTTP POST per notification, in Alertmanager's JSON or a chat preset."""

    url: SecretUrlText
    """Where to POST; a secret (chat webhook URLs carry their token)."""
    format: Annotated[str, AfterValidator(_known_format)] = "alertmanager"
    """The body: Alertmanager's webhook JSON, a chat preset, or ``custom``."""
    template: Template | None = None
    """Jinja2 template of the body, for ``format: custom``."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra request headers (values are secrets)."""
    auth: AuthConfig | None = None
    """HTTP authentication (or an Authorization header, not both)."""
    verify_tls: bool = True
    """Check the service's certificate."""
    timeout_s: PositiveDuration = Field(default=10.0, validation_alias="timeout")
    """How long one delivery may take."""
    chat_id: Annotated[str, BeforeValidator(text_or_number)] | None = None
    """The chat to post to, for ``format: telegram``."""

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if any(ch in secret.get_secret_value() for ch in "\r\n\0"):
                raise ValueError(f"header {name!r}: value holds a line break")
        return value

    @model_validator(mode="after")
    def _format_needs(self) -> Self:
        chosen = WEBHOOK_FORMATS[self.format]
        for key in chosen.needs:
            if getattr(self, key) is None:
                raise ValueError(f"format: {self.format} needs {key}")
        for other in WEBHOOK_FORMATS.values():
            for key in other.needs:
                if key not in chosen.needs and getattr(self, key) is not None:
                    users = [f.name for f in WEBHOOK_FORMATS.values() if key in f.needs]
                    raise ValueError(f"{key} is only for format: {', '.join(users)}")
        if self.auth is not None and any(name.lower() == "authorization" for name in self.headers):
            raise ValueError("give auth or an Authorization header, not both")
        return self


@receiver_kind("webhook", WebhookConfig)
class WebhookIntegration(Integration):
    """POSTs each notification to the configured URL in the configured format."""

    def __init__(self, name: str, config: WebhookConfig, context: IntegrationContext) -> None:
        super().__init__(name, redactor=context.redactor)
        self._config = config
        self._url = config.url.get_secret_value()
        self._target = target_of(self._url)
        session = context.session
        self._own_session = session is None
        self._session = session if session is not None else new_session()
        chosen = WEBHOOK_FORMATS[config.format]
        self._format = chosen.render
        # A template that does not compile fails each notification (and test-notify)
        # with the reason, rather than the daemon's start.
        self._template_error: NotifyError | None = None
        prepared: Any = None
        if chosen.prepare is not None:
            try:
                prepared = chosen.prepare(config)
            except NotifyError as exc:
                self._template_error = exc
        self._context = FormatContext(
            receiver=name,
            url=self._url,
            external_url=context.external_url,
            settings=config,
            prepared=prepared,
        )
        self._headers = {key: value.get_secret_value() for key, value in config.headers.items()}
        self._auth: tuple[str, str] | None = None
        if config.auth is not None and config.auth.basic is not None:
            basic = config.auth.basic
            self._auth = (basic.user, basic.password.get_secret_value())
        elif config.auth is not None and config.auth.bearer is not None:
            self._headers["Authorization"] = f"Bearer {config.auth.bearer.token.get_secret_value()}"

    def render(self, notification: Notification) -> HttpBody:
        """The request body (and URL, where a format derives it) for a notification."""
        if self._template_error is not None:
            raise self._template_error
        return self._format(notification, self._context)

    def notify(self, notification: Notification) -> str:
        """POST the notification; ``HTTP 2xx`` or NotifyError."""
        import requests  # only to send (see cgwatchdog.notify.http)

        body = self.render(notification)
        url = body.url or self._url
        target = self._target if body.url is None else target_of(body.url)
        # The operator's headers last: they may override the Content-Type on purpose.
        headers = {"Content-Type": body.content_type, **self._headers}
        timeout_s = self._config.timeout_s
        try:
            response = self._session.post(
                url,
                data=body.content,
                headers=headers,
                auth=self._auth,
                timeout=timeout_s,
                verify=self._config.verify_tls,
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as exc:
            raise request_failure(exc, target, timeout_s) from None
        return check_response(response, target)

    def close(self) -> None:
        """Close the pooled connections if the Session is this integration's own."""
        if self._own_session:
            self._session.close()
