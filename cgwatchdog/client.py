"""Clients for the cgminer API: ``CgminerAPI`` (blocking) and ``AsyncCgminerAPI`` (asyncio).

Both are thin shells over :mod:`cgwatchdog.protocol` (as httpx's clients are over one
core): they open a connection, send one request, read until the NUL byte or the close,
and turn socket trouble into :class:`~cgwatchdog.errors.MinerUnreachable` at this one
edge. ``CgminerAPI`` keeps pycgminer's interface, so ``from cgwatchdog import CgminerAPI``
is the only change an existing script needs::

    api = CgminerAPI("127.0.0.1")
    api.summary()          # == api.command("summary")
    api.asc(0)             # == api.command("asc", 0)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import select
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

from cgwatchdog.errors import (
    CgwatchdogError,
    ConnectionRefused,
    ConnectionReset,
    ConnectTimeout,
    HostNotFound,
    InvalidCommand,
    MinerUnreachable,
    ProtocolError,
    ReadTimeout,
    ReplyTooLarge,
)
from cgwatchdog.protocol import (
    DEFAULT_PORT,
    MAX_REPLY_BYTES,
    PRIVILEGED_COMMANDS,
    ReplyDecoder,
    check_status,
    encode_request,
    split_multi,
)

__all__ = ["DEFAULT_CONNECT_TIMEOUT_S", "DEFAULT_TIMEOUT_S", "AsyncCgminerAPI", "CgminerAPI"]

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_CONNECT_TIMEOUT_S = 1.0
"""A LAN connect takes milliseconds; a dead address should cost about a second, not the
whole read deadline, so the two are separate."""

_READ_CHUNK = 65536
SILENT_CLOSE_HINT = "closed without answering: is this host in the miner's --api-allow?"
_CONNECT: Final = 0
_READ: Final = 1
_IN_PROGRESS: Final = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY})


class _BaseAPI:
    """Configuration and the request/reply logic both clients share."""

    # A poller holds one client per miner: no __dict__ each.
    __slots__ = (
        "connect_timeout", "host", "max_reply_bytes", "multi_supported", "port", "timeout",
    )  # fmt: skip

    def __init__(
        self,
        host: str = "localhost",
        port: int = DEFAULT_PORT,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        connect_timeout: float | None = None,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.connect_timeout = (
            min(timeout, DEFAULT_CONNECT_TIMEOUT_S) if connect_timeout is None else connect_timeout
        )
        self.max_reply_bytes = max_reply_bytes
        self.multi_supported: bool | None = None
        """Whether the miner answers ``a+b`` multi-commands; learnt on first use."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host!r}, {self.port})"

    def _finish(self, decoder: ReplyDecoder, command: str, text: bool) -> dict[str, Any]:
        if decoder.size == 0:
            raise ConnectionReset(self.host, self.port, SILENT_CLOSE_HINT)
        reply = decoder.reply(command if text else None)
        if "+" in command and "STATUS" not in reply:
            # A multi-command reply has no STATUS of its own, only one per command inside;
            # the miner refusing the whole of it does carry one, checked below.
            return reply
        check_status(command, reply)
        return reply

    def _reply_unchecked(self, decoder: ReplyDecoder) -> dict[str, Any]:
        if decoder.size == 0:
            raise ConnectionReset(self.host, self.port, SILENT_CLOSE_HINT)
        return decoder.reply()

    def _multi_names(self, commands: Sequence[str] | str) -> list[str]:
        names = commands.split("+") if isinstance(commands, str) else list(commands)
        privileged = [name for name in names if name in PRIVILEGED_COMMANDS]
        if privileged and len(names) > 1:
            # cgminer refuses a privileged command inside a multi-command (Code 45).
            raise ProtocolError(f"privileged command {privileged[0]!r} must be sent alone")
        return names

    def _multi_steps(
        self, commands: Sequence[str] | str, arg: object
    ) -> Generator[bytes, ReplyDecoder, dict[str, dict[str, Any]]]:
        """The logic of ``multi`` without the I/O: yields each request's bytes, is sent
        the reply's decoder back, and returns each command's reply. Both clients drive
        it, the blocking one with ``exchange`` and the async one with ``await exchange``."""
        names = self._multi_names(commands)
        if len(names) > 1 and self.multi_supported is not False:
            joined = "+".join(names)
            decoder = yield encode_request(joined, arg)
            try:
                parts = split_multi(names, self._finish(decoder, joined, False))
            except InvalidCommand:
                self.multi_supported = False
            else:
                self.multi_supported = True
                return parts
        out: dict[str, dict[str, Any]] = {}
        for name in names:
            decoder = yield encode_request(name, arg)
            out[name] = self._reply_unchecked(decoder)
        return out

    def _unreachable(self, exc: BaseException, connecting: bool, received: int) -> CgwatchdogError:
        """Our error for a socket exception, with a reason an operator can act on."""
        host, port = self.host, self.port
        if isinstance(exc, CgwatchdogError):  # ReplyTooLarge, raised by the decoder
            return exc
        if isinstance(exc, TimeoutError):
            if connecting:
                return ConnectTimeout(host, port, f"no connection within {self.connect_timeout:g}s")
            got = (
                f" (got {received} bytes)"
                if received
                else " (nothing at all: a stuck miner, or not the cgminer API: a web server "
                "such as the miner's web UI waits silently for an HTTP request; is this "
                "the API port, 4028?)"
            )
            return ReadTimeout(host, port, f"no complete reply within {self.timeout:g}s{got}")
        if isinstance(exc, ConnectionRefusedError):
            return ConnectionRefused(
                host,
                port,
                "connection refused: is the API enabled (--api-listen) and the port right?",
            )
        if isinstance(exc, ConnectionResetError | BrokenPipeError):
            reason = SILENT_CLOSE_HINT if received == 0 else "connection reset mid-reply"
            return ConnectionReset(host, port, reason)
        if isinstance(exc, socket.gaierror):
            return HostNotFound(host, port, f"cannot resolve host: {exc.strerror}")
        if isinstance(exc, OSError):
            reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
            return MinerUnreachable(host, port, reason)
        raise TypeError(f"not a socket failure: {exc!r}")  # pragma: no cover - a bug

    @contextlib.contextmanager
    def _edge(self, decoder: ReplyDecoder, phase: list[str]) -> Iterator[None]:
        """Convert socket exceptions into ours (the blocking client's one edge)."""
        try:
            yield
        except OSError as exc:  # TimeoutError and socket.gaierror included
            raise self._unreachable(exc, phase[0] == "connect", decoder.size) from None


