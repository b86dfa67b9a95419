"""cgwatchdog: an alerting watchdog for cgminer-API mining farms."""

from typing import TYPE_CHECKING

from cgwatchdog.errors import (
    AccessDenied,
    CgwatchdogError,
    CommandError,
    ConfigError,
    MinerUnreachable,
    ProtocolError,
)

if TYPE_CHECKING:
    from cgwatchdog.client import AsyncCgminerAPI, CgminerAPI

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "AsyncCgminerAPI",
    "CgminerAPI",
    "CgwatchdogError",
    "CommandError",
    "ConfigError",
    "MinerUnreachable",
    "ProtocolError",
    "__version__",
]


def __getattr__(name: str) -> object:
    # The clients are imported when first asked for: every command imports this package,
    # and the client brings asyncio and sockets, which `check` never needs (PEP 562).
    if name in ("AsyncCgminerAPI", "CgminerAPI"):
        from cgwatchdog import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
