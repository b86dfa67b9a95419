"""cgwatchdog: an alerting watchdog for cgminer-API mining farms."""

from cgwatchdog.client import AsyncCgminerAPI, CgminerAPI
from cgwatchdog.errors import (
    AccessDenied,
    CgwatchdogError,
    CommandError,
    ConfigError,
    MinerUnreachable,
    ProtocolError,
)

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