class CgminerAPI(_BaseAPI):
    """Blocking client, one connection per request (pycgminer-compatible)."""

    __slots__ = ()

    def exchange(self, request: bytes) -> ReplyDecoder:
        """Send raw request bytes and collect the reply's bytes."""
        decoder = ReplyDecoder(self.max_reply_bytes)
        phase = ["connect"]
        with self._edge(decoder, phase):
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            with sock:
                phase[0] = "read"
                deadline = time.monotonic() + self.timeout
                sock.settimeout(self.timeout)
                sock.sendall(request)
                while True:
                    # The deadline is for the whole reply: a miner trickling bytes faster
                    # than any per-recv timeout must not hold the caller past it.
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    sock.settimeout(remaining)
                    chunk = sock.recv(_READ_CHUNK)
                    if not chunk:
                        decoder.feed_eof()
                        break
                    if decoder.feed(chunk):
                        break
        return decoder

    def command(self, command: str, arg: object = None, *, text: bool = False) -> dict[str, Any]:
        """Send one command (``arg`` becomes its parameter) and return the decoded reply.

        Raises :class:`~cgwatchdog.errors.CommandError` (or a subclass) for STATUS E/F.
        """
        decoder = self.exchange(encode_request(command, arg, text=text))
        return self._finish(decoder, command, text)

    def multi(self, commands: Sequence[str] | str, arg: object = None) -> dict[str, dict[str, Any]]:
        """Ask several report commands at once; each command's reply, unchecked.

        Uses one ``a+b+c`` request where the miner supports it, else one request per
        command (remembered in :attr:`multi_supported`).
        """
        steps = self._multi_steps(commands, arg)
        request = next(steps)
        while True:
            try:
                request = steps.send(self.exchange(request))
            except StopIteration as done:
                result: dict[str, dict[str, Any]] = done.value
                return result

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(arg: object = None) -> dict[str, Any]:
            return self.command(name, arg)

        call.__name__ = name
        return call


