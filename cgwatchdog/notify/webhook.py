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

from collections.abc import Mapping
from typing import Final

import requests

from cgwatchdog.alerts import Notification
from cgwatchdog.config import WebhookConfig
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify.base import (
    Integration,
    Redactor,
    check_response,
    new_session,
    request_failure,
    target_of,
)
from cgwatchdog.notify.formats import (
    FormatContext,
    Formatter,
    HttpBody,
    custom,
    discord,
    mattermost,
    ntfy,
    slack,
    teams,
    telegram,
)
from cgwatchdog.notify.formats import alertmanager as alertmanager_format

__all__ = ["FORMATS", "WebhookIntegration"]

FORMATS: Final[Mapping[str, Formatter]] = {
    "alertmanager": alertmanager_format.render,
    "slack": slack.render,
    "discord": discord.render,
    "telegram": telegram.render,
    "mattermost": mattermost.render,
    "teams": teams.render,
    "ntfy": ntfy.render,
    "custom": custom.render,
}


class WebhookIntegration(Integration):
    """POSTs each notification to the configured URL in the configured format."""

    kind = "webhook"

    def __init__(
        self,
        name: str,
        config: WebhookConfig,
        *,
        session: requests.Session | None = None,
        external_url: str = "",
        redactor: Redactor | None = None,
    ) -> None:
        super().__init__(name, redactor=redactor)
        self._config = config
        self._url = config.url.get_secret_value()
        self._target = target_of(self._url)
        self._own_session = session is None
        self._session = session if session is not None else new_session()
        self._format = FORMATS[config.format]
        # A template that does not compile fails each notification (and test-notify)
        # with the reason, rather than the daemon's start.
        self._template_error: NotifyError | None = None
        template = None
        if config.format == "custom" and config.template is not None:
            try:
                template = custom.compile_template(config.template)
            except NotifyError as exc:
                self._template_error = exc
        self._context = FormatContext(
            receiver=name,
            url=self._url,
            external_url=external_url,
            chat_id=config.chat_id,
            template=template,
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
