"""Notifications: integrations that deliver, and the outbox that retries.

A pipeline of small stages, as in Alertmanager: ``alerts.Dispatcher`` decides *what* to
send (routing, grouping, timers, the notification log); the :class:`SendPolicy` says
which of it this process sends; :class:`Outbox` stores it and owns retry, ordering and
expiry; each :class:`Integration` only formats and sends one notification, raising
:class:`~cgwatchdog.errors.NotifyError` with ``recoverable`` set. Receivers that take the
alert state instead (:class:`StateReceiver`, Alertmanager) are pushed each cycle.

``base.py`` holds the interface and the registry of receiver kinds, ``receivers/`` the
built-in kinds, ``render.py`` and ``formats/`` the webhook bodies, ``http.py`` the HTTP
edge. The built-in kinds and formats register themselves the first time their registry
is used (importing this package does not import them: a one-shot poll sends nothing).
"""

from cgwatchdog.notify.base import (
    RECEIVER_KINDS,
    Integration,
    IntegrationContext,
    PushResult,
    ReceiverKind,
    StateReceiver,
    build_integration,
    receiver_kind,
    receiver_model,
    receiver_redactor,
)
from cgwatchdog.notify.outbox import DeliveryReport, Outbox, ReceiverCounters
from cgwatchdog.notify.policy import SendPolicy
from cgwatchdog.notify.render import WEBHOOK_FORMATS, webhook_format
from cgwatchdog.notify.testing import TestResult, send_test

__all__ = [
    "RECEIVER_KINDS",
    "WEBHOOK_FORMATS",
    "DeliveryReport",
    "Integration",
    "IntegrationContext",
    "Outbox",
    "PushResult",
    "ReceiverCounters",
    "ReceiverKind",
    "SendPolicy",
    "StateReceiver",
    "TestResult",
    "build_integration",
    "receiver_kind",
    "receiver_model",
    "receiver_redactor",
    "send_test",
    "webhook_format",
]