# -- the async client's two read paths ---------------------------------------------------
#
# Failures are kept as exception objects without their traceback (``_bare``) and raised by
# the awaiting coroutine: an exception held by the object whose callback frame is in its
# traceback would be a reference cycle per failing miner, left to the cyclic garbage
# collector the poller pauses.


def _bare(exc: BaseException) -> BaseException:
    """``exc`` without its traceback (whose frames would hold the exchange)."""
    exc.__traceback__ = None
    exc.__context__ = None
    return exc


class _Expiring(Protocol):
    def expire(self) -> None: ...


class _Deadlines:
    """The deadlines of every exchange in flight on one event loop, watched by one timer.

    An exchange sets its deadline when it starts, moves it once when connected (connect
    deadline, then read deadline) and drops it when done: three dict operations. A timer
    per exchange costs more: the loop keeps timers in a heap ordered by a Python-level
    comparison, and cancelled ones stay in it, so at 10,000 miners a cycle the heap
    operations alone cost several microseconds an exchange. The one timer here fires at the
    earliest deadline, expires what is due and sets itself for the next; since exchanges
    finish long before their deadlines, it fires about once per connect timeout.
    """

    __slots__ = ("handle", "items", "loop", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: dict[_Expiring, float] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.when = math.inf

    def set(self, item: _Expiring, when: float) -> None:
        self.items[item] = when
        if when < self.when:
            if self.handle is not None:
                self.handle.cancel()
            self.when = when
            self.handle = self.loop.call_at(when, self._check)

    def discard(self, item: _Expiring) -> None:
        self.items.pop(item, None)

    def _check(self) -> None:
        self.handle = None
        self.when = math.inf
        items = self.items
        # The loop runs a timer up to its clock resolution early: a deadline that close is
        # due, or the timer would be set again for the same instant.
        now = self.loop.time() + 1e-6
        due = [item for item, when in items.items() if when <= now]
        for item in due:
            del items[item]
        if items:
            earliest = min(items.values())
            self.when = earliest
            self.handle = self.loop.call_at(earliest, self._check)
        for item in due:
            item.expire()


_T = TypeVar("_T")


class _PerLoop(Generic[_T]):
    """One ``_T`` per event loop, made on first use (the last one looked up is kept at
    hand: a poller runs on one loop)."""

    __slots__ = ("_last", "_made", "_make")

    def __init__(self, make: Callable[[asyncio.AbstractEventLoop], _T]) -> None:
        self._make = make
        self._made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _T] = (
            weakref.WeakKeyDictionary()
        )
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], _T] | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop) -> _T:
        last = self._last
        if last is not None and last[0]() is loop:
            return last[1]
        made = self._made.get(loop)
        if made is None:
            made = self._made[loop] = self._make(loop)
        self._last = (weakref.ref(loop), made)
        return made


_deadlines: Final = _PerLoop(_Deadlines)
"""The deadline watch of an event loop."""

_EPOLL: Final = hasattr(select, "epoll")
_OUT: Final = getattr(select, "EPOLLOUT", 4)
_IN: Final = getattr(select, "EPOLLIN", 1)


class _Sockets:
    """The sockets of every exchange in flight on one event loop, in an epoll set of their
    own that the loop watches as one file (Linux).

    Through the loop's ``add_reader``/``add_writer`` every socket costs a selector key,
    an add and a remove each way, and every event a Handle and a callback through the
    loop's ready queue: about as much CPU as the socket calls themselves. Here a socket is
    registered once and modified once (closing it drops it from the set), and each event
    goes straight to its exchange. The same on any loop that can watch a file: asyncio's
    own and uvloop.
    """

    __slots__ = ("epoll", "exchanges")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.epoll = select.epoll()
        self.exchanges: dict[int, _SocketExchange] = {}
        try:
            loop.add_reader(self.epoll.fileno(), self._ready)
        except BaseException:
            self.epoll.close()
            raise

    def _ready(self) -> None:
        exchanges = self.exchanges
        # Level-triggered: what is not handled now is reported again. No exchange starts
        # while this runs (an exchange's waiter wakes its caller later, from the loop), so
        # a descriptor in this list is the one its exchange registered.
        for fd, _ in self.epoll.poll(0):
            exchange = exchanges.get(fd)
            if exchange is not None:
                exchange.ready()


