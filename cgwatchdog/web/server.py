"""The endpoint on aiohttp: the app, its defences, and the server on ``http.listen``.

:func:`build_app` makes the ``web.Application``: the status page (``pages.py``),
/metrics, /healthz, /api/alerts, /login, the favicon, and any ``extra_routes`` another
module brings (``build_app(..., extra_routes=silence_api.routes(...))``); every request
that is not GET/HEAD passes the token check of ``auth.py``. :class:`HttpServer` runs it
with an ``AppRunner`` and a TCP site on the daemon's event loop; only ``daemon.py``
starts one.

The defences, each a test in tests/test_httpapi.py or tests/test_security.py:

- a request head longer than ``MAX_LINE_BYTES`` a line, or with more than
  ``MAX_HEADERS`` headers, is refused by aiohttp's parser (400) and the connection closed;
- a client that has not sent a whole head ``HEAD_TIMEOUT_S`` after connecting is
  dropped (aiohttp's keep-alive timer, which runs from the connection's start);
- an answer a client does not take within ``WRITE_TIMEOUT_S`` is dropped with its
  connection; a body (only writes have one) must arrive within ``BODY_TIMEOUT_S`` (408)
  and, read with ``json()``, ``post()`` or ``read()``, be at most ``MAX_BODY_BYTES``
  (413); GET and HEAD with a body get 400;
- past ``MAX_CONNECTIONS`` open connections, new ones get 503 at once;
- a Host header that is not an IP address, ``localhost``, the listen address or one of
  ``http.hosts`` gets 421 (DNS rebinding);
- a bug in a handler is logged and answered 500 without a traceback; a malformed
  request gets its 4xx and is not logged as an error;
- one request per connection (``Connection: close``), answers never cached, HTML
  pages under a strict Content-Security-Policy (nothing inline, nothing from elsewhere).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from aiohttp import HttpVersion10, HttpVersion11, http_exceptions, web
from prometheus_client.exposition import choose_encoder

from cgwatchdog.config import HttpConfig
from cgwatchdog.web import assets, pages
from cgwatchdog.web.auth import AUTH, Auth, write_guard
from cgwatchdog.web.sources import SOURCES, PageSources, Sources
from cgwatchdog.web.status import alerts_document

__all__ = [
    "BODY_TIMEOUT_S",
    "HEAD_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "MAX_HEADERS",
    "MAX_LINE_BYTES",
    "WRITE_TIMEOUT_S",
    "HttpServer",
    "Limits",
    "PageSources",
    "Sources",
    "accepts_gzip",
    "build_app",
    "host_allowed",
]

log = logging.getLogger("cgwatchdog.http")

MAX_LINE_BYTES: Final = 8190
"""The request line and each header line (aiohttp's default; a scraper sends ~200)."""
MAX_HEADERS: Final = 32
"""Headers a request may carry; a browser sends about fifteen."""
HEAD_TIMEOUT_S: Final = 10.0
"""A client must send its whole head within this after connecting (slowloris) ..."""
WRITE_TIMEOUT_S: Final = 30.0
"""... and take its answer within this (a large /metrics to a slow reader)."""
BODY_TIMEOUT_S: Final = 10.0
"""A write's body must arrive within this."""
MAX_BODY_BYTES: Final = 64 * 1024
"""A silence or an acknowledgement is a few hundred bytes."""
MAX_CONNECTIONS: Final = 64
"""Beyond this many open connections new ones get 503 at once; the endpoint is for a
scraper, ``cgwatchdog status`` and a few people, not for a crowd."""
SHUTDOWN_TIMEOUT_S: Final = 2.0
_WRITE_PIECE_BYTES: Final = 256 * 1024
"""A streamed body goes to the socket this much at a time: asyncio copies whatever the
socket does not take at once into its own buffer, so a 13 MB /metrics is never copied
whole."""

_VERSIONS: Final = (HttpVersion10, HttpVersion11)
_TEXT: Final = "text/plain"
_JSON: Final = "application/json"
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 5\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nbusy\n"
)
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True, slots=True)
class Limits:
    """The endpoint's limits (tests shorten the timeouts)."""

    head_timeout_s: float = HEAD_TIMEOUT_S
    write_timeout_s: float = WRITE_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS
    max_body_bytes: int = MAX_BODY_BYTES


LIMITS: Final = web.AppKey("cgwatchdog_limits", Limits)


# -- the Host header --------------------------------------------------------------------------


