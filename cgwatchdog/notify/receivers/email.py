"""Email over SMTP: one mail per notification, plain text and HTML alternatives.

STARTTLS (``starttls: true``, port 587, the default), implicit TLS (``tls: true``,
port 465) or plain SMTP (both false, port 25, for a local relay); AUTH when
``username``/``password`` are set. The subject says what and where, e.g.
``[FIRING:3] DeviceDead rack1-s9-01 (site=north)``, unless a ``subject:`` template
is configured.

smtplib, ssl and socket errors become NotifyError here. Rejected credentials, a server
without STARTTLS or AUTH, and permanent (5xx) refusals are not recoverable: sending the
same mail again gets the same answer. Temporary (4xx) refusals, TLS and network
failures are.
"""

from __future__ import annotations

import html
import smtplib
import socket
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Annotated, Any, Final, Self

from jinja2 import Template as JinjaTemplate
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from cgwatchdog.alerts import AlertView, Notification
from cgwatchdog.config.fields import Model, PositiveDuration, Template, listify
from cgwatchdog.config.hosts import split_host_port
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify.base import Integration, IntegrationContext, receiver_kind
from cgwatchdog.notify.formats import custom
from cgwatchdog.notify.render import (
    FormatContext,
    alert_text,
    more_note,
    ordered,
    title,
    truncate,
)

__all__ = ["MAX_ALERTS", "EmailConfig", "EmailIntegration", "compose"]

def _address(value: str) -> str:
    _, addr = parseaddr(value)
    if "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise ValueError(f"{value!r} is not an email address")
    return value


EmailAddress = Annotated[str, AfterValidator(_address)]


class EmailConfig(Model):
    """SMTP delivery with STARTTLS (default, port 587) or implicit TLS (port 465)."""

    smtp: str
    """The server, ``host:port`` (the port defaults to 587, 465 with ``tls``, else 25)."""
    starttls: bool = True
    """Upgrade the connection with STARTTLS (port 587)."""
    tls: bool = False
    """Implicit TLS from the start (port 465); ``tls: true`` alone turns STARTTLS off."""
    username: str | None = None
    """The SMTP login, with ``password``."""
    password: SecretStr | None = None
    """The SMTP password (or ``password_file``)."""
    from_: EmailAddress = Field(validation_alias="from")
    """The sender address."""
    to: Annotated[tuple[EmailAddress, ...], BeforeValidator(listify), Field(min_length=1)]
    """The recipients."""
    subject: Template | None = None
    """A Jinja template for the subject (default: the one-line summary)."""
    verify_tls: bool = True
    """Check the server's certificate."""
    timeout_s: PositiveDuration = Field(default=10.0, validation_alias="timeout")
    """How long one delivery may take."""

    @model_validator(mode="before")
    @classmethod
    def _implicit_tls(cls, data: Any) -> Any:
        # `tls: true` alone means port 465 without STARTTLS; both spelled out is a mistake.
        if isinstance(data, dict) and data.get("tls") is True and "starttls" not in data:
            return {**data, "starttls": False}
        return data

    @field_validator("smtp")
    @classmethod
    def _smtp(cls, value: str) -> str:
        split_host_port(value, 25)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.tls and self.starttls:
            raise ValueError("choose starttls (port 587) or tls (port 465), not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password (or password_file), or neither")
        return self

    @property
    def smtp_host(self) -> str:
        """The SMTP server's host."""
        return split_host_port(self.smtp, 25)[0]

    @property
    def smtp_port(self) -> int:
        """The SMTP port: as written, else 465 with tls, 587 with starttls, else 25."""
        default = 465 if self.tls else 587 if self.starttls else 25
        return split_host_port(self.smtp, default)[1]



# One mail lists at most this many alerts (a fleet incident may hold thousands).
MAX_ALERTS: Final = 500
_SUBJECT_MAX: Final = 250


def _label_pairs(alert: AlertView) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))


