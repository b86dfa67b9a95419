"""The rule engine (DESIGN §4, §5): poll results + history + rules + ``now`` -> Signals.

Each cycle :meth:`RuleEngine.observe` records every answer in the miners'
:class:`~cgwatchdog.history.FleetHistory`, then runs every rule on every miner it
selects and returns an :class:`~cgwatchdog.alerts.Evaluation` for the alert lifecycle:

``signals``
    one :class:`~cgwatchdog.alerts.Signal` per condition true now. Labels: the miner's
    labels, the rule's labels, then ``alertname``, ``miner``, ``severity`` and, where the
    condition is about one part, ``device`` (``ASC0``, ``PGA1``, ``BOARD6``) or ``pool``
    (the pool id, or ``none``). Labels never carry figures, so fingerprints stay put from
    one cycle to the next; the figures go in ``value`` ("9.1 TH/s (67% of expected 13.5
    TH/s)") and in the annotations, rendered from the rule's Jinja templates (compiled
    once, in jinja2's immutable sandbox; context ``labels``, ``value``, ``miner``,
    ``host``) only for true conditions. A template that fails renders as its raw text
    plus a note, never an exception.
``evaluated``
    (rule, miner) pairs whose condition could be judged this cycle. ``unreachable`` rules
    are judged whenever the miner was polled; every other rule only when the miner
    answered, so an unreachable miner's device, pool and hashrate alerts keep their
    state. A rule that lacks what it needs is not judged either (its alerts keep their
    state): ``hashrate_drop`` during the miner's startup grace (``Elapsed`` below
    ``startup_grace``), without a hashrate, or without a baseline yet (no
    ``expected_hashrate`` and fewer than ``MIN_BASELINE_SAMPLES`` samples spanning
    ``MIN_BASELINE_COVERAGE`` of ``baseline``); ``hardware_errors`` without both counters
    over ``MIN_WINDOW_COVERAGE`` of its window; ``pool_stale`` without a pools reply;
    ``device_status`` when ``devs`` failed and no boards are known; ``threshold`` when the
    field is unknown (the name, listed in :attr:`RuleEngine.problems`) or has no value.
``held_miners``
    miners whose current run started less than ``restart_grace`` ago (a restart seen in
    ``Elapsed``, whoever caused it), plus those the caller holds (the actions module,
    for miners it just restarted).

One pure function per rule type, registered in :data:`EVALUATORS`, takes
``(rule, miner, result, history, now)`` and returns the signals, or None when the rule
cannot be judged. The one piece of state a rule keeps is ``hashrate_drop``'s frozen
baseline: when the miner's own median is the reference, the median at the moment the
drop began is kept in the miner's history while the drop lasts, so a drop longer than
half the baseline window does not become the new normal and resolve by itself. It is
released when the hashrate is back above ``below`` of it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, Generic, TypeVar

from jinja2 import Template

from cgwatchdog.alerts import Evaluation, Signal
from cgwatchdog.config import (
    DeviceStatusRule,
    HardwareErrorsRule,
    HashrateDropRule,
    MinerConfig,
    PoolStaleRule,
    RuleConfig,
    ThresholdRule,
    UnreachableRule,
)
from cgwatchdog.history import FleetHistory, MinerHistory
from cgwatchdog.sandbox import ImmutableBoundedSandbox
from cgwatchdog.snapshot import FIELD_PATHS, PollResult, Snapshot
from cgwatchdog.units import format_duration, format_hashrate, format_percent

__all__ = [
    "EVALUATORS",
    "MIN_BASELINE_COVERAGE",
    "MIN_BASELINE_SAMPLES",
    "MIN_WINDOW_COVERAGE",
    "CompiledRule",
    "Evaluator",
    "RuleEngine",
    "compile_rule",
    "eval_device_status",
    "eval_hardware_errors",
    "eval_hashrate_drop",
    "eval_pool_stale",
    "eval_threshold",
    "eval_unreachable",
]

# A median of three tolerates one bad reading; a quarter of the window (15 minutes of a
# 1h baseline) is the least that says what "usual" is for this miner.
MIN_BASELINE_SAMPLES: Final = 3
MIN_BASELINE_COVERAGE: Final = 0.25
# A hardware-error ratio over less than half its window is too noisy to page on.
MIN_WINDOW_COVERAGE: Final = 0.5

# cgminer API codes (api.c): MSG_NOPOOL "No pools", MSG_NODEVS "No ASCs"/"No PGAs".
_NO_POOLS_CODE: Final = 8
_NO_DEVICES_CODE: Final = 10
_NO_POOL_LABEL: Final = "none"

R = TypeVar("R")


# --------------------------------------------------------------------------- formatting

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


# --------------------------------------------------------------------------- compiled rules


Evaluator = Callable[
    ["CompiledRule[Any]", MinerConfig, Any, MinerHistory, float], "list[Signal] | None"
]
"""``(rule, miner, result, history, now) -> signals``, or None when not judged."""


@cache
def _environment() -> ImmutableBoundedSandbox:
    # Immutable: a template must not change the labels it is shown (``labels.pop``
    # would change the alert's fingerprint). Plain text out (chat, email subject), so no
    # HTML autoescaping here; the receivers escape for their own formats.
    return ImmutableBoundedSandbox(autoescape=False)


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule(Generic[R]):
    """A rule ready to run: its config, fixed labels and templates compiled once."""

    config: R
    name: str
    type: str
    labels: Mapping[str, str]  # the rule's labels plus alertname and severity
    annotations: tuple[tuple[str, str, Template | None], ...]
    evaluate: Evaluator
    judges_unreachable: bool
    for_s: float
    keep_firing_for_s: float
    format_value: Callable[[float], str] = _format_number
    problems: tuple[str, ...] = ()  # what cannot work as written, for the operator


def compile_rule(config: RuleConfig) -> CompiledRule[Any]:
    """Compile one rule: labels, annotation templates (once), its evaluator."""
    annotations: list[tuple[str, str, Template | None]] = []
    problems: list[str] = []
    for key, text in config.annotations.items():
        template: Template | None = None
        if "{{" in text or "{%" in text or "{#" in text:
            try:
                template = _environment().from_string(text)
            except Exception as exc:  # config.py checks syntax; never fail a cycle on it
                problems.append(f"rule {config.name!r}: annotation {key!r} does not compile: {exc}")
                text = _template_failed(text, exc)
        annotations.append((key, text, template))
    format_value: Callable[[float], str] = _format_number
    if isinstance(config, ThresholdRule):
        if config.field in FIELD_PATHS:
            format_value = _FIELD_FORMATS.get(config.field, _format_number)
        else:
            close = difflib.get_close_matches(config.field, sorted(FIELD_PATHS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"rule {config.name!r}: unknown field {config.field!r}{hint} "
                "(the rule is not evaluated)"
            )
    return CompiledRule(
        config=config,
        name=config.name,
        type=config.type,
        labels={**config.labels, "alertname": config.name, "severity": config.severity},
        annotations=tuple(annotations),
        evaluate=EVALUATORS[config.type],
        judges_unreachable=config.type == "unreachable",
        for_s=config.for_s,
        keep_firing_for_s=config.keep_firing_for_s,
        format_value=format_value,
        problems=tuple(problems),
    )


def _template_failed(text: str, exc: Exception) -> str:
    return f"{text} [template error: {type(exc).__name__}: {exc}]"


def _signal(
    rule: CompiledRule[Any],
    miner: MinerConfig,
    host: str,
    value: str,
    part: tuple[str, str] | None = None,
) -> Signal:
    labels = {**miner.labels, **rule.labels, "miner": miner.name}
    if part is not None:
        labels[part[0]] = part[1]
    annotations: dict[str, str] = {}
    if rule.annotations:
        context: dict[str, object] | None = None
        for key, text, template in rule.annotations:
            if template is None:
                annotations[key] = text
                continue
            if context is None:
                context = {"labels": labels, "value": value, "miner": miner.name, "host": host}
            try:
                annotations[key] = template.render(context)
            except Exception as exc:  # the operator's template: say so, never fail the cycle
                annotations[key] = _template_failed(text, exc)
    return Signal(
        labels=labels,
        annotations=annotations,
        value=value,
        for_s=rule.for_s,
        keep_firing_for_s=rule.keep_firing_for_s,
    )


# --------------------------------------------------------------------------- evaluators


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
        return [_signal(rule, miner, snapshot.host, value)]

    frozen = history.frozen_baseline(rule.name)
    if frozen is not None:
        if hashrate < cfg.below * frozen:
            value = (
                f"{format_hashrate(hashrate)} ({hashrate / frozen:.0%} of its usual "
                f"{format_hashrate(frozen)}, the {format_duration(cfg.baseline_s)} median "
                "before the drop)"
            )
            return [_signal(rule, miner, snapshot.host, value)]
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
    return [_signal(rule, miner, snapshot.host, value)]


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
            signals.append(_signal(rule, miner, snapshot.host, device.status, label))
    return signals


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
    return [_signal(rule, miner, snapshot.host, value)]


def eval_pool_stale(
    rule: CompiledRule[PoolStaleRule],
    miner: MinerConfig,
    snapshot: Snapshot,
    history: MinerHistory,
    now: float,
) -> list[Signal] | None:
    """The active pool: no accepted share for too long, stale shares, not Alive; no pool
    Alive at all (``pool="none"``); mining on a backup because the primary is down
    (signalled on the primary). One signal per pool, its reasons joined in ``value``."""
    cfg = rule.config
    pools = snapshot.pools
    host = snapshot.host
    if not pools:
        refusal = snapshot.refused.get("pools")
        if refusal is not None and refusal.code == _NO_POOLS_CODE:
            return [_signal(rule, miner, host, "no pool configured", ("pool", _NO_POOL_LABEL))]
        return None  # no pools reply: cannot judge
    if not any(pool.status == "Alive" for pool in pools):
        listing = ", ".join(f"pool {pool.id} {pool.status} ({pool.url})" for pool in pools)
        value = f"no pool is Alive: {listing}"
        return [_signal(rule, miner, host, value, ("pool", _NO_POOL_LABEL))]
    active = snapshot.active_pool
    if active is None:
        return []
    signals: list[Signal] = []
    reasons: list[str] = []
    if active.status != "Alive":
        reasons.append(f"status {active.status}")
    limit = cfg.no_accepted_share_for_s
    age = active.last_share_age_s
    if age is not None:
        if age > limit:
            reasons.append(f"no accepted share for {format_duration(age)}")
    elif active.accepted == 0:
        # No share yet on this pool: count from when it became active (or the start).
        since = history.active_pool_since if history.active_pool_id == active.id else None
        waited = (now - since) if since is not None else snapshot.elapsed_s
        if waited is not None and waited > limit:
            reasons.append(f"no accepted share in {format_duration(waited)} on this pool")
    stale_ratio = active.stale_ratio
    if cfg.stale_above is not None and stale_ratio is not None and stale_ratio > cfg.stale_above:
        reasons.append(
            f"stale shares {format_percent(stale_ratio)} (above {format_percent(cfg.stale_above)})"
        )
    if reasons:
        value = f"pool {active.id} {active.url}: " + "; ".join(reasons)
        signals.append(_signal(rule, miner, host, value, ("pool", str(active.id))))

    # Failover: mining on a backup because a better pool is down.
    primary = active
    for pool in pools:
        if pool.status != "Disabled" and (pool.priority, pool.id) < (primary.priority, primary.id):
            primary = pool
    if primary.priority < active.priority and primary.status != "Alive":
        value = (
            f"pool {primary.id} {primary.url} is {primary.status}: mining on backup "
            f"pool {active.id} {active.url}"
        )
        signals.append(_signal(rule, miner, host, value, ("pool", str(primary.id))))
    return signals


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
    return [_signal(rule, miner, result.host, value)]


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
    fmt = rule.format_value
    if cfg.above is not None and value > cfg.above:
        text = f"{fmt(value)} (above {_format_bound(cfg.above, fmt)})"
    elif cfg.below is not None and value < cfg.below:
        text = f"{fmt(value)} (below {_format_bound(cfg.below, fmt)})"
    else:
        return []
    return [_signal(rule, miner, snapshot.host, text)]


EVALUATORS: Final[Mapping[str, Evaluator]] = {
    "hashrate_drop": eval_hashrate_drop,
    "device_status": eval_device_status,
    "hardware_errors": eval_hardware_errors,
    "pool_stale": eval_pool_stale,
    "unreachable": eval_unreachable,
    "threshold": eval_threshold,
}
"""The evaluator of each rule ``type``."""


# --------------------------------------------------------------------------- the engine

_Plan = tuple[MinerConfig, tuple[CompiledRule[Any], ...], tuple[tuple[str, str], ...], float]


def _retention(rules: Sequence[CompiledRule[Any]], miner: MinerConfig) -> float:
    """How much history the rules applying to a miner look back over."""
    longest = 0.0
    for rule in rules:
        cfg = rule.config
        if isinstance(cfg, HashrateDropRule) and miner.expected_hashrate_hs is None:
            longest = max(longest, cfg.baseline_s)
        elif isinstance(cfg, HardwareErrorsRule):
            longest = max(longest, cfg.window_s)
    return longest


class RuleEngine:
    """Runs the configured rules over each cycle's poll results; keeps the history."""

    __slots__ = ("_history", "_plans", "_problems", "_restart_grace_s", "_rules")

    def __init__(
        self,
        rules: Sequence[RuleConfig],
        miners: Sequence[MinerConfig],
        *,
        restart_grace_s: float = 300.0,
    ) -> None:
        self._history = FleetHistory()
        self._plans: dict[str, _Plan] = {}
        self._rules: tuple[CompiledRule[Any], ...] = ()
        self._problems: tuple[str, ...] = ()
        self._restart_grace_s = restart_grace_s
        self.configure(rules, miners, restart_grace_s=restart_grace_s)

    def configure(
        self,
        rules: Sequence[RuleConfig],
        miners: Sequence[MinerConfig],
        *,
        restart_grace_s: float = 300.0,
    ) -> None:
        """Apply a (re)loaded configuration; history of miners still configured is kept."""
        compiled = tuple(compile_rule(rule) for rule in rules)
        self._rules = compiled
        self._problems = tuple(problem for rule in compiled for problem in rule.problems)
        self._restart_grace_s = restart_grace_s
        # Miners of one hosts: range share a label set: select rules once per set. A rule
        # may also match on the miner's name (``match_re: {miner: "rack1-.*"}``).
        by_name = any(
            "miner" in rule.config.match or "miner" in rule.config.match_re for rule in compiled
        )
        selections: dict[
            tuple[frozenset[tuple[str, str]], bool, str],
            tuple[tuple[CompiledRule[Any], ...], float],
        ] = {}
        plans: dict[str, _Plan] = {}
        for miner in miners:
            labels: Mapping[str, str] = miner.labels
            if by_name:
                labels = {**labels, "miner": miner.name}
            key = (
                frozenset(miner.labels.items()),
                miner.expected_hashrate_hs is None,
                miner.name if by_name else "",
            )
            chosen = selections.get(key)
            if chosen is None:
                selected = tuple(rule for rule in compiled if rule.config.selects(labels))
                chosen = selections[key] = (selected, _retention(selected, miner))
            selected, retention = chosen
            pairs = tuple((rule.name, miner.name) for rule in selected)
            plans[miner.name] = (miner, selected, pairs, retention)
        self._plans = plans

        history = self._history
        history.retain(plans)
        drop_rules = {rule.name for rule in compiled if rule.type == "hashrate_drop"}
        for name in history:
            miner_history = history[name]
            miner, _, _, retention = plans[name]
            if miner_history.retention_s != retention:
                miner_history.retention_s = retention
            # Frozen baselines of rules gone, or of miners that now have expected_hashrate.
            miner_history.forget_baselines(drop_rules if miner.expected_hashrate_hs is None else ())

    @property
    def history(self) -> FleetHistory:
        """Every configured miner's history."""
        return self._history

    @property
    def problems(self) -> tuple[str, ...]:
        """Rules that cannot be evaluated as written (e.g. an unknown threshold field)."""
        return self._problems

    @property
    def rules(self) -> tuple[CompiledRule[Any], ...]:
        """The compiled rules, in configuration order."""
        return self._rules

    def observe(
        self, results: Sequence[PollResult], now: float, held: Collection[str] = ()
    ) -> Evaluation:
        """Record one cycle's results and evaluate every rule on every miner it selects.

        Results of miners that are not configured are ignored. ``held`` adds miners to
        ``held_miners`` (e.g. restarted by an action and not yet seen coming back).
        """
        signals: list[Signal] = []
        evaluated: set[tuple[str, str]] = set()
        held_miners = set(held)
        grace = self._restart_grace_s
        plans = self._plans
        fleet = self._history
        for result in results:
            plan = plans.get(result.name)
            if plan is None:
                continue
            miner, rules, pairs, retention = plan
            history = fleet.miner(miner.name, retention)
            if isinstance(result, Snapshot):
                answered = True
                history.record_snapshot(result)
            else:
                answered = False
                history.mark_unreachable(result.at)
            for rule, pair in zip(rules, pairs, strict=True):
                if rule.judges_unreachable:
                    evaluated.add(pair)
                    if answered:
                        continue
                elif not answered:
                    continue  # its other alerts keep their state
                found = rule.evaluate(rule, miner, result, history, now)
                if found is None:
                    continue
                evaluated.add(pair)
                if found:
                    signals.extend(found)
            started = history.last_restart_at
            if started is not None and now - started < grace:
                held_miners.add(miner.name)
        return Evaluation(signals=signals, evaluated=evaluated, held_miners=held_miners)

    def to_dict(self) -> dict[str, Any]:
        """The history (baselines included), JSON-safe, for the store."""
        return {"version": 1, "history": self._history.to_dict()}

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        rules: Sequence[RuleConfig],
        miners: Sequence[MinerConfig],
        *,
        restart_grace_s: float = 300.0,
    ) -> RuleEngine:
        """An engine for this configuration with the history ``to_dict`` saved.

        ValueError when ``data`` is malformed (the caller may start with no history).
        """
        if not isinstance(data, Mapping) or data.get("version") != 1:
            raise ValueError("unsupported rule engine state (expected version 1)")
        history = FleetHistory.from_dict(data.get("history", {}))
        engine = cls(rules, miners, restart_grace_s=restart_grace_s)
        engine._history = history
        engine.configure(rules, miners, restart_grace_s=restart_grace_s)  # prune, retention
        return engine
