"""Writes are guarded: a token for the API, a session and a CSRF token for the page.

Anything that changes state (a silence, an acknowledgement) needs ``http.token``
(given as ``http.token_file``):

- from a script or ``cgwatchdog`` itself: ``Authorization: Bearer <token>``, compared in
  constant time; 401 when it is missing or wrong;
- from the status page: a session cookie got by signing in with the token at /login
  (``HttpOnly``, ``SameSite=Strict``, valid for ``SESSION_LIFETIME_S``), and with every
  form the CSRF token the page put in it (or an ``X-CSRF-Token`` header), and an
  ``Origin`` matching the Host when the browser sends one;
- with no token configured, every write gets 403 and the page is read-only.

:func:`write_guard` (a middleware the app installs) applies this to every request that
is not GET, HEAD or OPTIONS, so a route added later cannot forget it; :func:`require_token`
does the same for one handler (a GET that must not be public). Sessions and CSRF tokens
are HMACs keyed by the token: changing the token signs everyone out, and nothing is
stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import SecretStr

__all__ = [
    "AUTH",
    "AUTHORIZED_BY",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SESSION_LIFETIME_S",
    "Auth",
    "authorize",
    "require_token",
    "write_guard",
]

log = logging.getLogger("cgwatchdog.http")

SESSION_COOKIE: Final = "cgw_session"
SESSION_LIFETIME_S: Final = 12 * 3600.0
"""A sign-in on the page lasts a working shift."""
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_PUBLIC_WRITES: Final = frozenset({"/login"})  # the sign-in form checks the token itself

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Auth:
    """The configured token, and the sessions and CSRF tokens derived from it."""

    def __init__(self, token: SecretStr | None, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._token = b""
        self._key = b""
        self.set_token(token)

    def set_token(self, token: SecretStr | None) -> None:
        """Take a new token (a reload); sessions of the old one end."""
        text = "" if token is None else token.get_secret_value()
        self._token = text.encode()
        self._key = hashlib.sha256(b"cgwatchdog http session\0" + self._token).digest()

    @property
    def enabled(self) -> bool:
        """Whether writes are possible at all (a token is configured)."""
        return bool(self._token)

    def token_matches(self, offered: str) -> bool:
        """Whether ``offered`` is the token, in time independent of where they differ."""
        return self.enabled and hmac.compare_digest(offered.encode(), self._token)

    def bearer_ok(self, header: str) -> bool:
        """Whether an ``Authorization`` header carries the token as a Bearer token."""
        scheme, _, offered = header.strip().partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(offered.strip())

    def _mac(self, message: str) -> str:
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        """A session cookie's value: when it was issued, and its MAC."""
        issued = int(self._clock())
        return f"{issued}.{self._mac(f'session:{issued}')}"

    def session_ok(self, value: str | None) -> bool:
        """Whether a session cookie is ours, and not yet expired."""
        if not self.enabled or not value:
            return False
        issued, _, mac = value.partition(".")
        if not issued.isdigit() or not hmac.compare_digest(mac, self._mac(f"session:{issued}")):
            return False
        age = self._clock() - int(issued)
        return -60.0 <= age <= SESSION_LIFETIME_S

    def csrf_token(self, session: str) -> str:
        """The CSRF token the page puts in its forms for this session."""
        return self._mac(f"csrf:{session}")

    def csrf_ok(self, session: str, offered: str) -> bool:
        """Whether a form's CSRF token belongs to this session."""
        return bool(offered) and hmac.compare_digest(offered, self.csrf_token(session))


AUTH: Final = web.AppKey("cgwatchdog_auth", Auth)
"""Where the app keeps its :class:`Auth` (``request.app[AUTH]``)."""
AUTHORIZED_BY: Final = web.RequestKey("cgwatchdog_authorized_by", str)
"""``request[AUTHORIZED_BY]``: ``"token"`` or ``"session"`` once a write was allowed."""


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    message: str


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser, or an old one: the CSRF token still has to match
    if origin == "null":
        return False
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return netloc.lower() == (request.host or "").lower()


async def _verdict(request: web.Request) -> _Refusal | str:
    auth = request.app[AUTH]
    if not auth.enabled:
        return _Refusal(
            403, "writes are disabled: no http.token_file is configured (the endpoint is read-only)"
        )
    header = request.headers.get("Authorization")
    if header is not None:
        if auth.bearer_ok(header):
            return "token"
        return _Refusal(401, "wrong token (send Authorization: Bearer <http.token_file's token>)")
    session = request.cookies.get(SESSION_COOKIE)
    if not auth.session_ok(session):
        return _Refusal(401, "a token is needed (Authorization: Bearer, or sign in at /login)")
    assert session is not None
    offered = request.headers.get(CSRF_HEADER, "")
    if not offered and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        form = await request.post()
        value = form.get(CSRF_FIELD)
        offered = value if isinstance(value, str) else ""
    if not _same_origin(request) or not auth.csrf_ok(session, offered):
        return _Refusal(403, "the form's CSRF check failed: reload the page and try again")
    return "session"


async def authorize(request: web.Request) -> None:
    """Let a write through or raise 401/403 (see the module's docstring); records how
    it was allowed in ``request[AUTHORIZED_BY]``."""
    if request.get(AUTHORIZED_BY):
        return
    verdict = await _verdict(request)
    if isinstance(verdict, _Refusal):
        log.info(
            "refused %s %s from %s: %s",
            request.method,
            request.path,
            request.remote,
            verdict.message,
        )
        headers = {"WWW-Authenticate": 'Bearer realm="cgwatchdog"'} if verdict.status == 401 else {}
        error = web.HTTPUnauthorized if verdict.status == 401 else web.HTTPForbidden
        if request.path.startswith("/api/"):  # the API answers {"error": ...} like its routes
            raise error(
                text=json.dumps({"error": verdict.message}),
                content_type="application/json",
                headers=headers,
            )
        phrase = "Unauthorized" if verdict.status == 401 else "Forbidden"
        raise error(text=f"{verdict.status} {phrase}: {verdict.message}\n", headers=headers)
    request[AUTHORIZED_BY] = verdict


def require_token(handler: Handler) -> Handler:
    """Decorate a handler that only the token's holder may call (401/403 otherwise)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        await authorize(request)
        return await handler(request)

    guarded.__name__ = getattr(handler, "__name__", "guarded")
    guarded.__doc__ = handler.__doc__
    return guarded


@web.middleware
async def write_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request that may change state passes :func:`authorize` first."""
    unmatched = request.match_info.http_exception is not None  # 404, 405: say so
    if request.method not in SAFE_METHODS and not unmatched and request.path not in _PUBLIC_WRITES:
        await authorize(request)
    return await handler(request)