def _text_part(notification: Notification, heading: str, shown: Sequence[AlertView]) -> str:
    lines = [heading, ""]
    for status, alerts in (
        ("Firing", [a for a in shown if a.status == "firing"]),
        ("Resolved", [a for a in shown if a.status != "firing"]),
    ):
        if not alerts:
            continue
        lines.append(f"{status} ({len(alerts)}):")
        for alert in alerts:
            words = alert_text(alert)
            lines.append(f"- {words.plain()}")
            lines.append(f"  labels: {_label_pairs(alert)}")
            description = alert.annotations.get("description")
            if description and description != words.summary:
                lines.append(f"  description: {' '.join(description.split())}")
        lines.append("")
    return "\n".join(lines)


def _html_part(notification: Notification, heading: str, shown: Sequence[AlertView]) -> str:
    e = html.escape
    rows = []
    for alert in shown:
        words = alert_text(alert)
        colour = "#d0021b" if words.firing else "#2eb67d"
        rows.append(
            "<tr>"
            f'<td style="color:{colour};font-weight:bold">{"FIRING" if words.firing else "RESOLVED"}</td>'
            f"<td><b>{e(words.where)}</b></td>"
            f"<td>{e(words.alertname)}</td>"
            f"<td>{e(words.summary)}</td>"
            f"<td>{e(words.since)}</td>"
            f'<td style="color:#666;font-size:smaller">{e(_label_pairs(alert))}</td>'
            "</tr>"
        )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
        f"<h2>{e(heading)}</h2>"
        '<table cellpadding="4" style="border-collapse:collapse">'
        "<tr><th>status</th><th>where</th><th>alert</th><th>summary</th><th>when</th>"
        "<th>labels</th></tr>" + "".join(rows) + "</table>"
    )


def compose(
    notification: Notification,
    config: EmailConfig,
    *,
    subject: str | None = None,
    external_url: str = "",
    date: float | None = None,
) -> EmailMessage:
    """The mail for a notification: text/plain and text/html alternatives."""
    heading = title(notification)
    alerts = ordered(notification)
    shown = alerts[:MAX_ALERTS]
    footer = ""
    if len(alerts) > len(shown):
        footer += more_note(len(alerts) - len(shown)) + "\n"
    footer += f"Sent by cgwatchdog, receiver {notification.receiver}"
    if external_url:
        footer += f" ({external_url})"
    text = _text_part(notification, heading, shown) + "\n-- \n" + footer + "\n"
    page = (
        _html_part(notification, heading, shown)
        + f'<p style="color:#666">{html.escape(footer).replace(chr(10), "<br>")}</p>'
        + "</body></html>"
    )
    message = EmailMessage()
    message["Subject"] = truncate(" ".join((subject or heading).split()), _SUBJECT_MAX)
    message["From"] = config.from_
    message["To"] = ", ".join(config.to)
    message["Date"] = formatdate(date, usegmt=True)
    domain = parseaddr(config.from_)[1].rpartition("@")[2] or "cgwatchdog.invalid"
    message["Message-ID"] = make_msgid("cgwatchdog", domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    message.set_content(text)
    message.add_alternative(page, subtype="html")
    return message


def _permanent(code: int) -> bool:
    return 500 <= code < 600


def _smtp_text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())


