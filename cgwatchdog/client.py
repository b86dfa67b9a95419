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
import socket
import time
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from typing import Any

from cgwatchdog.errors import (
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


class _BaseAPI:
    """Configuration and the request/reply logic both clients share."""

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

    @contextlib.contextmanager
    def _edge(self, decoder: ReplyDecoder, phase: list[str]) -> Iterator[None]:
        """Convert socket exceptions into ours, with a reason an operator can act on."""
        try:
            yield
        except TimeoutError:
            if phase[0] == "connect":
                raise ConnectTimeout(
                    self.host, self.port, f"no connection within {self.connect_timeout:g}s"
                ) from None
            got = (
                f" (got {decoder.size} bytes)"
                if decoder.size
                else " (nothing at all: a stuck miner, or not the cgminer API: a web server "
                "such as the miner's web UI waits silently for an HTTP request; is this "
                "the API port, 4028?)"
            )
            raise ReadTimeout(
                self.host, self.port, f"no complete reply within {self.timeout:g}s{got}"
            ) from None
        except ConnectionRefusedError:
            raise ConnectionRefused(
                self.host,
                self.port,
                "connection refused: is the API enabled (--api-listen) and the port right?",
            ) from None
        except (ConnectionResetError, BrokenPipeError):
            reason = SILENT_CLOSE_HINT if decoder.size == 0 else "connection reset mid-reply"
            raise ConnectionReset(self.host, self.port, reason) from None
        except socket.gaierror as exc:
            raise HostNotFound(
                self.host, self.port, f"cannot resolve host: {exc.strerror}"
            ) from None
        except OSError as exc:
            reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
            raise MinerUnreachable(self.host, self.port, reason) from None


class CgminerAPI(_BaseAPI):
    """Blocking client, one connection per request (pycgminer-compatible)."""

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


class _ReplyReader(asyncio.Protocol):
    """Feeds one connection's bytes straight to a ReplyDecoder (no stream buffer).

    ``done`` resolves (always with None) when the reply is complete (NUL or close), the
    socket fails or the deadline passes; ``error`` then says which failure, if any. The
    error is kept here rather than in the future so that the caller can drop its last
    reference before raising it: a raised exception held by a frame in its own traceback
    is a reference cycle, left to the cyclic GC, per failing miner.
    """

    __slots__ = ("decoder", "done", "error", "request")

    def __init__(self, request: bytes, decoder: ReplyDecoder, done: asyncio.Future[None]) -> None:
        self.request = request
        self.decoder = decoder
        self.done = done
        self.error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            complete = self.decoder.feed(data)
        except ReplyTooLarge as exc:
            self.end(exc)
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
        self.end(exc)

    def expire(self) -> None:
        """The read deadline passed."""
        self.end(TimeoutError())

    def end(self, error: BaseException | None) -> None:
        if not self.done.done():
            self.error = error
            self.done.set_result(None)


class AsyncCgminerAPI(_BaseAPI):
    """asyncio client, one connection per request; no thread per miner.

    The read path is a bare :class:`asyncio.Protocol` feeding the decoder, with one timer
    for the read deadline: measured cheaper per connection than streams and a second
    ``asyncio.timeout`` (``benchmarks/RESULTS.md``), which counts at 10,000 miners.
    """

    async def exchange(self, request: bytes) -> ReplyDecoder:
        """Send raw request bytes and collect the reply's bytes."""
        decoder = ReplyDecoder(self.max_reply_bytes)
        phase = ["connect"]
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        reader = _ReplyReader(request, decoder, done)
        with self._edge(decoder, phase):
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await loop.create_connection(lambda: reader, self.host, self.port)
            phase[0] = "read"
            timer = loop.call_later(self.timeout, reader.expire)
            try:
                await done
            finally:
                timer.cancel()
                transport.close()
            if reader.error is not None:
                error, reader.error = reader.error, None
                try:
                    raise error
                finally:
                    del error
        return decoder

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
