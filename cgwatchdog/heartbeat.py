"""The dead man's switch: a plain HTTP GET to a push monitor after good cycles.

``heartbeat: {url: https://hc-ping.com/<uuid>, interval: 1m}`` makes the
daemon ping a healthchecks.io / Uptime Kuma / Dead Man's Snitch style URL; the monitor
alerts someone when the pings stop, which is what happens when the watchdog itself is
down or its loop is stuck (the daemon pings only after a good cycle).

Pacing: :meth:`HeartbeatPinger.due` is true at first and then once ``interval`` has
passed since the last *attempt*, successful or not, and never while a ping is in
flight. So a monitor that is down gets at most one request per interval, and a failed
ping is tried again one interval later. The daemon asks after each good cycle, so pings
are ``interval`` to ``interval`` + one poll interval apart; set the monitor's period to
``interval`` and its grace to at least one more interval plus a poll interval, so that
one lost ping does not page anyone. If the wall clock steps back before the last
attempt, the ping is due at once rather than hours later.

Errors: a ping that gets no 2xx answer raises a NotifyError naming the monitor by
``host:port`` only. The URL carries the monitor's secret (healthchecks puts it in the
path), so neither it, its path, its query nor a token-like path segment appears in the
message, even when the monitor echoes the request back; the requests exception is not
chained either (a logged traceback would show the URL).
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, urlsplit

from cgwatchdog.config import REDACTED, HeartbeatConfig
from cgwatchdog.errors import NotifyError
from cgwatchdog.notify.http import check_response, new_session, request_failure, target_of

if TYPE_CHECKING:
    import requests

__all__ = ["HeartbeatPinger"]

# Shorter path segments or query values ("ping", "api", "up") are words, not tokens.
_MIN_TOKEN_LEN: Final = 8


def _secret_pieces(url: str) -> list[str]:
    """The parts of ``url`` that may leak its secret on their own, longest first."""
    parts = urlsplit(url)
    pieces = {url, parts.path, parts.query, parts.path + "?" + parts.query}
    pieces.update(parts.path.split("/"))
    pieces.update(value for _, value in parse_qsl(parts.query))
    if parts.password:
        pieces.add(parts.password)
    return sorted((p for p in pieces if len(p) >= _MIN_TOKEN_LEN), key=len, reverse=True)


class HeartbeatPinger:
    """Pings ``config.url`` at most once per ``config.interval_s``; thread-safe."""

    def __init__(self, config: HeartbeatConfig, *, session: requests.Session | None = None) -> None:
        self._config = config
        self._url = config.url.get_secret_value()
        self.target = target_of(self._url)
        pieces = _secret_pieces(self._url)
        self._secrets = re.compile("|".join(map(re.escape, pieces))) if pieces else None
        self._own_session = session is None
        self._session = session if session is not None else new_session(pool_size=1)
        self._lock = threading.Lock()
        self._in_flight = False
        self.last_attempt_at: float | None = None
        self.last_success_at: float | None = None
        self.last_error: str | None = None

    @property
    def config(self) -> HeartbeatConfig:
        """The ``heartbeat:`` section this pinger was built from."""
        return self._config

    @property
    def interval_s(self) -> float:
        """Seconds between pings."""
        return self._config.interval_s

    def due(self, now: float, *, early_s: float = 0.0) -> bool:
        """Whether a ping should be sent at ``now`` (epoch seconds).

        ``early_s`` lets it be due that much before the interval has passed: the daemon
        asks after each cycle and passes half its poll interval, so a heartbeat interval
        equal to the poll interval pings every cycle despite cycles ending a few
        milliseconds early or late."""
        with self._lock:
            if self._in_flight:
                return False
            last = self.last_attempt_at
            if last is None or now < last:
                return True
            return now - last >= self._config.interval_s - max(0.0, early_s)

    def ping(self, now: float) -> None:
        """GET the URL once (blocking, up to ``timeout_s``); the attempt is recorded at
        ``now`` whatever happens. Raises NotifyError without a 2xx answer."""
        with self._lock:
            self._in_flight = True
            self.last_attempt_at = now
        try:
            self._get()
        except NotifyError as exc:
            with self._lock:
                self.last_error = str(exc)
            raise
        else:
            with self._lock:
                self.last_success_at = now
                self.last_error = None
        finally:
            with self._lock:
                self._in_flight = False

    def _get(self) -> None:
        import requests  # only to send (see cgwatchdog.notify.http)

        timeout_s = self._config.timeout_s
        try:
            response = self._session.get(self._url, timeout=timeout_s, allow_redirects=False)
        except requests.RequestException as exc:
            error = request_failure(exc, self.target, timeout_s)
        else:
            try:
                check_response(response, self.target)
                return
            except NotifyError as exc:
                error = exc
        raise NotifyError(
            f"heartbeat ping failed: {self._redact(str(error))}",
            recoverable=error.recoverable,
            retry_after_s=error.retry_after_s,
        ) from None

    def _redact(self, text: str) -> str:
        return text if self._secrets is None else self._secrets.sub(REDACTED, text)

    def close(self) -> None:
        """Close the Session if it is this pinger's own."""
        if self._own_session:
            self._session.close()
