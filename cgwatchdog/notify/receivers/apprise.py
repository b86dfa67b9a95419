"""The long tail of services (Pushover, Gotify, Matrix, Signal, SMS, ...) via Apprise.

``apprise: {urls: ["pover://user@token", "gotify://host/token"]}`` hands each
notification's title and plain-text body to the Apprise library (the optional
``[apprise]`` extra) instead of growing a preset per service. Apprise is imported on
first use; without it every notification fails, not recoverable, with the command that
installs it.

Each URL is sent to separately, so an error names the URL by its position and service
(its scheme), never by the URL, which holds the credentials. When some URLs fail the
whole notification is retried by the outbox: the ones that worked may see it twice
(at-least-once), none misses it.
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType
from typing import Annotated, Final

from pydantic import BeforeValidator, Field, SecretStr

from cgwatchdog.alerts import Notification
from cgwatchdog.config.fields import Model, listify
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify.base import Integration, IntegrationContext, receiver_kind
from cgwatchdog.notify.render import alert_text, fit, more_note, ordered, severity, title

__all__ = ["BODY_MAX", "AppriseConfig", "AppriseIntegration", "body"]

# Apprise splits or truncates per service; most chat and push services take a few KB.
BODY_MAX: Final = 4_000
INSTALL_HINT: Final = "pip install 'cgwatchdog[apprise]'"


def _check_apprise_url(value: object) -> object:
    if isinstance(value, str) and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://.", value.strip()):
        raise ValueError("must be an Apprise URL such as pover://user@token")
    return value.strip() if isinstance(value, str) else value



class AppriseConfig(Model):
    """Hand the rendered title and body to Apprise (the optional ``[apprise]`` extra)."""

    urls: Annotated[
        tuple[Annotated[SecretStr, BeforeValidator(_check_apprise_url)], ...],
        BeforeValidator(listify),
        Field(min_length=1),
    ]
    """Apprise URLs (``pover://user@token``, ``gotify://host/token``): secrets."""




def body(notification: Notification) -> str:
    """The plain-text body handed to Apprise."""
    lines, left_out = fit([a.plain() for a in map(alert_text, ordered(notification))], BODY_MAX)
    text = "\n".join(lines)
    return text + ("\n" + more_note(left_out) if left_out else "")


def _apprise() -> ModuleType:
    try:
        return importlib.import_module("apprise")
    except ImportError:
        raise NotifyError(
            f"the apprise receiver needs the Apprise library: {INSTALL_HINT}",
            recoverable=False,
        ) from None


@receiver_kind("apprise", AppriseConfig)
class AppriseIntegration(Integration):
    """Sends each notification to every Apprise URL of the receiver."""

    def __init__(self, name: str, config: AppriseConfig, context: IntegrationContext) -> None:
        super().__init__(name, redactor=context.redactor)
        self._urls = tuple(url.get_secret_value() for url in config.urls)

    def notify(self, notification: Notification) -> str:
        """Deliver through Apprise; NotifyError naming the URLs (by number) that failed."""
        apprise = _apprise()
        if notification.status != "firing":
            kind = apprise.NotifyType.SUCCESS
        elif severity(notification) in ("critical", "error", ""):
            kind = apprise.NotifyType.FAILURE
        else:
            kind = apprise.NotifyType.WARNING
        heading, text = title(notification), body(notification)
        failed: list[str] = []
        for number, url in enumerate(self._urls, 1):
            service = f"URL #{number} ({url.partition('://')[0]})"
            sender = apprise.Apprise()
            if not sender.add(url):
                raise NotifyError(
                    f"{service} is not an Apprise URL it can use (unknown service or malformed)",
                    recoverable=False,
                )
            try:
                sent = sender.notify(
                    title=heading,
                    body=text,
                    notify_type=kind,
                    body_format=apprise.NotifyFormat.TEXT,
                )
            except Exception as exc:
                failed.append(f"{service}: {type(exc).__name__}")
                continue
            if not sent:
                failed.append(f"{service}: not delivered (see the apprise log for the cause)")
        if failed:
            raise NotifyError(
                f"Apprise delivered to {len(self._urls) - len(failed)} of {len(self._urls)} "
                f"URLs; {'; '.join(failed)}",
                recoverable=True,
            )
        count = len(self._urls)
        return f"delivered by Apprise to {count} URL{'s' if count != 1 else ''}"
