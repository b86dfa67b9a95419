"""``cgwatchdog test-notify``: send a synthetic alert through receivers, report each result.

Each receiver gets one firing test notification directly (no outbox, no retry), so the
operator sees the exact outcome at once: the HTTP status and the first line of the
answer, "connection refused by host:port", a DNS or TLS failure, rejected SMTP
credentials. Every message passes through the configuration's redactor.

Alertmanager receivers get the test alert too: it fires there and expires by itself a
few intervals later (its ``endsAt``), routed like any other alert.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

from cgwatchdog.alerts import AlertView, Notification, fingerprint
from cgwatchdog.config import Config, ReceiverConfig
from cgwatchdog.errors import ConfigError, ConfigProblem, NotifyError
from cgwatchdog.notify.base import build_integration

if TYPE_CHECKING:
    import requests

__all__ = ["TEST_ALERTNAME", "TestResult", "send_test", "synthetic_notification"]

TEST_ALERTNAME: Final = "CgwatchdogTest"


@dataclass(frozen=True, slots=True)
class TestResult:
    """The outcome for one receiver: delivered or not, and the receipt or exact error."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    name: str
    ok: bool
    message: str


def synthetic_notification(receiver: str, now: float) -> Notification:
    """The synthetic notification ``test-notify`` sends to ``receiver``."""
    labels = {"alertname": TEST_ALERTNAME, "miner": "test-notify", "severity": "info"}
    alert = AlertView(
        fingerprint=fingerprint(labels),
        labels=labels,
        annotations={
            "summary": f"Test notification from cgwatchdog: receiver {receiver} works",
            "description": "Sent by `cgwatchdog test-notify`; nothing is wrong with any miner.",
        },
        value="",
        status="firing",
        starts_at=now,
        ends_at=None,
    )
    return Notification(
        receiver=receiver,
        group_key=f"test-notify:{receiver}",
        group_labels={"alertname": TEST_ALERTNAME},
        status="firing",
        alerts=(alert,),
    )


def send_test(
    config: Config,
    receiver_name: str | None = None,
    *,
    now: float | None = None,
    session: requests.Session | None = None,
    ssl_context: ssl.SSLContext | None = None,
    external_url: str = "",
) -> list[TestResult]:
    """Send the test notification through every receiver (or the one named).

    ConfigError when ``receiver_name`` names no receiver. ``session`` and
    ``ssl_context`` are for tests (a private CA); the CLI passes neither.
    """
    receivers: tuple[ReceiverConfig, ...] = config.receivers
    if receiver_name is not None:
        try:
            receivers = (config.receiver(receiver_name),)
        except KeyError:
            known = ", ".join(r.name for r in config.receivers) or "none"
            raise ConfigError(
                [
                    ConfigProblem(
                        "--receiver",
                        None,
                        f"no receiver named {receiver_name!r} (defined: {known})",
                    )
                ]
            ) from None
    sent_at = time.time() if now is None else now
    results = []
    for receiver in receivers:
        integration = build_integration(
            receiver,
            session=session,
            ssl_context=ssl_context,
            external_url=external_url,
            interval_s=config.poll.interval_s,
        )
        try:
            receipt = integration.notify(synthetic_notification(receiver.name, sent_at))
        except NotifyError as exc:
            message = config.redact(integration.redact(str(exc)))
            results.append(TestResult(receiver.name, False, message))
        else:
            message = config.redact(integration.redact(receipt))
            results.append(TestResult(receiver.name, True, message))
        finally:
            integration.close()
    return results
