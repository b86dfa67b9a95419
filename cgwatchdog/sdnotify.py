"""sd_notify(3): tell systemd that the daemon is ready, alive, reloading or stopping.

systemd-python's ``systemd.daemon.notify`` is used when it is installed (the ``[systemd]``
extra) and the socket comes from the process environment; otherwise a small fallback
speaks the protocol itself: one datagram of ``KEY=value`` lines to the AF_UNIX socket
named by ``$NOTIFY_SOCKET`` (a path, or an abstract socket written ``@name``).

Sends never block and never raise: a full or vanished socket costs one message, which
systemd tolerates (a missed WATCHDOG=1 is repaired by the next), while a blocked send
would stall the very loop the watchdog is meant to watch. Outside systemd (no
``$NOTIFY_SOCKET``) every call is a cheap no-op.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Final

__all__ = ["Notifier", "watchdog_interval_s"]

log = logging.getLogger("cgwatchdog.sdnotify")

# systemd caps STATUS= texts it shows; a longer line is of no use in `systemctl status`.
_STATUS_MAX: Final = 512


def watchdog_interval_s(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog timeout systemd set for this process (``$WATCHDOG_USEC``), in seconds.

    None when there is none, when it is malformed, or when ``$WATCHDOG_PID`` names
    another process (the variables were inherited, not meant for us).
    """
    usec = environ.get("WATCHDOG_USEC", "").strip()
    if not usec:
        return None
    owner = environ.get("WATCHDOG_PID", "").strip()
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


def _systemd_notify() -> Callable[[str], bool] | None:
    try:
        daemon = importlib.import_module("systemd.daemon")  # the [systemd] extra
    except ImportError:
        return None
    notify: Callable[[str], bool] = daemon.notify
    return notify


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line[:_STATUS_MAX]


class Notifier:
    """Sends sd_notify messages to the service manager.

    ``socket_path`` overrides ``$NOTIFY_SOCKET``; ``environ`` (default ``os.environ``)
    supplies it and ``$WATCHDOG_USEC``. systemd-python is used only when
    ``use_systemd`` is true, it is importable, and neither override is given (it reads
    the real environment itself); otherwise the datagram fallback is used.
    """

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        use_systemd: bool = True,
    ) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "") if socket_path is None else socket_path
        self.socket_path: str | None = path or None
        self.watchdog_interval_s = watchdog_interval_s(env)
        self._sock: socket.socket | None = None
        self._warned = False
        self._systemd: Callable[[str], bool] | None = None
        if use_systemd and socket_path is None and environ is None and self.socket_path:
            self._systemd = _systemd_notify()

    @property
    def enabled(self) -> bool:
        """Whether there is a service manager to talk to."""
        return self.socket_path is not None

    @property
    def backend(self) -> str:
        """``systemd-python``, ``socket`` (the fallback) or ``none``."""
        if not self.enabled:
            return "none"
        return "systemd-python" if self._systemd is not None else "socket"

    # -- the messages ------------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """READY=1: started (or done reloading); with a STATUS= line when given."""
        return self.notify("READY=1", *self._status(status))

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (what Type=notify-reload expects)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: the service is shutting down."""
        return self.notify("STOPPING=1", *self._status(status))

    def watchdog(self) -> bool:
        """WATCHDOG=1: the main loop is alive."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """STATUS=: one line shown by ``systemctl status``."""
        return self.notify(*self._status(text))

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        return () if text is None else (f"STATUS={_one_line(text)}",)

    # -- sending -----------------------------------------------------------------------

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; True if it went out."""
        if self.socket_path is None or not assignments:
            return False
        message = "\n".join(assignments)
        if self._systemd is not None:
            try:
                return bool(self._systemd(message))
            except (OSError, ValueError) as exc:
                self._warn(f"sd_notify failed: {exc}")
                return False
        return self._send(message.encode())

    def _address(self) -> str | None:
        path = self.socket_path or ""
        if path.startswith("@"):
            return "\0" + path[1:]  # abstract namespace
        if path.startswith("/"):
            return path
        return None

    def _send(self, data: bytes) -> bool:
        address = self._address()
        if address is None:
            self._warn(f"NOTIFY_SOCKET={self.socket_path!r} is not a unix socket; not notifying")
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, address)
        except BlockingIOError:
            log.debug("sd_notify socket is full; message dropped")
            return False
        except OSError as exc:
            self._warn(f"sd_notify to {self.socket_path} failed: {exc.strerror or exc}")
            return False
        return True

    def _warn(self, message: str) -> None:
        # Once: a missing socket would otherwise log on every cycle.
        if not self._warned:
            self._warned = True
            log.warning("%s", message)

    def close(self) -> None:
        """Close the fallback's socket (sending again reopens it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