_sockets: Final = _PerLoop(_Sockets)
"""The epoll set of an event loop's exchanges."""


class _SocketExchange:
    """One request and its reply on a non-blocking socket in the loop's :class:`_Sockets`.

    The transport machinery around a connection (a protocol, a transport object, several
    ``call_soon`` per connection) costs more CPU than the socket calls themselves: this
    path costs about half of a bare ``asyncio.Protocol`` client on asyncio's own loop,
    and less than uvloop's C transports (``benchmarks/RESULTS.md``).
    """

    __slots__ = (
        "connected_at", "deadlines", "decoder", "error", "fd", "loop", "phase", "request",
        "sock", "sockets", "timeout", "waiter", "watching",
    )  # fmt: skip

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        request: bytes,
        decoder: ReplyDecoder,
        timeout: float,
    ) -> None:
        self.loop = loop
        self.request = request
        self.decoder = decoder
        self.timeout = timeout
        self.phase = _CONNECT
        self.connected_at = 0.0
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.deadlines: _Deadlines | None = None
        self.sockets: _Sockets | None = None
        self.sock: socket.SocketType | None = None
        self.fd = -1
        self.watching = 0  # the epoll events the socket is registered for; 0: not in the set

    def start(self, family: int, address: tuple[Any, ...], connect_timeout: float) -> None:
        """Open the socket and start connecting; raises OSError when it cannot start."""
        loop = self.loop
        sockets = self.sockets = _sockets(loop)
        # socket.SocketType is the C socket type: none of socket.socket's Python layer
        # (makefile, dup, reference counting for close) is needed here.
        sock = socket.SocketType(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            err = sock.connect_ex(address)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.fd = sock.fileno()
        self.waiter = loop.create_future()
        self.deadlines = _deadlines(loop)
        self.deadlines.set(self, loop.time() + connect_timeout)
        if err == 0:
            self._connected()
        elif err in _IN_PROGRESS:
            self._watch(sockets, _OUT)
        else:
            self._end(OSError(err, os.strerror(err)))

    def _watch(self, sockets: _Sockets, events: int) -> None:
        """Have ``events`` of the socket reported to :meth:`ready`."""
        try:
            if self.watching:
                sockets.epoll.modify(self.fd, events)
            else:
                sockets.epoll.register(self.fd, events)
                sockets.exchanges[self.fd] = self
        except OSError as exc:  # no room in the set (ENOMEM, ENOSPC)
            self._end(_bare(exc))
            return
        self.watching = events

    def ready(self) -> None:
        """The socket is ready for what it is watched for (or has failed)."""
        if self.watching == _OUT:
            self._connected()
        else:
            self._readable()

    def _connected(self) -> None:
        """The connect finished (or failed: ``send`` then raises its error); sends."""
        if self.phase == _CONNECT:
            self.phase = _READ
            now = self.connected_at = self.loop.time()
            if self.deadlines is not None:
                self.deadlines.set(self, now + self.timeout)
        sock = self.sock
        sockets = self.sockets
        assert sock is not None and sockets is not None
        try:
            sent = sock.send(self.request)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._end(_bare(exc))
            return
        if sent < len(self.request):
            self.request = self.request[sent:]
            if self.watching != _OUT:
                self._watch(sockets, _OUT)
            return
        self._watch(sockets, _IN)

    def _readable(self) -> None:
        sock = self.sock
        assert sock is not None
        try:
            data = sock.recv(_READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(_bare(exc))
            return
        decoder = self.decoder
        if not data:
            decoder.feed_eof()
            self._end(None)
            return
        try:
            complete = decoder.feed(data)
        except ReplyTooLarge as exc:
            self._end(_bare(exc))
            return
        if complete:
            self._end(None)

    def expire(self) -> None:
        """The deadline of the phase it is in passed."""
        self._end(TimeoutError())

    def _end(self, error: BaseException | None) -> None:
        """Stop watching the socket, close it, wake the caller (once)."""
        waiter = self.waiter
        if waiter is None:
            return
        self.waiter = None
        self.error = error
        if self.watching:
            # Closing the socket drops it from the epoll set (nothing else holds its file).
            self.watching = 0
            if self.sockets is not None:
                del self.sockets.exchanges[self.fd]
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.sockets = None
        if self.deadlines is not None:
            self.deadlines.discard(self)
            self.deadlines = None
        if not waiter.done():
            waiter.set_result(None)


class _ReplyReader(asyncio.Protocol):
    """Feeds one connection's bytes straight to a ReplyDecoder (no stream buffer): the read
    path for host names, which ``create_connection`` resolves, and where there is no epoll
    (not Linux).

    ``done`` resolves (always with None) when the reply is complete (NUL or close), the
    socket fails or the deadline passes; ``error`` then says which failure, if any.
    """

    __slots__ = (
        "deadlines", "decoder", "done", "error", "expired", "loop", "phase", "request",
        "task", "timeout", "transport",
    )  # fmt: skip

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        request: bytes,
        decoder: ReplyDecoder,
        timeout: float,
    ) -> None:
        self.loop = loop
        self.request = request
        self.decoder = decoder
        self.timeout = timeout
        self.done: asyncio.Future[None] = loop.create_future()
        self.error: BaseException | None = None
        self.phase = _CONNECT
        self.expired = False
        self.task: asyncio.Task[Any] | None = None
        self.deadlines: _Deadlines | None = None
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.phase = _READ
        if self.deadlines is not None:
            self.deadlines.set(self, self.loop.time() + self.timeout)
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            complete = self.decoder.feed(data)
        except ReplyTooLarge as exc:
            self.end(_bare(exc))
            return
        if complete:
            self.end(None)

    def eof_received(self) -> bool:
        self.decoder.feed_eof()
        self.end(None)
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.decoder.feed_eof()
        self.end(None if exc is None else _bare(exc))

    def expire(self) -> None:
        """The deadline passed: a connect still under way is cancelled in its task."""
        if self.phase == _READ:
            self.end(TimeoutError())
            return
        self.expired = True
        self.deadlines = None
        if self.task is not None:
            self.task.cancel()

    def end(self, error: BaseException | None) -> None:
        if self.deadlines is not None:
            self.deadlines.discard(self)
            self.deadlines = None
        if self.done.done():
            return
        self.error = error
        self.done.set_result(None)


def _literal(host: str, port: int) -> tuple[int, tuple[Any, ...]] | None:
    """(address family, socket address) of an IP literal; None for a host name (or a
    scoped IPv6 address), which takes the ``create_connection`` path."""
    # inet_pton, not ipaddress: a tenth of the cost, paid once per miner at start.
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    else:
        return socket.AF_INET, (host, port)
    try:
        socket.inet_pton(socket.AF_INET6, host)
    except OSError:  # a host name, or fe80::1%eth0 (inet_pton takes no scope)
        return None
    return socket.AF_INET6, (host, port, 0, 0)


class AsyncCgminerAPI(_BaseAPI):
    """asyncio client, one connection per request; no thread per miner.

    On Linux an IP address is read on a bare non-blocking socket in an epoll set of the
    client's own (:class:`_SocketExchange`), on asyncio's loop and uvloop alike; host
    names, and systems without epoll, go through a bare :class:`asyncio.Protocol` feeding
    the decoder. Either way the connect and read deadlines are watched by one timer per
    event loop (:class:`_Deadlines`). Both are measured against bare clients in
    ``benchmarks/RESULTS.md``.
    """

    __slots__ = ("_address", "use_sockets")

    USE_SOCKETS: ClassVar[bool] = True
    """Whether new clients take the socket path where it applies (tests turn it off to
    run the other path)."""

    def __init__(
        self,
        host: str = "localhost",
        port: int = DEFAULT_PORT,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        connect_timeout: float | None = None,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        super().__init__(
            host, port, timeout, connect_timeout=connect_timeout, max_reply_bytes=max_reply_bytes
        )
        # (address family, socket address) of an IP literal, (0, (host, port)) of a host
        # name: the socket address starts with the host and port it was made for.
        self._address: tuple[int, tuple[Any, ...]] | None = None
        self.use_sockets = self.USE_SOCKETS
        """Use the socket path where it applies."""

    def _resolved(self) -> tuple[int, tuple[Any, ...]] | None:
        cached = self._address
        if cached is None or cached[1][0] != self.host or cached[1][1] != self.port:
            host, port = self.host, self.port
            cached = self._address = _literal(host, port) or (0, (host, port))
        return cached if cached[0] else None

    async def exchange(self, request: bytes) -> ReplyDecoder:
        """Send raw request bytes and collect the reply's bytes."""
        loop = asyncio.get_running_loop()
        decoder = ReplyDecoder(self.max_reply_bytes)
        address = self._resolved() if self.use_sockets else None
        error: BaseException | None
        exchange: _SocketExchange | None = None
        if address is not None and _EPOLL:
            # The socket path, inline: a coroutine less per exchange.
            exchange = _SocketExchange(loop, request, decoder, self.timeout)
            try:
                exchange.start(address[0], address[1], self.connect_timeout)
            except OSError as exc:  # no socket (EMFILE), or an address the kernel refuses
                error, connecting = _bare(exc), True
            else:
                waiter = exchange.waiter
                if waiter is not None:
                    try:
                        await waiter
                    except BaseException:  # cancelled from outside: close the socket now
                        exchange._end(None)
                        raise
                error, connecting = exchange.error, exchange.phase == _CONNECT
                exchange.error = None
        else:
            error, connecting = await self._protocol_exchange(loop, request, decoder)
        if error is not None:
            failure = self._unreachable(error, connecting, decoder.size)
            try:
                raise failure from None
            finally:  # this frame is in the traceback: it must not hold the exception
                del failure
                error = exchange = None
        return decoder

    async def _protocol_exchange(
        self, loop: asyncio.AbstractEventLoop, request: bytes, decoder: ReplyDecoder
    ) -> tuple[BaseException | None, bool]:
        reader = _ReplyReader(loop, request, decoder, self.timeout)
        task = reader.task = asyncio.current_task()
        reader.deadlines = _deadlines(loop)
        reader.deadlines.set(reader, loop.time() + self.connect_timeout)
        try:
            await loop.create_connection(lambda: reader, self.host, self.port)
        except asyncio.CancelledError:
            if reader.expired and task is not None and task.uncancel() == 0:
                reader.task = None
                return TimeoutError(), True  # our deadline, not a cancel from outside
            reader.end(None)
            reader.task = None
            raise
        except OSError as exc:
            reader.end(None)
            reader.task = None
            return _bare(exc), True
        reader.task = None
        try:
            await reader.done
        finally:
            reader.end(None)
            if reader.transport is not None:
                reader.transport.close()
                reader.transport = None
        return reader.error, False

    async def command(
        self, command: str, arg: object = None, *, text: bool = False
    ) -> dict[str, Any]:
        """Send one command and return the decoded reply (typed error on STATUS E/F)."""
        decoder = await self.exchange(encode_request(command, arg, text=text))
        return self._finish(decoder, command, text)

    async def multi(
        self, commands: Sequence[str] | str, arg: object = None
    ) -> dict[str, dict[str, Any]]:
        """As :meth:`CgminerAPI.multi`: one connection where the miner allows it."""
        if self.multi_supported and arg is None and type(commands) is tuple and len(commands) > 1:
            # The steady poll: a multi-command this miner is known to answer.
            prepared = _PREPARED.get(commands)
            if prepared is None:
                prepared = _prepare_multi(self._multi_names(commands))
            decoder = await self.exchange(prepared[1])
            try:
                return split_multi(commands, self._finish(decoder, prepared[0], False))
            except InvalidCommand:
                self.multi_supported = False  # as _multi_steps: one command a connection
        steps = self._multi_steps(commands, arg)
        request = next(steps)
        while True:
            try:
                request = steps.send(await self.exchange(request))
            except StopIteration as done:
                result: dict[str, dict[str, Any]] = done.value
                return result

    def __getattr__(self, name: str) -> Callable[..., Awaitable[dict[str, Any]]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(arg: object = None) -> dict[str, Any]:
            return await self.command(name, arg)

        call.__name__ = name
        return call


_PREPARED: dict[tuple[str, ...], tuple[str, bytes]] = {}


def _prepare_multi(names: list[str]) -> tuple[str, bytes]:
    """The joined name and request bytes of a multi-command, cached (a poller asks a
    handful of distinct ones)."""
    joined = "+".join(names)
    prepared = (joined, encode_request(joined))
    if len(_PREPARED) < 256:
        _PREPARED[tuple(names)] = prepared
    return prepared
