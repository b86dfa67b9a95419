"""The integration interface, the factory, and the edge where HTTP errors become ours.

An :class:`Integration` delivers one :class:`~cgwatchdog.alerts.Notification` to one
receiver and says how that went: a one-line receipt, or a
:class:`~cgwatchdog.errors.NotifyError` whose ``recoverable`` tells the outbox whether
trying again can help (and ``retry_after_s`` when the service said when). It knows
nothing of retry, ordering or deduplication; the outbox owns those (Alertmanager's
``notify.Notifier`` has the same single duty).

Messages name the service by ``host:port`` and the cause (DNS, TLS, refused, timed out,
HTTP status and the first line of the answer), never the URL: webhook URLs carry
tokens. Callers still pass every message through :meth:`Integration.redact`, which
scrubs the receiver's secrets, in case a service echoes one back.
"""

from __future__ import annotations

import abc
import http.client
import json
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import ClassVar, Final
from urllib.parse import urlsplit

import requests

from cgwatchdog import __version__
from cgwatchdog.alerts import Notification
from cgwatchdog.config import REDACTED, Config, ReceiverConfig, RouteConfig, redact
from cgwatchdog.errors import NotifyError

__all__ = [
    "USER_AGENT",
    "Integration",
    "Redactor",
    "build_integration",
    "check_response",
    "new_session",
    "receiver_redactor",
    "request_failure",
    "target_of",
]

USER_AGENT: Final = f"cgwatchdog/{__version__}"
# An answer is read this far (for its first line); a broken endpoint may stream more.
_BODY_MAX: Final = 64 * 1024
_FIRST_LINE_MAX: Final = 200
_CAUSE_DEPTH: Final = 12
# Shorter path segments ("hook", "api", "v1") are words, not tokens.
_MIN_TOKEN_LEN: Final = 8

Redactor = Callable[[str], str]


def _same(text: str) -> str:
    return text


class Integration(abc.ABC):
    """One receiver's way out. Subclasses implement :meth:`notify`, nothing else is needed."""

    kind: ClassVar[str] = ""

    def __init__(self, name: str, *, redactor: Redactor | None = None) -> None:
        self.name = name
        self._redactor = redactor or _same

    @abc.abstractmethod
    def notify(self, notification: Notification) -> str:
        """Deliver one notification; return a one-line receipt (e.g. ``HTTP 200``).

        Raises NotifyError (only that) when it was not delivered.
        """

    def redact(self, text: str) -> str:
        """``text`` with this receiver's secrets replaced by ``<redacted>``."""
        return self._redactor(text)

    def close(self) -> None:  # noqa: B027 - most integrations hold nothing to release
        """Release connections; the integration is not used afterwards."""


def _url_segments(receiver: ReceiverConfig) -> set[str]:
    """Path segments of the receiver's secret URLs that look like tokens on their own
    (a service may echo just ``T0KEN`` of ``/hook/T0KEN``; Telegram's sits after ``bot``)."""
    found: set[str] = set()
    urls = []
    if receiver.webhook is not None:
        urls.append(receiver.webhook.url.get_secret_value())
    if receiver.apprise is not None:
        urls += [url.get_secret_value() for url in receiver.apprise.urls]
    for url in urls:
        for segment in urlsplit(url).path.split("/"):
            for piece in (segment, segment.removeprefix("bot")):
                if len(piece) >= _MIN_TOKEN_LEN:
                    found.add(piece)
    return found


def receiver_redactor(receiver: ReceiverConfig) -> Redactor:
    """A function scrubbing ``receiver``'s secrets from text: what
    :func:`cgwatchdog.config.redact` scrubs (URLs, their paths, passwords, tokens,
    header values), and token-like path segments of its URLs."""
    config = Config(receivers=(receiver,), route=RouteConfig(receiver=receiver.name))
    segments = sorted(_url_segments(receiver), key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, segments))) if segments else None

    def scrub(text: str) -> str:
        text = redact(text, config)
        return text if pattern is None else pattern.sub(REDACTED, text)

    return scrub