@receiver_kind("email", EmailConfig)
class EmailIntegration(Integration):
    """Sends each notification as one mail to the configured recipients."""

    def __init__(self, name: str, config: EmailConfig, context: IntegrationContext) -> None:
        super().__init__(name, redactor=context.redactor)
        self._config = config
        self._external_url = external_url = context.external_url
        self._target = f"{config.smtp_host}:{config.smtp_port}"
        self._context = FormatContext(receiver=name, url="", external_url=external_url)
        ssl_context = context.ssl_context
        if ssl_context is None:
            ssl_context = ssl.create_default_context()
            if not config.verify_tls:
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
        self._ssl_context = ssl_context
        self._subject: JinjaTemplate | None = None
        self._subject_error: NotifyError | None = None
        if config.subject is not None:
            try:
                self._subject = custom.compile_template(config.subject)
            except NotifyError as exc:
                self._subject_error = NotifyError(f"email subject {exc}", recoverable=False)

    def compose(self, notification: Notification) -> EmailMessage:
        """The mail this integration would send for a notification."""
        if self._subject_error is not None:
            raise self._subject_error
        subject = None
        if self._subject is not None:
            try:
                subject = custom.render_text(self._subject, notification, self._context)
            except NotifyError as exc:
                raise NotifyError(f"email subject {exc}", recoverable=False) from None
        return compose(notification, self._config, subject=subject, external_url=self._external_url)

    def notify(self, notification: Notification) -> str:
        """Send the mail; a receipt naming the recipients, or NotifyError."""
        message = self.compose(notification)
        try:
            refused = self._send(message)
        except NotifyError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifyError(
                f"SMTP authentication as {self._config.username!r} at {self._target} failed: "
                f"{exc.smtp_code} {_smtp_text(exc.smtp_error)}; check username and password",
                recoverable=False,
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            hint = ""
            if "AUTH" in str(exc):
                hint = (
                    "; servers offer AUTH only over TLS: set starttls or tls, or drop "
                    "username/password for a relay that needs none"
                )
            raise NotifyError(f"{self._target}: {exc}{hint}", recoverable=False) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            reasons = "; ".join(
                f"{rcpt}: {code} {_smtp_text(text)}"
                for rcpt, (code, text) in exc.recipients.items()
            )
            raise NotifyError(
                f"{self._target} refused every recipient: {reasons}",
                recoverable=not all(_permanent(code) for code in codes),
            ) from None
        except smtplib.SMTPServerDisconnected:
            raise NotifyError(
                f"{self._target} closed the SMTP connection unexpectedly", recoverable=True
            ) from None
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, ...
            raise NotifyError(
                f"{self._target} answered {exc.smtp_code} {_smtp_text(exc.smtp_error)}",
                recoverable=not _permanent(exc.smtp_code),
            ) from None
        except smtplib.SMTPException as exc:
            raise NotifyError(
                f"SMTP with {self._target} failed: {type(exc).__name__}: {exc}", recoverable=True
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise NotifyError(
                f"TLS with {self._target} failed: certificate not trusted: {exc.verify_message}",
                recoverable=True,
            ) from None
        except ssl.SSLError as exc:
            reason = exc.reason or exc.strerror or type(exc).__name__
            if reason == "WRONG_VERSION_NUMBER":
                reason = "the server did not answer TLS (tls: true on a STARTTLS or plain port?)"
            raise NotifyError(
                f"TLS with {self._target} failed: {reason}", recoverable=True
            ) from None
        except socket.gaierror as exc:
            raise NotifyError(
                f"cannot resolve {self._config.smtp_host} (DNS): {exc.strerror}", recoverable=True
            ) from None
        except ConnectionRefusedError:
            raise NotifyError(
                f"connection refused by {self._target}: is the SMTP server up and listening there?",
                recoverable=True,
            ) from None
        except TimeoutError:
            raise NotifyError(
                f"{self._target} did not answer within {self._config.timeout_s:g} s",
                recoverable=True,
            ) from None
        except OSError as exc:
            raise NotifyError(
                f"cannot reach {self._target}: {exc.strerror or type(exc).__name__}",
                recoverable=True,
            ) from None
        recipients = len(self._config.to)
        if refused:
            listed = "; ".join(
                f"{rcpt}: {code} {_smtp_text(text)}" for rcpt, (code, text) in refused.items()
            )
            return (
                f"sent to {recipients - len(refused)} of {recipients} recipients; refused {listed}"
            )
        return f"sent to {recipients} recipient{'s' if recipients != 1 else ''}"

    def _send(self, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        config = self._config
        smtp: smtplib.SMTP
        if config.tls:
            smtp = smtplib.SMTP_SSL(
                config.smtp_host,
                config.smtp_port,
                timeout=config.timeout_s,
                context=self._ssl_context,
            )
        else:
            smtp = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout_s)
        try:
            smtp.ehlo()
            if config.starttls:
                if not smtp.has_extn("starttls"):
                    raise NotifyError(
                        f"{self._target} does not offer STARTTLS; set starttls: false only "
                        "for a trusted local relay, or tls: true for port 465",
                        recoverable=False,
                    )
                smtp.starttls(context=self._ssl_context)
                smtp.ehlo()
            if config.username is not None and config.password is not None:
                smtp.login(config.username, config.password.get_secret_value())
            return smtp.send_message(message)
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
