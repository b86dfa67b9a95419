"""Notifications (DESIGN §5): integrations that deliver, and the outbox that retries.

A pipeline of small stages, as in Alertmanager: ``alerts.Dispatcher`` decides *what* to
send (routing, grouping, timers, the notification log); :class:`Outbox` stores it and
owns retry, ordering and expiry; each :class:`Integration` (``webhook`` with its
formats, ``email``, ``apprise``) only formats and sends one notification, raising
:class:`~cgwatchdog.errors.NotifyError` with ``recoverable`` set. Alertmanager
receivers are state-based instead: :meth:`AlertmanagerIntegration.push` each cycle.
"""

from cgwatchdog.notify.alertmanager import AlertmanagerIntegration, PushResult
from cgwatchdog.notify.base import Integration, build_integration, receiver_redactor
from cgwatchdog.notify.outbox import DeliveryReport, Outbox, ReceiverCounters
from cgwatchdog.notify.testing import TestResult, send_test

__all__ = [
    "AlertmanagerIntegration",
    "DeliveryReport",
    "Integration",
    "Outbox",
    "PushResult",
    "ReceiverCounters",
    "TestResult",
    "build_integration",
    "receiver_redactor",
    "send_test",
]
