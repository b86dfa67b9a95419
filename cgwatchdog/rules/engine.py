"""The rule engine: poll results + history + rules + ``now`` -> Signals.

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
    state); each rule type's module says when that is. Rules that cannot work as written
    (a ``threshold`` on an unknown field) are listed in :attr:`RuleEngine.problems`.
``held_miners``
    miners whose current run started less than ``restart_grace`` ago (a restart seen in
    ``Elapsed``, whoever caused it), plus those the caller holds (the actions module,
    for miners it just restarted).

One pure function per rule type (``cgwatchdog/rules/types/``, registered in
:data:`~cgwatchdog.rules.base.RULE_TYPES`) takes ``(rule, miner, result, history,
now)`` and returns the signals, or None when the rule cannot be judged. What a rule
keeps between cycles lives in the miner's history (``hashrate_drop``'s frozen baseline),
which is kept as long as the longest look back of the rules applying to the miner.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple

from cgwatchdog.alerts import Evaluation, Judged, Signal
from cgwatchdog.config.models import MinerConfig, RuleBase
from cgwatchdog.gcpause import gc_paused
from cgwatchdog.history import FleetHistory
from cgwatchdog.jsonstate import check_version
from cgwatchdog.rules.base import RULE_TYPES, CompiledRule, RuleType, compile_rule
from cgwatchdog.snapshot import PollResult, Snapshot

__all__ = ["MinerPlan", "RuleEngine", "RuleSelection"]

_STATE_VERSION: Final = 1


class RuleSelection(NamedTuple):
    """What the engine runs for the miners the same rules select, worked out once per
    configuration and shared by them."""

    rules: tuple[CompiledRule[Any], ...]
    """The rules whose ``match`` selects these miners, in configuration order."""
    retention_s: float
    """How much history the rules read back."""
    counter_retention_s: float
    """How much of the counters' history the rules that read them read back."""
    elapsed_kept_s: float
    """The longest startup grace the rules leave out of the history they read."""
    looking_back: frozenset[str]
    """The rules that read history for these miners (their baselines are kept)."""
    judged: tuple[str, ...]
    """Every rule's name: what a cycle judges when a miner answers and every rule can
    tell (the engine's :class:`Judged` shares this tuple)."""
    judged_unreachable: tuple[str, ...]
    """The names of the rules that judge an unreachable miner, and the rules run then."""
    unreachable_rules: tuple[CompiledRule[Any], ...]


class MinerPlan(NamedTuple):
    """What the engine runs for one miner: the miner, and the selection it shares with
    every miner the same rules select (two places a miner, not one a field)."""

    miner: MinerConfig
    selection: RuleSelection


def _grace(kind: RuleType[Any]) -> Callable[[Any, MinerConfig], float]:
    return kind.lookback_s if kind.startup_grace_s is None else kind.startup_grace_s


def _select(rules: tuple[CompiledRule[Any], ...], miner: MinerConfig) -> RuleSelection:
    lookbacks = {rule.name: RULE_TYPES[rule.type].lookback_s(rule.config, miner) for rule in rules}
    looking_back = frozenset(name for name, seconds in lookbacks.items() if seconds > 0)
    counters = max(
        (lookbacks[rule.name] for rule in rules if RULE_TYPES[rule.type].reads_counters),
        default=0.0,
    )
    graces = (_grace(RULE_TYPES[rule.type])(rule.config, miner) for rule in rules)
    unreachable = tuple(rule for rule in rules if rule.judges_unreachable)
    return RuleSelection(
        rules, max(lookbacks.values(), default=0.0), counters, max(graces, default=0.0),
        looking_back,
        tuple(rule.name for rule in rules), tuple(rule.name for rule in unreachable), unreachable,
    )  # fmt: skip


