"""The sync and async clients against real TCP servers on 127.0.0.1.

Each server here is a small thread that accepts connections and plays one behaviour of
a miner seen in the field: a normal cgminer, one that trickles, closes, resets, hangs,
floods, or speaks an old API without multi-commands. Every scenario runs through both
faces, ``CgminerAPI`` and ``AsyncCgminerAPI``, the latter on both its read paths (a bare
socket in the client's own epoll set, and the ``asyncio.Protocol`` path host names
take), each on asyncio's own event loop and on uvloop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from cgwatchdog.client import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    SILENT_CLOSE_HINT,
    AsyncCgminerAPI,
    CgminerAPI,
)
from cgwatchdog.errors import (
    AccessDenied,
    CommandError,
    ConnectionRefused,
    ConnectTimeout,
    FailureKind,
    InvalidCommand,
    MinerTimeout,
    MinerUnreachable,
    ProtocolError,
    ReadTimeout,
    ReplyTooLarge,
)
from cgwatchdog.protocol import (
    PRIVILEGED_COMMANDS,
    Request,
    decode_request,
    encode_reply,
    encode_text_reply,
)

SHORT_S = 0.2
"""Read deadline of the tests that wait for one: long enough for loopback, short to run."""


def status(letter: str, code: int, msg: str) -> list[dict[str, Any]]:
    return [
        {
            "STATUS": letter,
            "When": 1732121693,
            "Code": code,
            "Msg": msg,
            "Description": "cgminer 4.11.1",
        }
    ]


SUMMARY = {
    "STATUS": status("S", 11, "Summary"),
    "SUMMARY": [{"Elapsed": 3600, "MHS av": 13500000.0, "MHS 5s": 13612345.67, "Accepted": 1520,
                 "Rejected": 4, "Hardware Errors": 12, "Last getwork": 1732121690}],
    "id": 1,
}  # fmt: skip
DEVS = {
    "STATUS": status("S", 9, "1 ASC(s)"),
    "DEVS": [{"ASC": 0, "Name": "BTM", "ID": 0, "Enabled": "Y", "Status": "Alive",
              "Temperature": 61.5, "MHS 5s": 4611028.25, "Hardware Errors": 3}],
    "id": 1,
}  # fmt: skip
NO_DEVICES = {"STATUS": status("E", 10, "No ASCs"), "id": 1}
POOLS = {
    "STATUS": status("S", 7, "1 Pool(s)"),
    "POOLS": [{"POOL": 0, "URL": "stratum+tcp://127.0.0.1:3333", "Status": "Alive", "Priority": 0,
               "Accepted": 1520, "Last Share Time": 1732121685}],
    "id": 1,
}  # fmt: skip
ASC0 = {"STATUS": status("S", 106, "ASC0"), "ASC": DEVS["DEVS"], "id": 1}
BAD_ASC = {"STATUS": status("E", 107, "Invalid ASC id 5 - range is 0 - 0"), "id": 1}
INVALID = {
    "STATUS": [{"STATUS": "E", "When": 1732121693, "Code": 14, "Msg": "Invalid command"}],
    "id": 1,
}
DENIED = {"STATUS": status("E", 45, "Access denied to 'restart' command"), "id": 1}


# -- the fake miners --------------------------------------------------------------------


@dataclass
class Conn:
    """One accepted connection, as a behaviour sees it."""

    sock: socket.socket
    request: bytes
    stop: threading.Event

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reset(self) -> None:
        """Close with a TCP RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


Behaviour = Callable[[Conn], None]


