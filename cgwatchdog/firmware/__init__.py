"""Firmware families: recognition, read paths and control channels, one module each.

``base.py`` says what a family is and holds the registry; ``families/`` holds the
built-in ones, which importing this package registers.
"""

from cgwatchdog.firmware import families as _families  # noqa: F401 - registers the built-ins
from cgwatchdog.firmware.base import (
    ACTIONS,
    BASE_COMMANDS,
    FAMILIES,
    ActionRequest,
    Channel,
    ChannelTarget,
    Family,
    Identity,
    Reader,
    firmware_family,
    recognise,
)

__all__ = [
    "ACTIONS",
    "BASE_COMMANDS",
    "FAMILIES",
    "ActionRequest",
    "Channel",
    "ChannelTarget",
    "Family",
    "Identity",
    "Reader",
    "firmware_family",
    "recognise",
]