class RuleEngine:
    """Runs the configured rules over each cycle's poll results; keeps the history."""

    __slots__ = ("_configured", "_history", "_plans", "_problems", "_restart_grace_s", "_rules")

    def __init__(
        self,
        rules: Sequence[RuleBase],
        miners: Sequence[MinerConfig],
        *,
        restart_grace_s: float = 300.0,
    ) -> None:
        self._history = FleetHistory()
        self._configured: tuple[object, object] = (None, None)
        self._plans: dict[str, MinerPlan] = {}
        self._rules: tuple[CompiledRule[Any], ...] = ()
        self._problems: tuple[str, ...] = ()
        self._restart_grace_s = restart_grace_s
        self.configure(rules, miners, restart_grace_s=restart_grace_s)

    def configure(
        self,
        rules: Sequence[RuleBase],
        miners: Sequence[MinerConfig],
        *,
        restart_grace_s: float = 300.0,
    ) -> None:
        """Apply a (re)loaded configuration; history of miners still configured is kept."""
        with gc_paused():  # plans by the ten thousand
            # The same configuration again (a Watchdog applies it twice at start): the
            # plans stand, only the history is fitted to them.
            if rules is not self._configured[0] or miners is not self._configured[1]:
                self._plan(rules, miners)
                self._configured = (rules, miners)
            self._restart_grace_s = restart_grace_s
            self._fit_history()

    def _plan(self, rules: Sequence[RuleBase], miners: Sequence[MinerConfig]) -> None:
        compiled = tuple(compile_rule(rule) for rule in rules)
        self._rules = compiled
        self._problems = tuple(problem for rule in compiled for problem in rule.problems)
        # Miners of one hosts: range share a label set: select rules once per set. A rule
        # may also match on the miner's name (``match_re: {miner: "rack1-.*"}``).
        by_name = any(
            "miner" in rule.config.match or "miner" in rule.config.match_re for rule in compiled
        )
        selections: dict[tuple[frozenset[tuple[str, str]], str, float | None], RuleSelection] = {}
        plans: dict[str, MinerPlan] = {}
        label_keys: dict[int, frozenset[tuple[str, str]]] = {}  # by id: a range shares one
        for miner in miners:
            labels: Mapping[str, str] = miner.labels
            label_key = label_keys.get(id(labels))
            if label_key is None:
                label_key = label_keys[id(labels)] = frozenset(labels.items())
            if by_name:
                labels = {**labels, "miner": miner.name}
            key = (label_key, miner.name if by_name else "", miner.expected_hashrate_hs)
            chosen = selections.get(key)
            if chosen is None:
                selected = tuple(rule for rule in compiled if rule.config.selects(labels))
                chosen = selections[key] = _select(selected, miner)
            plans[miner.name] = MinerPlan(miner, chosen)
        self._plans = plans

    def _fit_history(self) -> None:
        plans = self._plans
        history = self._history
        history.retain(plans)
        for name in history:
            miner_history = history[name]
            selection = plans[name].selection
            # By identity: a history loaded from the state file shares the plan's float
            # from then on rather than keeping one of its own per miner.
            if miner_history.retention_s is not selection.retention_s:
                miner_history.retention_s = selection.retention_s
            if miner_history.counter_retention_s is not selection.counter_retention_s:
                miner_history.counter_retention_s = selection.counter_retention_s
            if miner_history.elapsed_kept_s is not selection.elapsed_kept_s:
                miner_history.elapsed_kept_s = selection.elapsed_kept_s
            # Frozen baselines of rules gone, or of rules that no longer read the history
            # for this miner (a hashrate_drop once the miner has an expected_hashrate).
            miner_history.forget_baselines(selection.looking_back)

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
        judged: dict[str, tuple[str, ...]] = {}  # by miner: the plan's tuples, shared
        held_miners = set(held)
        grace = self._restart_grace_s
        plans = self._plans
        fleet = self._history
        for result in results:
            plan = plans.get(result.name)
            if plan is None:
                continue
            miner, selection = plan
            name = miner.name
            history = fleet.miner(
                name,
                selection.retention_s,
                selection.counter_retention_s,
                selection.elapsed_kept_s,
            )
            if isinstance(result, Snapshot):
                history.record_snapshot(result)
                # A rule that judges unreachability is judged false for a miner that
                # answered, unrun; a rule that cannot tell (None) is not judged.
                untold: list[str] | None = None  # made only when a rule cannot tell
                for rule in selection.rules:
                    if rule.judges_unreachable:
                        continue
                    found = rule.evaluate(rule, miner, result, history, now)
                    if found is None:
                        if untold is None:
                            untold = []
                        untold.append(rule.name)
                    elif found:
                        signals.extend(found)
                judged[name] = (
                    selection.judged
                    if untold is None
                    else tuple(rule for rule in selection.judged if rule not in untold)
                )
            else:
                history.mark_unreachable(result.at)
                # Only the rules that judge unreachability run; the miner's other alerts
                # keep their state.
                for rule in selection.unreachable_rules:
                    found = rule.evaluate(rule, miner, result, history, now)
                    if found:
                        signals.extend(found)
                judged[name] = selection.judged_unreachable
            started = history.last_restart_at
            if started is not None and now - started < grace:
                held_miners.add(miner.name)
        return Evaluation(signals=signals, evaluated=Judged(judged), held_miners=held_miners)

    def to_dict(self) -> dict[str, Any]:
        """The history (baselines included), JSON-safe, as one document."""
        return {"version": _STATE_VERSION, "history": self._history.to_dict()}

    def state(self) -> tuple[dict[str, Any], Iterator[tuple[str, dict[str, Any]]]]:
        """The same as a small document and one record a miner, for a store that writes
        the records one at a time: the fleet's history as one JSON text would cost its
        size three times over while it is written or read (~140 MB at 10,000 miners)."""
        header = {"version": _STATE_VERSION, "history_records": FleetHistory.records_version}
        return header, self._history.records()

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        rules: Sequence[RuleBase],
        miners: Sequence[MinerConfig],
        *,
        restart_grace_s: float = 300.0,
        records: Iterable[tuple[str, Mapping[str, Any]]] = (),
    ) -> RuleEngine:
        """An engine for this configuration with the history ``to_dict`` saved, or the
        document and ``records`` that :meth:`state` gave.

        ValueError when ``data`` is malformed (the caller may start with no history).
        """
        check_version(data, _STATE_VERSION, "rule engine state")
        if "history" in data:
            history = FleetHistory.from_dict(data["history"])
        else:
            history = FleetHistory.from_records(records, data.get("history_records"))
        engine = cls(rules, miners, restart_grace_s=restart_grace_s)
        engine._history = history
        engine.configure(rules, miners, restart_grace_s=restart_grace_s)  # prune, retention
        return engine
