"""The daemon's local HTTP endpoint: kept as a name; it lives in ``cgwatchdog.web`` now.

Re-exported here: the status, health and /api/alerts document (``cgwatchdog status``
reads :func:`status_lines` from here). The metrics are ``cgwatchdog.web.metrics``, the
server ``cgwatchdog.web.server``.
"""

from cgwatchdog.web.status import (
    HEALTHY_WITHIN_INTERVALS,
    RECENT_ACTIONS,
    ROLES,
    DaemonStatus,
    Health,
    alerts_document,
    status_lines,
)

__all__ = [
    "HEALTHY_WITHIN_INTERVALS",
    "RECENT_ACTIONS",
    "ROLES",
    "DaemonStatus",
    "Health",
    "alerts_document",
    "status_lines",
]
