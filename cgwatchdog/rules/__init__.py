"""Rules: what is wrong with a miner, judged from its snapshots over time.

``engine.py`` runs the configured rules each cycle (:class:`RuleEngine`); ``base.py``
holds what every rule type shares and the registry; ``types/`` holds the built-in rule
types, one module each, which importing this package registers. Pure: no I/O, and
``now`` is always an argument.
"""

from cgwatchdog.rules import types as _types  # noqa: F401 - registers the built-in types
from cgwatchdog.rules.base import (
    RULE_TYPES,
    CompiledRule,
    Evaluator,
    RuleType,
    compile_rule,
    make_signal,
    rule_config,
    rule_type,
    rule_union,
)
from cgwatchdog.rules.engine import MinerPlan, RuleEngine, RuleSelection

__all__ = [
    "RULE_TYPES",
    "CompiledRule",
    "Evaluator",
    "MinerPlan",
    "RuleEngine",
    "RuleSelection",
    "RuleType",
    "compile_rule",
    "make_signal",
    "rule_config",
    "rule_type",
    "rule_union",
]
