"""pycgminer's polling pattern, ported to Python 3 for the benchmark only.

pycgminer 0.1.1 (https://pypi.org/project/pycgminer/, by Tomas Oppelt, MIT) is the
client the seed of this project used. It is Python-2 only (``unicode``, ``str`` sockets),
so it cannot be installed and run here; this is a faithful port of its 40-line
``CgminerAPI``: one blocking connection per command, ``send`` of the JSON request,
``recv(4096)`` until the miner closes, ``shutdown`` + ``close``, then ``json.loads`` of the
reply without its NUL. Only the Python 2/3 differences changed (bytes on the socket,
``str`` for ``unicode``); ``raw_command`` is its exchange without the decode, for the
sequential contender doing cgwatchdog's work per miner. Nothing in ``cgwatchdog/``
imports it.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable
from typing import Any


class PyCgminerAPI:
    """pycgminer's ``CgminerAPI``: ``api.summary()``, ``api.command("asc", 0)``."""

    def __init__(self, host: str = "localhost", port: int = 4028) -> None:
        self.data: dict[str, Any] = {}
        self.host = host
        self.port = port

    def command(self, command: str, arg: object = None) -> Any:
        """Open a connection, send one command, read to the close, decode."""
        return json.loads(self.raw_command(command, arg)[:-1])

    def raw_command(self, command: str, arg: object = None) -> bytes:
        """pycgminer's exchange without its decode: the reply's bytes, NUL included."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.connect((self.host, self.port))
            payload: dict[str, str] = {"command": command}
            if arg is not None:
                payload["parameter"] = str(arg)
            sock.send(json.dumps(payload).encode())
            received = self._receive(sock)
        finally:
            # As pycgminer: shutdown may fail on a socket the miner already closed.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return received

    def _receive(self, sock: socket.socket, size: int = 4096) -> bytes:
        msg = b""
        while True:
            chunk = sock.recv(size)
            if chunk:
                msg += chunk
            else:
                break
        return msg

    def __getattr__(self, attr: str) -> Callable[..., Any]:
        if attr.startswith("_"):
            raise AttributeError(attr)

        def out(arg: object = None) -> Any:
            return self.command(attr, arg)

        return out