def _host_part(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        header = header.rsplit(":", 1)[0]
    return header.rstrip(".")


def host_allowed(header: str | None, http: HttpConfig) -> bool:
    """Whether a request's Host names this endpoint.

    An IP address can never be a rebinding attack (the page's origin would be this
    endpoint itself); nor can ``localhost``. A name must be the listen address or one
    of ``http.hosts``. No Host at all (HTTP/1.0, a plain script) is allowed: browsers
    always send one.
    """
    if not header:
        return True
    host = _host_part(header)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    return host == "localhost" or host == http.host.lower() or host in http.hosts


# -- answers ----------------------------------------------------------------------------------


def problem(status: int, message: str, **headers: str) -> web.Response:
    """A plain-text refusal: ``<status> <phrase>: <message>``."""
    phrase = HTTPStatus(status).phrase
    return web.Response(
        status=status,
        text=f"{status} {phrase}: {message}\n",
        content_type=_TEXT,
        charset="utf-8",
        headers=headers,
    )


def _from_exception(exc: web.HTTPException, request: web.Request) -> web.Response:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return problem(405, f"{exc.method} is not allowed here: only {allowed}", Allow=allowed)
    if isinstance(exc, web.HTTPNotFound) and exc.text == "404: Not Found":
        return problem(404, f"nothing at {request.path}")
    if exc.content_type == _JSON:
        response = web.Response(status=exc.status, body=exc.body, content_type=_JSON)
    else:
        text = exc.text or ""
        if text.startswith(f"{exc.status}: "):  # aiohttp's default body: ours says more
            text = f"{exc.status} {exc.reason}\n"
        response = web.Response(status=exc.status, text=text, content_type=_TEXT, charset="utf-8")
    for name in ("Allow", "WWW-Authenticate", "Location", "Set-Cookie"):
        for value in exc.headers.getall(name, ()):
            response.headers.add(name, value)
    return response


def _harden(response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("Cache-Control", "no-store")
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "same-origin"
    headers["Server"] = "cgwatchdog"
    if response.content_type == "text/html":
        headers["Content-Security-Policy"] = _CSP
    response.force_close()


async def _send(
    request: web.Request,
    response: web.StreamResponse,
    timeout_s: float,
    chunks: Iterable[bytes] = (),
) -> None:
    """Write the answer, then ``chunks`` as its body (not to HEAD), within ``timeout_s``;
    a client that does not read it loses its connection (else the unsent answer would
    wait in memory for as long as it likes), one that goes away ends it quietly."""
    try:
        async with asyncio.timeout(timeout_s):
            await response.prepare(request)
            if request.method != "HEAD":
                for chunk in chunks:
                    whole = memoryview(chunk)
                    for start in range(0, len(whole), _WRITE_PIECE_BYTES):
                        await response.write(whole[start : start + _WRITE_PIECE_BYTES])
            await response.write_eof()
    except TimeoutError:
        transport = request.transport
        if transport is not None:
            transport.abort()
    except ConnectionError:
        pass  # the client went away; nothing to tell anyone


def _body_deadline(request: web.Request, timeout_s: float) -> asyncio.TimerHandle:
    """After ``timeout_s``, a body not yet all here fails its reader with 408 (the handler
    reads it as it likes: ``json()``, ``post()`` or the stream)."""

    def expire() -> None:
        if not request.content.is_eof():
            request.content.set_exception(
                web.HTTPRequestTimeout(
                    text=f"408 Request Timeout: the request body did not arrive in {timeout_s:g} s\n"
                )
            )

    return asyncio.get_running_loop().call_later(timeout_s, expire)


@web.middleware
async def _guard(request: web.Request, handler: pages.Handler) -> web.StreamResponse:
    """Host, bodies, errors and the write timeout, around every request."""
    sources, limits = request.app[SOURCES], request.app[LIMITS]
    response: web.StreamResponse
    if not host_allowed(request.headers.get("Host"), sources.http):
        response = problem(
            421,
            f"this endpoint does not answer to Host {_host_part(request.host)!r} "
            "(add the name to http.hosts)",
        )
    elif request.version not in _VERSIONS:
        response = problem(
            505, f"HTTP/{request.version.major}.{request.version.minor} is not supported"
        )
    elif request.method in ("GET", "HEAD") and request.body_exists:
        response = problem(400, "request bodies are not accepted on GET or HEAD")
    else:
        deadline = _body_deadline(request, limits.body_timeout_s) if request.body_exists else None
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = _from_exception(exc, request)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("internal error answering %s %s", request.method, request.path)
            response = problem(500, "internal error (see the log)")
        finally:
            if deadline is not None:
                deadline.cancel()
    if not response.prepared:  # else its handler streamed it (/metrics), hardened
        _harden(response)
        await _send(request, response, limits.write_timeout_s)
    return response


# -- the routes of the endpoint itself --------------------------------------------------------


async def _metrics(request: web.Request) -> web.StreamResponse:
    """The exposition streamed as it is kept: gzip to a scraper that takes it (0.9 MB
    instead of 13.6 MB at 10,000 miners), else inflated piece by piece as it is written;
    so this handler hardens and sends its answer itself."""
    sources, limits = request.app[SOURCES], request.app[LIMITS]
    _, content_type = choose_encoder(request.headers.get("Accept", ""))
    openmetrics = content_type.startswith("application/openmetrics-text")
    compressed = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    body = await asyncio.to_thread(
        sources.metrics.exposition, openmetrics=openmetrics, compressed=compressed
    )
    response = web.StreamResponse()
    response.headers["Content-Type"] = content_type
    if compressed:
        response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    response.content_length = body.length
    _harden(response)
    await _send(request, response, limits.write_timeout_s, body)
    return response


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header takes gzip: named (or ``*``) without
    ``q=0``; gzip named with ``q=0`` refuses it whatever ``*`` says (RFC 9110)."""
    wildcard = False
    for item in accept_encoding.split(","):
        coding, _, parameters = item.partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        refused = False
        for parameter in parameters.split(";"):
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    refused = float(value) <= 0
                except ValueError:
                    refused = True
        if coding == "*":
            wildcard = not refused
        else:
            return not refused
    return wildcard


async def _healthz(request: web.Request) -> web.StreamResponse:
    sources = request.app[SOURCES]
    health = sources.status.health(sources.clock())
    return web.Response(
        status=200 if health.ok else 503,
        text="\n".join(health.lines()) + "\n",
        content_type=_TEXT,
        charset="utf-8",
    )


async def _api_alerts(request: web.Request) -> web.StreamResponse:
    sources = request.app[SOURCES]
    document = alerts_document(sources.status, sources.alerts(), sources.clock())
    body = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    return web.Response(body=body, content_type=_JSON)


def build_app(
    sources: Sources,
    *,
    limits: Limits | None = None,
    extra_routes: Sequence[web.AbstractRouteDef] = (),
) -> web.Application:
    """The endpoint's application: its routes, ``extra_routes``, and the middlewares."""
    limits = limits if limits is not None else Limits()
    app = web.Application(
        middlewares=[_guard, write_guard],
        client_max_size=limits.max_body_bytes,
    )
    app[SOURCES] = sources
    app[LIMITS] = limits
    app[AUTH] = Auth(sources.http.token, sources.clock)
    pages.install(app)
    app.add_routes(
        [
            web.get("/metrics", _metrics),
            web.get("/healthz", _healthz),
            web.get("/api/alerts", _api_alerts),
            *assets.routes(),
            *pages.routes(),
            *extra_routes,
        ]
    )
    return app


def configure(app: web.Application, http: HttpConfig) -> None:
    """Take a reloaded ``http:`` section: hosts, token, metrics detail (not ``listen``)."""
    sources = app[SOURCES]
    sources.http = http
    sources.metrics.per_device = http.per_device_metrics
    app[AUTH].set_token(http.token)


# -- the server -------------------------------------------------------------------------------


class _Busy(asyncio.Protocol):
    """A connection past the limit: 503, closed, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


class _CappedSite(web.TCPSite):
    """aiohttp's TCPSite with a cap on open connections in its protocol factory."""

    __slots__ = ("_max_connections", "_pending")

    def __init__(self, runner: web.AppRunner, host: str, port: int, max_connections: int) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self._max_connections = max_connections
        self._pending = 0

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        # server.connections counts a connection from its connection_made, which asyncio
        # calls soon after this factory: count the ones accepted in between as pending.
        if len(server.connections) + self._pending >= self._max_connections:
            return _Busy()
        self._pending += 1
        asyncio.get_running_loop().call_soon(self._made)
        return server()

    def _made(self) -> None:
        self._pending -= 1

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


class _BadRequestFilter(logging.Filter):
    """aiohttp logs a malformed request with its traceback; it got its 4xx: say it in
    one debug line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, http_exceptions.HttpProcessingError):
            log.debug("refused a malformed request: %s", exc)
            return False
        return True


_server_log = logging.getLogger("cgwatchdog.http.server")
_server_log.addFilter(_BadRequestFilter())


class HttpServer:
    """The endpoint served on ``http.listen`` from the daemon's event loop."""

    def __init__(
        self,
        sources: Sources,
        *,
        limits: Limits | None = None,
        extra_routes: Sequence[web.AbstractRouteDef] = (),
    ) -> None:
        self.limits = limits if limits is not None else Limits()
        self.app = build_app(sources, limits=self.limits, extra_routes=extra_routes)
        self.sources = sources
        self._runner: web.AppRunner | None = None
        self._site: _CappedSite | None = None

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Bind ``http.listen`` (or ``host``/``port``); OSError if it cannot."""
        http = self.sources.http
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            logger=_server_log,
            keepalive_timeout=self.limits.head_timeout_s,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_LINE_BYTES,
            max_headers=MAX_HEADERS,
            lingering_time=0,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        site = _CappedSite(
            runner,
            http.host if host is None else host,
            http.port if port is None else port,
            self.limits.max_connections,
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._site = runner, site

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._site is not None, "not started"
        return self._site.port

    @property
    def sockets(self) -> list[Any]:
        """The listening sockets' addresses."""
        runner = self._runner
        return [] if runner is None else list(runner.addresses)

    @property
    def open_connections(self) -> int:
        """Connections open now (the limit is ``limits.max_connections``)."""
        runner = self._runner
        server = None if runner is None else runner.server
        return 0 if server is None else len(server.connections)

    def configure(self, http: HttpConfig) -> None:
        """Take a reloaded ``http:`` section (``listen`` changes at the next restart)."""
        listen = self.sources.http.listen
        configure(self.app, http.model_copy(update={"listen": listen}))

    async def stop(self) -> None:
        """Stop listening and close every connection (bounded)."""
        runner, self._runner, self._site = self._runner, None, None
        if runner is not None:
            await runner.cleanup()