class MinerServer:
    """A TCP server on 127.0.0.1 that plays ``behaviour`` on every connection."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[Request] = []
        self.raw_requests: list[bytes] = []
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepting.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:  # the listener was shut down
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            try:
                sock.settimeout(5.0)
                raw = sock.recv(65536)  # cgminer, too, reads the request with one recv
                self.raw_requests.append(raw)
                self.requests.append(decode_request(raw))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.behaviour(Conn(sock, raw, self.stop))
            except OSError:  # the client went away first: expected in several tests
                pass

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        self._accepting.join(2)
        for thread in self._threads:
            thread.join(2)


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], MinerServer]]:
    """Start fake miners for a test; all are stopped afterwards."""
    servers: list[MinerServer] = []

    def start(behaviour: Behaviour) -> MinerServer:
        server = MinerServer(behaviour)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def cgminer(
    replies: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    multi: bool = True,
    write_access: bool = True,
) -> Behaviour:
    """A miner answering like cgminer 4.11: JSON or plain text, NUL, close."""
    table: dict[str, Mapping[str, Any]] = {
        "summary": SUMMARY, "devs": DEVS, "pools": POOLS, "restart": {"STATUS": "RESTART", "id": 1},
    }  # fmt: skip
    table.update(replies or {})

    def answer(name: str, parameter: str | None) -> Mapping[str, Any]:
        if name in PRIVILEGED_COMMANDS and not write_access:
            return DENIED
        if name == "asc":
            return ASC0 if parameter == "0" else BAD_ASC
        return table.get(name, INVALID)

    def behaviour(conn: Conn) -> None:
        request = decode_request(conn.request)
        if request.text:
            conn.send(encode_text_reply(answer(request.commands[0], request.parameter)))
        elif len(request.commands) == 1:
            conn.send(encode_reply(answer(request.commands[0], request.parameter)))
        elif not multi:
            conn.send(encode_reply(INVALID))  # cgminer < API 3.1, some Antminer X19 firmware
        else:
            parts: dict[str, Any] = {
                name: [answer(name, request.parameter)] for name in request.commands
            }
            conn.send(encode_reply({**parts, "id": 1}))

    return behaviour


def sends(data: bytes, *, then_wait: bool = False) -> Behaviour:
    """Send ``data`` at once; then close, or keep the connection open until the test ends."""

    def behaviour(conn: Conn) -> None:
        conn.send(data)
        if then_wait:
            conn.stop.wait(5)

    return behaviour


def trickles(data: bytes, interval_s: float, *, forever: bytes = b"") -> Behaviour:
    """Send ``data`` one byte at a time, ``interval_s`` apart; then ``forever`` repeated."""

    def behaviour(conn: Conn) -> None:
        for index in range(len(data)):
            conn.send(data[index : index + 1])
            if interval_s and conn.stop.wait(interval_s):
                return
        while forever and not conn.stop.is_set():
            conn.send(forever)
            conn.stop.wait(interval_s)

    return behaviour


def closes_silently(conn: Conn) -> None:
    """A host outside --api-allow: accepted, then closed with zero bytes."""


def resets(conn: Conn) -> None:
    conn.reset()


def resets_mid_reply(conn: Conn) -> None:
    conn.send(encode_reply(SUMMARY)[:40])
    conn.reset()


def never_replies(conn: Conn) -> None:
    conn.stop.wait(5)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- both faces behind one interface ----------------------------------------------------


class Client:
    """``CgminerAPI`` or ``AsyncCgminerAPI`` behind async methods, so each test runs on both."""

    def __init__(self, face: str, port: int, **options: Any) -> None:
        self.api: CgminerAPI | AsyncCgminerAPI = (
            CgminerAPI("127.0.0.1", port, **options)
            if face == "sync"
            else AsyncCgminerAPI("127.0.0.1", port, **options)
        )
        if face == "async-protocol":  # the read path of uvloop and host names
            assert isinstance(self.api, AsyncCgminerAPI)
            self.api.use_sockets = False

    async def command(
        self, command: str, arg: object = None, *, text: bool = False
    ) -> dict[str, Any]:
        if isinstance(self.api, CgminerAPI):
            return self.api.command(command, arg, text=text)
        return await self.api.command(command, arg, text=text)

    async def multi(self, commands: list[str] | str) -> dict[str, dict[str, Any]]:
        if isinstance(self.api, CgminerAPI):
            return self.api.multi(commands)
        return await self.api.multi(commands)

    async def call(self, name: str, arg: object = None) -> dict[str, Any]:
        """pycgminer style: ``api.summary()``, ``api.asc(0)``."""
        if isinstance(self.api, CgminerAPI):
            result: dict[str, Any] = getattr(self.api, name)(arg)
            return result
        result = await getattr(self.api, name)(arg)
        return result


@pytest.fixture(params=["sync", "async", "async-protocol"])
def face(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


pytestmark = pytest.mark.both_loops  # every async test on asyncio's loop and uvloop's


async def test_each_event_loop_is_the_one_asked_for(request: pytest.FixtureRequest) -> None:
    loop = asyncio.get_running_loop()
    assert ("uvloop" in type(loop).__module__) == ("[uvloop" in request.node.name)


# -- normal replies ---------------------------------------------------------------------


async def test_normal_reply(face: str, serve: Callable[[Behaviour], MinerServer]) -> None:
    server = serve(cgminer())
    client = Client(face, server.port)
    assert await client.command("summary") == SUMMARY
    assert await client.call("devs") == DEVS
    assert server.connections == 2
    assert server.requests == [Request(("summary",)), Request(("devs",))]
    assert server.raw_requests[0] == b'{"command":"summary"}'


async def test_a_new_host_or_port_is_the_one_asked(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    """The address a client worked out is kept only while its host and port stand: a
    client given another port, or a host name, asks there from its next request on."""
    first, second = serve(cgminer()), serve(cgminer())
    client = Client(face, first.port)
    assert await client.command("summary") == SUMMARY
    client.api.port = second.port
    assert await client.command("summary") == SUMMARY
    client.api.host = "localhost"  # a name: the Protocol path (or the sync client's)
    assert await client.command("devs") == DEVS
    client.api.host = "127.0.0.1"
    client.api.port = first.port
    assert await client.command("summary") == SUMMARY
    assert (first.connections, second.connections) == (2, 2)


async def test_pycgminer_style_parameter_is_sent_as_a_string(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(cgminer())
    client = Client(face, server.port)
    assert await client.call("asc", 0) == ASC0
    assert json.loads(server.raw_requests[0]) == {"command": "asc", "parameter": "0"}


async def test_plain_text_form(face: str, serve: Callable[[Behaviour], MinerServer]) -> None:
    server = serve(cgminer())
    client = Client(face, server.port)
    reply = await client.command("asc", 0, text=True)
    assert server.raw_requests[0] == b"asc|0"
    assert reply == {"STATUS": ASC0["STATUS"], "ASC": ASC0["ASC"]}
    reply = await client.command("summary", text=True)
    assert server.raw_requests[1] == b"summary"
    assert reply["SUMMARY"] == SUMMARY["SUMMARY"]


async def test_reply_in_one_byte_chunks(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(trickles(encode_reply(POOLS), 0.0002))
    assert await Client(face, server.port).command("pools") == POOLS


async def test_reply_without_nul_ends_at_close(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(sends(encode_reply(SUMMARY)[:-1]))
    assert await Client(face, server.port).command("summary") == SUMMARY


async def test_reply_ends_at_nul_even_if_the_miner_keeps_the_connection(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(sends(encode_reply(SUMMARY) + b"garbage after the NUL", then_wait=True))
    client = Client(face, server.port, timeout=SHORT_S)
    assert await client.command("summary") == SUMMARY  # no timeout: the NUL ended it


async def test_reply_above_64_kib(face: str, serve: Callable[[Behaviour], MinerServer]) -> None:
    boards = [{"STATS": index, "ID": f"BC5{index}", "chain_acs": " oooooooo" * 8, "GHS 5s": "4566.10"}
              for index in range(3000)]  # fmt: skip
    stats = {"STATUS": status("S", 70, "BMMiner stats"), "STATS": boards, "id": 1}
    wire = encode_reply(stats)
    assert len(wire) > 4 * 65536
    server = serve(sends(wire))
    assert await Client(face, server.port).command("stats") == stats


async def test_restart_status_string_is_success(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(cgminer())
    assert await Client(face, server.port).call("restart") == {"STATUS": "RESTART", "id": 1}


# -- refusals ---------------------------------------------------------------------------


async def test_error_status_raises_command_error(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(cgminer())
    client = Client(face, server.port)
    with pytest.raises(CommandError) as caught:
        await client.call("asc", 5)
    assert (caught.value.code, caught.value.status) == (107, "E")
    assert caught.value.msg == "Invalid ASC id 5 - range is 0 - 0"
    with pytest.raises(InvalidCommand):
        await client.command("nosuchcommand")


async def test_access_denied(face: str, serve: Callable[[Behaviour], MinerServer]) -> None:
    server = serve(cgminer(write_access=False))
    with pytest.raises(AccessDenied) as caught:
        await Client(face, server.port).call("restart")
    assert caught.value.code == 45
    assert "--api-allow" in str(caught.value) and "W:" in str(caught.value)


async def test_not_the_cgminer_api(face: str, serve: Callable[[Behaviour], MinerServer]) -> None:
    server = serve(sends(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
    with pytest.raises(ProtocolError, match=r"an HTTP server answered .*, not the cgminer API"):
        await Client(face, server.port).command("summary")


async def test_truncated_reply(face: str, serve: Callable[[Behaviour], MinerServer]) -> None:
    # cgminer gives up on a slow reader after 5 x 50 ms and closes mid-reply
    server = serve(sends(encode_reply(SUMMARY)[:100]))
    with pytest.raises(ProtocolError, match="truncated"):
        await Client(face, server.port).command("summary")


# -- the connection fails ---------------------------------------------------------------


async def test_closed_without_answering(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(closes_silently)
    with pytest.raises(MinerUnreachable) as caught:
        await Client(face, server.port).command("summary")
    assert not isinstance(caught.value, MinerTimeout)
    assert caught.value.kind is FailureKind.RESET and caught.value.sent
    assert caught.value.reason == SILENT_CLOSE_HINT
    assert "--api-allow" in str(caught.value)
    assert str(caught.value).startswith(f"127.0.0.1:{server.port}: ")


async def test_connection_reset_before_reply(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(resets)
    with pytest.raises(MinerUnreachable) as caught:
        await Client(face, server.port).command("summary")
    assert not isinstance(caught.value, MinerTimeout)
    assert caught.value.reason == SILENT_CLOSE_HINT


async def test_connection_reset_mid_reply(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(resets_mid_reply)
    with pytest.raises(MinerUnreachable) as caught:
        await Client(face, server.port).command("summary")
    assert not isinstance(caught.value, MinerTimeout)
    # the RST may discard the 40 bytes before the client reads them
    assert caught.value.reason in ("connection reset mid-reply", SILENT_CLOSE_HINT)


async def test_connection_refused(face: str) -> None:
    port = free_port()
    with pytest.raises(MinerUnreachable) as caught:
        await Client(face, port).command("summary")
    assert not isinstance(caught.value, MinerTimeout)
    assert isinstance(caught.value, ConnectionRefused) and caught.value.kind is FailureKind.REFUSED
    assert not caught.value.sent  # the action log says "not sent" for these
    assert "connection refused" in caught.value.reason
    assert (caught.value.host, caught.value.port) == ("127.0.0.1", port)


async def test_never_replies(face: str, serve: Callable[[Behaviour], MinerServer]) -> None:
    server = serve(never_replies)
    client = Client(face, server.port, timeout=SHORT_S)
    started = time.monotonic()
    with pytest.raises(ReadTimeout, match=r"no complete reply within 0\.2s") as caught:
        await client.command("summary")
    assert caught.value.kind is FailureKind.READ_TIMEOUT and caught.value.sent
    assert SHORT_S * 0.9 <= time.monotonic() - started < SHORT_S + 1.0


async def test_trickle_slower_than_the_deadline(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(trickles(encode_reply(SUMMARY), 0.02))
    client = Client(face, server.port, timeout=SHORT_S)
    started = time.monotonic()
    with pytest.raises(MinerTimeout, match=r"within 0\.2s \(got \d+ bytes\)"):
        await client.command("summary")
    assert time.monotonic() - started < SHORT_S + 1.0


async def test_endless_fast_trickle_is_held_to_the_deadline(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    # Bytes that keep coming, each well inside any per-read timeout, must not keep the
    # client past its deadline (nor until the 4 MiB cap, which would take an hour here).
    server = serve(trickles(b'{"STATUS":[{"STATUS":"S","Msg":"', 0.0005, forever=b"x"))
    client = Client(face, server.port, timeout=SHORT_S)
    started = time.monotonic()
    with pytest.raises(MinerTimeout):
        await client.command("summary")
    assert time.monotonic() - started < SHORT_S + 1.0


async def test_reply_past_the_size_cap(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(sends(b'{"STATUS":[{"STATUS":"S","Msg":"' + b"x" * 65536, then_wait=True))
    client = Client(face, server.port, max_reply_bytes=4096)
    with pytest.raises(ReplyTooLarge) as caught:
        await client.command("stats")
    assert caught.value.limit_bytes == 4096


# -- connect deadline -------------------------------------------------------------------


def test_connect_timeout_defaults() -> None:
    for api_class in (CgminerAPI, AsyncCgminerAPI):
        assert (
            api_class().connect_timeout == min(DEFAULT_TIMEOUT_S, DEFAULT_CONNECT_TIMEOUT_S) == 1.0
        )
        assert api_class(timeout=0.3).connect_timeout == 0.3
        assert api_class(timeout=10).connect_timeout == 1.0
        assert api_class(timeout=10, connect_timeout=2.5).connect_timeout == 2.5
        api = api_class()
        assert (api.host, api.port, api.timeout) == ("localhost", 4028, DEFAULT_TIMEOUT_S)


async def test_connect_deadline_is_separate_from_the_read_deadline(
    face: str, unanswered_port: int
) -> None:
    client = Client(face, unanswered_port, timeout=5.0, connect_timeout=SHORT_S)
    started = time.monotonic()
    with pytest.raises(ConnectTimeout, match=r"no connection within 0\.2s") as caught:
        await client.command("summary")
    assert caught.value.kind is FailureKind.CONNECT_TIMEOUT and not caught.value.sent
    assert time.monotonic() - started < 2.0  # the connect deadline, not the 5 s read one


# -- multi-commands ---------------------------------------------------------------------


async def test_multi_on_one_connection(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(cgminer({"devs": NO_DEVICES}))
    client = Client(face, server.port)
    parts = await client.multi(["summary", "devs", "pools"])
    # devs with E Code 10 "No ASCs" is an answer: a miner with zero devices
    assert parts == {"summary": SUMMARY, "devs": NO_DEVICES, "pools": POOLS}
    assert server.connections == 1
    assert server.requests == [Request(("summary", "devs", "pools"))]
    assert client.api.multi_supported is True
    # the raw multi reply through command() is returned as the miner sent it
    reply = await client.command("summary+pools")
    assert reply == {"summary": [SUMMARY], "pools": [POOLS], "id": 1}


async def test_multi_falls_back_on_an_old_api(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(cgminer({"devs": NO_DEVICES}, multi=False))
    client = Client(face, server.port)
    expected = {"summary": SUMMARY, "devs": NO_DEVICES, "pools": POOLS}
    assert await client.multi("summary+devs+pools") == expected
    assert server.connections == 4  # the refused multi, then one per command
    assert client.api.multi_supported is False
    # remembered: the next poll makes no multi attempt
    assert await client.multi(["summary", "devs", "pools"]) == expected
    assert server.connections == 7
    assert [request.command for request in server.requests] == [
        "summary+devs+pools", "summary", "devs", "pools", "summary", "devs", "pools",
    ]  # fmt: skip


async def test_privileged_command_inside_multi_is_refused_locally(
    face: str, serve: Callable[[Behaviour], MinerServer]
) -> None:
    server = serve(cgminer())
    client = Client(face, server.port)
    with pytest.raises(ProtocolError, match="'restart' must be sent alone"):
        await client.multi(["summary", "restart"])
    with pytest.raises(ProtocolError, match="'switchpool' must be sent alone"):
        await client.multi("switchpool+pools")
    assert server.connections == 0


async def test_multi_of_one_command(face: str, serve: Callable[[Behaviour], MinerServer]) -> None:
    server = serve(cgminer())
    client = Client(face, server.port)
    assert await client.multi(["summary"]) == {"summary": SUMMARY}
    assert server.requests == [Request(("summary",))]
    assert client.api.multi_supported is None  # nothing learnt from a single command


# -- pycgminer compatibility ------------------------------------------------------------


def test_pycgminer_interface(serve: Callable[[Behaviour], MinerServer]) -> None:
    server = serve(cgminer())
    api = CgminerAPI("127.0.0.1", server.port)
    assert api.summary() == SUMMARY
    assert api.asc(0) == ASC0
    assert api.devs() == DEVS
    assert api.command("pools") == POOLS
    assert [json.loads(raw) for raw in server.raw_requests] == [
        {"command": "summary"},
        {"command": "asc", "parameter": "0"},
        {"command": "devs"},
        {"command": "pools"},
    ]
    assert repr(api) == f"CgminerAPI('127.0.0.1', {server.port})"
    with pytest.raises(AttributeError):
        api._private()  # private names are not miner commands


async def test_async_pycgminer_interface(serve: Callable[[Behaviour], MinerServer]) -> None:
    server = serve(cgminer())
    api = AsyncCgminerAPI("127.0.0.1", server.port)
    assert await api.summary() == SUMMARY
    assert await api.asc(0) == ASC0
    assert json.loads(server.raw_requests[1]) == {"command": "asc", "parameter": "0"}
