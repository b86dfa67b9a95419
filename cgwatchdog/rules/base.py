"""What every rule type shares: the registry, the compiled rule, and how signals are made.

A rule type is one module in ``cgwatchdog/rules/types/`` (or anywhere that registers
one) holding its config model, a subclass of :class:`~cgwatchdog.config.RuleBase` with
``type: Literal["<name>"]``, and its evaluator, registered with :func:`rule_type`::

    class TooManyRejectsRule(RuleBase):
        type: Literal["too_many_rejects"]
        above: Ratio = 0.02

    @rule_type(TooManyRejectsRule)
    def eval_too_many_rejects(rule, miner, snapshot, history, now):
        ...  # a list of signals, [] when the condition is false, None when not judged

The ``rules:`` model the loader validates with, ``check``'s "unknown rule type"
message, the engine and the generated docs all read :data:`RULE_TYPES`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Generic, TypeVar, Union

from jinja2 import Template
from pydantic import Field, TypeAdapter

from cgwatchdog.alerts import Signal
from cgwatchdog.config.models import MinerConfig, RuleBase
from cgwatchdog.history import MinerHistory
from cgwatchdog.registry import Registry
from cgwatchdog.sandbox import ImmutableBoundedSandbox

__all__ = [
    "RULE_TYPES",
    "CompiledRule",
    "Evaluator",
    "RuleType",
    "compile_rule",
    "make_signal",
    "rule_config",
    "rule_type",
    "rule_union",
]

C = TypeVar("C", bound=RuleBase)
R = TypeVar("R")

Evaluator = Callable[
    ["CompiledRule[Any]", MinerConfig, Any, MinerHistory, float], "list[Signal] | None"
]
"""``(rule, miner, result, history, now) -> signals``, or None when not judged. ``result``
is the miner's Snapshot, or for a rule that judges unreachable miners its PollResult."""


def _no_lookback(config: Any, miner: MinerConfig) -> float:
    return 0.0


def _no_problems(config: Any) -> list[str]:
    return []


@dataclass(frozen=True, slots=True)
class RuleType(Generic[C]):
    """One kind of rule: its ``type:`` name, config model and evaluator."""

    name: str
    config: type[C]
    evaluate: Evaluator
    judges_unreachable: bool = False
    """Evaluated on every polled miner, answered or not (the others only on answers)."""
    lookback_s: Callable[[C, MinerConfig], float] = _no_lookback
    """How much of a miner's history this rule reads back, for the history's retention
    (0 for none); it may depend on the miner's labels and expected_hashrate."""
    problems: Callable[[C], list[str]] = _no_problems
    """What cannot work as written (the rule is then not evaluated), for the operator."""
    reads_counters: bool = True
    """Whether the rule reads the history's counters (``MinerHistory.increase``): they
    are kept only as far back as the rules that read them look."""
    startup_grace_s: Callable[[C, MinerConfig], float] | None = None
    """The longest startup grace the rule asks ``MinerHistory.median_hashrate`` to leave
    out for this miner: samples keep their ``Elapsed`` only below the longest of these.
    None: as long as ``lookback_s`` (enough for any grace within the window it reads)."""


RULE_TYPES: Registry[RuleType[Any]] = Registry("rule type")
"""Every rule type, by its ``type:`` name."""


def _type_name(config: type[RuleBase]) -> str:
    field = config.model_fields.get("type")
    names = typing.get_args(field.annotation) if field is not None else ()
    if len(names) != 1 or not isinstance(names[0], str):
        raise TypeError(f"{config.__name__} needs a field type: Literal['<rule type name>']")
    return names[0]


def rule_type(
    config: type[C],
    *,
    judges_unreachable: bool = False,
    lookback_s: Callable[[C, MinerConfig], float] = _no_lookback,
    problems: Callable[[C], list[str]] = _no_problems,
    reads_counters: bool = True,
    startup_grace_s: Callable[[C, MinerConfig], float] | None = None,
) -> Callable[[Evaluator], Evaluator]:
    """Register the decorated evaluator with ``config`` as a rule type, named after the
    model's ``type`` literal."""

    def register(evaluate: Evaluator) -> Evaluator:
        name = _type_name(config)
        RULE_TYPES.add(
            name,
            RuleType(
                name,
                config,
                evaluate,
                judges_unreachable,
                lookback_s,
                problems,
                reads_counters,
                startup_grace_s,
            ),
        )
        return evaluate

    return register


@cache
def _union(version: int) -> tuple[Any, TypeAdapter[Any]]:
    models: tuple[Any, ...] = tuple(rule.config for rule in RULE_TYPES.values())
    if not models:
        raise RuntimeError("no rule types are registered")
    union = Annotated[Union[models], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007 - built at run time
    return union, TypeAdapter(union)


def rule_union() -> Any:
    """The type of one ``rules:`` item: the registered models, told apart by ``type``."""
    return _union(RULE_TYPES.version)[0]


def rule_config(data: Any) -> RuleBase:
    """One rule validated from plain data (a dict as YAML gives it); pydantic's
    ValidationError if it is not valid. The loader does this with file:line."""
    rule: RuleBase = _union(RULE_TYPES.version)[1].validate_python(data)
    return rule


# --------------------------------------------------------------------------- compiled rules


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
    problems: tuple[str, ...] = ()  # what cannot work as written, for the operator


def compile_rule(config: RuleBase) -> CompiledRule[Any]:
    """Compile one rule: labels, annotation templates (once), its type's evaluator."""
    kind = RULE_TYPES[config.type]
    annotations: list[tuple[str, str, Template | None]] = []
    problems: list[str] = []
    for key, text in config.annotations.items():
        template: Template | None = None
        if "{{" in text or "{%" in text or "{#" in text:
            try:
                template = _environment().from_string(text)
            except Exception as exc:  # config checks syntax; never fail a cycle on it
                problems.append(f"rule {config.name!r}: annotation {key!r} does not compile: {exc}")
                text = _template_failed(text, exc)
        annotations.append((key, text, template))
    problems += kind.problems(config)
    return CompiledRule(
        config=config,
        name=config.name,
        type=config.type,
        labels={**config.labels, "alertname": config.name, "severity": config.severity},
        annotations=tuple(annotations),
        evaluate=kind.evaluate,
        judges_unreachable=kind.judges_unreachable,
        for_s=config.for_s,
        keep_firing_for_s=config.keep_firing_for_s,
        problems=tuple(problems),
    )


def _template_failed(text: str, exc: Exception) -> str:
    return f"{text} [template error: {type(exc).__name__}: {exc}]"


def make_signal(
    rule: CompiledRule[Any],
    miner: MinerConfig,
    host: str,
    value: str,
    part: tuple[str, str] | None = None,
    *,
    severity: str | None = None,
) -> Signal:
    """The signal of a true condition: labels (the miner's, the rule's, ``miner`` and the
    ``part`` such as ``("device", "ASC0")``), annotations rendered, ``value`` as given;
    ``severity`` overrides the rule's for this signal."""
    labels = {**miner.labels, **rule.labels, "miner": miner.name}
    if part is not None:
        labels[part[0]] = part[1]
    if severity is not None:
        labels["severity"] = severity
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
