"""The default webhook body: Alertmanager's webhook JSON, version "4".

Receivers written for Alertmanager (``alertmanager-webhook-*`` bridges, PagerDuty
relays, custom scripts) work unchanged: the same keys, the same RFC 3339 times, and a
firing alert's ``endsAt`` is Go's zero time as Alertmanager sends it.
"""

from __future__ import annotations

from typing import Any, Final

from cgwatchdog.alerts import Notification
from cgwatchdog.notify.render import FormatContext, HttpBody, json_body, webhook_format
from cgwatchdog.units import rfc3339

__all__ = ["WEBHOOK_VERSION", "ZERO_TIME", "payload", "render"]

WEBHOOK_VERSION: Final = "4"
ZERO_TIME: Final = "0001-01-01T00:00:00Z"  # Go's time.Time{}: "no end yet"


def payload(
    notification: Notification, context: FormatContext, *, max_alerts: int = 0
) -> dict[str, Any]:
    """The webhook document; ``max_alerts`` > 0 keeps that many (``truncatedAlerts``)."""
    alerts = notification.alerts
    truncated = 0
    if 0 < max_alerts < len(alerts):
        truncated = len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    return {
        "receiver": notification.receiver,
        "status": notification.status,
        "alerts": [
            {
                "status": alert.status,
                "labels": dict(alert.labels),
                "annotations": dict(alert.annotations),
                "startsAt": rfc3339(alert.starts_at),
                "endsAt": ZERO_TIME if alert.ends_at is None else rfc3339(alert.ends_at),
                "generatorURL": context.external_url,
                "fingerprint": alert.fingerprint,
            }
            for alert in alerts
        ],
        "groupLabels": dict(notification.group_labels),
        "commonLabels": notification.common_labels,
        "commonAnnotations": notification.common_annotations,
        "externalURL": context.external_url,
        "version": WEBHOOK_VERSION,
        "groupKey": notification.group_key,
        "truncatedAlerts": truncated,
    }


@webhook_format("alertmanager")
def render(notification: Notification, context: FormatContext) -> HttpBody:
    """The body for ``format: alertmanager`` (the default)."""
    return json_body(payload(notification, context))
