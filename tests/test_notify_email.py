"""Email (cgwatchdog/notify/email.py) against a real SMTP server: aiosmtpd on 127.0.0.1,
with STARTTLS or implicit TLS on a certificate from a private test CA (trustme)."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from cgwatchdog.alerts import AlertView, Notification, fingerprint
from cgwatchdog.config import ReceiverConfig
from cgwatchdog.config.loader import load_config
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify import build_integration, receiver_model, send_test
from cgwatchdog.notify.receivers.email import EmailIntegration

PASSWORD = "s3cret-smtp-pass"
T0 = 1_764_100_800.0


def alert(device: int, *, status: str = "firing", summary: str = "") -> AlertView:
    labels = {
        "alertname": "DeviceDead",
        "miner": "rack1-s9-01",
        "device": str(device),
        "severity": "critical",
        "site": "north",
    }
    return AlertView(
        fingerprint=fingerprint(labels),
        labels=labels,
        annotations={"summary": summary or f"Device {device} is Dead"},
        value="Dead",
        status=status,
        starts_at=T0,
        ends_at=None if status == "firing" else T0 + 300,
    )


def notification(*alerts: AlertView) -> Notification:
    views = alerts or (alert(0), alert(1), alert(2, summary="board <b>2</b> & fan"))
    return Notification(
        receiver="mail",
        group_key='{}:{alertname="DeviceDead", site="north"}',
        group_labels={"alertname": "DeviceDead", "site": "north"},
        status="firing" if any(a.status == "firing" for a in views) else "resolved",
        alerts=tuple(views),
    )


@dataclass
class Mailbox:
    """aiosmtpd handler keeping what arrives, and whether it came over TLS."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append(envelope)
        # session.ssl is set by STARTTLS only; an implicit-TLS transport says so itself.
        self.tls.append(
            session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        )
        return "250 OK"


