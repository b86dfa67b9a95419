"""What the endpoint reads: the daemon's state, the fleet's figures, and the page's extras.

The daemon builds one :class:`Sources` and keeps feeding the objects in it (the status
after each cycle, the metrics' view, the trend); the app finds it as
``request.app[SOURCES]``. Nothing here is changed by a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from cgwatchdog.alerts import Alert
from cgwatchdog.config import HttpConfig
from cgwatchdog.store import ActionRecord
from cgwatchdog.trend import HashrateTrend
from cgwatchdog.web.metrics import Metrics
from cgwatchdog.web.status import DaemonStatus

__all__ = ["SOURCES", "PageSources", "Sources"]


def _no_replies(name: str) -> tuple[float, Mapping[str, Any]] | None:
    return None


def _as_is(text: str) -> str:
    return text


@dataclass(slots=True)
class PageSources:
    """What only the status page shows: the hour of hashrate, the raw replies the poller
    kept (for miners down or alerting: ``Poller.last_replies``), the action log
    (``Store.actions``; blocking, run in a thread), and the redactor for raw text.

    ``write_forms``: the mounted ``POST /api/alerts/{id}/ack`` and ``POST /api/silences``
    take the page's forms (form fields, a signed-in session, a 303 back to ``next``), so
    a signed-in miner page offers them."""

    trend: HashrateTrend | None = None
    replies: Callable[[str], tuple[float, Mapping[str, Any]] | None] = _no_replies
    action_log: Callable[[str, int], Sequence[ActionRecord]] | None = None
    redact: Callable[[str], str] = _as_is
    write_forms: bool = False


@dataclass(slots=True)
class Sources:
    """Everything the endpoint reads.

    ``alerts`` returns the engine's alerts (read on the event loop's thread, where the
    engine changes them); ``clock`` is the daemon's epoch clock; ``http`` the ``http:``
    section in force (hosts, token, metrics detail).
    """

    status: DaemonStatus
    metrics: Metrics
    alerts: Callable[[], Iterable[Alert]]
    clock: Callable[[], float]
    http: HttpConfig = field(default_factory=HttpConfig)
    pages: PageSources = field(default_factory=PageSources)


SOURCES: Final = web.AppKey("cgwatchdog_sources", Sources)
"""Where the app keeps its :class:`Sources`."""
