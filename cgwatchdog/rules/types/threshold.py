"""``threshold``: a normalized snapshot field above and/or below bounds.

``field`` is one of :data:`~cgwatchdog.snapshot.FIELD_PATHS` (``temperature.max``,
``fans.min``, ``pools.active.last_share_age``, ...); the bounds are in the field's
unit, written as a number, a percentage, a hashrate or a duration. An unknown field is
a configuration error (with "did you mean"); a field with no value (the miner does not
report it) is not judged.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Final, Literal, Self

from pydantic import BeforeValidator, field_validator, model_validator

from cgwatchdog.alerts import Signal
from cgwatchdog.config.models import MinerConfig, RuleBase
from cgwatchdog.history import MinerHistory
from cgwatchdog.rules.base import CompiledRule, make_signal, rule_type
from cgwatchdog.snapshot import FIELD_PATHS, Snapshot
from cgwatchdog.units import (
    format_duration,
    format_hashrate,
    format_percent,
    parse_duration,
    parse_hashrate,
    parse_ratio,
)

__all__ = ["ThresholdRule", "eval_threshold"]


def _threshold_number(value: object) -> object:
    """A bound in the field's unit: a number, a percentage, a hashrate or a duration."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    for parse in (parse_ratio,) if text.endswith("%") else (parse_hashrate, parse_duration):
        try:
            return parse(text)
        except ValueError:
            continue
    raise ValueError(f"{value!r} is not a number, a percentage, a hashrate or a duration")


_FIELD_PATH = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*")


class ThresholdRule(RuleBase):
    """A normalized snapshot field (e.g. ``temperature.max``) above and/or below bounds."""

    type: Literal["threshold"]
    field: str
    """The snapshot field (the table below), e.g. ``temperature.max``."""
    above: Annotated[float, BeforeValidator(_threshold_number)] | None = None
    """Fires above this (in the field's unit: ``85``, ``90%``, ``12 TH/s``, ``10m``)."""
    below: Annotated[float, BeforeValidator(_threshold_number)] | None = None
    """Fires below this."""

    @field_validator("field")
    @classmethod
    def _field_path(cls, value: str) -> str:
        if not _FIELD_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not a field path such as temperature.max")
        if value not in FIELD_PATHS:
            close = difflib.get_close_matches(value, sorted(FIELD_PATHS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown field {value!r}{hint}; the fields are listed in docs/RULES.md"
            )
        return value

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.above is None and self.below is None:
            raise ValueError("a threshold rule needs above, below or both")
        if self.above is not None and self.below is not None and self.below >= self.above:
            raise ValueError("below must be less than above (the rule fires outside below..above)")
        return self


def _format_number(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 1e6 else f"{value:.4g}"


def _format_count(value: float) -> str:
    return f"{value:.0f}"


_FIELD_FORMATS: Final[Mapping[str, Callable[[float], str]]] = {
    "hashrate": format_hashrate,
    "hashrate_hs": format_hashrate,
    "devices.hashrate.min": format_hashrate,
    "fans.min": _format_count,
    "fans.max": _format_count,
    "elapsed": format_duration,
    "elapsed_s": format_duration,
    "pools.active.last_share_age": format_duration,
    "hardware_error_ratio": format_percent,
    "pools.active.stale_ratio": format_percent,
    "fans.count": _format_count,
    "fans.missing": _format_count,
    "hardware_errors": _format_count,
    "accepted": _format_count,
    "rejected": _format_count,
    "stale": _format_count,
    "devices.count": _format_count,
    "devices.alive": _format_count,
    "devices.not_alive": _format_count,
    "devices.disabled": _format_count,
    "pools.count": _format_count,
    "pools.alive": _format_count,
    "pools.active.alive": _format_count,
    "pools.active.accepted": _format_count,
    "pools.active.rejected": _format_count,
}


def _format_bound(value: float, formatter: Callable[[float], str]) -> str:
    if formatter is _format_number or formatter is _format_count:
        return f"{value:g}"  # as the operator wrote it: "86.0 (above 85)"
    return formatter(value)


@rule_type(ThresholdRule)
def eval_threshold(
    rule: CompiledRule[ThresholdRule],
    miner: MinerConfig,
    snapshot: Snapshot,
    history: MinerHistory,
    now: float,
) -> list[Signal] | None:
    """A normalized field outside ``below``..``above``; unknown field or value: not judged."""
    cfg = rule.config
    value = snapshot.field(cfg.field)  # None too for a field name it does not know
    if value is None or value != value:
        return None
    fmt = _FIELD_FORMATS.get(cfg.field, _format_number)
    if cfg.above is not None and value > cfg.above:
        text = f"{fmt(value)} (above {_format_bound(cfg.above, fmt)})"
    elif cfg.below is not None and value < cfg.below:
        text = f"{fmt(value)} (below {_format_bound(cfg.below, fmt)})"
    else:
        return []
    return [make_signal(rule, miner, snapshot.host, text)]