def authenticate(
    server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        b"alerts",
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def start(mailbox: Mailbox, **kwargs: Any) -> Controller:
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller


@pytest.fixture
def starttls_server(server_tls: ssl.SSLContext) -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    controller = start(
        mailbox,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
    )
    yield mailbox, controller.port
    controller.stop()


@pytest.fixture
def implicit_tls_server(server_tls: ssl.SSLContext) -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; this connection is TLS
    # from its first byte.
    controller = start(
        mailbox, ssl_context=server_tls, authenticator=authenticate, auth_require_tls=False
    )
    yield mailbox, controller.port
    controller.stop()


def receiver(port: int, **settings: Any) -> ReceiverConfig:
    mail = {
        "smtp": f"127.0.0.1:{port}",
        "from": "cgwatchdog <alerts@farm.example>",
        "to": ["ops@farm.example", "oncall@farm.example"],
        "username": "alerts",
        "password": PASSWORD,
        "timeout": "5s",
        **settings,
    }
    return receiver_model().model_validate({"name": "mail", "email": mail})


def integration(config: ReceiverConfig, context: ssl.SSLContext | None) -> EmailIntegration:
    built = build_integration(config, ssl_context=context)
    assert isinstance(built, EmailIntegration)
    return built


def test_starttls_with_auth_sends_text_and_html(
    starttls_server: tuple[Mailbox, int], client_tls: ssl.SSLContext
) -> None:
    mailbox, port = starttls_server
    receipt = integration(receiver(port), client_tls).notify(notification())
    assert receipt == "sent to 2 recipients"
    (message,) = mailbox.messages
    assert mailbox.tls == [True]
    assert message["Subject"] == "[FIRING:3] DeviceDead rack1-s9-01 (site=north)"
    assert message["From"] == "cgwatchdog <alerts@farm.example>"
    assert message["To"] == "ops@farm.example, oncall@farm.example"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@farm.example>")
    assert message.get_content_type() == "multipart/alternative"
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert text_part is not None and html_part is not None
    text = text_part.get_content()
    page = html_part.get_content()
    assert "rack1-s9-01 device 2 — DeviceDead: board <b>2</b> & fan" in text
    assert "board &lt;b&gt;2&lt;/b&gt; &amp; fan" in page  # values escaped in HTML
    assert "<b>2</b>" not in page
    assert sorted(mailbox.envelopes[0].rcpt_tos) == ["oncall@farm.example", "ops@farm.example"]


def test_implicit_tls(implicit_tls_server: tuple[Mailbox, int], client_tls: ssl.SSLContext) -> None:
    mailbox, port = implicit_tls_server
    resolved = notification(alert(0, status="resolved"))
    integration(receiver(port, tls=True), client_tls).notify(resolved)
    (message,) = mailbox.messages
    assert mailbox.tls == [True]
    assert message["Subject"] == "[RESOLVED:1] DeviceDead rack1-s9-01 (site=north)"


def test_auth_failure_is_not_recoverable_and_hides_the_password(
    starttls_server: tuple[Mailbox, int],
    client_tls: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    mailbox, port = starttls_server
    wrong = receiver(port, password="not-the-" + PASSWORD)
    with pytest.raises(NotifyError) as caught:
        integration(wrong, client_tls).notify(notification())
    assert not caught.value.recoverable
    message = str(caught.value)
    assert message.startswith(f"SMTP authentication as 'alerts' at 127.0.0.1:{port} failed: 535")
    assert "check username and password" in message
    assert PASSWORD not in message and PASSWORD not in caplog.text
    assert mailbox.messages == []


def test_untrusted_certificate_is_a_clear_tls_error(
    starttls_server: tuple[Mailbox, int],
) -> None:
    _, port = starttls_server
    with pytest.raises(NotifyError) as caught:
        integration(receiver(port), None).notify(notification())  # system CAs only
    assert caught.value.recoverable
    assert str(caught.value).startswith(
        f"TLS with 127.0.0.1:{port} failed: certificate not trusted"
    )


def test_server_without_starttls_is_refused_before_any_password_goes_out(
    client_tls: ssl.SSLContext,
) -> None:
    mailbox = Mailbox()
    controller = start(mailbox)  # plain SMTP, no TLS offered
    try:
        with pytest.raises(NotifyError) as caught:
            integration(receiver(controller.port), client_tls).notify(notification())
    finally:
        controller.stop()
    assert not caught.value.recoverable
    assert "does not offer STARTTLS" in str(caught.value)


def test_refused_recipients_and_partial_delivery(
    starttls_server: tuple[Mailbox, int], client_tls: ssl.SSLContext
) -> None:
    mailbox, port = starttls_server
    mailbox.refuse = {"oncall@farm.example"}
    receipt = integration(receiver(port), client_tls).notify(notification())
    assert receipt.startswith("sent to 1 of 2 recipients; refused oncall@farm.example: 550")
    mailbox.refuse = {"ops@farm.example", "oncall@farm.example"}
    with pytest.raises(NotifyError) as caught:
        integration(receiver(port), client_tls).notify(notification())
    assert not caught.value.recoverable  # 550 is permanent
    assert "refused every recipient" in str(caught.value)


def test_connection_refused_is_recoverable() -> None:
    port = free_port()
    with pytest.raises(NotifyError) as caught:
        integration(receiver(port), None).notify(notification())
    assert caught.value.recoverable
    assert str(caught.value).startswith(f"connection refused by 127.0.0.1:{port}")


def test_subject_template(starttls_server: tuple[Mailbox, int], client_tls: ssl.SSLContext) -> None:
    mailbox, port = starttls_server
    templated = receiver(
        port, subject="{{ status | upper }} {{ alerts | length }} on {{ commonLabels.site }}"
    )
    integration(templated, client_tls).notify(notification())
    assert mailbox.messages[0]["Subject"] == "FIRING 3 on north"


def test_send_test_reports_smtp_auth_failure_without_the_password(
    starttls_server: tuple[Mailbox, int], client_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    _, port = starttls_server
    password_file = tmp_path / "smtp-password"
    password_file.write_text("wrong-" + PASSWORD + "\n")
    password_file.chmod(0o600)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "receivers:\n"
        "  - name: mail\n"
        f"    email: {{smtp: '127.0.0.1:{port}', username: alerts, "
        f"password_file: {password_file}, from: alerts@farm.example, to: ops@farm.example}}\n"
    )
    (result,) = send_test(load_config(config_file), ssl_context=client_tls)
    assert not result.ok
    assert "SMTP authentication as 'alerts'" in result.message
    assert PASSWORD not in result.message

    password_file.write_text(PASSWORD)
    (result,) = send_test(load_config(config_file), ssl_context=client_tls)
    assert result.ok and result.message == "sent to 1 recipient"
