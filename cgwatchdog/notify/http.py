"""The HTTP edge of the receivers: one pooled Session, and requests' errors made ours.

Messages name the service by ``host:port`` and the cause (DNS, TLS, refused, timed out,
HTTP status and the first line of the answer), never the URL: webhook URLs carry
tokens. Callers still pass every message through the receiver's redactor, in case a
service echoes a secret back.

requests is imported where a request is made or its errors are read, here and in the
receivers, never when their modules load: every command that reads a config with
receivers, or builds the outbox (``poll``), loads them, and only sending needs it.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from cgwatchdog import __version__
from cgwatchdog.errors import NotifyError

if TYPE_CHECKING:
    import requests

__all__ = [
    "USER_AGENT",
    "check_response",
    "new_session",
    "request_failure",
    "target_of",
]

USER_AGENT: Final = f"cgwatchdog/{__version__}"
# An answer is read this far (for its first line); a broken endpoint may stream more.
_BODY_MAX: Final = 64 * 1024
_FIRST_LINE_MAX: Final = 200
_CAUSE_DEPTH: Final = 12


def new_session(*, pool_size: int = 10) -> requests.Session:
    """A pooled requests Session for webhooks and Alertmanager (keep-alive per host)."""
    import requests

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


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
    import requests

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
    import requests

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
