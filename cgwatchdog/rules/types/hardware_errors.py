"""``hardware_errors``: hardware errors above a share of the work done over a window.

Work is ``Diff1 Work``, else ``Difficulty Accepted`` (see history.py); the counters'
increases over ``window`` are reset-safe. Not judged without both counters over
``MIN_WINDOW_COVERAGE`` of the window, or with no work at all (the hashrate rule speaks
for that).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from cgwatchdog.alerts import Signal
from cgwatchdog.config.fields import PositiveDuration, Ratio
from cgwatchdog.config.models import MinerConfig, RuleBase
from cgwatchdog.history import MinerHistory
from cgwatchdog.rules.base import CompiledRule, make_signal, rule_type
from cgwatchdog.snapshot import Snapshot
from cgwatchdog.units import format_duration, format_percent

__all__ = ["MIN_WINDOW_COVERAGE", "HardwareErrorsRule", "eval_hardware_errors"]

# A hardware-error ratio over less than half its window is too noisy to page on.
MIN_WINDOW_COVERAGE: Final = 0.5


class HardwareErrorsRule(RuleBase):
    """Hardware errors above a share of the work done over a window."""

    type: Literal["hardware_errors"]
    above: Ratio = 0.01
    """The share of hardware errors among work done above which the rule fires."""
    window_s: PositiveDuration = Field(default=900.0, validation_alias="window")
    """The window the increases are measured over."""


def _lookback(config: HardwareErrorsRule, miner: MinerConfig) -> float:
    return config.window_s


def _no_grace(config: HardwareErrorsRule, miner: MinerConfig) -> float:
    return 0.0  # counters only: no sample's Elapsed is read


@rule_type(HardwareErrorsRule, lookback_s=_lookback, startup_grace_s=_no_grace)
def eval_hardware_errors(
    rule: CompiledRule[HardwareErrorsRule],
    miner: MinerConfig,
    snapshot: Snapshot,
    history: MinerHistory,
    now: float,
) -> list[Signal] | None:
    """Hardware errors / (errors + diff1 work) over ``window``, counter-reset safe.

    Work is ``Diff1 Work``, else ``Difficulty Accepted`` (see history.py); neither known:
    not judged.
    """
    cfg = rule.config
    window = cfg.window_s
    errors = history.increase("hardware_errors", now, window)
    if errors is None:
        return None
    work = history.increase("work", now, window)
    if work is None:
        return None
    if min(errors.span_s, work.span_s) < window * MIN_WINDOW_COVERAGE:
        return None
    total = errors.amount + work.amount
    if total <= 0:
        return None  # no work at all: the hashrate rule speaks for that
    ratio = errors.amount / total
    if ratio <= cfg.above:
        return []
    value = (
        f"{format_percent(ratio)} of work over {format_duration(window)} "
        f"({errors.amount:.0f} hardware errors; above {format_percent(cfg.above)})"
    )
    return [make_signal(rule, miner, snapshot.host, value)]


