"""``device_status``: a device (ASC/PGA/GPU, or a board from STATS) reports a listed status.

One signal per device, labelled ``device`` = kind + id (``ASC0``, ``BOARD6``). A miner
that answers ``devs`` with Code 10 ("No ASCs") has no devices: judged, nothing fires.
Not judged when ``devs`` was refused otherwise and no boards are known.
"""

from __future__ import annotations

import typing
from typing import Annotated, Final, Literal

from pydantic import BeforeValidator, Field

from cgwatchdog.alerts import Signal
from cgwatchdog.config.models import MinerConfig, RuleBase
from cgwatchdog.history import MinerHistory
from cgwatchdog.rules.base import CompiledRule, make_signal, rule_type
from cgwatchdog.snapshot import Snapshot

__all__ = ["DeviceStatus", "DeviceStatusRule", "eval_device_status"]

DeviceStatus = Literal[
    "Alive", "Sick", "Dead", "NoStart", "Initialising", "Disabled", "Rejecting", "Unknown"
]
_DEVICE_STATUSES: tuple[str, ...] = typing.get_args(DeviceStatus)
# cgminer API codes (api.c): MSG_NODEVS "No ASCs"/"No PGAs".
_NO_DEVICES_CODE: Final = 10


def _device_status(value: object) -> object:
    # cgminer spells them Alive/Sick/Dead/NoStart...; forgive the case.
    if isinstance(value, str):
        for known in _DEVICE_STATUSES:
            if known.lower() == value.strip().lower():
                return known
    return value


class DeviceStatusRule(RuleBase):
    """A device (ASC/PGA/GPU/board) reports one of the listed statuses."""

    type: Literal["device_status"]
    status: Annotated[
        tuple[Annotated[DeviceStatus, BeforeValidator(_device_status)], ...], Field(min_length=1)
    ] = ("Dead", "Sick", "NoStart")
    """The statuses that fire."""


@rule_type(DeviceStatusRule)
def eval_device_status(
    rule: CompiledRule[DeviceStatusRule],
    miner: MinerConfig,
    snapshot: Snapshot,
    history: MinerHistory,
    now: float,
) -> list[Signal] | None:
    """One signal per device whose status is listed; label ``device`` = kind + id."""
    devices = snapshot.devices
    if not devices:
        refusal = snapshot.refused.get("devs")
        return None if refusal is not None and refusal.code != _NO_DEVICES_CODE else []
    statuses = rule.config.status
    signals: list[Signal] = []
    for device in devices:
        if device.status in statuses:
            label = ("device", f"{device.kind}{device.id}")
            signals.append(make_signal(rule, miner, snapshot.host, device.status, label))
    return signals


