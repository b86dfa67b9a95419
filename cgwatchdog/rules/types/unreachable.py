"""``unreachable``: the miner gave no usable answer; ``value`` says why and for how long.

Judged on every polled miner (the other rule types only on miners that answered, so an
unreachable miner's other alerts keep their state).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cgwatchdog.alerts import Signal
from cgwatchdog.config.fields import Duration
from cgwatchdog.config.models import MinerConfig, RuleBase
from cgwatchdog.history import MinerHistory
from cgwatchdog.rules.base import CompiledRule, make_signal, rule_type
from cgwatchdog.snapshot import PollResult, Snapshot
from cgwatchdog.units import format_duration

__all__ = ["UnreachableRule", "eval_unreachable"]


class UnreachableRule(RuleBase):
    """The miner did not answer; ``for`` defaults to 3m so one lost poll does not page."""

    type: Literal["unreachable"]
    for_s: Duration = Field(default=180.0, validation_alias="for")
    """How long the miner must stay silent (3m by default: one lost poll does not page)."""


@rule_type(UnreachableRule, judges_unreachable=True)
def eval_unreachable(
    rule: CompiledRule[UnreachableRule],
    miner: MinerConfig,
    result: PollResult,
    history: MinerHistory,
    now: float,
) -> list[Signal] | None:
    """The miner gave no usable answer; ``value`` is why (and for how long)."""
    if isinstance(result, Snapshot):
        return []
    value = f"unreachable: {result.error}"
    since = history.unreachable_since
    if since is not None and now - since >= 1:
        value += f" (for {format_duration(now - since)})"
    return [make_signal(rule, miner, result.host, value)]


