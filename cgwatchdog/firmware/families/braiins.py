"""Braiins OS / OS+ (BOSminer): recognition and reads.

Recognised: VERSION names ``BOSminer`` or ``BOSminer+`` (the Description says
``BOSminer+ 0.2.0``). BOSminer reports fans and temperatures in commands of its own
(``fans``, Code 202; ``temps``, Code 201), so those are polled too.
"""

from __future__ import annotations

from cgwatchdog.firmware.base import (
    BASE_COMMANDS,
    Family,
    Identity,
    firmware_family,
)
from cgwatchdog.snapshot import Snapshot

__all__ = ["Braiins"]


@firmware_family
class Braiins(Family):
    """Braiins OS and OS+ (BOSminer)."""

    name = "braiins"
    title = "Braiins OS / OS+ (BOSminer)"

    def recognise(self, identity: Identity) -> int:
        return 50 if "bosminer" in identity.text() else 0

    def poll_commands(self, snapshot: Snapshot, without_stats: Snapshot | None) -> tuple[str, ...]:
        return (*BASE_COMMANDS, "fans", "temps")