def new_session(*, pool_size: int = 10) -> requests.Session:
    """A pooled requests Session for webhooks and Alertmanager (keep-alive per host)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def build_integration(
    receiver: ReceiverConfig,
    *,
    session: requests.Session | None = None,
    external_url: str = "",
    interval_s: float = 60.0,
    ssl_context: ssl.SSLContext | None = None,
) -> Integration:
    """The integration for a configured receiver.

    ``session`` is shared by the HTTP integrations when given (one pool for all),
    ``external_url`` is the daemon's own URL for links, ``interval_s`` the poll interval
    (Alertmanager ``endsAt`` is a few of them ahead), ``ssl_context`` overrides the
    system trust store for SMTP (tests use a private CA).
    """
    redactor = receiver_redactor(receiver)
    # Imported here: those modules import this one for Integration.
    if receiver.webhook is not None:
        from cgwatchdog.notify.webhook import WebhookIntegration

        return WebhookIntegration(
            receiver.name,
            receiver.webhook,
            session=session,
            external_url=external_url,
            redactor=redactor,
        )
    if receiver.email is not None:
        from cgwatchdog.notify.email import EmailIntegration

        return EmailIntegration(
            receiver.name,
            receiver.email,
            external_url=external_url,
            ssl_context=ssl_context,
            redactor=redactor,
        )
    if receiver.alertmanager is not None:
        from cgwatchdog.notify.alertmanager import AlertmanagerIntegration

        return AlertmanagerIntegration(
            receiver.name,
            receiver.alertmanager,
            session=session,
            interval_s=interval_s,
            external_url=external_url,
            redactor=redactor,
        )
    if receiver.apprise is not None:
        from cgwatchdog.notify.apprise import AppriseIntegration

        return AppriseIntegration(receiver.name, receiver.apprise, redactor=redactor)
    raise AssertionError("validated receivers have exactly one integration")


# --- the HTTP edge -----------------------------------------------------------------------


def target_of(url: str) -> str:
    """``host:port`` of a URL: what messages name instead of the URL (which holds tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return host
    return f"{host}:{port}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps (urllib3 nests the OS error three levels down)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack and len(seen) < _CAUSE_DEPTH:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        for nested in (current.__cause__, current.__context__, reason, *current.args):
            if isinstance(nested, BaseException):
                stack.append(nested)


def _tls_reason(error: ssl.SSLError | None) -> str:
    if error is None:
        return "handshake failed"
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"certificate not trusted: {error.verify_message}"
    reason = error.reason or error.strerror or type(error).__name__
    if reason == "WRONG_VERSION_NUMBER":
        return "the server did not answer TLS (plain HTTP on an https:// URL?)"
    return str(reason)


def request_failure(exc: requests.RequestException, target: str, timeout_s: float) -> NotifyError:
    """A NotifyError saying why a request to ``target`` got no answer; never the URL."""
    causes = list(_causes(exc))

    def find(kind: type[BaseException]) -> BaseException | None:
        return next((c for c in causes if isinstance(c, kind)), None)

    tls = find(ssl.SSLError)
    if tls is not None or isinstance(exc, requests.exceptions.SSLError):
        reason = _tls_reason(tls if isinstance(tls, ssl.SSLError) else None)
        return NotifyError(f"TLS with {target} failed: {reason}", recoverable=True)
    dns = find(socket.gaierror)
    if dns is not None:
        host = target.rsplit(":", 1)[0]
        why = getattr(dns, "strerror", None) or str(dns)
        return NotifyError(f"cannot resolve {host} (DNS): {why}", recoverable=True)
    if find(ConnectionRefusedError) is not None:
        return NotifyError(
            f"connection refused by {target}: is the service up and listening there?",
            recoverable=True,
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return NotifyError(f"no connection to {target} within {timeout_s:g} s", recoverable=True)
    if isinstance(exc, requests.exceptions.Timeout):
        return NotifyError(f"{target} did not answer within {timeout_s:g} s", recoverable=True)
    if find(http.client.RemoteDisconnected) is not None:
        return NotifyError(f"{target} closed the connection without answering", recoverable=True)
    if find(ConnectionResetError) is not None:
        return NotifyError(f"connection reset by {target}", recoverable=True)
    # requests' own exceptions are OSErrors too, without a strerror: look past them.
    os_error = next(
        (
            c
            for c in causes
            if isinstance(c, OSError)
            and not isinstance(c, requests.RequestException)
            and c.strerror
        ),
        None,
    )
    if isinstance(os_error, OSError):
        return NotifyError(f"cannot reach {target}: {os_error.strerror}", recoverable=True)
    if isinstance(
        exc,
        requests.exceptions.InvalidURL
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema
        | requests.exceptions.InvalidHeader,
    ):
        return NotifyError(
            f"request to {target} cannot be made: {type(exc).__name__}", recoverable=False
        )
    return NotifyError(f"request to {target} failed: {type(exc).__name__}", recoverable=True)


def _read_capped(response: requests.Response, limit: int) -> bytes:
    body = b""
    try:
        for chunk in response.iter_content(8192):
            body += chunk
            if len(body) >= limit:
                break
    except requests.RequestException:
        pass  # the status is what counts; a body cut short still has a first line
    return body[:limit]


def _first_line(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:_FIRST_LINE_MAX] + ("…" if len(line) > _FIRST_LINE_MAX else "")
    return "(empty body)"


def _retry_after_s(response: requests.Response, body: bytes) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            at = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
        try:
            now = parsedate_to_datetime(response.headers["Date"]).timestamp()
        except (KeyError, TypeError, ValueError, IndexError):
            now = time.time()
        return max(0.0, at - now)
    # Discord ({"retry_after": 1.5}) and Telegram ({"parameters": {"retry_after": 3}})
    # also say it in the body.
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict):
        nested = data.get("parameters")
        found = data.get("retry_after")
        if found is None and isinstance(nested, dict):
            found = nested.get("retry_after")
        if isinstance(found, int | float) and not isinstance(found, bool) and found >= 0:
            return float(found)
    return None


def check_response(response: requests.Response, target: str) -> str:
    """``HTTP 200`` for a 2xx answer; else a NotifyError with the status and the first
    line of the answer. 429 and 5xx are recoverable (with Retry-After when given); any
    other answer means this request will never be accepted as it is."""
    code = response.status_code
    try:
        # Read even a 2xx answer (capped): a fully read body returns the connection to
        # the pool, an unread one would be closed.
        body = _read_capped(response, _BODY_MAX)
    finally:
        response.close()
    if 200 <= code < 300:
        return f"HTTP {code}"
    status = f"{target} answered HTTP {code} {response.reason or ''}".rstrip()
    if code == 429 or code >= 500:
        raise NotifyError(
            f"{status}: {_first_line(body)}",
            recoverable=True,
            retry_after_s=_retry_after_s(response, body),
        )
    if 300 <= code < 400:
        raise NotifyError(
            f"{status}: the endpoint moved; update the URL in the configuration",
            recoverable=False,
        )
    raise NotifyError(f"{status}: {_first_line(body)}", recoverable=False)
