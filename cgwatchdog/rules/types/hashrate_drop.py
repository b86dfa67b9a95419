"""``hashrate_drop``: hashrate below a share of what the miner usually does.

The reference is ``expected_hashrate`` when the miner has one, else the median of the
miner's own samples over ``baseline`` (a median, so one bad reading does not fire). When
the median is the reference, the median at the moment the drop began is kept in the
miner's history while the drop lasts (a frozen baseline), so a drop longer than half
the window does not become the new normal and resolve by itself; it is released when
the hashrate is back above ``below`` of it. Not judged during the miner's startup grace
(``Elapsed`` below ``startup_grace``), without a hashrate, or without a baseline yet
(fewer than ``MIN_BASELINE_SAMPLES`` samples spanning ``MIN_BASELINE_COVERAGE`` of
``baseline``).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from cgwatchdog.alerts import Signal
from cgwatchdog.config.fields import Duration, PositiveDuration, Ratio
from cgwatchdog.config.models import MinerConfig, RuleBase
from cgwatchdog.history import MinerHistory
from cgwatchdog.rules.base import CompiledRule, make_signal, rule_type
from cgwatchdog.snapshot import Snapshot
from cgwatchdog.units import format_duration, format_hashrate

__all__ = ["MIN_BASELINE_COVERAGE", "MIN_BASELINE_SAMPLES", "HashrateDropRule", "eval_hashrate_drop"]

# A median of three tolerates one bad reading; a quarter of the window (15 minutes of a
# 1h baseline) is the least that says what "usual" is for this miner.
MIN_BASELINE_SAMPLES: Final = 3
MIN_BASELINE_COVERAGE: Final = 0.25


class HashrateDropRule(RuleBase):
    """Hashrate below a share of expected_hashrate, else of the miner's own median."""

    type: Literal["hashrate_drop"]
    below: Annotated[Ratio, Field(gt=0)] = 0.8
    """The share of the reference under which the rule fires (80%)."""
    baseline_s: PositiveDuration = Field(default=3600.0, validation_alias="baseline")
    """The window of the miner's own median, where it has no expected_hashrate."""
    startup_grace_s: Duration = Field(default=600.0, validation_alias="startup_grace")
    """Not judged while the miner's Elapsed is below this: its averages are filling."""


def _lookback(config: HashrateDropRule, miner: MinerConfig) -> float:
    return 0.0 if miner.expected_hashrate_hs is not None else config.baseline_s


def _startup_grace(config: HashrateDropRule, miner: MinerConfig) -> float:
    return 0.0 if miner.expected_hashrate_hs is not None else config.startup_grace_s


@rule_type(
    HashrateDropRule, lookback_s=_lookback, reads_counters=False, startup_grace_s=_startup_grace
)
def eval_hashrate_drop(
    rule: CompiledRule[HashrateDropRule],
    miner: MinerConfig,
    snapshot: Snapshot,
    history: MinerHistory,
    now: float,
) -> list[Signal] | None:
    """Hashrate below ``below`` x the reference: ``expected_hashrate``, else the median
    of the miner's own samples over ``baseline`` (frozen while a drop lasts)."""
    cfg = rule.config
    hashrate = snapshot.hashrate_hs
    if hashrate is None:
        return None
    elapsed = snapshot.elapsed_s
    if elapsed is not None and elapsed < cfg.startup_grace_s:
        return None  # warming up: windows still filling, the state is kept
    expected = miner.expected_hashrate_hs
    if expected is not None:
        if hashrate >= cfg.below * expected:
            return []
        value = (
            f"{format_hashrate(hashrate)} ({hashrate / expected:.0%} of expected "
            f"{format_hashrate(expected)})"
        )
        return [make_signal(rule, miner, snapshot.host, value)]

    frozen = history.frozen_baseline(rule.name)
    if frozen is not None:
        if hashrate < cfg.below * frozen:
            value = (
                f"{format_hashrate(hashrate)} ({hashrate / frozen:.0%} of its usual "
                f"{format_hashrate(frozen)}, the {format_duration(cfg.baseline_s)} median "
                "before the drop)"
            )
            return [make_signal(rule, miner, snapshot.host, value)]
        history.freeze_baseline(rule.name, None)  # recovered

    median = history.median_hashrate(now, cfg.baseline_s, startup_grace_s=cfg.startup_grace_s)
    if (
        median is None
        or median.samples < MIN_BASELINE_SAMPLES
        or median.span_s < cfg.baseline_s * MIN_BASELINE_COVERAGE
        or median.value <= 0
    ):
        return None  # no usual hashrate to compare with yet
    if hashrate >= cfg.below * median.value:
        return []
    history.freeze_baseline(rule.name, median.value)
    value = (
        f"{format_hashrate(hashrate)} ({hashrate / median.value:.0%} of its "
        f"{format_duration(cfg.baseline_s)} median {format_hashrate(median.value)})"
    )
    return [make_signal(rule, miner, snapshot.host, value)]


